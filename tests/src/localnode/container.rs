//! One container's life: start, probe, restart with back-off, stop.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::jiff::Timestamp;
use tokio::process::Child;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::backoff::RestartBackoff;
use super::context::PodShared;
use super::launch::{LaunchFailure, Prepared, prepare};
use super::probes::{ProbeTiming, ProbeTracker, run_probe};
use super::process::{exit_code, spawn, terminate};

/// State of a container as reported in its status.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Not running.
    Waiting {
        /// CamelCase reason.
        reason: String,
        /// Details.
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running {
        /// Start time.
        started_at: Timestamp,
    },
    /// Exited.
    Terminated {
        /// Exit code (128 + signal when killed).
        exit_code: i32,
        /// `Completed`, `Error`, `StartError`.
        reason: String,
        /// Details.
        message: Option<String>,
        /// Start time.
        started_at: Option<Timestamp>,
        /// Exit time.
        finished_at: Timestamp,
    },
}

/// Everything the pod status needs about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSnapshot {
    /// Container name.
    pub name: String,
    /// Image as in the spec.
    pub image: String,
    /// Resolved image id (the mapped binary).
    pub image_id: String,
    /// Current state.
    pub state: RunState,
    /// Previous termination.
    pub last_state: Option<RunState>,
    /// Number of restarts.
    pub restart_count: i32,
    /// Readiness.
    pub ready: bool,
    /// Startup probe passed (or none and running).
    pub started: bool,
    /// `iq720://<pid>` of the current or last process.
    pub container_id: Option<String>,
    /// Pid of the running process.
    pub pid: Option<u32>,
    /// The container will not be started again.
    pub done: bool,
}

impl ContainerSnapshot {
    fn new(container: &Container, reason: &str) -> Self {
        Self {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            image_id: String::new(),
            state: RunState::Waiting {
                reason: reason.to_string(),
                message: None,
            },
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            container_id: None,
            pid: None,
            done: false,
        }
    }

    /// Exit code if terminated.
    pub fn exit_code(&self) -> Option<i32> {
        match self.state {
            RunState::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        }
    }
}

/// When to restart a container that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartRule {
    /// Always.
    Always,
    /// Only after a non-zero exit.
    OnFailure,
    /// Never.
    Never,
}

impl RestartRule {
    /// Parses a pod's restartPolicy (Always by default).
    pub fn from_policy(policy: Option<&str>) -> Self {
        match policy {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }

    /// Should a container that exited with `code` start again?
    pub fn restarts(self, code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => code != 0,
            Self::Never => false,
        }
    }
}

/// A request to stop: SIGTERM, wait for the grace period, SIGKILL.
pub type StopRequest = Option<Duration>;

/// Handles the container task publishes through.
pub struct ContainerIo {
    /// Where snapshots go.
    pub snapshot: watch::Sender<ContainerSnapshot>,
    /// Woken after every snapshot change.
    pub changed: Arc<Notify>,
    /// Stop requests.
    pub stop: watch::Receiver<StopRequest>,
}

impl ContainerIo {
    fn publish(&self, snap: &ContainerSnapshot) {
        let changed = self.snapshot.send_if_modified(|cur| {
            if cur == snap {
                false
            } else {
                *cur = snap.clone();
                true
            }
        });
        if changed {
            self.changed.notify_one();
        }
    }

    fn stop_grace(&self) -> Option<Duration> {
        *self.stop.borrow()
    }

    /// Waits for a stop request; a dropped sender counts as a stop with 2 s grace.
    async fn stopped(&mut self) -> Duration {
        loop {
            if let Some(g) = *self.stop.borrow_and_update() {
                return g;
            }
            if self.stop.changed().await.is_err() {
                return Duration::from_secs(2);
            }
        }
    }

    /// Sleeps for `d` unless a stop comes first (then returns its grace).
    async fn sleep_or_stop(&mut self, d: Duration) -> Option<Duration> {
        tokio::select! {
            _ = tokio::time::sleep(d) => None,
            g = self.stopped() => Some(g),
        }
    }
}

/// Initial snapshot for a container.
pub fn initial_snapshot(container: &Container, reason: &str) -> ContainerSnapshot {
    ContainerSnapshot::new(container, reason)
}

enum RunEnd {
    Exited { code: i32, message: Option<String> },
    Stopped { code: Option<i32> },
}

