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
//!
//! Pod template (maintenance windows): in the same way, a change of the pod template
//! (version, image, resources, the checksum of the restart-only configuration — any
//! change that would roll the pod) can be *held*: when the caller says a maintenance
//! window forbids a restart now, the existing template is kept in the apply (and the
//! existing ConfigMap content, so a pod that restarts on its own meanwhile still gets
//! the configuration its template was made for), everything else is applied, and
//! [`TemplateOutcome::Held`] says what waits. Whether the template changed is read
//! from an annotation on the StatefulSet itself (not on its template, so writing it
//! rolls nothing) holding the hash of the template the operator last applied; a
//! StatefulSet from before that annotation is compared by image, configuration
//! checksum and resources.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::build::labels::CONFIG_CHECKSUM_ANNOTATION;
use super::build::stateful_set::DATA_VOLUME;
use super::build::{DesiredObjects, Owner};
use crate::FIELD_MANAGER;
use crate::shared::apply::{ApplyError, Known, apply_owned, is_controlled_by};
use crate::shared::cache::{Stores, content_hash, lookup, lookup_unpacked};
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

/// Annotation on the bot's StatefulSet with the hash of the pod template the operator
/// last applied (on the StatefulSet, not the template, so it never rolls the pod).
pub const POD_TEMPLATE_HASH_ANNOTATION: &str = "trading.iq720.io/pod-template-hash";

/// What happened to the pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateOutcome {
    /// The template is unchanged, new, or its change was applied (`rolled`: the pod
    /// restarts with it).
    Applied {
        /// Whether a changed template was applied (the pod rolls).
        rolled: bool,
    },
    /// A pod-restarting change waits for a maintenance window; the existing template
    /// was kept.
    Held {
        /// What changed, for the condition message.
        changes: Vec<String>,
    },
}

/// Result of applying every owned object.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    /// Objects that could not be applied.
    pub failures: Vec<ApplyError>,
    /// What happened to a storage change.
    pub storage: Option<StorageOutcome>,
    /// What happened to the pod template (None: the StatefulSet could not be read).
    pub template: Option<TemplateOutcome>,
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

/// Applies every owned object; never stops at the first failure. `hold_template`:
/// a maintenance window forbids restarting the pod now, so a changed pod template is
/// not applied (see the module documentation).
pub async fn apply_all(
    ctx: &Context,
    owner: &Owner,
    desired: &mut DesiredObjects,
    hold_template: bool,
) -> ApplyOutcome {
    let uid = owner.reference.uid.as_str();
    let mut outcome = ApplyOutcome::default();
    // One read of the StatefulSet for the storage and the template step.
    let sts_name = super::build::labels::workload_name(&owner.name);
    match current_stateful_set(ctx, &owner.namespace, &sts_name).await {
        Ok(existing) => {
            let ours = existing.filter(|e| is_controlled_by(e, &owner.reference.uid));
            match reconcile_storage(ctx, owner, ours.as_ref(), &mut desired.stateful_set).await {
                Ok(storage) => outcome.storage = Some(storage),
                Err(e) => outcome.failures.push(e),
            }
            match reconcile_template(ctx, owner, ours.as_ref(), desired, hold_template).await {
                Ok(template) => outcome.template = Some(template),
                Err(e) => outcome.failures.push(e),
            }
        }
        Err(source) => {
            record_template_hash(&mut desired.stateful_set);
            outcome.failures.push(ApplyError::Kube {
                kind: "StatefulSet".into(),
                name: sts_name,
                source,
            });
        }
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
                Known::Cached(
                    lookup(&s.configmaps, ns, &cm_name).map(|o| Box::new(o.metadata.clone())),
                )
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
                Known::Cached(
                    lookup(&s.services, ns, &svc_name).map(|o| Box::new(o.metadata.clone())),
                )
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
                Known::Cached(
                    lookup(&s.network_policies, ns, &np_name).map(|o| Box::new(o.metadata.clone())),
                )
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
                Known::Cached(
                    lookup(&s.statefulsets, ns, &sts_name).map(|o| Box::new(o.metadata.clone())),
                )
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
        return Ok(lookup_unpacked(&stores.statefulsets, namespace, name));
    }
    Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
}

