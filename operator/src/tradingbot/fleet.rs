//! Fleet kill switch and the priority path of emergency stops.
//!
//! **Fleet kill switch.** The label `trading.iq720.io/emergency-stop=true` on a
//! Namespace emergency-stops every TradingBot in it, with the semantics of
//! `spec.emergencyStop` (close all, flat or flagged, scale to zero; removing the label
//! recovers the bots). A label, not an annotation: `kubectl get ns -l
//! trading.iq720.io/emergency-stop=true` lists what is stopped, and the value is a
//! short flag, not text. The operator watches Namespaces (metadata only; in
//! single-namespace mode only its own, with a `metadata.name` field selector, so the
//! RBAC rule can name that one namespace) and maps a change of the label to every
//! TradingBot of the namespace in the controller's own store.
//!
//! Until the namespace watch has its first full list, the switch is read from the
//! apiserver: an empty store must never read as "not stopped", or an operator restart
//! would scale up and resume a stopped fleet.
//!
//! **Priority path.** The controller runs with unbounded concurrency; routine work
//! (apply, poll the bot, deletion) takes a permit of [`Priority`] (at most
//! `--max-concurrent-reconciles` at once, as before), emergency stops take none. So a
//! stop is never queued behind routine polls of slow or hanging bots. kube-runtime
//! still never runs two reconciles of one bot at once; a routine reconcile of the
//! stopped bot that waits for a permit is woken when a stop is seen and gives way at
//! once, and one that already runs checks the newest state between its steps (it
//! neither scales the bot up nor resumes it once a stop is wanted).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Stream;
use iq720_crds::TradingBot;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{PredicateConfig, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::decide::{self, FleetSwitch};
use super::emergency::StopsRunning;
use crate::shared::cached_bot::CachedBot;

pub use super::decide::FLEET_LABEL;

/// Whether a namespace's labels turn the fleet kill switch on: the label's value is
/// `true` (any case). Any other value, or no label, leaves the bots alone.
pub fn switch_on(labels: &BTreeMap<String, String>) -> bool {
    labels
        .get(FLEET_LABEL)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The Namespaces the operator watches: all of them, or only its own (field selector
/// on `metadata.name`, so RBAC can name that namespace alone).
pub fn namespace_watch_config(namespace: Option<&str>) -> watcher::Config {
    match namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    }
}

/// Shared state of the fleet switch and the priority path (one per controller).
#[derive(Clone)]
pub struct Fleet {
    namespaces: Store<PartialObjectMeta<Namespace>>,
    namespaces_ready: Arc<AtomicBool>,
    bots: Store<CachedBot>,
    /// Permits of routine reconciles.
    routine: Arc<Semaphore>,
    /// Woken whenever a stop (spec or namespace) is seen by a watch.
    stop_seen: Arc<Notify>,
    /// The emergency stops running now (their Events wait until none runs).
    pub stops: StopsRunning,
}

/// What a routine reconcile got from [`Fleet::routine_permit`].
pub enum Turn {
    /// Its turn: the permit is held until dropped.
    Go(OwnedSemaphorePermit),
    /// An emergency stop of this bot is wanted now: give way (the stop's own reconcile
    /// is queued behind this one and runs as soon as it returns).
    GiveWay,
}

impl Fleet {
    /// Creates the state: `routine_slots` routine reconciles at once (0: no limit).
    pub fn new(
        namespaces: Store<PartialObjectMeta<Namespace>>,
        bots: Store<CachedBot>,
        routine_slots: u16,
    ) -> Self {
        let slots = if routine_slots == 0 {
            Semaphore::MAX_PERMITS
        } else {
            usize::from(routine_slots)
        };
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let waiting = namespaces.clone();
        tokio::spawn(async move {
            if waiting.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
        Self {
            namespaces,
            namespaces_ready: ready,
            bots,
            routine: Arc::new(Semaphore::new(slots)),
            stop_seen: Arc::new(Notify::new()),
            stops: StopsRunning::default(),
        }
    }

    /// Wakes routine reconciles waiting for a permit (a watch saw a stop).
    pub fn stop_seen(&self) {
        self.stop_seen.notify_waiters();
    }

    /// The fleet switch of a namespace: from the watch's store once it has its first
    /// full list, from the apiserver before (never "off" for lack of data). `Err`: it
    /// cannot be known now.
    ///
    /// The read from the apiserver is boxed: every bot's reconcile awaits this, and
    /// while the operator is behind (1,000 bots starting or pausing) every bot has one
    /// waiting as a task; unboxed, the request's state (about 1.9 KiB) was part of
    /// each task even though the store answers once it has listed
    /// (`-Zprint-type-sizes`: the task of a waiting reconcile 2.3 KiB).
    pub async fn switch(&self, client: &Client, namespace: &str) -> Result<bool, kube::Error> {
        if self.namespaces_ready.load(Ordering::SeqCst) {
            return Ok(self.cached_switch(namespace));
        }
        Box::pin(read_switch(client.clone(), namespace.to_string())).await
    }

    /// The fleet switch from the store alone (`false` when unknown there).
    fn cached_switch(&self, namespace: &str) -> bool {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .is_some_and(|ns| switch_on(ns.labels()))
    }

    /// Whether an emergency stop of this bot is wanted now, by the newest state the
    /// watches have seen (the controller's store of bots, the namespace store).
    pub fn stop_wanted_now(&self, bot: &TradingBot) -> bool {
        self.stop_wanted_for(&bot.metadata, bot.spec.emergency_stop)
    }

    /// [`Self::stop_wanted_now`] for the bot with `meta`, whose `spec.emergencyStop`
    /// is `spec_stop` unless the store knows better.
    fn stop_wanted_for(&self, meta: &ObjectMeta, spec_stop: bool) -> bool {
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        let latest = crate::shared::cache::lookup(&self.bots, ns, name);
        let (deleting, stop) = match latest.as_deref() {
            Some(cached) => (
                cached.metadata.deletion_timestamp.is_some(),
                cached.summary.emergency_stop,
            ),
            None => (meta.deletion_timestamp.is_some(), spec_stop),
        };
        let fleet = if self.namespaces_ready.load(Ordering::SeqCst) {
            FleetSwitch::from(self.cached_switch(ns))
        } else {
            FleetSwitch::Unknown
        };
        !deleting && decide::stop_trigger(stop, fleet).is_some()
    }

    /// Waits for a routine permit; gives way at once when a stop of `bot` is seen
    /// meanwhile. The permit is waited for in one queue position (fair order).
    pub async fn routine_permit(&self, bot: &CachedBot) -> Turn {
        let acquire = self.routine.clone().acquire_owned();
        tokio::pin!(acquire);
        loop {
            let woken = self.stop_seen.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.stop_wanted_for(&bot.metadata, bot.summary.emergency_stop) {
                return Turn::GiveWay;
            }
            tokio::select! {
                permit = &mut acquire => {
                    return match permit {
                        Ok(p) => Turn::Go(p),
                        // The semaphore is never closed; if it were, run unlimited.
                        Err(_) => Turn::GiveWay,
                    };
                }
                () = &mut woken => {}
            }
        }
    }

    /// Every bot of a namespace in the controller's store (the namespace's switch
    /// changed).
    pub fn bots_in(&self, namespace: &str) -> Vec<ObjectRef<CachedBot>> {
        bots_in(&self.bots, namespace)
    }
}

/// The fleet switch of `namespace` read from the apiserver.
async fn read_switch(client: Client, namespace: String) -> Result<bool, kube::Error> {
    let api: Api<Namespace> = Api::all(client);
    Ok(api
        .get_metadata_opt(&namespace)
        .await?
        .is_some_and(|ns| switch_on(ns.labels())))
}

/// Every bot of `namespace` in `store`.
pub fn bots_in(store: &Store<CachedBot>, namespace: &str) -> Vec<ObjectRef<CachedBot>> {
    store
        .state()
        .iter()
        .filter(|b| b.namespace().as_deref() == Some(namespace))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// Hash of a namespace's switch, so only a change of it triggers its bots.
fn switch_hash(ns: &PartialObjectMeta<Namespace>) -> Option<u64> {
    let mut h = DefaultHasher::new();
    switch_on(ns.labels()).hash(&mut h);
    Some(h.finish())
}

/// The namespace watch: a metadata-only store and a stream of namespaces whose switch
/// changed (first sight included).
pub fn namespace_watch(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<PartialObjectMeta<Namespace>>,
    impl Stream<Item = Result<PartialObjectMeta<Namespace>, watcher::Error>> + Send + 'static,
) {
    // An Api of PartialObjectMeta makes metadata-only requests.
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, namespace_watch_config(namespace))
            .default_backoff()
            .modify(|o: &mut PartialObjectMeta<Namespace>| o.managed_fields_mut().clear()),
    )
    .applied_objects()
    .predicate_filter(switch_hash, PredicateConfig::default());
    (store, stream)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_true_turns_the_switch_on() {
        assert!(switch_on(&labels(&[(FLEET_LABEL, "true")])));
        assert!(switch_on(&labels(&[(FLEET_LABEL, "True")])));
        assert!(!switch_on(&labels(&[(FLEET_LABEL, "false")])));
        assert!(!switch_on(&labels(&[(FLEET_LABEL, "")])));
        assert!(!switch_on(&labels(&[("other", "true")])));
        assert!(!switch_on(&BTreeMap::new()));
    }

    #[test]
    fn single_namespace_mode_watches_its_namespace_by_name() {
        let c = namespace_watch_config(Some("trading"));
        assert_eq!(c.field_selector.as_deref(), Some("metadata.name=trading"));
        assert_eq!(namespace_watch_config(None).field_selector, None);
    }

    fn bot(ns: &str, name: &str) -> TradingBot {
        let mut b = TradingBot::new(
            name,
            serde_json::from_value(json!({"version": "1.0.0", "pairs": ["BTC/USDT"]})).unwrap(),
        );
        b.metadata.namespace = Some(ns.into());
        b
    }

    #[test]
    fn a_namespace_maps_to_its_own_bots_only() {
        let (store, mut writer) = reflector::store::<CachedBot>();
        for (ns, name) in [("a", "x"), ("a", "y"), ("b", "x")] {
            writer.apply_watcher_event(&Event::Apply(CachedBot::pack(bot(ns, name))));
        }
        let mut got: Vec<String> = bots_in(&store, "a")
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        got.sort();
        assert_eq!(got, vec!["a/x", "a/y"]);
        assert!(bots_in(&store, "c").is_empty());
    }

    #[tokio::test]
    async fn a_waiting_routine_reconcile_gives_way_to_a_stop() {
        let (namespaces, mut ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        let (bots, mut bot_writer) = reflector::store::<CachedBot>();
        ns_writer.apply_watcher_event(&Event::Init);
        ns_writer.apply_watcher_event(&Event::InitDone);
        let b = bot("a", "x");
        bot_writer.apply_watcher_event(&Event::Apply(CachedBot::pack(b.clone())));
        let fleet = Fleet::new(namespaces, bots, 1);
        // wait until the (empty) namespace store counts as ready
        for _ in 0..100 {
            if fleet.namespaces_ready.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let packed = CachedBot::pack(b.clone());
        let held = match fleet.routine_permit(&packed).await {
            Turn::Go(p) => p,
            Turn::GiveWay => panic!("no stop is wanted"),
        };
        // A second routine reconcile waits for the only slot...
        let waiter = {
            let fleet = fleet.clone();
            let b = packed.clone();
            tokio::spawn(async move { matches!(fleet.routine_permit(&b).await, Turn::GiveWay) })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the slot is taken");
        // ...until a stop of its bot is seen: it gives way without the slot.
        let mut stopped = b.clone();
        stopped.spec.emergency_stop = true;
        bot_writer.apply_watcher_event(&Event::Apply(CachedBot::pack(stopped)));
        fleet.stop_seen();
        let gave_way = tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(gave_way);
        drop(held);
    }
}
