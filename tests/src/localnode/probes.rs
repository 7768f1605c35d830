//! Container probes (httpGet, tcpSocket, exec) and their threshold bookkeeping.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Timing and thresholds of a probe, with Kubernetes defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Delay before the first probe.
    pub initial_delay: Duration,
    /// Time between probes.
    pub period: Duration,
    /// Time a single probe may take.
    pub timeout: Duration,
    /// Consecutive successes to count as passing.
    pub success_threshold: u32,
    /// Consecutive failures to count as failing.
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: u64, min: u64) -> Duration {
    Duration::from_secs(
        v.and_then(|v| u64::try_from(v).ok())
            .unwrap_or(default)
            .max(min),
    )
}

fn count(v: Option<i32>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

impl ProbeTiming {
    /// Reads the timing of a probe spec.
    pub fn of(probe: &Probe) -> Self {
        Self {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Counts consecutive results and says when the probe's verdict flips.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    timing: ProbeTiming,
    successes: u32,
    failures: u32,
    verdict: Option<bool>,
}

impl ProbeTracker {
    /// A tracker with no verdict yet.
    pub fn new(timing: ProbeTiming) -> Self {
        Self {
            timing,
            successes: 0,
            failures: 0,
            verdict: None,
        }
    }

    /// The probe's timing.
    pub fn timing(&self) -> ProbeTiming {
        self.timing
    }

    /// Current verdict: `Some(true)` passing, `Some(false)` failing, `None` undecided.
    pub fn verdict(&self) -> Option<bool> {
        self.verdict
    }

    /// Records one result and returns the verdict after it.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= self.timing.success_threshold {
                self.verdict = Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.timing.failure_threshold {
                self.verdict = Some(false);
            }
        }
        self.verdict
    }
}

/// What a probe needs to know about the container it checks.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The pod's IP (default host for httpGet/tcpSocket).
    pub pod_ip: String,
    /// The container's declared ports (for named ports).
    pub ports: Vec<ContainerPort>,
    /// Working directory for exec probes.
    pub cwd: PathBuf,
    /// Environment for exec probes.
    pub env: BTreeMap<String, String>,
    /// Program and leading args for exec probes: maps the container's binary name.
    pub exec_program: Option<(String, PathBuf)>,
    /// Rewrites mount paths in exec probe arguments.
    pub mounts: super::mount_paths::MountMap,
    /// Pid whose mount namespace exec probes enter (`nsenter -m`), if it has its own.
    pub mount_ns_pid: Option<u32>,
}

/// Runs one probe; `Ok(())` on success, `Err(message)` on failure.
pub async fn run_probe(probe: &Probe, target: &ProbeTarget) -> Result<(), String> {
    let timeout = ProbeTiming::of(probe).timeout;
    let fut = async {
        if let Some(http) = &probe.http_get {
            let host = http.host.clone().unwrap_or_else(|| target.pod_ip.clone());
            let port = resolve_port(&http.port, &target.ports)?;
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| !s.eq_ignore_ascii_case("http"))
            {
                return Err("only the HTTP scheme is supported".to_string());
            }
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            let path = http.path.clone().unwrap_or_else(|| "/".to_string());
            let status = http_get_status(&host, port, &path, &headers).await?;
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {status}"))
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            let host = tcp.host.clone().unwrap_or_else(|| target.pod_ip.clone());
            let port = resolve_port(&tcp.port, &target.ports)?;
            TcpStream::connect((host.as_str(), port))
                .await
                .map(|_| ())
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        } else if let Some(exec) = &probe.exec {
            run_exec(exec.command.as_deref().unwrap_or_default(), target).await
        } else {
            Err("unsupported probe handler (only httpGet, tcpSocket and exec)".to_string())
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

/// Resolves a port given by number or by container port name.
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("no container port named {name:?}"))
        }
    }
}

