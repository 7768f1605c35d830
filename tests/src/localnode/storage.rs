//! The `local-dir` StorageClass and its provisioner: hostPath PVs under
//! `<state>/volumes`, deleted with their directory when released.
//!
//! Why the provisioner binds the claim itself: with an `Immediate` class the pod is
//! not scheduled until its claim is bound, and kube-controller-manager's
//! PersistentVolume binder binds claims one at a time (three writes each) in a single
//! worker. At 1,000 bots (`make bench-scale`) that bound the whole run: every volume
//! was provisioned after 391 s but claims were bound at under one per second. So, as
//! a user pre-binding a claim would, the provisioner sets the claim's `volumeName`
//! (allowed once on a claim) and the `bind-completed` annotation the scheduler reads,
//! once its own watch has seen the volume it created with the claim's `claimRef`; the
//! binder then only fills in the phases. Claims are provisioned and bound [`PARALLEL`]
//! at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use super::context::AgentContext;
use super::error::{NodeError, Result};

/// Name of the default StorageClass.
pub const STORAGE_CLASS: &str = "local-dir";
/// Provisioner name.
pub const PROVISIONER: &str = "iq720.io/local-dir";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Annotation of a claim whose binding is complete (what kube-scheduler checks).
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Claims provisioned at the same time.
pub const PARALLEL: usize = 16;

