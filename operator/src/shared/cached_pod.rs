//! A bot pod as the operator's cache keeps it: packed ([`Compact`]) with the facts
//! every poll reads worked out once per watch event, so a poll neither holds nor
//! parses the whole pod.

use iq720_crds::trading_bot::BOT_LABEL;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ObjectMeta;

use super::compact::{Compact, Summary};
use crate::botlink::client::BotEndpoint;
use crate::botlink::endpoint::{PodEndpoint, PodLookup, base_url, stuck_reason};

/// What a reconcile reads of the bot's pod at every poll, worked out once per watch
/// event of the pod (the cache keeps it next to the packed pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    /// The pod's IP, when it has one.
    pub ip: Option<String>,
    /// The pod's Ready condition is True.
    pub ready: bool,
    /// Why its container cannot run ([`stuck_reason`]).
    pub stuck: Option<String>,
    /// The bot it runs (its label [`BOT_LABEL`]): what the pod watch maps an event to.
    pub bot: Option<String>,
}

impl Summary<Pod> for PodFacts {
    fn of(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        Self {
            ip: status
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty()),
            ready: status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            }),
            stuck: stuck_reason(pod),
            bot: pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(BOT_LABEL))
                .cloned(),
        }
    }

    /// Labels, owner references and the uid go: the bot's name is in the summary, and
    /// no reader of a cached pod reads the others (the pod is found by name). A label map
    /// costs a B-tree node of about 0.5 KiB before its strings, about 1 KiB a bot
    /// with the StatefulSet's labels (heap profile at 400 bots, README "Scale").
    fn trim(meta: &mut ObjectMeta) {
        meta.labels = None;
        meta.owner_references = None;
        meta.uid = None;
    }
}

/// A bot pod as the cache keeps it.
pub type CachedPod = Compact<Pod, PodFacts>;

/// The lookup result for a pod read from the cache (`None`: no such pod); the same
/// as [`crate::botlink::endpoint::from_pod`] on the whole pod.
pub fn from_cached(pod: Option<&CachedPod>, token: &str) -> PodLookup {
    let Some(pod) = pod else {
        return PodLookup::Missing;
    };
    match &pod.summary.ip {
        None => PodLookup::NoAddress,
        Some(ip) => PodLookup::Found(PodEndpoint {
            endpoint: BotEndpoint {
                base: base_url(ip),
                token: token.to_string(),
            },
            ready: pod.summary.ready,
            terminating: pod.metadata.deletion_timestamp.is_some(),
        }),
    }
}
