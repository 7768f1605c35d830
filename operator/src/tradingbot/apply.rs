//! Apply step: the built objects go to the apiserver with server-side apply, one at a
//! time, and a failure of one never stops the others or the rest of the reconcile.
//!
//! Why: a single refused object (an immutable StatefulSet field, a name taken by an
//! object the bot does not own, a quantity the apiserver rejects) used to fail the
//! whole reconcile, so status, pause, hot reload and even an emergency stop stopped
//! working. Now every failure is collected into [`ApplyOutcome`] and reported as the
//! `ResourcesApplied` condition, and the emergency path does not use this step at all.
//!
//! Storage: `volumeClaimTemplates` of a StatefulSet are immutable. A changed
//! `spec.storage` keeps the existing template and instead expands the live claim when
//! the size grows and the StorageClass allows it; a shrink or a class change is refused
//! with the `StorageInSync` condition, and everything else keeps being reconciled.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::build::stateful_set::DATA_VOLUME;
use super::build::{DesiredObjects, Owner};
use crate::FIELD_MANAGER;
use crate::shared::apply::{ApplyError, Known, apply_owned, is_controlled_by};
use crate::shared::cache::{Stores, lookup};
use crate::shared::context::Context;
use crate::shared::quantity;

/// What the storage step found.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageOutcome {
    /// The claim template matches the spec (or there is no StatefulSet yet).
    InSync,
    /// The live claim was asked to grow to the spec's size.
    Expanding {
        /// Size the spec asks for.
        to: String,
    },
    /// The change cannot be made; the message says why and what to do.
    Refused(String),
}

/// Result of applying every owned object.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    /// Objects that could not be applied.
    pub failures: Vec<ApplyError>,
    /// What happened to a storage change.
    pub storage: Option<StorageOutcome>,
    /// Objects actually written (the rest were unchanged).
    pub writes: usize,
}

impl ApplyOutcome {
    /// Whether every object was applied.
    pub fn all_applied(&self) -> bool {
        self.failures.is_empty()
    }

    /// Whether a failure may pass on retry (a timeout, a conflict).
    pub fn has_transient_failure(&self) -> bool {
        self.failures.iter().any(|e| !e.is_permanent())
    }