/// Creates the StorageClass if it does not exist.
pub async fn ensure_storage_class(ctx: &AgentContext) -> Result<()> {
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    let sc = StorageClass {
        metadata: ObjectMeta {
            name: Some(STORAGE_CLASS.into()),
            annotations: Some(BTreeMap::from([(
                "storageclass.kubernetes.io/is-default-class".to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        ..StorageClass::default()
    };
    match api.create(&PostParams::default(), &sc).await {
        Ok(_) => tracing::info!("storage class {STORAGE_CLASS} created"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Does this claim wait for our provisioner?
pub fn wants_provisioning(pvc: &PersistentVolumeClaim) -> bool {
    let spec = pvc.spec.as_ref();
    let unbound = spec
        .and_then(|s| s.volume_name.as_deref())
        .is_none_or(str::is_empty);
    let pending = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending");
    let ours_by_class = spec.and_then(|s| s.storage_class_name.as_deref()) == Some(STORAGE_CLASS);
    let ours_by_annotation = pvc.metadata.annotations.as_ref().is_some_and(|a| {
        [
            "volume.kubernetes.io/storage-provisioner",
            "volume.beta.kubernetes.io/storage-provisioner",
        ]
        .iter()
        .any(|k| a.get(*k).map(String::as_str) == Some(PROVISIONER))
    });
    unbound
        && pending
        && pvc.metadata.deletion_timestamp.is_none()
        && (ours_by_class || ours_by_annotation)
}

/// Directory of a provisioned volume.
pub fn volume_dir(ctx: &AgentContext, pv_name: &str) -> PathBuf {
    ctx.state_dir.join("volumes").join(pv_name)
}

async fn provision(ctx: &AgentContext, pvc: &PersistentVolumeClaim) -> Result<()> {
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    let pv_name = format!("pvc-{uid}");
    let dir = volume_dir(ctx, &pv_name);
    std::fs::create_dir_all(&dir).map_err(|e| NodeError::io(&dir, e))?;
    let spec = pvc.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or_else(|| Quantity("1Gi".into()));
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.clone()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), size)])),
            access_modes: spec
                .access_modes
                .clone()
                .or_else(|| Some(vec!["ReadWriteOnce".into()])),
            volume_mode: spec.volume_mode.clone(),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            storage_class_name: Some(STORAGE_CLASS.into()),
            host_path: Some(HostPathVolumeSource {
                path: dir.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: pvc.metadata.namespace.clone(),
                name: pvc.metadata.name.clone(),
                uid: Some(uid),
                ..ObjectReference::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    };
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api.create(&PostParams::default(), &pv).await {
        Ok(_) => tracing::info!(pv = %pv_name, claim = ?pvc.metadata.name, "volume provisioned"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Whether this agent's provisioner made the volume.
fn provisioned_by_us(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .map(String::as_str)
        == Some(PROVISIONER)
}

/// The claim a volume of ours waits to be bound to: (namespace, name, uid), while the
/// volume is not bound yet (phase `Pending` or `Available`).
fn claim_to_bind(pv: &PersistentVolume) -> Option<(String, String, String)> {
    let ours = provisioned_by_us(pv);
    let unbound = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending" || p == "Available");
    if !ours || !unbound || pv.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let claim = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some((
        claim.namespace.clone()?,
        claim.name.clone()?,
        claim.uid.clone()?,
    ))
}

/// Binds the claim to the volume made for it (see the module documentation), once
/// the agent's own watch has seen the volume: binding right after the create let
/// kube-controller-manager see the claim's `volumeName` before its informer had the
/// volume, and it reported the claim `Lost` for a moment. The volume already names the
/// claim by uid, so this is the binding the PV binder would make; a claim bound
/// meanwhile (to this volume: nothing else names it) is left alone.
async fn bind_claim(ctx: &AgentContext, pv: &PersistentVolume) -> Result<()> {
    let Some((ns, name, uid)) = claim_to_bind(pv) else {
        return Ok(());
    };
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let (ns, name) = (ns.as_str(), name.as_str());
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "metadata": {
            "uid": uid,
            "annotations": { BIND_COMPLETED: "yes" },
        },
        "spec": { "volumeName": pv_name },
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(pv = %pv_name, claim = %name, "claim bound"),
        // gone, replaced (uid precondition), or bound meanwhile
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => {
            tracing::debug!(claim = %name, reason = %e.message, "claim not bound by the provisioner");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn reclaim(ctx: &AgentContext, pv: &PersistentVolume) -> Result<()> {
    let ours = provisioned_by_us(pv);
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let delete = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    if !(ours && released && delete) || pv.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let name = pv.metadata.name.clone().unwrap_or_default();
    let dir = volume_dir(ctx, &name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| NodeError::io(&dir, e))?;
    }
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(pv = %name, "released volume deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Watches claims and volumes until shutdown.
pub async fn provisioner_loop(ctx: Arc<AgentContext>, shutdown: CancellationToken) {
    let pvcs = watcher::watcher(
        Api::<PersistentVolumeClaim>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let pvs = watcher::watcher(
        Api::<PersistentVolume>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let mut pvcs = std::pin::pin!(pvcs);
    let mut pvs = std::pin::pin!(pvs);
    let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = pvcs.next() => match ev {
                Some(Ok(Event::Apply(pvc) | Event::InitApply(pvc))) if wants_provisioning(&pvc) => {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = provision(&ctx, &pvc).await {
                            tracing::warn!(error = %e, claim = ?pvc.metadata.name, "provisioning failed");
                        }
                        drop(slot);
                    });
                }
                Some(Err(e)) => tracing::warn!(error = %e, "pvc watch error"),
                None => return,
                _ => {}
            },
            ev = pvs.next() => match ev {
                Some(Ok(Event::Apply(pv) | Event::InitApply(pv))) => {
                    if claim_to_bind(&pv).is_some() {
                        let Ok(slot) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let ctx = ctx.clone();
                        let pv = pv.clone();
                        tokio::spawn(async move {
                            if let Err(e) = bind_claim(&ctx, &pv).await {
                                tracing::warn!(error = %e, pv = ?pv.metadata.name, "binding failed");
                            }
                            drop(slot);
                        });
                    }
                    if let Err(e) = reclaim(&ctx, &pv).await {
                        tracing::warn!(error = %e, pv = ?pv.metadata.name, "reclaim failed");
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "pv watch error"),
                None => return,
                _ => {}
            },
        }
    }
}
