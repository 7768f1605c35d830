//! Helpers of the operator e2e tests: a namespace with the chart's RBAC, waiting on a
//! TradingBot, reading its conditions, pods, token and Events.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use iq720_crds::TradingBot;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{Cluster, TestNamespace, poll_until, wait_for_condition};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::Operator;

pub const DEADLINE: Duration = Duration::from_secs(180);

pub fn bot_yaml(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: trading.iq720.io/v1alpha1\nkind: TradingBot\nmetadata: {{name: {name}}}\nspec:\n  version: \"0.1.0\"\n  pairs: [BTC/USDT, ETH/USDT]\n  strategy:\n    name: rsi\n    params: {{rsiPeriod: 14, rsiBuy: 48, rsiSell: 95}}\n  marketData: {{staleAfter: 5s}}\n{extra}"
    )
}

pub struct Env {
    pub cluster: Cluster,
    pub ns: TestNamespace,
    pub kubeconfig: std::path::PathBuf,
}

pub async fn env() -> Env {
    env_with(super::Rbac::Namespaced).await
}

pub async fn env_with(rbac: super::Rbac) -> Env {
    let cluster = Cluster::shared().await.unwrap();
    super::install_crds(&cluster).await;
    // the bot binary the image map points at must be current
    super::workspace_binary("iq720-bot", "iq720-bot");
    let ns = TestNamespace::new(&cluster).await.unwrap();
    let kubeconfig = super::operator_kubeconfig_with(&cluster, &ns, rbac).await;
    Env {
        cluster,
        ns,
        kubeconfig,
    }
}

