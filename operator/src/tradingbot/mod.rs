//! The TradingBot controller: one StatefulSet of one bot pod per TradingBot, its
//! configuration, token, Service and NetworkPolicy, and the conversation with the bot
//! (pause, hot reload, emergency stop). The steps of [`pipeline`] are one module each.
//!
//! Emergency stops (`spec.emergencyStop` or the namespace's fleet kill switch) take the
//! priority path of [`fleet`]: the controller's concurrency is unbounded, routine
//! reconciles take one of `--max-concurrent-reconciles` permits, stops take none.

pub mod apply;
pub mod build;
pub mod cleanup;
pub mod converse;
pub mod credentials;
pub mod decide;
pub mod emergency;
pub mod error;
pub mod fleet;
pub mod keys;
pub mod notify_test;
pub mod pipeline;
pub mod report;
pub mod restore;
pub mod rollout;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use iq720_crds::TradingBot;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt, controller};
use tracing::{debug, warn};

use crate::shared::cache::Stores;
use crate::shared::cached_bot::CachedBot;
use crate::shared::compact::Compact;
use crate::shared::context::Context;
use error::Error;

/// Finalizer that closes positions before a bot is deleted.
pub const FINALIZER: &str = "trading.iq720.io/close-positions";
/// Name of this controller in metrics.
pub const CONTROLLER: &str = "tradingbot";
/// Field manager of this controller's status writes (each controller has its own, so
/// no two controllers overwrite each other's status fields).
pub const STATUS_MANAGER: &str = "iq720-operator-tradingbot";

async fn reconcile(
    cached: Arc<CachedBot>,
    ctx: Arc<Context>,
    fleet: fleet::Fleet,
) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let deleting = cached.metadata.deletion_timestamp.is_some();
    let switch = if deleting {
        Ok(false)
    } else {
        fleet.switch(&ctx.client, &ns).await
    };
    let known = match &switch {
        Ok(on) => decide::FleetSwitch::from(*on),
        Err(_) => decide::FleetSwitch::Unknown,
    };
    // The priority path: an emergency stop takes no permit, so it never waits behind
    // routine reconciles (which may be waiting on slow bots).
    let facts = cached.summary;
    let stop = !deleting && decide::plans_stop(facts.emergency_stop, facts.stop_in_force, known);
    let _permit = if stop {
        None
    } else {
        match fleet.routine_permit(&cached).await {
            fleet::Turn::Go(permit) => Some(permit),
            fleet::Turn::GiveWay => return Ok(Action::requeue(Duration::ZERO)),
        }
    };
    // The store keeps bots packed; the bot is unpacked only now: while the operator is
    // behind, every bot may have a reconcile waiting above for its permit, and each
    // holding its bot whole (a few KiB) raised the operator's peak memory.
    let bot = Arc::new(cached.unpack().ok_or(Error::Unreadable)?);
    drop(cached);
    let _measure = ctx.metrics.count_and_measure(CONTROLLER);
    let api: Api<TradingBot> = Api::namespaced(ctx.client.clone(), &ns);
    // Boxed: the controller's concurrency is unbounded, so when the operator is behind
    // every bot can have a task here waiting for its permit, and a task is as large as
    // its future: unboxed, each would hold the whole pipeline's state machine while it
    // waits; boxed, the pipeline's state is allocated once the permit is held.
    Box::pin(finalizer(&api, FINALIZER, bot, |event| async {
        match event {
            Finalizer::Apply(bot) => pipeline::reconcile(&bot, &ctx, &fleet, switch).await,
            Finalizer::Cleanup(bot) => cleanup::cleanup(&bot, &ctx).await,
        }
    }))
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(inner)
        | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner,
        other => Error::Finalizer(other.to_string()),
    })
}

fn error_policy(bot: Arc<CachedBot>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(bot = %bot.name_any(), namespace = ?bot.namespace(), error = %error, "reconcile failed");
    ctx.metrics
        .reconcile_failure(CONTROLLER, error.metric_label());
    Action::requeue(Duration::from_secs(5))
}

/// What a watch of compact objects gives the controller.
type CompactEvent<K, S> = Result<Compact<K, S>, watcher::Error>;

/// A watch of one kind, labelled as the operator's, feeding a reflector store and
/// the controller's trigger at once (one watch per kind). Each object is slimmed
/// (managedFields and what no reader uses dropped) and kept [`Compact`]: a typed
/// k8s-openapi object is mostly inline empty fields, 1,000 of them a large share of
/// the operator's memory.
fn cached_watch<K, S>(
    api: Api<K>,
    config: watcher::Config,
    slim: fn(&mut K),
) -> (
    Store<Compact<K, S>>,
    impl futures::Stream<Item = CompactEvent<K, S>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    S: crate::shared::compact::Summary<K>,
{
    let (store, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, config).default_backoff().map_ok(move |event| {
            crate::shared::compact::pack_event(event.modify(|o: &mut K| {
                o.managed_fields_mut().clear();
                slim(o);
            }))
        }),
    )
    .touched_objects();
    (store, stream)
}

/// Objects per page of the watches' initial lists (kube's default is 500).
const LIST_PAGE: u32 = 100;

/// A metadata-only watch of one kind (the owner, generation and resourceVersion are
/// all an apply needs to know of an object it may skip), feeding a store and the
/// controller's trigger.
fn metadata_watch<K>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
) -> (
    Store<PartialObjectMeta<K>>,
    impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .modify(|o: &mut PartialObjectMeta<K>| {
                o.types = None;
                crate::shared::cache::slim_meta(&mut o.metadata);
            }),
    )
    .touched_objects();
    (store, stream)
}

