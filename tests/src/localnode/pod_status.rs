//! Pod status from container snapshots: phase, conditions, container statuses.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::container::{ContainerSnapshot, RunState};
use super::downward::HOST_IP;

/// Converts a run state to the API type.
pub fn container_state(state: &RunState) -> ContainerState {
    match state {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..ContainerState::default()
        },
        RunState::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                reason: Some(reason.clone()),
                message: message.clone(),
                started_at: started_at.map(Time),
                finished_at: Some(Time(*finished_at)),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        },
    }
}

/// Converts a snapshot to a container status.
pub fn container_status(s: &ContainerSnapshot) -> ContainerStatus {
    ContainerStatus {
        name: s.name.clone(),
        image: s.image.clone(),
        image_id: s.image_id.clone(),
        container_id: s.container_id.clone(),
        ready: s.ready,
        started: Some(s.started),
        restart_count: s.restart_count,
        state: Some(container_state(&s.state)),
        last_state: Some(
            s.last_state
                .as_ref()
                .map(container_state)
                .unwrap_or_default(),
        ),
        ..ContainerStatus::default()
    }
}

fn never_ran(s: &ContainerSnapshot) -> bool {
    matches!(s.state, RunState::Waiting { .. }) && s.last_state.is_none()
}

/// The pod phase, from init and app container snapshots.
pub fn phase(init: &[ContainerSnapshot], app: &[ContainerSnapshot]) -> &'static str {
    if init
        .iter()
        .any(|s| s.done && s.exit_code().is_some_and(|c| c != 0))
    {
        return "Failed";
    }
    if !init.iter().all(|s| s.done && s.exit_code() == Some(0)) {
        return "Pending";
    }
    if app.is_empty() || app.iter().any(never_ran) {
        return "Pending";
    }
    if app.iter().all(|s| s.done) {
        if app.iter().all(|s| s.exit_code() == Some(0)) {
            return "Succeeded";
        }
        return "Failed";
    }
    "Running"
}

fn condition(
    prev: Option<&PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let old = prev
        .and_then(|p| p.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    let since = match old {
        Some(o) if o.status == status => o.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_transition_time: since,
        ..PodCondition::default()
    }
}

fn names(list: impl Iterator<Item = String>) -> String {
    format!("[{}]", list.collect::<Vec<_>>().join(" "))
}

/// Builds the full status. `prev` is the last status written (or read), used to keep
/// PodScheduled and condition transition times.
pub fn build_status(
    prev: Option<&PodStatus>,
    pod_ip: &str,
    start_time: Timestamp,
    init: &[ContainerSnapshot],
    app: &[ContainerSnapshot],
    now: Timestamp,
) -> PodStatus {
    let phase = phase(init, app);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let initialized = init.iter().all(|s| s.done && s.exit_code() == Some(0));
    let unready: Vec<String> = app
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .collect();
    let containers_ready = initialized && unready.is_empty() && !app.is_empty();
    let (ready_reason, ready_msg) = if terminal {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: {}",
                names(unready.into_iter())
            )),
        )
    };
    let scheduled = prev
        .and_then(|p| p.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled").cloned())
        .unwrap_or_else(|| condition(None, "PodScheduled", true, None, None, now));
    let incomplete = names(
        init.iter()
            .filter(|s| !(s.done && s.exit_code() == Some(0)))
            .map(|s| s.name.clone()),
    );
    let conditions = vec![
        condition(prev, "PodReadyToStartContainers", true, None, None, now),
        condition(
            prev,
            "Initialized",
            initialized || (terminal && init.is_empty()),
            Some("ContainersNotInitialized".into()),
            Some(format!("containers with incomplete status: {incomplete}")),
            now,
        ),
        condition(
            prev,
            "Ready",
            containers_ready && !terminal,
            ready_reason.clone(),
            ready_msg.clone(),
            now,
        ),
        condition(
            prev,
            "ContainersReady",
            containers_ready && !terminal,
            ready_reason,
            ready_msg,
            now,
        ),
        scheduled,
    ];
    let has_ip = !pod_ip.is_empty();
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(HOST_IP.to_string()),
        host_ips: Some(vec![HostIP {
            ip: HOST_IP.to_string(),
        }]),
        pod_ip: has_ip.then(|| pod_ip.to_string()),
        pod_ips: has_ip.then(|| {
            vec![PodIP {
                ip: pod_ip.to_string(),
            }]
        }),
        start_time: Some(Time(start_time)),
        init_container_statuses: (!init.is_empty())
            .then(|| init.iter().map(container_status).collect()),
        container_statuses: Some(app.iter().map(container_status).collect()),
        qos_class: prev.and_then(|p| p.qos_class.clone()),
        ..PodStatus::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn snap(name: &str, state: RunState, ready: bool, done: bool) -> ContainerSnapshot {
        ContainerSnapshot {
            name: name.into(),
            image: "img".into(),
            image_id: String::new(),
            state,
            last_state: None,
            restart_count: 0,
            ready,
            started: ready,
            container_id: None,
            pid: None,
            done,
        }
    }

    fn running() -> RunState {
        RunState::Running {
            started_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn exited(code: i32) -> RunState {
        RunState::Terminated {
            exit_code: code,
            reason: "x".into(),
            message: None,
            started_at: None,
            finished_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn waiting() -> RunState {
        RunState::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        }
    }

    #[test]
    fn phases() {
        let init_ok = vec![snap("i", exited(0), false, true)];
        let init_bad = vec![snap("i", exited(1), false, true)];
        let init_running = vec![snap("i", running(), false, false)];
        let app_run = vec![snap("a", running(), true, false)];
        assert_eq!(phase(&[], &[snap("a", waiting(), false, false)]), "Pending");
        assert_eq!(
            phase(&init_running, &[snap("a", waiting(), false, false)]),
            "Pending"
        );
        assert_eq!(phase(&init_bad, &app_run), "Failed");
        assert_eq!(phase(&init_ok, &app_run), "Running");
        assert_eq!(
            phase(&[], &[snap("a", exited(0), false, true)]),
            "Succeeded"
        );
        assert_eq!(
            phase(
                &[],
                &[
                    snap("a", exited(0), false, true),
                    snap("b", exited(2), false, true)
                ]
            ),
            "Failed"
        );
        // A crash-looping container keeps the pod Running.
        let mut crashing = snap("a", waiting(), false, false);
        crashing.last_state = Some(exited(1));
        assert_eq!(phase(&[], &[crashing]), "Running");
    }

    #[test]
    fn conditions_keep_transition_times() {
        let t0 = Timestamp::from_second(1000).unwrap();
        let t1 = Timestamp::from_second(2000).unwrap();
        let app = vec![snap("a", running(), false, false)];
        let s0 = build_status(None, "127.1.0.2", t0, &[], &app, t0);
        let s1 = build_status(Some(&s0), "127.1.0.2", t0, &[], &app, t1);
        assert_eq!(s0, s1, "nothing changed, so the status must be equal");
        let ready_app = vec![snap("a", running(), true, false)];
        let s2 = build_status(Some(&s1), "127.1.0.2", t0, &[], &ready_app, t1);
        let ready = s2
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_transition_time, Some(Time(t1)));
        assert_eq!(s2.pod_ip.as_deref(), Some("127.1.0.2"));
        let cs = &s2.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready && cs.state.as_ref().unwrap().running.is_some());
    }
}
