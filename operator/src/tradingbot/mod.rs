//! The TradingBot controller: one StatefulSet of one bot pod per TradingBot, its
//! configuration, token, Service and NetworkPolicy, and the conversation with the bot
//! (pause, hot reload, emergency stop). The steps of [`pipeline`] are one module each.

pub mod apply;
pub mod build;
pub mod cleanup;
pub mod converse;
pub mod decide;
pub mod emergency;
pub mod error;
pub mod pipeline;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

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

use crate::shared::context::Context;
use error::Error;

/// Finalizer that closes positions before a bot is deleted.
pub const FINALIZER: &str = "trading.iq720.io/close-positions";
/// Name of this controller in metrics.
pub const CONTROLLER: &str = "tradingbot";
/// Field manager of this controller's status writes (each controller has its own, so
/// no two controllers overwrite each other's status fields).
pub const STATUS_MANAGER: &str = "iq720-operator-tradingbot";

async fn reconcile(bot: Arc<TradingBot>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _measure = ctx.metrics.count_and_measure(CONTROLLER);
    let ns = bot.namespace().unwrap_or_default();
    let api: Api<TradingBot> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, bot, |event| async {
        match event {
            Finalizer::Apply(bot) => pipeline::reconcile(&bot, &ctx).await,
            Finalizer::Cleanup(bot) => cleanup::cleanup(&bot, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(inner)
        | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner,
        other => Error::Finalizer(other.to_string()),
    })
}

fn error_policy(bot: Arc<TradingBot>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(bot = %bot.name_any(), namespace = ?bot.namespace(), error = %error, "reconcile failed");
    ctx.metrics
        .reconcile_failure(CONTROLLER, error.metric_label());
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
