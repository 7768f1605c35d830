//! Cached reads and remembered writes, so that the operator's cost is proportional to
//! change, not to the number of bots times the poll rate.
//!
//! Why: every reconcile of every bot used to GET its token Secret and Pod and send four
//! server-side apply PATCHes even when nothing had changed (about 34 no-op writes per
//! bot per minute). Now:
//! - [`ObjectCache`] holds reflector stores (filled by the controllers' own watches, so
//!   no extra watch) that reads go to instead of the apiserver; StatefulSets and Pods
//!   are slimmed and kept [`Compact`] (typed metadata, the rest as JSON);
//! - [`AppliedMemory`] remembers, per object, the hash of the content this process last
//!   applied and the `generation`/`resourceVersion` the apiserver answered; an apply is
//!   skipped while the desired content and the cached object are both unchanged. A
//!   change by anyone else (a new generation or resourceVersion) or a new desired
//!   content applies again. After a restart the memory is empty: each object is applied
//!   once, then the memory takes over.
//! - [`TokenCache`] keeps each bot's API token after the first read of its Secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use sha2::{Digest, Sha256};

use super::cached_pod::CachedPod;
use super::compact::{Compact, Summary};

/// Reflector stores of the objects the operator owns or reads on every reconcile.
#[derive(Clone)]
pub struct Stores {
    /// StatefulSets labelled as managed by the operator, slimmed by
    /// [`slim_stateful_set`] and kept [`Compact`].
    pub statefulsets: Store<Compact<StatefulSet>>,
    /// ConfigMaps labelled as managed by the operator (metadata only: an apply needs
    /// no more, and the rare read of the data goes to the apiserver).
    pub configmaps: Store<PartialObjectMeta<ConfigMap>>,
    /// Services labelled as managed by the operator (metadata only).
    pub services: Store<PartialObjectMeta<Service>>,
    /// NetworkPolicies labelled as managed by the operator (metadata only).
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    /// Bot pods, slimmed by [`slim_pod`] and kept [`Compact`] with the facts every
    /// poll reads.
    pub pods: Store<CachedPod>,
}

/// Access to the stores once a controller has started its watches.
#[derive(Clone, Default)]
pub struct ObjectCache {
    inner: Arc<OnceLock<Stores>>,
}

impl ObjectCache {
    /// Installs the stores (first call wins).
    pub fn install(&self, stores: Stores) {
        let _ = self.inner.set(stores);
    }

    /// The stores, once installed.
    pub fn stores(&self) -> Option<&Stores> {
        self.inner.get()
    }
}