/// The bot's ConfigMap with its data, from the apiserver (the cache holds only its
/// metadata; this is read only while a window holds a configuration change).
async fn current_config_map(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<ConfigMap>, kube::Error> {
    Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
}

/// Hash of a pod template as built (the value of [`POD_TEMPLATE_HASH_ANNOTATION`]).
pub fn template_hash(sts: &StatefulSet) -> String {
    let template = sts.spec.as_ref().map(|s| &s.template);
    content_hash(&serde_json::to_value(template).unwrap_or_default())
}

fn container_facts(sts: &StatefulSet) -> (Option<String>, Option<String>, serde_json::Value) {
    let Some(spec) = sts.spec.as_ref() else {
        return (None, None, serde_json::Value::Null);
    };
    let checksum = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_CHECKSUM_ANNOTATION))
        .cloned();
    let container = spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first());
    let image = container.and_then(|c| c.image.clone());
    // An empty requirements object and none at all are the same thing.
    let resources = container
        .and_then(|c| c.resources.as_ref())
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        .unwrap_or(serde_json::Value::Null);
    (image, checksum, resources)
}

/// Pure: what would restart the pod if `desired` replaced `existing`'s template
/// (empty: nothing). `desired_hash` is [`template_hash`] of `desired`.
pub fn template_changes(
    existing: &StatefulSet,
    desired: &StatefulSet,
    desired_hash: &str,
) -> Vec<String> {
    let recorded = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_TEMPLATE_HASH_ANNOTATION));
    let (old_image, old_sum, old_res) = container_facts(existing);
    let (new_image, new_sum, new_res) = container_facts(desired);
    let mut changes = Vec::new();
    if old_image != new_image {
        changes.push(format!(
            "image {} -> {}",
            old_image.as_deref().unwrap_or("none"),
            new_image.as_deref().unwrap_or("none")
        ));
    }
    if old_sum != new_sum {
        changes.push("configuration that needs a restart (e.g. pairs, mode, exchange)".into());
    }
    if old_res != new_res {
        changes.push("resources".into());
    }
    match recorded {
        Some(h) if h == desired_hash => Vec::new(),
        Some(_) if changes.is_empty() => vec!["the pod template".into()],
        _ => changes,
    }
}

/// Records the pod template's hash on the StatefulSet (an annotation); returns it.
fn record_template_hash(sts: &mut StatefulSet) -> String {
    let hash = template_hash(sts);
    sts.metadata
        .annotations
        .get_or_insert_default()
        .insert(POD_TEMPLATE_HASH_ANNOTATION.to_string(), hash.clone());
    hash
}

/// Records the desired template's hash on the StatefulSet and, when a window holds
/// restarts and the template changed, keeps the `existing` template (the bot's
/// StatefulSet, when it exists and is ours) and ConfigMap data.
async fn reconcile_template(
    ctx: &Context,
    owner: &Owner,
    existing: Option<&StatefulSet>,
    desired: &mut DesiredObjects,
    hold: bool,
) -> Result<TemplateOutcome, ApplyError> {
    let name = super::build::labels::workload_name(&owner.name);
    let hash = record_template_hash(&mut desired.stateful_set);
    let Some(existing) = existing else {
        // New (or not ours: the apply refuses it with NotOwned).
        return Ok(TemplateOutcome::Applied { rolled: false });
    };
    let changes = template_changes(existing, &desired.stateful_set, &hash);
    if changes.is_empty() {
        return Ok(TemplateOutcome::Applied { rolled: false });
    }
    if !hold {
        return Ok(TemplateOutcome::Applied { rolled: true });
    }
    let config_changed = container_facts(existing).1 != container_facts(&desired.stateful_set).1;
    // The running template, whole: the cache keeps a slimmed one.
    let full = Api::<StatefulSet>::namespaced(ctx.client.clone(), &owner.namespace)
        .get_opt(&name)
        .await
        .map_err(|source| ApplyError::Kube {
            kind: "StatefulSet".into(),
            name: name.clone(),
            source,
        })?
        .filter(|e| is_controlled_by(e, &owner.reference.uid));
    let (Some(old_spec), Some(new_spec)) = (
        full.as_ref().and_then(|f| f.spec.as_ref()),
        desired.stateful_set.spec.as_mut(),
    ) else {
        return Ok(TemplateOutcome::Applied { rolled: true });
    };
    new_spec.template = old_spec.template.clone();
    let annotations = desired
        .stateful_set
        .metadata
        .annotations
        .get_or_insert_default();
    match existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_TEMPLATE_HASH_ANNOTATION))
    {
        Some(old) => {
            annotations.insert(POD_TEMPLATE_HASH_ANNOTATION.to_string(), old.clone());
        }
        None => {
            annotations.remove(POD_TEMPLATE_HASH_ANNOTATION);
        }
    }
    if config_changed {
        let cm_name = desired.config_map.metadata.name.clone().unwrap_or_default();
        let current = current_config_map(ctx, &owner.namespace, &cm_name)
            .await
            .map_err(|source| ApplyError::Kube {
                kind: "ConfigMap".into(),
                name: cm_name.clone(),
                source,
            })?;
        if let Some(cm) = current.filter(|c| is_controlled_by(c, &owner.reference.uid)) {
            desired.config_map.data = cm.data;
            desired.config_map.binary_data = cm.binary_data;
        }
    }
    Ok(TemplateOutcome::Held { changes })
}

