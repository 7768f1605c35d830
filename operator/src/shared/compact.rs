//! A cached object kept as its metadata plus the rest of it as compact JSON.
//!
//! Why: a k8s-openapi object is mostly empty optional fields held inline. A
//! `StatefulSet` is 2.5 KiB before any field is set, every `Container` 2.1 KiB, a
//! `Pod` 2.2 KiB, so a bot's cached StatefulSet and Pod cost about 20 KiB of memory
//! even after [`super::cache::slim_stateful_set`] and [`super::cache::slim_pod`] left
//! only what readers use, and 1,000 bots put the operator far over its 50 MiB budget
//! (`make bench-scale`). The same slimmed objects written as JSON take 1–2 KiB.
//!
//! The store keys, the owner mapping and the apply's "unchanged?" check read the
//! metadata, which stays typed; what a reader needs at every poll is worked out once
//! per watch event into a small typed [`Summary`] (the pod's address, readiness and
//! why it is stuck); the few other readers (the StatefulSet's template, storage or
//! replicas, once per reconcile; a pod's images or init containers during a rollout
//! or restore) get a full typed object back from [`Compact::unpack`], parsing a
//! couple of KiB.
//!
//! The JSON is kept deflated (fastest level): a bot's spec and status are about 2–3 KiB
//! of JSON with many repeated keys, and deflate to about 40 % (the unit test's pod:
//! 612 -> 248 bytes; a bot-like object through zlib level 1: 1,932 -> 820). In a heap
//! profile at 1,000 bots (jemalloc `prof`, `make bench-scale`) the stores' bodies were
//! the largest share of the operator's memory (TradingBots 4.5 MB, StatefulSets
//! 1.4 MB, pods 1.3 MB while every bot paused). A reconcile inflates the one object it
//! unpacks, a watch event deflates once; idle polling at 1,000 bots (one inflate per
//! poll) went 9.3 -> 8.7 % of a core with this change and the boxed switch read.

use std::io::{Read, Write};
use std::marker::PhantomData;

use flate2::Compression;
use flate2::bufread::DeflateDecoder;
use flate2::write::DeflateEncoder;

use kube::api::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// What readers need of an object at every poll, worked out when it is packed.
pub trait Summary<K>: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The summary of `object`.
    fn of(object: &K) -> Self;

    /// Drops from the packed object's metadata what the summary holds instead (run
    /// after [`Summary::of`]); nothing by default.
    fn trim(_meta: &mut ObjectMeta) {}
}

impl<K> Summary<K> for () {
    fn of(_: &K) -> Self {}
}

/// An object of kind `K`: typed metadata, a typed summary `S`, the rest as JSON.
pub struct Compact<K, S = ()> {
    /// The object's metadata (as slimmed before packing).
    pub metadata: ObjectMeta,
    /// What readers need at every poll (see [`Summary`]).
    pub summary: S,
    /// The object without its metadata, serialised as JSON and deflated.
    body: Box<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K, S: Clone> Clone for Compact<K, S> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            summary: self.summary.clone(),
            body: self.body.clone(),
            kind: PhantomData,
        }
    }
}

impl<K, S: std::fmt::Debug> std::fmt::Debug for Compact<K, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compact")
            .field("metadata", &self.metadata)
            .field("summary", &self.summary)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl<K, S> Compact<K, S>
where
    K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    S: Summary<K>,
{
    /// Keeps `object` compact: its metadata and summary typed, the rest as JSON.
    pub fn pack(mut object: K) -> Self {
        let summary = S::of(&object);
        let mut metadata = std::mem::take(object.meta_mut());
        S::trim(&mut metadata);
        // Serialising a k8s-openapi object cannot fail (string keys only), nor can
        // deflating into memory; should either, the body stays empty and `unpack`
        // reports it.
        let body = serde_json::to_vec(&object)
            .ok()
            .and_then(|json| deflate(&json))
            .unwrap_or_default();
        Self {
            metadata,
            summary,
            body: body.into_boxed_slice(),
            kind: PhantomData,
        }
    }

    /// The whole (slimmed) object again, or `None` (logged) should its JSON not read
    /// back, which no packed object does.
    pub fn unpack(&self) -> Option<K> {
        let read = inflate(&self.body)
            .map_err(|e| e.to_string())
            .and_then(|json| serde_json::from_slice::<K>(&json).map_err(|e| e.to_string()));
        match read {
            Ok(mut object) => {
                *object.meta_mut() = self.metadata.clone();
                Some(object)
            }
            Err(e) => {
                warn!(kind = %K::kind(&()), name = ?self.metadata.name, error = %e,
                    "a cached object does not read back; treated as not cached");
                None
            }
        }
    }
}

/// `json` deflated at the fastest level (`None`: it could not be, which writing to
/// memory never is).
fn deflate(json: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(json.len() / 2), Compression::fast());
    encoder.write_all(json).ok()?;
    encoder.finish().ok()
}

