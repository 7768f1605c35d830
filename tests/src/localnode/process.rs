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
    /// Bind mounts `(real dir or file, mountPath)` made in a private mount namespace
    /// of the process, when mount namespaces are available (see [`mount_namespaces`]).
    pub binds: Vec<(PathBuf, String)>,
}

/// Shell script run by `unshare` in the new mount namespace: bind-mounts each
/// `src dst` pair (creating the mount point if needed), then execs the rest.
const MOUNT_SCRIPT: &str = r#"set -e
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  src=$1; dst=$2; shift 2
  if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; [ -e "$dst" ] || : > "$dst"; fi
  mount --bind "$src" "$dst"
done
shift
exec "$@"
"#;

/// Whether containers get a private mount namespace with their volumes bind-mounted
/// at their mount paths (needs root and `unshare`; disable with
/// `IQ720_LOCALNODE_MOUNT_NAMESPACES=0`). Checked once.
pub fn mount_namespaces() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        if std::env::var("IQ720_LOCALNODE_MOUNT_NAMESPACES").is_ok_and(|v| v == "0") {
            return false;
        }
        let ok = std::process::Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                "mount --bind /proc /proc",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            tracing::warn!(
                "mount namespaces unavailable: volumes are reachable only through rewritten paths"
            );
        }
        ok
    })
}

/// The full argv (program first) that runs `spec`: optional mount-namespace wrapper,
/// optional parent-death-signal wrapper, then the program and its args.
pub fn command_line(spec: &LaunchSpec, use_mount_ns: bool, setpriv: Option<&Path>) -> Vec<String> {
    let mut argv: Vec<String> = Vec::new();
    if use_mount_ns && !spec.binds.is_empty() {
        argv.extend(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                MOUNT_SCRIPT,
                "iq720-mounts",
            ]
            .map(str::to_string),
        );
        let mut binds = spec.binds.clone();
        // Parents before children.
        binds.sort_by_key(|(_, dst)| dst.matches('/').count());
        for (src, dst) in binds {
            argv.push(src.to_string_lossy().into_owned());
            argv.push(dst);
        }
        argv.push("--".to_string());
    }
    if let Some(sp) = setpriv {
        argv.extend([
            sp.to_string_lossy().into_owned(),
            "--pdeathsig".into(),
            "KILL".into(),
            "--".into(),
        ]);
    }
    argv.push(spec.program.to_string_lossy().into_owned());
    argv.extend(spec.args.iter().cloned());
    argv
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
    let argv = command_line(
        spec,
        !spec.binds.is_empty() && mount_namespaces(),
        setpriv(),
    );
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| NodeError::Spec("empty command".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
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
            binds: vec![],
        }
    }

    #[test]
    fn command_line_wraps_in_order() {
        let mut s = spec(Path::new("/d"), "true");
        let plain = command_line(&s, true, None);
        assert_eq!(plain, vec!["/bin/sh", "-c", "true"]);
        s.binds = vec![
            (PathBuf::from("/real/tokens"), "/etc/app/tokens".into()),
            (PathBuf::from("/real/cfg"), "/etc/app".into()),
        ];
        let argv = command_line(&s, true, Some(Path::new("/usr/bin/setpriv")));
        let dash = argv.iter().position(|a| a == "iq720-mounts").unwrap();
        assert_eq!(argv[0], "unshare");
        assert_eq!(
            argv[dash + 1..dash + 6],
            [
                "/real/cfg",
                "/etc/app",
                "/real/tokens",
                "/etc/app/tokens",
                "--"
            ]
        );
        assert_eq!(
            argv[dash + 6..dash + 10],
            ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--"]
        );
        assert_eq!(argv[dash + 10..], ["/bin/sh", "-c", "true"]);
        assert_eq!(command_line(&s, false, None), vec!["/bin/sh", "-c", "true"]);
    }

    #[tokio::test]
    async fn bind_mounts_are_private_to_the_process() {
        if !mount_namespaces() {
            eprintln!("skipped: no mount namespaces here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("f"), "inside").unwrap();
        let target = dir.path().join("mnt/point");
        let mut s = spec(dir.path(), &format!("cat {}/f", target.display()));
        s.binds = vec![(real.clone(), target.to_string_lossy().into_owned())];
        let status = spawn(&s).unwrap().wait().await.unwrap();
        assert!(status.success());
        let log = std::fs::read_to_string(dir.path().join("logs/c.log")).unwrap();
        assert_eq!(log, "inside");
        // Not mounted on the host.
        assert!(!target.join("f").exists());
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