    /// One line per failure, for a condition message.
    pub fn message(&self) -> String {
        self.failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Applies every owned object; never stops at the first failure.
pub async fn apply_all(ctx: &Context, owner: &Owner, desired: &mut DesiredObjects) -> ApplyOutcome {
    let uid = owner.reference.uid.as_str();
    let mut outcome = ApplyOutcome::default();
    match reconcile_storage(ctx, owner, &mut desired.stateful_set).await {
        Ok(storage) => outcome.storage = Some(storage),
        Err(e) => outcome.failures.push(e),
    }
    let client = &ctx.client;
    let mem = &ctx.applied;
    let ns = owner.namespace.as_str();
    let stores = ctx.cache.stores();
    let name_of = |m: &kube::api::ObjectMeta| m.name.clone().unwrap_or_default();
    let cm_name = name_of(&desired.config_map.metadata);
    let svc_name = name_of(&desired.service.metadata);
    let np_name = name_of(&desired.network_policy.metadata);
    let sts_name = name_of(&desired.stateful_set.metadata);
    let results = [
        apply_owned(
            client,
            FIELD_MANAGER,
            &desired.config_map,
            uid,
            stores.map_or(Known::Unknown, |s: &Stores| {
                Known::Cached(lookup(&s.configmaps, ns, &cm_name))
            }),
            mem,
        )
        .await,
        apply_owned(
            client,
            FIELD_MANAGER,
            &desired.service,
            uid,
            stores.map_or(Known::Unknown, |s| {
                Known::Cached(lookup(&s.services, ns, &svc_name))
            }),
            mem,
        )
        .await,
        apply_owned(
            client,
            FIELD_MANAGER,
            &desired.network_policy,
            uid,
            stores.map_or(Known::Unknown, |s| {
                Known::Cached(lookup(&s.network_policies, ns, &np_name))
            }),
            mem,
        )
        .await,
        apply_owned(
            client,
            FIELD_MANAGER,
            &desired.stateful_set,
            uid,
            stores.map_or(Known::Unknown, |s| {
                Known::Cached(lookup(&s.statefulsets, ns, &sts_name))
            }),
            mem,
        )
        .await,
    ];
    for r in results {
        match r {
            Ok(true) => outcome.writes += 1,
            Ok(false) => {}
            Err(e) => outcome.failures.push(e),
        }
    }
    outcome
}

/// The bot's StatefulSet: from the cache when there is one, else from the apiserver.
async fn current_stateful_set(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<StatefulSet>, kube::Error> {
    if let Some(stores) = ctx.cache.stores() {
        return Ok(lookup(&stores.statefulsets, namespace, name).map(|s| (*s).clone()));
    }
    Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
}

/// Sets the bot's StatefulSet to zero replicas with a merge patch of that one field.
///
/// Why not a full apply: the emergency path must work whatever else is wrong with the
/// spec or the StatefulSet template (an immutable change, an invalid quantity), so it
/// touches only `spec.replicas`. A StatefulSet that does not exist or is not the bot's
/// is left alone.
pub async fn scale_to_zero(ctx: &Context, owner: &Owner) -> Result<(), kube::Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = super::build::labels::workload_name(&owner.name);
    // A fresh read: this is the emergency path, and a lagging cache must not make it
    // skip the scale-down.
    let Some(existing) = api.get_opt(&name).await? else {
        return Ok(());
    };
    if !is_controlled_by(&existing, &owner.reference.uid) {
        return Ok(());
    }
    if existing.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
        return Ok(());
    }
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await?;
    Ok(())
}

/// Compares the desired claim template with the existing StatefulSet's. On a
/// difference, keeps the existing template in `desired` (so the apply succeeds) and
/// tries to expand the live claim.
async fn reconcile_storage(
    ctx: &Context,
    owner: &Owner,
    desired: &mut StatefulSet,
) -> Result<StorageOutcome, ApplyError> {
    let name = super::build::labels::workload_name(&owner.name);
    let kube_err = |source| ApplyError::Kube {
        kind: "StatefulSet".into(),
        name: name.clone(),
        source,
    };
    let Some(existing) = current_stateful_set(ctx, &owner.namespace, &name)
        .await
        .map_err(kube_err)?
    else {
        return Ok(StorageOutcome::InSync);
    };
    if !is_controlled_by(&existing, &owner.reference.uid) {
        // The apply refuses it with NotOwned.
        return Ok(StorageOutcome::InSync);
    }
    let old = existing
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default();
    let Some(spec) = desired.spec.as_mut() else {
        return Ok(StorageOutcome::InSync);
    };
    let new = spec.volume_claim_templates.clone().unwrap_or_default();
    if old == new {
        return Ok(StorageOutcome::InSync);
    }
    // The template is immutable: keep it exactly as it is.
    spec.volume_claim_templates = Some(old.clone());
    let decision = storage_change(claim_facts(&old), claim_facts(&new));
    match decision {
        StorageDecision::Keep => Ok(StorageOutcome::InSync),
        StorageDecision::Refuse(why) => Ok(StorageOutcome::Refused(why)),
        StorageDecision::Expand(to) => expand_claim(ctx, owner, &to).await,
    }
}

/// Size and class of the data claim template.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClaimFacts {
    /// Requested size as written.
    pub size: Option<String>,
    /// StorageClass name.
    pub class: Option<String>,
}

fn claim_facts(templates: &[PersistentVolumeClaim]) -> ClaimFacts {
    let Some(claim) = templates
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(DATA_VOLUME))
    else {
        return ClaimFacts::default();
    };
    let spec = claim.spec.as_ref();
    ClaimFacts {
        size: spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone()),
        class: spec.and_then(|s| s.storage_class_name.clone()),
    }
}