/// Sets the bot's StatefulSet to zero replicas with a merge patch of that one field.
///
/// Why not a full apply: the emergency path must work whatever else is wrong with the
/// spec or the StatefulSet template (an immutable change, an invalid quantity), so it
/// touches only `spec.replicas`. A StatefulSet that does not exist or is not the bot's
/// is left alone.
pub async fn scale_to_zero(ctx: &Context, owner: &Owner) -> Result<(), kube::Error> {
    scale_down(ctx, owner, false).await
}

/// [`scale_to_zero`] for a bot whose stop completed before: a StatefulSet the cache
/// shows at zero replicas is left as it is without a read. Someone scaling it up later
/// is a change the watch delivers, and that reconcile scales it down again.
pub async fn keep_at_zero(ctx: &Context, owner: &Owner) -> Result<(), kube::Error> {
    scale_down(ctx, owner, true).await
}

async fn scale_down(ctx: &Context, owner: &Owner, trust_zero: bool) -> Result<(), kube::Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = super::build::labels::workload_name(&owner.name);
    // The cache may only save the read when it says "ours and running": a lagging
    // cache must never make the stop itself skip the scale-down, so "already at
    // zero" or "not there" is confirmed by a fresh read (unless `trust_zero`).
    let cached = ctx
        .cache
        .stores()
        .and_then(|s| lookup_unpacked(&s.statefulsets, &owner.namespace, &name))
        .filter(|s| is_controlled_by(s, &owner.reference.uid));
    let cached_zero = cached
        .as_ref()
        .is_some_and(|s| s.spec.as_ref().and_then(|s| s.replicas) == Some(0));
    if trust_zero && cached_zero {
        return Ok(());
    }
    if cached.is_none() || cached_zero {
        let Some(existing) = api.get_opt(&name).await? else {
            return Ok(());
        };
        if !is_controlled_by(&existing, &owner.reference.uid) {
            return Ok(());
        }
        if existing.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
            return Ok(());
        }
    }
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await?;
    Ok(())
}

