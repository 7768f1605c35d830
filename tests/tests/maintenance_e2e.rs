//! End-to-end tests of MaintenanceWindows on the real local cluster with the real bot
//! binary: a closed window defers a pod-restarting change (the running pod and its
//! configuration stay), an open window lets it roll, a bot no window selects rolls at
//! once, `pauseTrading` pauses and restores, an emergency stop is never gated, and an
//! invalid window is reported. Windows are made open or closed "now" by their schedule
//! (`* * * * *` for 1m is always open; a daily start twelve hours away is closed), so no
//! test waits for a wall-clock minute; every wait is a poll with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::bots::*;
use common::{Operator, bot_api};
use iq720_crds::MaintenanceWindow;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{apply_yaml, poll_until, wait_for_condition};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// A daily start twelve hours from now (UTC): closed for the whole test.
fn closed_schedule() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hour = (secs / 3600 + 12) % 24;
    format!("0 {hour} * * *")
}

/// Always open: a start every minute, each open for a minute.
const OPEN_SCHEDULE: &str = "* * * * *";

fn window_yaml(name: &str, schedule: &str, extra: &str) -> String {
    format!(
        "apiVersion: trading.iq720.io/v1alpha1\nkind: MaintenanceWindow\nmetadata: {{name: {name}}}\nspec:\n  schedule: \"{schedule}\"\n  duration: 1m\n  timeZone: UTC\n{extra}"
    )
}

fn windows(e: &Env) -> Api<MaintenanceWindow> {
    Api::namespaced(e.cluster.client.clone(), e.ns.name())
}

async fn patch_window(e: &Env, name: &str, spec: Value) {
    windows(e)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
}

async fn wait_window(
    e: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&MaintenanceWindow) -> bool + Send + 'static,
    op: &Operator,
) -> MaintenanceWindow {
    match wait_for_condition(
        &windows(e),
        name,
        move |w: Option<&MaintenanceWindow>| w.is_some_and(&pred),
        DEADLINE,
    )
    .await
    {
        Ok(w) => w,
        Err(err) => {
            let now = windows(e).get_opt(name).await.ok().flatten();
            panic!(
                "{what}: {err}\nstatus: {:#?}\noperator log tail:\n{}",
                now.and_then(|w| w.status),
                tail(op)
            );
        }
    }
}

fn tail(op: &Operator) -> String {
    let text = op.log_text();
    let mut lines: Vec<&str> = text.lines().rev().take(40).collect();
    lines.reverse();
    lines.join("\n")
}

fn window_condition(w: &MaintenanceWindow, type_: &str) -> Option<(String, String)> {
    w.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.message.clone()))
}