/// A reflector store that one controller fills and others read, installed once its
/// watch has the first full list (before that, readers list from the apiserver: an
/// empty store must never read as "none").
pub struct SharedStore<K: Resource<DynamicType = ()> + Clone + 'static> {
    inner: Arc<OnceLock<Store<K>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for SharedStore<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Default for SharedStore<K> {
    fn default() -> Self {
        Self {
            inner: Arc::new(OnceLock::new()),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> SharedStore<K> {
    /// Installs the store (first call wins).
    pub fn install(&self, store: Store<K>) {
        let _ = self.inner.set(store);
    }

    /// The store, once installed.
    pub fn store(&self) -> Option<&Store<K>> {
        self.inner.get()
    }

    /// Passes a reflector's event stream through and installs `store` (the reflector's
    /// reader) when the stream has delivered its first full list.
    ///
    /// Why not `Store::wait_until_ready` in a task of its own: kube-runtime's ready
    /// signal is a one-shot channel that keeps only the last waiter's waker, and a
    /// controller whose main store this is waits on it too; whichever of the two
    /// registered first is never woken. The controller won, the task waited forever,
    /// and every reconcile listed from the apiserver what its store held (found with
    /// `perf` at 1,000 bots: a LIST of MaintenanceWindows at every poll).
    pub fn install_on_first_list<S>(
        &self,
        events: S,
        store: Store<K>,
    ) -> impl futures::Stream<Item = S::Item> + Send + use<S, K>
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
        K: Send + Sync,
    {
        let shared = self.clone();
        events.inspect_ok(move |event| {
            if matches!(event, watcher::Event::InitDone) {
                shared.install(store.clone());
            }
        })
    }
}

/// MaintenanceWindows: filled by the MaintenanceWindow controller, read by the gate.
pub type WindowStore = SharedStore<iq720_crds::MaintenanceWindow>;

/// TradingBots: filled by the TradingBot controller's watch (the one full copy of the
/// bots in the operator, packed), read by the MaintenanceWindow controller.
pub type BotStore = SharedStore<super::cached_bot::CachedBot>;

/// Looks an object up in a store by namespace and name.
pub fn lookup<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// Looks a compact object up in a store by namespace and name and unpacks it.
pub fn lookup_unpacked<K, S>(store: &Store<Compact<K, S>>, namespace: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + 'static,
    S: Summary<K>,
{
    lookup(store, namespace, name)?.unpack()
}

/// The objects of one namespace: from `store` once it has its first full list (an
/// empty store before that must never read as "none"), else listed from the apiserver.
pub async fn in_namespace<K>(
    store: Option<&Store<K>>,
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<Arc<K>>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + 'static,
{
    if let Some(store) = store {
        return Ok(store
            .state()
            .into_iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
            .collect());
    }
    let api: kube::Api<K> = kube::Api::namespaced(client.clone(), namespace);
    Ok(api
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect())
}

/// What an apply left behind.
///
/// Small on purpose: four entries per bot (about 0.5 MiB at 1,000 bots as it is; a
/// heap profile had the earlier strings at 1 KiB a bot, README "Scale").
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    /// SHA-256 of the applied content (32 bytes, not 64 hex characters).
    hash: Digest32,
    generation: Option<i64>,
    resource_version: Option<Version>,
    /// The object as the cache showed it when this process applied (generation,
    /// resourceVersion): a cache still showing that has not caught up with the apply.
    before: Option<(Option<i64>, Option<Version>)>,
    /// Hash of the uid of the object's controller owner, so a deleted owner's entries
    /// can go (two uids sharing a hash would only cost an extra apply).
    owner: Option<u64>,
}

impl Applied {
    /// Whether the cached object is the one this process last applied, or the one it
    /// applied over (the cache has not caught up with the apply yet).
    fn matches(&self, cached: &kube::api::ObjectMeta) -> bool {
        let same =
            |generation: Option<i64>, rv: &Option<Version>| match (generation, cached.generation) {
                (Some(a), Some(b)) => a == b,
                _ => match (rv, cached.resource_version.as_deref()) {
                    (Some(v), Some(c)) => v.is(c),
                    _ => false,
                },
            };
        same(self.generation, &self.resource_version)
            || self
                .before
                .as_ref()
                .is_some_and(|(generation, rv)| same(*generation, rv))
    }
}

/// A resourceVersion as the apply memory keeps it: opaque, only compared for
/// equality, so the decimal number the apiserver sends in practice is kept as a
/// number (no allocation) and any other text as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Version {
    /// A canonical decimal number (no sign, no leading zero).
    Number(u64),
    /// Anything else, verbatim.
    Text(Box<str>),
}

impl Version {
    fn of(rv: &str) -> Self {
        match canonical_number(rv) {
            Some(n) => Self::Number(n),
            None => Self::Text(rv.into()),
        }
    }

    /// Whether `rv` is this very string.
    fn is(&self, rv: &str) -> bool {
        match self {
            Self::Number(n) => canonical_number(rv) == Some(*n),
            Self::Text(t) => **t == *rv,
        }
    }
}

/// `rv` as a number when it is exactly the decimal rendering of one.
fn canonical_number(rv: &str) -> Option<u64> {
    let digits = !rv.is_empty() && rv.bytes().all(|b| b.is_ascii_digit());
    if !digits || (rv.len() > 1 && rv.starts_with('0')) {
        return None;
    }
    rv.parse().ok()
}

/// A process-local hash of an owner's uid.
fn owner_hash(uid: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    uid.hash(&mut h);
    h.finish()
}

/// The content hash of a desired object (its JSON).
pub fn content_hash(value: &serde_json::Value) -> String {
    bytes_hash(value.to_string().as_bytes())
}

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// SHA-256 of serialised content, as bytes.
pub fn bytes_digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// SHA-256 (hex) of serialised content.
pub fn bytes_hash(bytes: &[u8]) -> String {
    let digest = bytes_digest(bytes);
    let mut hex = String::with_capacity(2 * digest.len());
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Remembers what this process applied, per object.
#[derive(Clone, Default)]
pub struct AppliedMemory {
    inner: Arc<Mutex<HashMap<String, Applied>>>,
}

fn key<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", K::kind(&()))
}

impl AppliedMemory {
    /// Whether applying `hash` to the object can be skipped: this process applied the
    /// same content last, and the cached object has not changed since (same generation
    /// where the kind has one, else same resourceVersion). When it cannot, a debug log
    /// says why.
    ///
    /// A cache that still shows the object as it was before this process's last apply
    /// is *behind*, not changed by someone else (anyone else's write makes a new
    /// resourceVersion, which is neither). Why this matters: at 1,000 bots on two
    /// cores the apiserver closed the operator's ConfigMap watch as unresponsive, the
    /// store lagged for minutes behind the operator's own applies, and every poll
    /// re-applied the bot's ConfigMap (2,212 no-op applies in an idle 10 minutes).
    pub fn unchanged<K: Resource<DynamicType = ()>>(
        &self,
        cached: Option<&kube::api::ObjectMeta>,
        namespace: &str,
        name: &str,
        hash: &Digest32,
    ) -> bool {
        let why = |reason: &str| {
            tracing::debug!(kind = %K::kind(&()), namespace, name, reason, "applying");
            false
        };
        let Some(cached) = cached else {
            return why("not in the cache");
        };
        let Ok(map) = self.inner.lock() else {
            return false;
        };
        let Some(prev) = map.get(&key::<K>(namespace, name)) else {
            return why("not applied by this process yet");
        };
        if prev.hash != *hash {
            return why("the desired content changed");
        }
        prev.matches(cached) || why("the cached object differs from the one last applied")
    }

    /// Records an apply of `hash` answered by the apiserver with `stored`; `before`
    /// is the object as the cache showed it when the apply was decided (`None`: new).
    pub fn record<K: Resource<DynamicType = ()>>(
        &self,
        stored: &K,
        before: Option<&kube::api::ObjectMeta>,
        hash: &Digest32,
    ) {
        let meta = stored.meta();
        let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
            return;
        };
        if let Ok(mut map) = self.inner.lock() {
            map.insert(
                key::<K>(ns, name),
                Applied {
                    hash: *hash,
                    generation: meta.generation,
                    resource_version: meta.resource_version.as_deref().map(Version::of),
                    before: before
                        .map(|b| (b.generation, b.resource_version.as_deref().map(Version::of))),
                    owner: meta
                        .owner_references
                        .iter()
                        .flatten()
                        .find(|r| r.controller == Some(true))
                        .map(|r| owner_hash(&r.uid)),
                },
            );
        }
    }

    /// Forgets every object controlled by the owner with `owner_uid` (a deleted bot).
    pub fn forget_owner(&self, owner_uid: &str) {
        if let Ok(mut map) = self.inner.lock() {
            let owner = owner_hash(owner_uid);
            map.retain(|_, a| a.owner != Some(owner));
        }
    }
}

/// Drops from a cached bot pod what no reader of the cache uses, so the store costs
/// a fraction of the full object per bot.
///
/// Kept: metadata (but managedFields and annotations; the cache's [`CachedPod`] keeps
/// the bot label in its facts instead of the labels), the containers' and init
/// containers' name, image and args (the rollout gate compares images, the restore
/// step reads which backup key an init container was rendered for) and the whole
/// status (address, readiness, waiting reasons, init container results). Dropped:
/// volumes, environment, mounts, probes, resources and security settings.
pub fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let node_name = spec.node_name.take();
    slim_pod_spec(spec, false);
    spec.node_name = node_name;
}

/// Keeps of a pod spec its containers' and init containers' name, image and args (and
/// the containers' resources when `resources`): all that readers of a cached pod or pod
/// template use.
fn slim_pod_spec(spec: &mut k8s_openapi::api::core::v1::PodSpec, resources: bool) {
    let slim = |c: &k8s_openapi::api::core::v1::Container, resources: bool| {
        k8s_openapi::api::core::v1::Container {
            name: c.name.clone(),
            image: c.image.clone(),
            args: c.args.clone(),
            resources: if resources { c.resources.clone() } else { None },
            ..Default::default()
        }
    };
    let containers = spec.containers.iter().map(|c| slim(c, resources)).collect();
    let init_containers = spec
        .init_containers
        .as_ref()
        .map(|cs| cs.iter().map(|c| slim(c, false)).collect());
    *spec = k8s_openapi::api::core::v1::PodSpec {
        containers,
        init_containers,
        ..Default::default()
    };
}

/// Drops from a cached bot StatefulSet what no reader of the cache uses.
///
/// Kept: metadata (but managedFields and labels; its annotations hold the applied
/// template's hash), replicas, service name, the volume claim templates whole (storage
/// changes; an apply sends them back unchanged, so nothing of them may go), the pod
/// template's annotations (the config checksum), its containers' name, image, args and
/// resources and its init containers' name, image and args (what a template change is
/// told by), and the status. Dropped besides: the selector and the template's labels
/// (the bot's labels, read from the TradingBot when needed). Whoever needs the whole
/// pod template (a maintenance window holding a change keeps the running one) reads
/// it from the apiserver.
///
/// Why so thin: every label map is a B-tree node of about 0.5 KiB, and at 1,000 bots
/// each KiB kept per object is a MiB of the operator's memory (`make bench-scale`).
pub fn slim_stateful_set(sts: &mut StatefulSet) {
    sts.metadata.managed_fields = None;
    sts.metadata.labels = None;
    let Some(spec) = sts.spec.as_mut() else {
        return;
    };
    spec.selector = Default::default();
    if let Some(meta) = spec.template.metadata.as_mut() {
        meta.labels = None;
    }
    if let Some(pod) = spec.template.spec.as_mut() {
        slim_pod_spec(pod, true);
    }
}

/// Drops from a cached object's metadata what no reader of a metadata-only store
/// uses: managedFields, labels (the stores are selected by label already) and the uid
/// (the store and the owner mapping key objects by name; an apply needs the owner,
/// generation, resourceVersion and annotations).
pub fn slim_meta(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.labels = None;
    meta.uid = None;
}

/// Per object, the hash of a desired state last confirmed in a live process and when,
/// so that a check that found nothing to do is not repeated at every poll.
#[derive(Clone, Default)]
pub struct ConfirmedMemory {
    inner: Arc<Mutex<HashMap<(String, String), Confirmed>>>,
}

/// A confirmed hash and when it was confirmed.
type Confirmed = (String, std::time::Instant);

impl ConfirmedMemory {
    /// Whether `hash` must be checked again for the object: it was never confirmed,
    /// a different hash was, the confirmation is older than `interval`, or the live
    /// process is younger than the confirmation (`uptime`; unknown: always check).
    pub fn due(
        &self,
        namespace: &str,
        name: &str,
        hash: &str,
        uptime: Option<std::time::Duration>,
        interval: std::time::Duration,
    ) -> bool {
        let Ok(map) = self.inner.lock() else {
            return true;
        };
        let Some((confirmed, at)) = map.get(&(namespace.to_string(), name.to_string())) else {
            return true;
        };
        let age = at.elapsed();
        confirmed != hash || age >= interval || uptime.is_none_or(|u| u <= age)
    }

    /// Records that `hash` was confirmed now.
    pub fn confirm(&self, namespace: &str, name: &str, hash: &str) {
        if let Ok(mut map) = self.inner.lock() {
            map.insert(
                (namespace.to_string(), name.to_string()),
                (hash.to_string(), std::time::Instant::now()),
            );
        }
    }

    /// Forgets an object (deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut map) = self.inner.lock() {
            map.remove(&(namespace.to_string(), name.to_string()));
        }
    }
}

