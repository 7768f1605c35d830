//! Container processes: spawned in their own process group (so the whole tree can be
//! signalled), with stdout/stderr appended to a log file, and with a parent-death signal
//! (via `setpriv --pdeathsig KILL` when available) so nothing outlives a crashed agent.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::error::{NodeError, Result};

/// What to run for one container start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Arguments (without argv\[0\]).
    pub args: Vec<String>,
    /// Complete environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// File that receives stdout and stderr.
    pub log_file: PathBuf,
}

fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .as_deref()
}

/// Starts the process in a new process group.
pub fn spawn(spec: &LaunchSpec) -> Result<Child> {
    if let Some(parent) = spec.log_file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| NodeError::io(parent, e))?;
    }
    std::fs::create_dir_all(&spec.cwd).map_err(|e| NodeError::io(&spec.cwd, e))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_file)
        .map_err(|e| NodeError::io(&spec.log_file, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| NodeError::io(&spec.log_file, e))?;
    let mut cmd = match setpriv() {
        Some(sp) => {
            let mut c = Command::new(sp);
            c.arg("--pdeathsig")
                .arg("KILL")
                .arg("--")
                .arg(&spec.program);
            c
        }
        None => Command::new(&spec.program),
    };
    cmd.args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn().map_err(|e| NodeError::io(&spec.program, e))
}

/// Sends `sig` to the process group led by `pid`; a vanished group is not an error.
pub fn signal_group(pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    match killpg(Pid::from_raw(raw), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, ?sig, error = %e, "killpg failed"),
    }
}

/// SIGTERM to the group, wait up to `grace`, then SIGKILL. Returns the exit status.
pub async fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    if let Some(pid) = pid {
        signal_group(pid, Signal::SIGTERM);
    }
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            if let Some(pid) = pid {
                signal_group(pid, Signal::SIGKILL);
            }
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    };
    // Leftover members of the group (children of the container) go too.
    if let Some(pid) = pid {
        signal_group(pid, Signal::SIGKILL);
    }
    status
}

/// Exit code as Kubernetes reports it: the code, or 128 + signal number.
pub fn exit_code(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec(dir: &Path, script: &str) -> LaunchSpec {
        LaunchSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::from([
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ("X".to_string(), "42".to_string()),
            ]),
            cwd: dir.join("cwd"),
            log_file: dir.join("logs/c.log"),
        }
    }

    #[tokio::test]
    async fn logs_env_and_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(&spec(dir.path(), "echo out $X; echo err >&2; pwd; exit 7")).unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(exit_code(&status), 7);
        let log = std::fs::read_to_string(dir.path().join("logs/c.log")).unwrap();
        assert!(
            log.contains("out 42") && log.contains("err") && log.contains("/cwd"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn terminate_kills_the_whole_group_after_grace() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores SIGTERM and has a child of its own.
        let mut child = spawn(&spec(
            dir.path(),
            "trap '' TERM; sleep 300 & echo $! > kid; wait",
        ))
        .unwrap();
        let kid_file = dir.path().join("cwd/kid");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !kid_file.exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kid: i32 = std::fs::read_to_string(&kid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let started = std::time::Instant::now();
        let status = terminate(&mut child, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(exit_code(&status), 128 + 9);
        // The grandchild is gone (or a zombie about to be reaped by init).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{kid}/stat")).unwrap_or_default();
            let gone =
                stat.is_empty() || stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'));
            if gone {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {kid} survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