fn bot_condition_message(b: &iq720_crds::TradingBot, type_: &str) -> String {
    b.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn pod_uid(e: &Env, name: &str) -> String {
    bot_pod(e, name).await.unwrap().metadata.uid.unwrap()
}

async fn template_checksum(e: &Env, name: &str) -> String {
    let sts = Api::<StatefulSet>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get(name)
        .await
        .unwrap();
    sts.spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()["trading.iq720.io/config-checksum"]
        .clone()
}

/// Waits until the bot's pod is a new one (uid differs from `old`) and Ready.
async fn wait_rolled(e: &Env, name: &str, old: &str, op: &Operator) {
    let (client, ns, pod, old) = (
        e.cluster.client.clone(),
        e.ns.name().to_string(),
        format!("{name}-0"),
        old.to_string(),
    );
    poll_until(
        &format!("{name}: pod replaced and ready"),
        DEADLINE,
        Duration::from_millis(200),
        || {
            let (client, ns, pod, old) = (client.clone(), ns.clone(), pod.clone(), old.clone());
            async move {
                let p = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client, &ns)
                    .get_opt(&pod)
                    .await
                    .ok()??;
                let ready = p
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (p.metadata.uid.as_deref() != Some(old.as_str()) && ready).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", tail(op)));
}

async fn bot_status(e: &Env, name: &str) -> Value {
    let (addr, token) = bot_addr_token(e, name).await;
    bot_api(&addr, &token, "GET", "/api/v1/status", "").await.1
}

async fn wait_bot_paused(e: &Env, name: &str, paused: bool, op: &Operator) {
    let (addr, token) = bot_addr_token(e, name).await;
    poll_until(
        &format!("{name}: bot API paused = {paused}"),
        DEADLINE,
        Duration::from_millis(200),
        || {
            let (addr, token) = (addr.clone(), token.clone());
            async move {
                let (_, s) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
                (s["paused"] == paused).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", tail(op)));
}

fn running(b: &iq720_crds::TradingBot) -> bool {
    phase(b) == Some(TradingBotPhase::Running)
}

#[tokio::test]
async fn closed_window_defers_a_restart_until_it_opens_and_unselected_bots_roll_at_once() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw", &[]).await;
    let ns = Some(e.ns.name());
    apply_yaml(
        &e.cluster.client,
        ns,
        &bot_yaml("gated", "").replace(
            "metadata: {name: gated}",
            "metadata: {name: gated, labels: {tier: prod}}",
        ),
    )
    .await
    .unwrap();
    apply_yaml(&e.cluster.client, ns, &bot_yaml("free", ""))
        .await
        .unwrap();
    apply_yaml(
        &e.cluster.client,
        ns,
        &window_yaml(
            "nightly",
            &closed_schedule(),
            "  botSelector: {matchLabels: {tier: prod}}\n",
        ),
    )
    .await
    .unwrap();
    wait_bot(&e, "gated", "gated Running", running, &op).await;
    wait_bot(&e, "free", "free Running", running, &op).await;
    let w = wait_window(
        &e,
        "nightly",
        "window Ready, closed, selecting gated",
        |w| {
            window_condition(w, "Ready").is_some_and(|(s, _)| s == "True")
                && w.status.as_ref().is_some_and(|s| {
                    !s.active && s.next_window.is_some() && s.selected_bots == ["gated"]
                })
        },
        &op,
    )
    .await;
    assert!(w.status.unwrap().current_window.is_none());
    let gated_uid = pod_uid(&e, "gated").await;
    let free_uid = pod_uid(&e, "free").await;
    let gated_sum = template_checksum(&e, "gated").await;

    // A pod-restarting change (pairs) to both bots.
    merge_patch(&e, "gated", json!({"pairs": ["SOL/USDT"]})).await;
    merge_patch(&e, "free", json!({"pairs": ["SOL/USDT"]})).await;

    // The bot no window selects rolls at once.
    wait_rolled(&e, "free", &free_uid, &op).await;
    // The selected bot waits, says so, and keeps its pod, template and pairs.
    let b = wait_bot(
        &e,
        "gated",
        "MaintenancePending True",
        |b| condition(b, "MaintenancePending").as_deref() == Some("True"),
        &op,
    )
    .await;
    let msg = bot_condition_message(&b, "MaintenancePending");
    assert!(
        msg.contains("nightly") && msg.contains("next opening") && msg.contains("restart"),
        "{msg}"
    );
    // Several more reconciles (1s poll) and it still waits.
    wait_window(
        &e,
        "nightly",
        "window lists the deferred operation",
        |w| {
            w.status.as_ref().is_some_and(|s| {
                s.deferred_operations
                    .iter()
                    .any(|d| d.bot == "gated" && d.operation == "upgrade")
            })
        },
        &op,
    )
    .await;
    let b = wait_bot(
        &e,
        "gated",
        "still Running while deferred",
        |b| running(b) && condition(b, "MaintenancePending").as_deref() == Some("True"),
        &op,
    )
    .await;
    assert_eq!(condition(&b, "ResourcesApplied").as_deref(), Some("True"));
    assert_eq!(
        pod_uid(&e, "gated").await,
        gated_uid,
        "the pod must not restart"
    );
    assert_eq!(template_checksum(&e, "gated").await, gated_sum);
    let s = bot_status(&e, "gated").await;
    assert_eq!(
        s["pairs"],
        json!(["BTC/USDT", "ETH/USDT"]),
        "old pairs: {s}"
    );
    assert!(
        events(&e, "gated")
            .await
            .iter()
            .any(|r| r == "UpgradeDeferred")
    );

    // A hot change is not gated.
    merge_patch(&e, "gated", json!({"risk": {"maxPositions": 7}})).await;
    let (addr, token) = bot_addr_token(&e, "gated").await;
    poll_until(
        "hot change reaches the deferred bot",
        DEADLINE,
        Duration::from_millis(200),
        || {
            let (addr, token) = (addr.clone(), token.clone());
            async move {
                let (_, cfg) = bot_api(&addr, &token, "GET", "/api/v1/config", "").await;
                (cfg["risk"]["maxPositions"] == 7).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", tail(&op)));
    assert_eq!(pod_uid(&e, "gated").await, gated_uid);

    // The window opens: the change rolls.
    patch_window(&e, "nightly", json!({"schedule": OPEN_SCHEDULE})).await;
    wait_window(
        &e,
        "nightly",
        "window open",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.active && s.current_window.is_some())
        },
        &op,
    )
    .await;
    wait_rolled(&e, "gated", &gated_uid, &op).await;
    wait_bot(
        &e,
        "gated",
        "Running, nothing waiting",
        |b| running(b) && condition(b, "MaintenancePending").as_deref() == Some("False"),
        &op,
    )
    .await;
    let s = bot_status(&e, "gated").await;
    assert_eq!(
        s["pairs"],
        json!(["SOL/USDT"]),
        "new pairs after the window opened: {s}"
    );
    let reasons = events(&e, "nightly").await;
    assert!(reasons.iter().any(|r| r == "WindowOpened"), "{reasons:?}");
    assert!(
        events(&e, "gated")
            .await
            .iter()
            .any(|r| r == "UpgradeReleased")
    );
    assert!(
        op.metric("iq720_operator_maintenance_operations_deferred_total{operation=\"upgrade\"}")
            .await
            >= 1.0
    );
    teardown(e).await;
}

#[tokio::test]
async fn pause_trading_window_pauses_and_restores_and_never_undoes_a_user_pause() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-pause", &[]).await;
    let ns = Some(e.ns.name());
    apply_yaml(&e.cluster.client, ns, &bot_yaml("p", ""))
        .await
        .unwrap();
    wait_bot(&e, "p", "Running", running, &op).await;
    let uid = pod_uid(&e, "p").await;

    // An open pauseTrading window pauses new entries.
    apply_yaml(
        &e.cluster.client,
        ns,
        &window_yaml("quiet", OPEN_SCHEDULE, "  pauseTrading: true\n"),
    )
    .await
    .unwrap();
    wait_bot_paused(&e, "p", true, &op).await;
    wait_bot(
        &e,
        "p",
        "Paused condition",
        |b| condition(b, "Paused").as_deref() == Some("True"),
        &op,
    )
    .await;
    // The window closes: the bot returns to what the spec asks (not paused).
    patch_window(&e, "quiet", json!({"schedule": closed_schedule()})).await;
    wait_window(
        &e,
        "quiet",
        "window closed",
        |w| w.status.as_ref().is_some_and(|s| !s.active),
        &op,
    )
    .await;
    wait_bot_paused(&e, "p", false, &op).await;
    let reasons = events(&e, "quiet").await;
    assert!(reasons.iter().any(|r| r == "WindowClosed"), "{reasons:?}");

    // A user's own pause outlives a window.
    merge_patch(&e, "p", json!({"paused": true})).await;
    wait_bot_paused(&e, "p", true, &op).await;
    patch_window(&e, "quiet", json!({"schedule": OPEN_SCHEDULE})).await;
    wait_window(
        &e,
        "quiet",
        "window open again",
        |w| w.status.as_ref().is_some_and(|s| s.active),
        &op,
    )
    .await;
    patch_window(&e, "quiet", json!({"schedule": closed_schedule()})).await;
    wait_window(
        &e,
        "quiet",
        "window closed again",
        |w| w.status.as_ref().is_some_and(|s| !s.active),
        &op,
    )
    .await;
    // Several reconciles later the user's pause holds.
    wait_bot(
        &e,
        "p",
        "still paused by the spec",
        |b| {
            condition(b, "Paused").as_deref() == Some("True")
                && b.status
                    .as_ref()
                    .and_then(|s| s.observed_generation)
                    .is_some()
        },
        &op,
    )
    .await;
    assert_eq!(bot_status(&e, "p").await["paused"], true);
    assert_eq!(
        pod_uid(&e, "p").await,
        uid,
        "pausing never restarts the pod"
    );
    teardown(e).await;
}

#[tokio::test]
async fn emergency_stop_is_not_gated_and_invalid_windows_are_reported() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-stop", &[]).await;
    let ns = Some(e.ns.name());
    apply_yaml(&e.cluster.client, ns, &bot_yaml("s", ""))
        .await
        .unwrap();
    apply_yaml(
        &e.cluster.client,
        ns,
        &window_yaml("closed", &closed_schedule(), ""),
    )
    .await
    .unwrap();
    wait_bot(&e, "s", "Running", running, &op).await;
    wait_window(
        &e,
        "closed",
        "closed window selects s",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| !s.active && s.selected_bots == ["s"])
        },
        &op,
    )
    .await;

    // Invalid cron and zone: InvalidSpec with both problems, never active.
    apply_yaml(
        &e.cluster.client,
        ns,
        &window_yaml("broken", "0 0 2 * * *", "")
            .replace("timeZone: UTC", "timeZone: Mars/Olympus"),
    )
    .await
    .unwrap();
    let w = wait_window(
        &e,
        "broken",
        "InvalidSpec",
        |w| window_condition(w, "InvalidSpec").is_some_and(|(s, _)| s == "True"),
        &op,
    )
    .await;
    let (_, msg) = window_condition(&w, "InvalidSpec").unwrap();
    assert!(
        msg.contains("5 fields") && msg.contains("Mars/Olympus"),
        "{msg}"
    );
    assert_eq!(
        window_condition(&w, "Ready").map(|(s, _)| s).as_deref(),
        Some("False")
    );
    assert!(!w.status.unwrap().active);

    // An emergency stop goes through at once although every window is closed.
    merge_patch(&e, "s", json!({"emergencyStop": true})).await;
    wait_bot(&e, "s", "emergency stop completed", stop_completed, &op).await;
    teardown(e).await;
}

/// A daily window that opened at the start of the current UTC hour and stays open for
/// two hours: open for at least the next hour.
fn open_this_hour_schedule() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("0 {} * * *", (secs / 3600) % 24)
}

#[tokio::test]
async fn vacuum_and_prune_run_once_per_window() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-tasks", &[]).await;
    let ns = Some(e.ns.name());
    apply_yaml(&e.cluster.client, ns, &bot_yaml("t", ""))
        .await
        .unwrap();
    wait_bot(&e, "t", "Running", running, &op).await;
    apply_yaml(
        &e.cluster.client,
        ns,
        &window_yaml(
            "db",
            &open_this_hour_schedule(),
            "  tasks: {vacuum: true, pruneTradeHistory: {olderThanDays: 1, archive: false}}\n",
        )
        .replace("duration: 1m", "duration: 2h"),
    )
    .await
    .unwrap();
    let w = wait_window(
        &e,
        "db",
        "both tasks ran",
        |w| {
            w.status.as_ref().is_some_and(|s| {
                s.active
                    && ["vacuum", "pruneTradeHistory"].iter().all(|t| {
                        s.task_runs
                            .iter()
                            .any(|r| r.bot == "t" && r.task == *t && r.result == "Succeeded")
                    })
            })
        },
        &op,
    )
    .await;
    let runs = w.status.unwrap().task_runs;
    assert!(
        runs.iter()
            .any(|r| r.message.contains("pruned 0 closed trade(s)")),
        "{runs:?}"
    );
    let reasons = events(&e, "t").await;
    assert!(
        reasons.iter().any(|r| r == "MaintenanceTaskSucceeded"),
        "{reasons:?}"
    );

    // Another reconcile in the same window runs nothing again.
    patch_window(&e, "db", json!({"allow": {"logCleanup": false}})).await;
    let generation = windows(&e).get("db").await.unwrap().metadata.generation;
    let w = wait_window(
        &e,
        "db",
        "new generation observed",
        move |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.observed_generation == generation)
        },
        &op,
    )
    .await;
    assert_eq!(w.status.unwrap().task_runs, runs, "no task ran twice");
    for task in ["vacuum", "pruneTradeHistory"] {
        let n = op
            .metric(&format!(
                "iq720_operator_maintenance_tasks_total{{result=\"Succeeded\",task=\"{task}\"}}"
            ))
            .await;
        assert_eq!(n, 1.0, "{task} ran {n} times");
    }
    teardown(e).await;
}