/// Runs a container until it is done or stopped.
pub async fn supervise(
    shared: Arc<PodShared>,
    container: Container,
    rule: RestartRule,
    grace_on_probe_failure: Duration,
    mut io: ContainerIo,
) {
    let pod_name = shared
        .pod
        .borrow()
        .metadata
        .name
        .clone()
        .unwrap_or_default();
    let mut snap = ContainerSnapshot::new(&container, "ContainerCreating");
    let mut backoff = RestartBackoff::default();
    let mut pull_failures: u32 = 0;
    io.publish(&snap);
    loop {
        if io.stop_grace().is_some() {
            snap.done = true;
            io.publish(&snap);
            return;
        }
        let mut prepared = match prepare(&shared, &container).await {
            Ok(p) => p,
            Err(failure) => {
                let (reason, wait) = match &failure {
                    LaunchFailure::ImageNotMapped(_) => {
                        pull_failures += 1;
                        let reason = if pull_failures == 1 {
                            "ErrImagePull"
                        } else {
                            "ImagePullBackOff"
                        };
                        let secs = (5u64 << (pull_failures - 1).min(4)).min(60);
                        (
                            reason,
                            Duration::from_secs(if pull_failures == 1 { 1 } else { secs }),
                        )
                    }
                    LaunchFailure::Config(_) => {
                        ("CreateContainerConfigError", Duration::from_secs(3))
                    }
                };
                tracing::info!(pod = %pod_name, container = %container.name, %reason, error = %failure, "cannot start container");
                snap.state = RunState::Waiting {
                    reason: reason.to_string(),
                    message: Some(failure.to_string()),
                };
                io.publish(&snap);
                if io.sleep_or_stop(wait).await.is_some() {
                    snap.done = true;
                    io.publish(&snap);
                    return;
                }
                continue;
            }
        };
        pull_failures = 0;
        snap.image_id = prepared.image_id.clone();
        let started_at = Timestamp::now();
        let run_start = Instant::now();
        let end = match spawn(&prepared.spec) {
            Ok(child) => {
                let pid = child.id();
                if !prepared.spec.binds.is_empty() && super::process::mount_namespaces() {
                    prepared.probe_target.mount_ns_pid = pid;
                }
                tracing::info!(pod = %pod_name, container = %container.name, pid, program = %prepared.spec.program.display(), "container started");
                snap.pid = pid;
                snap.container_id = pid.map(|p| format!("iq720://{p}"));
                snap.state = RunState::Running { started_at };
                snap.started = container.startup_probe.is_none();
                snap.ready = snap.started && container.readiness_probe.is_none();
                write_pid(&shared, &container.name, pid);
                io.publish(&snap);
                let end = run(
                    child,
                    &container,
                    &prepared,
                    grace_on_probe_failure,
                    &mut snap,
                    &mut io,
                )
                .await;
                let _ = std::fs::remove_file(shared.pid_file(&container.name));
                end
            }
            Err(e) => RunEnd::Exited {
                code: 128,
                message: Some(format!("failed to start: {e}")),
            },
        };
        snap.pid = None;
        snap.ready = false;
        snap.started = false;
        let finished_at = Timestamp::now();
        let (code, message, stopped) = match end {
            RunEnd::Exited { code, message } => (code, message, false),
            RunEnd::Stopped { code } => (code.unwrap_or(137), None, true),
        };
        tracing::info!(pod = %pod_name, container = %container.name, code, stopped, "container exited");
        let terminated = RunState::Terminated {
            exit_code: code,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message,
            started_at: Some(started_at),
            finished_at,
        };
        if stopped || !rule.restarts(code) {
            snap.state = terminated;
            snap.done = true;
            io.publish(&snap);
            return;
        }
        snap.last_state = Some(terminated.clone());
        let delay = backoff.next_delay(run_start.elapsed());
        if !delay.is_zero() {
            snap.state = RunState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={} pod={pod_name}",
                    delay.as_secs(),
                    container.name
                )),
            };
            io.publish(&snap);
            if io.sleep_or_stop(delay).await.is_some() {
                snap.state = terminated;
                snap.done = true;
                io.publish(&snap);
                return;
            }
        }
        snap.restart_count += 1;
    }
}