/// Sends `GET path` over HTTP/1.1 and returns the status code.
pub async fn http_get_status(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<u16, String> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status_line(&buf).ok_or_else(|| "malformed HTTP response".to_string())
}

/// Parses the status code out of `HTTP/1.x NNN ...`.
pub fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

async fn run_exec(command: &[String], target: &ProbeTarget) -> Result<(), String> {
    let Some((first, rest)) = command.split_first() else {
        return Err("exec probe without a command".to_string());
    };
    let first_name = std::path::Path::new(first)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let program = match &target.exec_program {
        Some((name, path)) if Some(name) == first_name.as_ref() => path.clone(),
        _ => PathBuf::from(target.mounts.rewrite(first)),
    };
    let mut args: Vec<String> = rest.iter().map(|a| target.mounts.rewrite(a)).collect();
    let mut program = program;
    if let Some(pid) = target.mount_ns_pid {
        let mut wrapped = vec![
            "-t".to_string(),
            pid.to_string(),
            "-m".to_string(),
            "--".to_string(),
        ];
        wrapped.push(program.to_string_lossy().into_owned());
        wrapped.append(&mut args);
        args = wrapped;
        program = PathBuf::from("nsenter");
    }
    let out = tokio::process::Command::new(&program)
        .args(&args)
        .env_clear()
        .envs(&target.env)
        .current_dir(&target.cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("exec {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        let mut msg = String::from_utf8_lossy(&out.stdout).into_owned();
        msg.push_str(&String::from_utf8_lossy(&out.stderr));
        Err(format!(
            "exec probe exited with {}: {}",
            out.status.code().unwrap_or(-1),
            msg.trim()
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn timing(success: u32, failure: u32) -> ProbeTiming {
        ProbeTiming {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn defaults_follow_kubernetes() {
        let t = ProbeTiming::of(&Probe::default());
        assert_eq!(
            t,
            ProbeTiming {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let neg = Probe {
            period_seconds: Some(-5),
            failure_threshold: Some(0),
            ..Probe::default()
        };
        assert_eq!(ProbeTiming::of(&neg).period, Duration::from_secs(10));
        assert_eq!(ProbeTiming::of(&neg).failure_threshold, 3);
    }

    #[test]
    fn verdict_flips_only_after_thresholds() {
        let mut t = ProbeTracker::new(timing(2, 3));
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), Some(true));
        assert_eq!(t.record(false), Some(true));
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), Some(true));
        assert_eq!(t.record(false), Some(true));
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(true), Some(false));
        assert_eq!(t.record(true), Some(true));
    }

    #[test]
    fn ports_by_number_or_name() {
        let ports = vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..ContainerPort::default()
        }];
        assert_eq!(resolve_port(&IntOrString::Int(81), &ports), Ok(81));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &ports),
            Ok(8080)
        );
        assert!(resolve_port(&IntOrString::String("admin".into()), &ports).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &ports).is_err());
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500\r\n"), Some(500));
        assert_eq!(parse_status_line(b"garbage"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[tokio::test]
    async fn http_probe_against_a_local_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for code in [200u16, 503] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await.unwrap();
                s.write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        assert_eq!(
            http_get_status("127.0.0.1", port, "/healthz", &[]).await,
            Ok(200)
        );
        assert_eq!(
            http_get_status("127.0.0.1", port, "/healthz", &[]).await,
            Ok(503)
        );
    }

    #[tokio::test]
    async fn exec_probe_uses_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let target = ProbeTarget {
            pod_ip: "127.0.0.1".into(),
            ports: vec![],
            cwd: dir.path().to_path_buf(),
            env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
            exec_program: None,
            mounts: Default::default(),
            mount_ns_pid: None,
        };
        assert!(run_exec(&["true".to_string()], &target).await.is_ok());
        let err = run_exec(
            &["sh".into(), "-c".into(), "echo no; exit 3".into()],
            &target,
        )
        .await
        .unwrap_err();
        assert!(err.contains("exited with 3") && err.contains("no"), "{err}");
    }
}