/// The JSON of a deflated body.
fn inflate(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut json = Vec::with_capacity(body.len().saturating_mul(4));
    DeflateDecoder::new(body).read_to_end(&mut json)?;
    Ok(json)
}

/// A compact object is a resource of its kind (CustomResources included: the
/// dynamic type is `()`), found at the same URLs and owned by the same references.
impl<K: kube::Resource<DynamicType = ()>, S> kube::Resource for Compact<K, S> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &()) -> std::borrow::Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Reads a whole object of kind `K` and packs it (what a watch of compact objects
/// decodes into).
impl<'de, K, S> Deserialize<'de> for Compact<K, S>
where
    K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    S: Summary<K>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(deserializer).map(Self::pack)
    }
}

/// A watch event of a whole object, packed.
pub fn pack_event<K, S>(
    event: kube::runtime::watcher::Event<K>,
) -> kube::runtime::watcher::Event<Compact<K, S>>
where
    K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    S: Summary<K>,
{
    use kube::runtime::watcher::Event;
    match event {
        Event::Apply(o) => Event::Apply(Compact::pack(o)),
        Event::Delete(o) => Event::Delete(Compact::pack(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(Compact::pack(o)),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::Resource;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "alpha-bot-0", "namespace": "trading",
                "labels": {"trading.iq720.io/bot": "alpha"}, "resourceVersion": "7"},
            "spec": {"nodeName": "n1", "containers": [{"name": "bot", "image": "bot:0.1.0"}]},
            "status": {"podIP": "10.0.0.7", "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_packed_object_unpacks_to_the_same_object() {
        let original = pod();
        let packed = Compact::<Pod>::pack(original.clone());
        assert_eq!(packed.unpack().unwrap(), original);
        assert_eq!(packed.meta().name.as_deref(), Some("alpha-bot-0"));
        assert_eq!(Compact::<Pod>::kind(&()), "Pod");
        assert_eq!(Compact::<Pod>::plural(&()), "pods");
    }

    #[test]
    fn a_packed_object_is_smaller_than_the_typed_one() {
        let packed = Compact::<Pod>::pack(pod());
        let typed = std::mem::size_of::<Pod>()
            + std::mem::size_of::<k8s_openapi::api::core::v1::Container>();
        let compact = std::mem::size_of::<Compact<Pod>>() + packed.body.len();
        assert!(compact * 2 < typed, "typed {typed} B, compact {compact} B");
    }

    #[test]
    fn a_watch_decodes_a_whole_object_into_a_compact_one() {
        let json = serde_json::to_vec(&pod()).unwrap();
        let packed: Compact<Pod> = serde_json::from_slice(&json).unwrap();
        assert_eq!(packed.unpack().unwrap(), pod());
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Ip(Option<String>);

    impl Summary<Pod> for Ip {
        fn of(pod: &Pod) -> Self {
            Ip(pod.status.as_ref().and_then(|s| s.pod_ip.clone()))
        }
    }

    #[test]
    fn the_summary_is_worked_out_when_packed() {
        let packed = Compact::<Pod, Ip>::pack(pod());
        assert_eq!(packed.summary, Ip(Some("10.0.0.7".into())));
        let json = serde_json::to_vec(&pod()).unwrap();
        let decoded: Compact<Pod, Ip> = serde_json::from_slice(&json).unwrap();
        assert_eq!(decoded.summary, packed.summary);
    }

    #[test]
    fn a_body_that_does_not_read_back_is_not_an_object() {
        let mut packed = Compact::<Pod>::pack(pod());
        packed.body = b"{".to_vec().into_boxed_slice();
        assert!(packed.unpack().is_none(), "not deflate data");
        packed.body = deflate(b"{").unwrap().into_boxed_slice();
        assert!(packed.unpack().is_none(), "deflated, but not an object");
    }

    #[test]
    fn a_packed_body_is_smaller_than_its_json() {
        let mut bot = pod();
        // A bot pod's status: conditions repeat their keys, as a bot's status does.
        bot.status = serde_json::from_value(serde_json::json!({
            "podIP": "10.0.0.7", "phase": "Running", "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True",
                    "lastTransitionTime": "2026-12-07T21:14:25Z"},
                {"type": "Initialized", "status": "True",
                    "lastTransitionTime": "2026-12-07T21:14:25Z"},
                {"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-12-07T21:14:26Z"},
                {"type": "ContainersReady", "status": "True",
                    "lastTransitionTime": "2026-12-07T21:14:26Z"},
                {"type": "PodScheduled", "status": "True",
                    "lastTransitionTime": "2026-12-07T21:14:24Z"}]
        }))
        .unwrap();
        let mut rest = bot.clone();
        rest.metadata = Default::default();
        let json = serde_json::to_vec(&rest).unwrap().len();
        let packed = Compact::<Pod>::pack(bot.clone());
        assert!(
            packed.body.len() * 2 < json,
            "JSON {json} B, packed {} B",
            packed.body.len()
        );
        assert_eq!(packed.unpack().unwrap(), bot);
    }
}
