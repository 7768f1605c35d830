//! Where a bot answers: its pod's IP and the API port, plus whether the pod is Ready
//! and whether it is terminating (a terminating pod still answers during its grace
//! period, which deletion's close-all relies on).

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;

use super::client::BotEndpoint;
use super::{API_PORT, BotRef};

/// What the operator knows about the bot's pod.
#[derive(Debug, Clone)]
pub struct PodEndpoint {
    /// Address and token to call.
    pub endpoint: BotEndpoint,
    /// The pod's Ready condition is True.
    pub ready: bool,
    /// The pod is being deleted.
    pub terminating: bool,
}

/// The base URL of a bot API on `ip`.
pub fn base_url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{API_PORT}")
    } else {
        format!("http://{ip}:{API_PORT}")
    }
}

/// Reads the pod from the pod object; `None` when it has no IP yet.
pub fn from_pod(pod: &Pod, token: &str) -> Option<PodEndpoint> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    Some(PodEndpoint {
        endpoint: BotEndpoint {
            base: base_url(ip),
            token: token.to_string(),
        },
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// What a pod lookup found.
#[derive(Debug, Clone)]
pub enum PodLookup {
    /// The bot has no pod.
    Missing,
    /// The pod exists but has no IP yet (scheduled, starting).
    NoAddress,
    /// The pod has an address.
    Found(PodEndpoint),
}

impl PodLookup {
    /// The endpoint, when the pod has an address.
    pub fn found(self) -> Option<PodEndpoint> {
        match self {
            PodLookup::Found(p) => Some(p),
            _ => None,
        }
    }
}

/// Container waiting reasons that do not pass by waiting: the pod needs a change.
const STUCK_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Why the bot's container cannot run, when it is stuck (`reason: message`), e.g.
/// `ImagePullBackOff: no image ...` or `CrashLoopBackOff: ...`. `None` while it is
/// merely starting.
pub fn stuck_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            STUCK_REASONS
                .contains(&reason)
                .then(|| match &waiting.message {
                    Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                    _ => reason.to_string(),
                })
        })
}

/// Looks up the bot's pod (terminating pods included: they still answer during their
/// grace period).
pub async fn lookup(client: &Client, bot: &BotRef, token: &str) -> Result<PodLookup, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &bot.namespace);
    Ok(match pods.get_opt(&bot.pod_name()).await? {
        None => PodLookup::Missing,
        Some(pod) => from_pod(&pod, token).map_or(PodLookup::NoAddress, PodLookup::Found),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn only_reasons_that_need_a_change_are_stuck() {
        let pod = |reason: &str| -> Pod {
            serde_json::from_value(json!({"status": {"containerStatuses": [{
                "name": "bot", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": reason, "message": "no image mapped"}}
            }]}}))
            .unwrap()
        };
        assert_eq!(
            stuck_reason(&pod("ImagePullBackOff")).as_deref(),
            Some("ImagePullBackOff: no image mapped")
        );
        assert!(stuck_reason(&pod("CrashLoopBackOff")).is_some());
        assert_eq!(stuck_reason(&pod("ContainerCreating")), None);
        assert_eq!(stuck_reason(&Pod::default()), None);
    }
}
