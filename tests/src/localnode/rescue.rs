//! Work-around for a kube-scheduler race seen on this single-node cluster: a pod whose
//! claim gets bound while a scheduling attempt is in flight can stay `Unschedulable`
//! ("pod has unbound immediate PersistentVolumeClaims") for the scheduler's 5-minute
//! flush interval. Every few seconds the agent looks for such pods whose claims are all
//! bound by now and, if they are still unscheduled after a grace period, binds them to
//! this node itself (POST pods/binding, like the scheduler does).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::context::AgentContext;
use super::error::Result;

/// How often pending pods are checked.
pub const INTERVAL: Duration = Duration::from_secs(3);
/// How long the scheduler gets after the pod was found unschedulable.
pub const GRACE: Duration = Duration::from_secs(5);
const MARKER: &str = "unbound immediate PersistentVolumeClaims";

/// Is `pod` stuck on the unbound-claim race (unscheduled, with that reason, for longer
/// than [`GRACE`] at `now`)?
pub fn stuck_on_claims(pod: &Pod, now: Timestamp) -> bool {
    let unscheduled = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.node_name.as_deref().is_none_or(str::is_empty));
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.message.as_deref().is_some_and(|m| m.contains(MARKER))
            })
        })
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0));
    let old_enough = since.is_some_and(|t| {
        now.duration_since(t)
            .try_into()
            .is_ok_and(|d: Duration| d >= GRACE)
    });
    unscheduled && pod.metadata.deletion_timestamp.is_none() && old_enough
}

async fn claims_bound(ctx: &AgentContext, pod: &Pod) -> Result<bool> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(c) = &v.persistent_volume_claim {
            let bound = api
                .get_opt(&c.claim_name)
                .await?
                .and_then(|p| p.status)
                .and_then(|s| s.phase)
                .is_some_and(|p| p == "Bound");
            if !bound {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

async fn bind(ctx: &AgentContext, pod: &Pod) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: None,
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(ctx.node_name.clone()),
            ..ObjectReference::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    api.create_subresource::<Binding, serde_json::Value>(
        "binding",
        &name,
        &PostParams::default(),
        &binding,
    )
    .await?;
    tracing::warn!(pod = %format!("{ns}/{name}"), "scheduler left the pod unschedulable although its claims are bound: bound it to this node");
    Ok(())
}

async fn sweep(ctx: &AgentContext) -> Result<()> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let pending = api
        .list(&ListParams::default().fields("spec.nodeName=,status.phase=Pending"))
        .await?;
    let now = Timestamp::now();
    for pod in pending.items.iter().filter(|p| stuck_on_claims(p, now)) {
        if claims_bound(ctx, pod).await? {
            match bind(ctx, pod).await {
                Ok(()) => {}
                // Scheduled meanwhile, or gone.
                Err(super::error::NodeError::Kube(kube::Error::Api(e)))
                    if e.code == 409 || e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Runs the sweep every [`INTERVAL`] until shutdown.
pub async fn rescue_loop(ctx: Arc<AgentContext>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = sweep(&ctx).await {
            tracing::debug!(error = %e, "pending-pod sweep failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(node: Option<&str>, message: &str, since: i64) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    message: Some(message.into()),
                    last_transition_time: Some(Time(Timestamp::from_second(since).unwrap())),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn only_old_unscheduled_claim_failures_qualify() {
        let now = Timestamp::from_second(1000).unwrap();
        let msg = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.";
        assert!(stuck_on_claims(&pod(None, msg, 990), now));
        assert!(!stuck_on_claims(&pod(None, msg, 998), now), "too recent");
        assert!(
            !stuck_on_claims(&pod(Some("n"), msg, 900), now),
            "already scheduled"
        );
        assert!(
            !stuck_on_claims(&pod(None, "Insufficient cpu", 900), now),
            "other reason"
        );
    }
}