/// Bot API tokens by namespace/name, read once from their Secrets.
#[derive(Clone, Default)]
pub struct TokenCache {
    inner: Arc<Mutex<HashMap<(String, String), String>>>,
}

impl TokenCache {
    /// The cached token of a bot.
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        self.inner
            .lock()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Caches a bot's token.
    pub fn put(&self, namespace: &str, name: &str, token: &str) {
        if let Ok(mut map) = self.inner.lock() {
            map.insert((namespace.to_string(), name.to_string()), token.to_string());
        }
    }

    /// Drops a bot's token (its Secret changed, or the bot refused it).
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut map) = self.inner.lock() {
            map.remove(&(namespace.to_string(), name.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::ResourceExt;
    use kube::api::ObjectMeta;

    const H: Digest32 = [1; 32];
    const H2: Digest32 = [2; 32];

    fn owned_by(uid: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference {
            uid: uid.into(),
            controller: Some(true),
            ..OwnerReference::default()
        }])
    }

    fn cm(rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("b-config".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                owner_references: owned_by("uid-b"),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn sts(generation: i64, rv: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("b".into()),
                namespace: Some("ns".into()),
                generation: Some(generation),
                resource_version: Some(rv.into()),
                owner_references: owned_by("uid-b"),
                ..ObjectMeta::default()
            },
            ..StatefulSet::default()
        }
    }

    #[test]
    fn a_kept_resource_version_is_the_same_string_only() {
        for rv in ["1", "0", "42", "18446744073709551615"] {
            assert_eq!(
                Version::of(rv),
                Version::Number(rv.parse().unwrap_or(0)),
                "{rv}"
            );
            assert!(Version::of(rv).is(rv), "{rv}");
        }
        for (kept, other) in [
            ("42", "042"),
            ("42", "+42"),
            ("42", "43"),
            ("0", "00"),
            ("7", ""),
        ] {
            assert!(!Version::of(kept).is(other), "{kept} is not {other}");
            assert!(!Version::of(other).is(kept), "{other} is not {kept}");
        }
        for rv in ["042", "+42", "", "abc", "18446744073709551616", "12a"] {
            assert_eq!(Version::of(rv), Version::Text(rv.into()), "{rv:?}");
            assert!(Version::of(rv).is(rv), "{rv:?}");
        }
    }

    #[test]
    fn skips_only_when_content_and_object_are_unchanged() {
        let m = AppliedMemory::default();
        assert!(
            !m.unchanged::<ConfigMap>(Some(&cm("1").metadata), "ns", "b-config", &H),
            "never applied"
        );
        m.record(&cm("1"), None, &H);
        assert!(m.unchanged::<ConfigMap>(Some(&cm("1").metadata), "ns", "b-config", &H));
        assert!(
            !m.unchanged::<ConfigMap>(Some(&cm("1").metadata), "ns", "b-config", &H2),
            "new content"
        );
        assert!(
            !m.unchanged::<ConfigMap>(Some(&cm("2").metadata), "ns", "b-config", &H),
            "changed by someone"
        );
        assert!(
            !m.unchanged::<ConfigMap>(None, "ns", "b-config", &H),
            "deleted"
        );
        // StatefulSets: the status changes the resourceVersion, not the generation
        m.record(&sts(3, "10"), None, &H);
        assert!(m.unchanged::<StatefulSet>(Some(&sts(3, "11").metadata), "ns", "b", &H));
        assert!(!m.unchanged::<StatefulSet>(Some(&sts(4, "12").metadata), "ns", "b", &H));
        m.forget_owner("uid-other");
        assert!(
            m.unchanged::<ConfigMap>(Some(&cm("1").metadata), "ns", "b-config", &H),
            "another owner"
        );
        m.forget_owner("uid-b");
        assert!(!m.unchanged::<ConfigMap>(Some(&cm("1").metadata), "ns", "b-config", &H));
        assert!(!m.unchanged::<StatefulSet>(Some(&sts(3, "11").metadata), "ns", "b", &H));
    }

    #[test]
    fn a_cache_behind_the_own_apply_is_not_a_change() {
        let m = AppliedMemory::default();
        // The cache showed rv 5; this process applied new content, answered with rv 6.
        m.record(&cm("6"), Some(&cm("5").metadata), &H);
        assert!(
            m.unchanged::<ConfigMap>(Some(&cm("5").metadata), "ns", "b-config", &H),
            "the watch has not delivered the own apply yet"
        );
        assert!(m.unchanged::<ConfigMap>(Some(&cm("6").metadata), "ns", "b-config", &H));
        assert!(
            !m.unchanged::<ConfigMap>(Some(&cm("7").metadata), "ns", "b-config", &H),
            "someone else's write"
        );
        assert!(
            !m.unchanged::<ConfigMap>(Some(&cm("5").metadata), "ns", "b-config", &H2),
            "new desired content"
        );
        // StatefulSets by generation: the one applied over, or the one applied.
        m.record(&sts(4, "20"), Some(&sts(3, "19").metadata), &H);
        assert!(m.unchanged::<StatefulSet>(Some(&sts(3, "19").metadata), "ns", "b", &H));
        assert!(m.unchanged::<StatefulSet>(Some(&sts(4, "21").metadata), "ns", "b", &H));
        assert!(!m.unchanged::<StatefulSet>(Some(&sts(5, "22").metadata), "ns", "b", &H));
    }

    #[test]
    fn a_slim_pod_keeps_what_the_readers_use() {
        use k8s_openapi::api::core::v1::{
            Container, EnvVar, PodCondition, PodSpec, PodStatus, Volume,
        };
        let container = |name: &str, image: &str, args: &[&str]| Container {
            name: name.into(),
            image: Some(image.into()),
            args: Some(args.iter().map(|a| a.to_string()).collect()),
            env: Some(vec![EnvVar {
                name: "X".into(),
                value: Some("y".repeat(512)),
                ..EnvVar::default()
            }]),
            ..Container::default()
        };
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: Some("b-0".into()),
                namespace: Some("ns".into()),
                labels: Some([("trading.iq720.io/bot".to_string(), "b".to_string())].into()),
                annotations: Some([("big".to_string(), "z".repeat(4096))].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![container("bot", "iq720/bot:0.2.0", &["run"])],
                init_containers: Some(vec![container(
                    "restore",
                    "iq720/bot:0.2.0",
                    &["restore", "--s3-key", "k1"],
                )]),
                volumes: Some(vec![Volume {
                    name: "data".into(),
                    ..Volume::default()
                }]),
                node_name: Some("local".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("127.0.0.9".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        };
        let before = serde_json::to_vec(&pod).unwrap_or_default().len();
        let status = pod.status.clone();
        slim_pod(&mut pod);
        let after = serde_json::to_vec(&pod).unwrap_or_default().len();
        assert!(after * 4 < before, "{before} bytes -> {after} bytes");
        // as the cache keeps it
        let cached = CachedPod::pack(pod);
        assert_eq!(
            crate::shared::cached_pod::from_cached(Some(&cached), "t")
                .found()
                .map(|e| e.ready),
            Some(true),
            "the facts tell what the whole pod does"
        );
        let Some(pod) = cached.unpack() else {
            panic!("a compact pod reads back");
        };
        assert_eq!(pod.status, status, "the status is whole");
        assert_eq!(
            cached.summary.bot.as_deref(),
            Some("b"),
            "the bot's name is in the facts"
        );
        assert!(
            pod.labels().is_empty() && pod.owner_references().is_empty(),
            "labels and owner references are not kept"
        );
        let spec = pod.spec.as_ref().map(|s| {
            (
                s.containers.clone(),
                s.init_containers.clone(),
                s.volumes.clone(),
            )
        });
        let Some((containers, init, volumes)) = spec else {
            panic!("the spec is gone");
        };
        assert_eq!(containers[0].image.as_deref(), Some("iq720/bot:0.2.0"));
        assert_eq!(containers[0].env, None);
        let args = init.and_then(|i| i[0].args.clone()).unwrap_or_default();
        assert!(args.contains(&"k1".to_string()), "{args:?}");
        assert_eq!(volumes, None);
        let endpoint = crate::botlink::endpoint::from_pod(&pod, "t");
        assert!(endpoint.is_some_and(|e| e.ready));
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    async fn a_shared_store_is_installed_once_its_first_list_is_in() {
        use futures::StreamExt;
        let (reader, writer) = kube::runtime::reflector::store::<ConfigMap>();
        let shared = SharedStore::<ConfigMap>::default();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let events = kube::runtime::reflector(writer, rx);
        // The controller waits on the same store's readiness (see the method's docs).
        let controller_waits = reader.clone();
        let waiter = tokio::spawn(async move { controller_waits.wait_until_ready().await });
        let mut passed = Box::pin(shared.install_on_first_list(events, reader));
        for event in [watcher::Event::Init, watcher::Event::InitApply(cm("1"))] {
            tx.unbounded_send(Ok(event)).unwrap();
            passed.next().await.unwrap().unwrap();
        }
        assert!(shared.store().is_none(), "no full list yet");
        tx.unbounded_send(Ok(watcher::Event::InitDone)).unwrap();
        passed.next().await.unwrap().unwrap();
        let store = shared
            .store()
            .expect("installed at the end of the first list");
        assert_eq!(store.state().len(), 1);
        assert!(
            waiter.await.unwrap().is_ok(),
            "the other waiter is woken too"
        );
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            bytes_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            content_hash(&serde_json::json!({"a": 1})),
            bytes_hash(br#"{"a":1}"#)
        );
    }

    #[test]
    fn a_confirmation_holds_for_its_hash_interval_and_process() {
        use std::time::Duration;
        let m = ConfirmedMemory::default();
        let hour = Duration::from_secs(3600);
        let up = Some(hour);
        assert!(m.due("ns", "b", "h", up, hour), "never confirmed");
        m.confirm("ns", "b", "h");
        assert!(!m.due("ns", "b", "h", up, hour));
        assert!(m.due("ns", "b", "h2", up, hour), "another desired state");
        assert!(m.due("ns", "b", "h", up, Duration::ZERO), "interval over");
        assert!(
            m.due("ns", "b", "h", Some(Duration::ZERO), hour),
            "restarted since"
        );
        assert!(m.due("ns", "b", "h", None, hour), "uptime unknown");
        m.forget("ns", "b");
        assert!(m.due("ns", "b", "h", up, hour));
    }

    #[test]
    fn tokens_are_cached_and_forgotten() {
        let t = TokenCache::default();
        assert_eq!(t.get("ns", "b"), None);
        t.put("ns", "b", "tok");
        assert_eq!(t.get("ns", "b").as_deref(), Some("tok"));
        t.forget("ns", "b");
        assert_eq!(t.get("ns", "b"), None);
    }
}