/// Deletes every TradingBot while the test's operator still runs (so its finalizer
/// is handled), waits until they are gone, then deletes the namespace.
pub async fn teardown(e: Env) {
    let api = bots(&e);
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    poll_until(
        "TradingBots deleted",
        DEADLINE,
        Duration::from_millis(200),
        || {
            let api = api.clone();
            async move {
                api.list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    let name = super::cluster_rbac_name(e.ns.name());
    let dp = DeleteParams::default();
    let roles: Api<ClusterRole> = Api::all(e.cluster.client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(e.cluster.client.clone());
    let _ = roles.delete(&name, &dp).await;
    let _ = bindings.delete(&name, &dp).await;
    let reader = super::namespace_reader_name(e.ns.name());
    let _ = roles.delete(&reader, &dp).await;
    let _ = bindings.delete(&reader, &dp).await;
    e.ns.delete().await.unwrap();
}

pub fn bots(e: &Env) -> Api<TradingBot> {
    Api::namespaced(e.cluster.client.clone(), e.ns.name())
}

pub async fn wait_bot(
    e: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&TradingBot) -> bool + Send + 'static,
    op: &Operator,
) -> TradingBot {
    match wait_for_condition(
        &bots(e),
        name,
        move |b: Option<&TradingBot>| b.is_some_and(&pred),
        DEADLINE,
    )
    .await
    {
        Ok(b) => b,
        Err(err) => {
            let now = bots(e).get_opt(name).await.ok().flatten();
            panic!(
                "{what}: {err}\nstatus: {:#?}\noperator log tail:\n{}",
                now.and_then(|b| b.status),
                op.log_text()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// The emergency stop has an outcome (it is recorded as in progress first).
pub fn stop_completed(b: &TradingBot) -> bool {
    phase(b) == Some(TradingBotPhase::EmergencyStopped)
        && b.status
            .as_ref()
            .and_then(|s| s.emergency_stop.as_ref())
            .is_some_and(|e| e.completed_at.is_some())
}

pub fn phase(b: &TradingBot) -> Option<TradingBotPhase> {
    b.status.as_ref().and_then(|s| s.phase)
}

pub fn condition(b: &TradingBot, type_: &str) -> Option<String> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

pub async fn merge_patch(e: &Env, name: &str, spec: Value) {
    patch_bot(e, name, json!({ "spec": spec })).await;
}

/// A merge patch of the whole TradingBot object (metadata, spec).
pub async fn patch_bot(e: &Env, name: &str, patch: Value) {
    bots(e)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// Waits until the bot's status reports open positions.
pub async fn wait_open_positions(e: &Env, name: &str, op: &Operator) -> TradingBot {
    wait_bot(
        e,
        name,
        "open positions",
        |b| {
            b.status
                .as_ref()
                .and_then(|s| s.open_positions)
                .unwrap_or(0)
                > 0
        },
        op,
    )
    .await
}

pub async fn bot_pod(e: &Env, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get_opt(&format!("{name}-0"))
        .await
        .unwrap()
}

pub async fn bot_addr_token(e: &Env, name: &str) -> (String, String) {
    let pod = bot_pod(e, name).await.expect("bot pod");
    let ip = pod.status.unwrap().pod_ip.unwrap();
    let secret = Api::<Secret>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get(&format!("{name}-api-token"))
        .await
        .unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    (format!("{ip}:8080"), token)
}

/// Every Event about the object `name` in the test namespace.
pub async fn bot_events(e: &Env, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|ev| ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// The reasons of the Events about `name`.
pub async fn events(e: &Env, name: &str) -> Vec<String> {
    bot_events(e, name)
        .await
        .into_iter()
        .filter_map(|ev| ev.reason)
        .collect()
}

/// Waits until the Events about `name` include every reason in `wanted` (Events are
/// published off the path that decides them, so they may follow it by a moment) and
/// returns all their reasons.
pub async fn wait_events(e: &Env, name: &str, wanted: &[&str]) -> Vec<String> {
    let found = poll_until(
        "Events with the wanted reasons",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let reasons = events(e, name).await;
            wanted
                .iter()
                .all(|w| reasons.iter().any(|r| r == w))
                .then_some(reasons)
        },
    )
    .await;
    match found {
        Ok(reasons) => reasons,
        Err(_) => panic!(
            "missing Events {wanted:?} about {name}: {:?}",
            events(e, name).await
        ),
    }
}

/// The notes of the Events about `name` with `reason`.
pub async fn event_notes_with_reason(e: &Env, name: &str, reason: &str) -> Vec<String> {
    bot_events(e, name)
        .await
        .into_iter()
        .filter(|ev| ev.reason.as_deref() == Some(reason))
        .map(|ev| ev.note.unwrap_or_default())
        .collect()
}

/// Applies `bot_yaml(name, extra)` and waits until the bot is `Running`.
pub async fn apply_running(e: &Env, name: &str, extra: &str, op: &Operator) -> TradingBot {
    iq720_tests::apply_yaml(&e.cluster.client, Some(e.ns.name()), &bot_yaml(name, extra))
        .await
        .unwrap();
    wait_bot(
        e,
        name,
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        op,
    )
    .await
}

/// Waits until the bot's pod `NAME-0` is gone.
pub async fn wait_pod_gone(e: &Env, name: &str) {
    let pods: Api<Pod> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let pod = format!("{name}-0");
    poll_until("bot pod gone", DEADLINE, Duration::from_millis(200), || {
        let (pods, pod) = (pods.clone(), pod.clone());
        async move { pods.get_opt(&pod).await.ok()?.is_none().then_some(()) }
    })
    .await
    .unwrap();
}

/// Waits until the TradingBot is deleted (its finalizer handled); the operator's log
/// in the panic message otherwise.
pub async fn wait_deleted(e: &Env, name: &str, op: &Operator) {
    let api = bots(e);
    poll_until(
        "TradingBot deleted",
        DEADLINE,
        Duration::from_millis(200),
        || {
            let api = api.clone();
            async move { api.get_opt(name).await.ok()?.is_none().then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", op.log_text()));
}

/// The bot's database file: the host directory of its data PV (`data-<bot>-0`) on the
/// local node.
pub async fn bot_db(e: &Env, bot: &str) -> std::path::PathBuf {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let claims = Api::<PersistentVolumeClaim>::namespaced(e.cluster.client.clone(), e.ns.name());
    let claim = claims.get(&format!("data-{bot}-0")).await.unwrap();
    let pv_name = claim.spec.unwrap().volume_name.expect("bound PVC");
    let pv = Api::<PersistentVolume>::all(e.cluster.client.clone())
        .get(&pv_name)
        .await
        .unwrap();
    let dir = pv.spec.unwrap().host_path.expect("hostPath PV").path;
    std::path::PathBuf::from(dir).join("trades.db")
}

/// Sets one annotation on a TradingBot (merge patch).
pub async fn annotate_bot(e: &Env, name: &str, key: &str, value: &str) {
    patch_bot(e, name, json!({"metadata": {"annotations": {key: value}}})).await;
}