/// Runs the TradingBot controller until the stream ends.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    fn scoped<K>(client: &kube::Client, ns: &Option<String>) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    // Lists come in pages of LIST_PAGE: the whole page is decoded before its objects
    // are slimmed into the stores, so the page bounds the operator's peak memory.
    let owned = watcher::Config::default()
        .labels("app.kubernetes.io/managed-by=iq720-operator")
        .page_size(LIST_PAGE);
    let (statefulsets, sts_stream) = cached_watch(
        scoped::<StatefulSet>(&client, &namespace),
        owned.clone(),
        crate::shared::cache::slim_stateful_set,
    );
    let (configmaps, cm_stream) = metadata_watch(
        scoped::<PartialObjectMeta<ConfigMap>>(&client, &namespace),
        owned.clone(),
    );
    let (services, svc_stream) = metadata_watch(
        scoped::<PartialObjectMeta<Service>>(&client, &namespace),
        owned.clone(),
    );
    let (network_policies, np_stream) = metadata_watch(
        scoped::<PartialObjectMeta<NetworkPolicy>>(&client, &namespace),
        owned.clone(),
    );
    let (pods, pod_stream) = cached_watch(
        scoped::<Pod>(&client, &namespace),
        owned,
        crate::shared::cache::slim_pod,
    );
    let stores = Stores {
        statefulsets,
        configmaps,
        services,
        network_policies,
        pods,
    };
    // Reads go to the cache only once every store has its first full list; until then
    // they go to the apiserver (an empty store must never read as "does not exist").
    let cache = ctx.cache.clone();
    let ready = stores.clone();
    tokio::spawn(async move {
        let all = futures::future::try_join5(
            ready.statefulsets.wait_until_ready(),
            ready.configmaps.wait_until_ready(),
            ready.services.wait_until_ready(),
            ready.network_policies.wait_until_ready(),
            ready.pods.wait_until_ready(),
        )
        .await;
        if all.is_ok() {
            cache.install(ready);
        }
    });
    // The fleet kill switch: Namespaces (metadata only; only ours in single-namespace
    // mode), and the priority path's shared state.
    let (namespaces, ns_stream) = fleet::namespace_watch(&client, namespace.as_deref());
    // The one full copy of the bots in the operator; other controllers read it too.
    let (bot_store, bot_writer) = reflector::store();
    let fleet = fleet::Fleet::new(
        namespaces,
        bot_store.clone(),
        ctx.settings.max_concurrent_reconciles,
    );
    let seen = fleet.clone();
    let ns_stream = ns_stream.inspect(move |ns| {
        if let Ok(ns) = ns
            && fleet::switch_on(ns.labels())
        {
            debug!(namespace = %ns.name_any(), "the namespace's fleet emergency stop is on");
            seen.stop_seen();
        }
    });
    let seen = fleet.clone();
    let bots: Api<TradingBot> = scoped(&client, &namespace);
    let bot_events = reflector(
        bot_writer,
        watcher(bots, watcher::Config::default().page_size(LIST_PAGE)).map_ok(|event| {
            crate::shared::compact::pack_event(
                event.modify(|b: &mut TradingBot| b.managed_fields_mut().clear()),
            )
        }),
    );
    let nudges = ctx.window_nudges.clone();
    let bot_stream = ctx
        .tradingbots
        .install_on_first_list(bot_events, bot_store.clone())
        // after the store took the event: a nudged window reads the bot as it is now
        .inspect_ok(move |event| nudges.observe(event))
        .applied_objects()
        .inspect(move |bot| {
            if let Ok(bot) = bot
                && bot.summary.emergency_stop
            {
                seen.stop_seen();
            }
        });
    // Unbounded: routine reconciles are limited by the fleet's permits instead.
    let config = controller::Config::default().concurrency(0);
    let mapper = fleet.clone();
    let run_fleet = fleet.clone();
    Controller::for_stream(bot_stream, bot_store)
        .with_config(config)
        .owns_stream(sts_stream)
        .owns_stream(cm_stream)
        .owns_stream(svc_stream)
        .owns_stream(np_stream)
        .watches_stream(pod_stream, |pod: crate::shared::cached_pod::CachedPod| {
            let bot = pod.summary.bot.as_deref()?;
            Some(ObjectRef::new(bot).within(&pod.namespace()?))
        })
        .watches_stream(ns_stream, move |ns: PartialObjectMeta<Namespace>| {
            mapper.bots_in(&ns.name_any())
        })
        .shutdown_on_signal()
        .run(
            move |bot, ctx| reconcile(bot, ctx, run_fleet.clone()),
            error_policy,
            ctx,
        )
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(bot = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// While the operator is behind (1,000 bots starting or pausing), every bot has a
    /// reconcile waiting for its routine permit as a task, so the size of the waiting
    /// future is memory per bot. The pipeline and the apiserver read of the fleet
    /// switch are boxed for that reason; unboxed, this future was 2,144 bytes.
    #[tokio::test]
    async fn a_waiting_reconcile_is_small() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let metrics = crate::shared::metrics::Metrics::new().unwrap();
        let ctx = Arc::new(Context::new(client, metrics, Default::default(), None));
        let (namespaces, _ns_writer) = reflector::store();
        let (bots, _bot_writer) = reflector::store();
        let fleet = fleet::Fleet::new(namespaces, bots, 32);
        let bot: TradingBot = serde_json::from_value(serde_json::json!({
            "apiVersion": "trading.iq720.io/v1alpha1", "kind": "TradingBot",
            "metadata": {"name": "alpha", "namespace": "trading"},
            "spec": {"version": "1.0.0", "pairs": ["BTC/USDT"]}
        }))
        .unwrap();
        let waiting = reconcile(Arc::new(CachedBot::pack(bot)), ctx, fleet);
        let size = std::mem::size_of_val(&waiting);
        assert!(size <= 768, "a waiting reconcile is {size} bytes");
    }
}
