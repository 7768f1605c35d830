//! One task per pod: volumes, init containers, app containers, status, deletion.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::container::{
    ContainerIo, ContainerSnapshot, RestartRule, StopRequest, initial_snapshot, supervise,
};
use super::context::{AgentContext, PodShared};
use super::pod_status::build_status;
use super::volumes::{PodVolumes, VolumeInputs};

/// How often generated volumes (configMap, secret, ...) are re-synced.
pub const VOLUME_RESYNC: Duration = Duration::from_secs(3);
/// Grace used when the agent itself shuts down.
pub const SHUTDOWN_GRACE_CAP: Duration = Duration::from_secs(10);

/// The agent's handle on a pod task.
pub struct PodHandle {
    /// Sends newer versions of the pod object.
    pub pod_tx: watch::Sender<Pod>,
    /// Cancelled when the pod object disappeared from the API.
    pub gone: CancellationToken,
    /// The task.
    pub task: JoinHandle<()>,
}

/// Starts the task of a newly seen pod.
pub fn start(agent: Arc<AgentContext>, pod: Pod, shutdown: CancellationToken) -> PodHandle {
    let (pod_tx, pod_rx) = watch::channel(pod);
    let gone = CancellationToken::new();
    let task = tokio::spawn(run(agent, pod_rx, gone.clone(), shutdown));
    PodHandle { pod_tx, gone, task }
}

struct Running {
    snapshot: watch::Receiver<ContainerSnapshot>,
    stop: watch::Sender<StopRequest>,
    task: JoinHandle<()>,
}

