//! The TradingBot controller.

pub mod bot_client;
pub mod build;
pub mod emergency;
pub mod reconcile;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iq720_crds::TradingBot;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use tracing::{debug, warn};

use crate::context::Context;
use crate::error::Error;

/// Finalizer that closes positions before a bot is deleted.
pub const FINALIZER: &str = "trading.iq720.io/close-positions";

async fn reconcile(bot: Arc<TradingBot>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics
        .reconciliations
        .with_label_values(&["tradingbot"])
        .inc();
    let ns = bot.namespace().unwrap_or_default();
    let api: Api<TradingBot> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, bot, |event| async {
        match event {
            Finalizer::Apply(bot) => reconcile::apply_bot(bot, &ctx).await,
            Finalizer::Cleanup(bot) => reconcile::cleanup_bot(bot, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(inner)
        | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics
        .reconcile_duration
        .with_label_values(&["tradingbot"])
        .observe(started.elapsed().as_secs_f64());
    result
}

fn error_policy(bot: Arc<TradingBot>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(bot = %bot.name_any(), namespace = ?bot.namespace(), error = %error, "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["tradingbot", error.metric_label()])
        .inc();
    Action::requeue(Duration::from_secs(5))
}

/// Runs the TradingBot controller until the stream ends.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let (bots, sets, maps) = match &namespace {
        Some(ns) => (
            Api::<TradingBot>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=iq720-operator");
    Controller::new(bots, watcher::Config::default())
        .owns(sets, owned.clone())
        .owns(maps, owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(bot = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}