/// Compares the desired claim template with the `existing` StatefulSet's (the bot's,
/// when it exists and is ours). On a difference, keeps the existing template in
/// `desired` (so the apply succeeds) and tries to expand the live claim.
async fn reconcile_storage(
    ctx: &Context,
    owner: &Owner,
    existing: Option<&StatefulSet>,
    desired: &mut StatefulSet,
) -> Result<StorageOutcome, ApplyError> {
    // New, or not ours (the apply refuses it with NotOwned): nothing to compare.
    let Some(existing) = existing else {
        return Ok(StorageOutcome::InSync);
    };
    let old = existing
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default();
    let Some(spec) = desired.spec.as_mut() else {
        return Ok(StorageOutcome::InSync);
    };
    let new = spec.volume_claim_templates.clone().unwrap_or_default();
    if same_claims(&old, &new) {
        // Left as built: the next apply's content (and hash) is the first one's.
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

/// Whether the stored claim templates are the desired ones as the apiserver keeps
/// them: it adds `status` (phase Pending) and `volumeMode: Filesystem` to each.
///
/// Why it matters: comparing them whole found every new StatefulSet "changed" at its
/// next reconcile, so the stored templates (with those defaults) replaced the built
/// ones and the StatefulSet was applied a second time, with nothing to change: 1,000
/// extra PATCHes while 1,000 new bots converged (`make bench-scale`).
fn same_claims(stored: &[PersistentVolumeClaim], desired: &[PersistentVolumeClaim]) -> bool {
    stored.len() == desired.len()
        && stored.iter().zip(desired).all(|(s, d)| {
            let mut s = s.clone();
            s.status = None;
            if let (Some(stored_spec), Some(desired_spec)) = (s.spec.as_mut(), d.spec.as_ref())
                && desired_spec.volume_mode.is_none()
                && stored_spec.volume_mode.as_deref() == Some("Filesystem")
            {
                stored_spec.volume_mode = None;
            }
            s == *d
        })
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sts(version: &str, pairs: &[&str]) -> StatefulSet {
        let spec = serde_json::from_value(json!({"version": version, "pairs": pairs})).unwrap();
        let mut bot = iq720_crds::TradingBot::new("alpha", spec);
        bot.metadata.namespace = Some("trading".into());
        bot.metadata.uid = Some("1234".into());
        super::super::build::desired(&bot, 1, &Default::default())
            .unwrap()
            .stateful_set
    }

    fn recorded(mut s: StatefulSet) -> StatefulSet {
        let h = template_hash(&s);
        s.metadata
            .annotations
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH_ANNOTATION.into(), h);
        s
    }

    #[test]
    fn a_slim_cached_stateful_set_still_tells_template_and_storage_changes() {
        let built = sts("0.1.0", &["BTC/USDT"]);
        let mut cached = recorded(built.clone());
        let full = serde_json::to_vec(&cached).unwrap().len();
        crate::shared::cache::slim_stateful_set(&mut cached);
        let slim = serde_json::to_vec(&cached).unwrap().len();
        assert!(slim * 2 < full, "{full} bytes -> {slim} bytes");
        // as the cache keeps it
        let cached = crate::shared::compact::Compact::<StatefulSet>::pack(cached)
            .unpack()
            .unwrap();
        assert!(template_changes(&cached, &built, &template_hash(&built)).is_empty());
        let new = sts("0.2.0", &["ETH/USDT"]);
        let c = template_changes(&cached, &new, &template_hash(&new));
        assert_eq!(c.len(), 2, "image and configuration: {c:?}");
        let claims = |s: &StatefulSet| {
            serde_json::to_value(s.spec.as_ref().map(|s| &s.volume_claim_templates)).unwrap()
        };
        assert_eq!(
            claims(&cached),
            claims(&built),
            "storage checks read the claims"
        );
        assert_eq!(
            cached.spec.as_ref().and_then(|s| s.replicas),
            built.spec.as_ref().and_then(|s| s.replicas)
        );
    }

    #[test]
    fn claim_templates_read_back_with_server_defaults_are_the_built_ones() {
        let built = sts("0.1.0", &["BTC/USDT"])
            .spec
            .unwrap()
            .volume_claim_templates
            .unwrap();
        // as the apiserver returns a created StatefulSet's claim templates
        let stored = |volume_mode: &str, size: &str| -> Vec<PersistentVolumeClaim> {
            let mut v = serde_json::to_value(&built).unwrap();
            v[0]["spec"]["volumeMode"] = json!(volume_mode);
            v[0]["spec"]["resources"]["requests"]["storage"] = json!(size);
            v[0]["status"] = json!({"phase": "Pending"});
            serde_json::from_value(v).unwrap()
        };
        let size = built[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0
            .clone();
        assert_ne!(
            stored("Filesystem", &size),
            built,
            "the defaults make them differ whole"
        );
        assert!(same_claims(&stored("Filesystem", &size), &built));
        assert!(
            !same_claims(&stored("Filesystem", "9Gi"), &built),
            "a size change is one"
        );
        assert!(
            !same_claims(&stored("Block", &size), &built),
            "so is another volume mode"
        );
        assert!(!same_claims(&[], &built));
    }

    #[test]
    fn template_changes_name_what_restarts_the_pod() {
        let old = recorded(sts("0.1.0", &["BTC/USDT"]));
        let same = sts("0.1.0", &["BTC/USDT"]);
        assert!(template_changes(&old, &same, &template_hash(&same)).is_empty());
        let new = sts("0.2.0", &["ETH/USDT"]);
        let c = template_changes(&old, &new, &template_hash(&new));
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            c[0].contains("0.1.0 -> ") && c[0].contains(":0.2.0"),
            "{c:?}"
        );
        assert!(c[1].contains("restart"), "{c:?}");
        // A StatefulSet from before the hash annotation is compared by its facts.
        let legacy = sts("0.1.0", &["BTC/USDT"]);
        assert!(template_changes(&legacy, &same, &template_hash(&same)).is_empty());
        assert_eq!(
            template_changes(&legacy, &new, &template_hash(&new)).len(),
            2
        );
    }

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