#[tokio::test]
async fn operator_restart_inside_an_open_window_keeps_the_window_pause_then_restores() {
    let e = env().await;
    let mut op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-r1", &[]).await;
    let ns = Some(e.ns.name());
    apply_yaml(&e.cluster.client, ns, &bot_yaml("r", ""))
        .await
        .unwrap();
    wait_bot(&e, "r", "Running", running, &op).await;
    apply_yaml(
        &e.cluster.client,
        ns,
        &window_yaml("quiet", OPEN_SCHEDULE, "  pauseTrading: true\n"),
    )
    .await
    .unwrap();
    wait_bot_paused(&e, "r", true, &op).await;

    // The operator dies inside the window; a new one starts.
    op.child.kill().await.unwrap();
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-r2", &[]).await;
    // Proof the new operator reconciled the bot: a hot change reaches it...
    merge_patch(&e, "r", json!({"risk": {"maxPositions": 6}})).await;
    let (addr, token) = bot_addr_token(&e, "r").await;
    poll_until(
        "hot change through the new operator",
        DEADLINE,
        Duration::from_millis(200),
        || {
            let (addr, token) = (addr.clone(), token.clone());
            async move {
                let (_, cfg) = bot_api(&addr, &token, "GET", "/api/v1/config", "").await;
                (cfg["risk"]["maxPositions"] == 6).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", tail(&op)));
    // ...and the window's pause holds (recomputed from the window, not remembered).
    assert_eq!(bot_status(&e, "r").await["paused"], true);
    let b = bots(&e).get("r").await.unwrap();
    assert_eq!(condition(&b, "Paused").as_deref(), Some("True"));

    // The window closes: the new operator restores the spec's pause (none).
    patch_window(&e, "quiet", json!({"schedule": closed_schedule()})).await;
    wait_bot_paused(&e, "r", false, &op).await;
    teardown(e).await;
}