/// What to do about a changed claim template.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageDecision {
    /// Nothing that matters changed (e.g. only the access mode of an older bot).
    Keep,
    /// Grow the live claim to this size.
    Expand(String),
    /// Refuse, with the reason for the user.
    Refuse(String),
}

/// Pure decision on a storage change from `old` to `new`.
pub fn storage_change(old: ClaimFacts, new: ClaimFacts) -> StorageDecision {
    if new.class.is_some() && old.class != new.class {
        return StorageDecision::Refuse(format!(
            "spec.storage.storageClassName cannot change from {} to {} on an existing bot: the \
             database volume already exists (set it back, or back the bot up and restore it \
             into a new TradingBot)",
            old.class.as_deref().unwrap_or("the default class"),
            new.class.as_deref().unwrap_or("the default class"),
        ));
    }
    let (Some(old_size), Some(new_size)) = (old.size, new.size) else {
        return StorageDecision::Keep;
    };
    match (quantity::parse(&old_size), quantity::parse(&new_size)) {
        (Some(a), Some(b)) if b > a => StorageDecision::Expand(new_size),
        (Some(a), Some(b)) if b < a => StorageDecision::Refuse(format!(
            "spec.storage.size cannot shrink from {old_size} to {new_size}: a volume can only grow"
        )),
        (Some(_), Some(_)) => StorageDecision::Keep,
        _ => StorageDecision::Refuse(format!("spec.storage.size {new_size} is not a quantity")),
    }
}

async fn expand_claim(
    ctx: &Context,
    owner: &Owner,
    to: &str,
) -> Result<StorageOutcome, ApplyError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = format!(
        "{DATA_VOLUME}-{}-0",
        super::build::labels::workload_name(&owner.name)
    );
    let Some(pvc) = api
        .get_opt(&name)
        .await
        .map_err(|source| ApplyError::Kube {
            kind: "PersistentVolumeClaim".into(),
            name: name.clone(),
            source,
        })?
    else {
        return Ok(StorageOutcome::Refused(format!(
            "the data volume {name} does not exist, so it cannot grow to {to}"
        )));
    };
    let current = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| quantity::parse(&q.0));
    if current.is_some() && current >= quantity::parse(to) {
        return Ok(StorageOutcome::Expanding { to: to.to_string() });
    }
    let patch = json!({"spec": {"resources": {"requests": {"storage": to}}}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(StorageOutcome::Expanding { to: to.to_string() }),
        Err(kube::Error::Api(e)) if matches!(e.code, 403 | 422) => {
            Ok(StorageOutcome::Refused(format!(
                "cannot expand the data volume {name} to {to}: {} (the StorageClass must allow \
                 volume expansion; set spec.storage.size back to keep the bot as it is)",
                e.message
            )))
        }
        Err(source) => Err(ApplyError::Kube {
            kind: "PersistentVolumeClaim".into(),
            name,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(size: &str, class: Option<&str>) -> ClaimFacts {
        ClaimFacts {
            size: Some(size.into()),
            class: class.map(str::to_string),
        }
    }

    #[test]
    fn growing_expands_shrinking_and_class_changes_are_refused() {
        assert_eq!(
            storage_change(facts("1Gi", None), facts("2Gi", None)),
            StorageDecision::Expand("2Gi".into())
        );
        assert!(matches!(
            storage_change(facts("2Gi", None), facts("1Gi", None)),
            StorageDecision::Refuse(m) if m.contains("shrink")
        ));
        assert!(matches!(
            storage_change(facts("1Gi", Some("a")), facts("1Gi", Some("b"))),
            StorageDecision::Refuse(m) if m.contains("storageClassName")
        ));
        assert_eq!(
            storage_change(facts("1Gi", None), facts("1024Mi", None)),
            StorageDecision::Keep
        );
    }
}