fn write_pid(shared: &PodShared, container: &str, pid: Option<u32>) {
    let path = shared.pid_file(container);
    if let (Some(pid), Some(dir)) = (pid, path.parent()) {
        let _ = std::fs::create_dir_all(dir);
        if let Err(e) = std::fs::write(&path, pid.to_string()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write pid file");
        }
    }
}

struct ProbeSlot {
    kind: &'static str,
    probe: Probe,
    tracker: ProbeTracker,
    due: Instant,
}

impl ProbeSlot {
    fn new(kind: &'static str, probe: &Option<Probe>, start: Instant) -> Option<Self> {
        probe.as_ref().map(|p| {
            let timing = ProbeTiming::of(p);
            Self {
                kind,
                probe: p.clone(),
                tracker: ProbeTracker::new(timing),
                due: start + timing.initial_delay,
            }
        })
    }
}

/// Runs one process until it exits, a probe kills it, or a stop arrives.
async fn run(
    mut child: Child,
    container: &Container,
    prepared: &Prepared,
    grace: Duration,
    snap: &mut ContainerSnapshot,
    io: &mut ContainerIo,
) -> RunEnd {
    let start = Instant::now();
    let mut startup = ProbeSlot::new("Startup", &container.startup_probe, start);
    let mut liveness = ProbeSlot::new("Liveness", &container.liveness_probe, start);
    let mut readiness = ProbeSlot::new("Readiness", &container.readiness_probe, start);
    loop {
        // Which probe is due next (startup gates the other two).
        let which: Option<usize> = if !snap.started {
            startup.as_ref().map(|_| 0)
        } else {
            match (liveness.as_ref(), readiness.as_ref()) {
                (Some(l), Some(r)) => Some(if l.due <= r.due { 1 } else { 2 }),
                (Some(_), None) => Some(1),
                (None, Some(_)) => Some(2),
                (None, None) => None,
            }
        };
        let due = match which {
            Some(0) => startup.as_ref().map(|s| s.due),
            Some(1) => liveness.as_ref().map(|s| s.due),
            Some(_) => readiness.as_ref().map(|s| s.due),
            None => None,
        };
        tokio::select! {
            status = child.wait() => {
                let code = status.as_ref().map(exit_code).unwrap_or(-1);
                return RunEnd::Exited { code, message: None };
            }
            g = io.stopped() => {
                let status = terminate(&mut child, g).await;
                return RunEnd::Stopped { code: status.as_ref().map(exit_code) };
            }
            _ = async { match due { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {}
        }
        let slot = match which {
            Some(0) => startup.as_mut(),
            Some(1) => liveness.as_mut(),
            Some(_) => readiness.as_mut(),
            None => None,
        };
        let Some(slot) = slot else { continue };
        let result = tokio::select! {
            r = run_probe(&slot.probe, &prepared.probe_target) => r,
            status = child.wait() => {
                let code = status.as_ref().map(exit_code).unwrap_or(-1);
                return RunEnd::Exited { code, message: None };
            }
        };
        slot.due = Instant::now() + slot.tracker.timing().period;
        let kind = slot.kind;
        if let Err(msg) = &result {
            tracing::debug!(container = %container.name, kind, %msg, "probe failed");
        }
        let verdict = slot.tracker.record(result.is_ok());
        match (kind, verdict) {
            ("Startup", Some(true)) => {
                snap.started = true;
                snap.ready = readiness.is_none();
                // Liveness/readiness start counting once the container has started.
                let now = Instant::now();
                for s in [liveness.as_mut(), readiness.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    s.due = s.due.max(now);
                }
                io.publish(snap);
            }
            ("Startup" | "Liveness", Some(false)) => {
                let msg = result.err().unwrap_or_default();
                tracing::info!(container = %container.name, kind, %msg, "probe failed: restarting container");
                let status = terminate(&mut child, grace).await;
                return RunEnd::Exited {
                    code: status.as_ref().map(exit_code).unwrap_or(137),
                    message: Some(format!("{kind} probe failed: {msg}")),
                };
            }
            ("Readiness", v) => {
                let ready = v == Some(true);
                if snap.ready != ready {
                    snap.ready = ready;
                    io.publish(snap);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_rules() {
        assert!(RestartRule::from_policy(None).restarts(0));
        assert!(RestartRule::from_policy(Some("OnFailure")).restarts(1));
        assert!(!RestartRule::from_policy(Some("OnFailure")).restarts(0));
        assert!(!RestartRule::from_policy(Some("Never")).restarts(2));
    }
}