impl Running {
    fn spawn(
        shared: &Arc<PodShared>,
        c: &Container,
        rule: RestartRule,
        grace: Duration,
        changed: &Arc<Notify>,
    ) -> Self {
        let (snap_tx, snapshot) = watch::channel(initial_snapshot(c, "ContainerCreating"));
        let (stop, stop_rx) = watch::channel(None);
        let io = ContainerIo {
            snapshot: snap_tx,
            changed: changed.clone(),
            stop: stop_rx,
        };
        let task = tokio::spawn(supervise(shared.clone(), c.clone(), rule, grace, io));
        Self {
            snapshot,
            stop,
            task,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Volumes,
    Init(usize),
    StartApps,
    Running,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    Deleted,
    Gone,
    Shutdown,
}

fn grace_seconds(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

async fn run(
    agent: Arc<AgentContext>,
    pod_rx: watch::Receiver<Pod>,
    gone: CancellationToken,
    shutdown: CancellationToken,
) {
    let pod = pod_rx.borrow().clone();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(agent.client.clone(), &ns);

    let prev_status = pod.status.clone();
    let terminal = matches!(
        prev_status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let preferred: Option<Ipv4Addr> = prev_status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let ip = agent
        .ips
        .lock()
        .ok()
        .and_then(|mut p| p.allocate(&uid, preferred))
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let pod_dir: PathBuf = agent.state_dir.join("pods").join(&uid);
    let shared = Arc::new(PodShared {
        agent: agent.clone(),
        pod: pod_rx.clone(),
        pod_ip: ip.clone(),
        pod_dir: pod_dir.clone(),
        volumes: Mutex::new(Default::default()),
    });
    tracing::info!(pod = %format!("{ns}/{name}"), %uid, pod_ip = %ip, terminal, "pod admitted");

    let spec = pod.spec.clone().unwrap_or_default();
    let app_specs = spec.containers.clone();
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let rule = RestartRule::from_policy(spec.restart_policy.as_deref());
    let init_rule = if rule == RestartRule::Never {
        RestartRule::Never
    } else {
        RestartRule::OnFailure
    };
    let probe_grace = Duration::from_secs(
        spec.termination_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(30),
    );

    let start_time = prev_status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let mut last_written: Option<PodStatus> = prev_status.clone();
    let mut init_snaps: Vec<ContainerSnapshot> = init_specs
        .iter()
        .map(|c| initial_snapshot(c, "PodInitializing"))
        .collect();
    let mut app_snaps: Vec<ContainerSnapshot> = app_specs
        .iter()
        .map(|c| initial_snapshot(c, "PodInitializing"))
        .collect();
    if init_specs.is_empty() {
        for s in &mut app_snaps {
            s.state = super::container::RunState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            };
        }
    }
    let changed = Arc::new(Notify::new());
    let mut volumes = PodVolumes::default();
    let mut stage = if terminal {
        Stage::Failed
    } else {
        Stage::Volumes
    };
    let mut init_running: Option<(usize, Running)> = None;
    let mut apps: Vec<Running> = Vec::new();
    let mut pod_rx_loop = pod_rx.clone();
    let mut resync = tokio::time::interval(VOLUME_RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let teardown = loop {
        let pod = pod_rx_loop.borrow_and_update().clone();
        if shutdown.is_cancelled() {
            break Teardown::Shutdown;
        }
        if gone.is_cancelled() {
            break Teardown::Gone;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            break Teardown::Deleted;
        }
        // Progress through the stages as far as possible.
        loop {
            match stage {
                Stage::Volumes => {
                    let inputs = VolumeInputs {
                        client: &agent.client,
                        pod: &pod,
                        pod_ip: &ip,
                        node: &agent.capacity,
                        pod_dir: &pod_dir,
                        watched: agent.objects.as_ref(),
                    };
                    match volumes.sync(&inputs).await {
                        Ok(()) => {
                            if let Ok(mut v) = shared.volumes.lock() {
                                *v = volumes.dirs().clone();
                            }
                            stage = if init_specs.is_empty() {
                                Stage::StartApps
                            } else {
                                Stage::Init(0)
                            };
                        }
                        Err(e) => {
                            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "volumes not ready");
                            let msg = format!("MountVolume failed: {e}");
                            for s in init_snaps.iter_mut().chain(app_snaps.iter_mut()) {
                                s.state = super::container::RunState::Waiting {
                                    reason: "ContainerCreating".into(),
                                    message: Some(msg.clone()),
                                };
                            }
                            break;
                        }
                    }
                }
                Stage::Init(i) => {
                    let Some(c) = init_specs.get(i) else {
                        stage = Stage::StartApps;
                        continue;
                    };
                    match &init_running {
                        None => {
                            init_running = Some((
                                i,
                                Running::spawn(&shared, c, init_rule, probe_grace, &changed),
                            ));
                            break;
                        }
                        Some((_, r)) => {
                            let snap = r.snapshot.borrow().clone();
                            if !snap.done {
                                break;
                            }
                            init_snaps[i] = snap.clone();
                            init_running = None;
                            stage = if snap.exit_code() == Some(0) {
                                Stage::Init(i + 1)
                            } else {
                                Stage::Failed
                            };
                        }
                    }
                }
                Stage::StartApps => {
                    for c in &app_specs {
                        apps.push(Running::spawn(&shared, c, rule, probe_grace, &changed));
                    }
                    stage = Stage::Running;
                }
                Stage::Running | Stage::Failed => break,
            }
        }
        if let Some((i, r)) = &init_running {
            init_snaps[*i] = r.snapshot.borrow().clone();
        }
        for (i, r) in apps.iter().enumerate() {
            if let Some(s) = app_snaps.get_mut(i) {
                *s = r.snapshot.borrow().clone();
            }
        }
        if stage == Stage::Failed && !terminal {
            for s in &mut app_snaps {
                if !s.done {
                    s.done = true;
                }
            }
        }
        if !terminal {
            let status = build_status(
                last_written.as_ref(),
                &ip,
                start_time,
                &init_snaps,
                &app_snaps,
                Timestamp::now(),
            );
            if last_written.as_ref() != Some(&status) {
                let patch = serde_json::json!({ "status": status });
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::debug!(pod = %format!("{ns}/{name}"), phase = ?status.phase, "status written");
                        last_written = Some(status);
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => break Teardown::Gone,
                    Err(e) => {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "status write failed");
                    }
                }
            }
        }
        let retry_volumes = stage == Stage::Volumes;
        tokio::select! {
            _ = changed.notified() => {}
            r = pod_rx_loop.changed() => {
                if r.is_err() {
                    break Teardown::Gone;
                }
            }
            _ = gone.cancelled() => {}
            _ = shutdown.cancelled() => {}
            _ = resync.tick() => {
                if !retry_volumes && stage != Stage::Failed {
                    let inputs = VolumeInputs {
                        client: &agent.client,
                        pod: &pod,
                        pod_ip: &ip,
                        node: &agent.capacity,
                        pod_dir: &pod_dir,
                        watched: agent.objects.as_ref(),
                    };
                    if let Err(e) = volumes.sync(&inputs).await {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "volume resync failed");
                    }
                }
            }
        }
    };

    // Stop every process, then release the pod.
    let pod = pod_rx.borrow().clone();
    let grace = match teardown {
        Teardown::Deleted => grace_seconds(&pod),
        Teardown::Gone => Duration::from_secs(2),
        Teardown::Shutdown => grace_seconds(&pod).min(SHUTDOWN_GRACE_CAP),
    };
    tracing::info!(pod = %format!("{ns}/{name}"), ?teardown, grace_s = grace.as_secs(), "stopping pod");
    let mut tasks = Vec::new();
    for r in apps.into_iter().chain(init_running.map(|(_, r)| r)) {
        let _ = r.stop.send(Some(grace));
        tasks.push((r.stop, r.task));
    }
    for (stop, task) in tasks {
        if tokio::time::timeout(grace + Duration::from_secs(10), task)
            .await
            .is_err()
        {
            tracing::warn!(pod = %format!("{ns}/{name}"), "container task did not stop in time");
        }
        drop(stop);
    }
    if teardown == Teardown::Deleted {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "pod deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "final delete failed")
            }
        }
    }
    if teardown != Teardown::Shutdown {
        if let Ok(mut ips) = agent.ips.lock() {
            ips.release(&uid);
        }
        for sub in ["volumes", "containers", "pids", "kube"] {
            let _ = std::fs::remove_dir_all(pod_dir.join(sub));
        }
    }
}
