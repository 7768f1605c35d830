//! End-to-end tests of MaintenanceWindows on the real local cluster with the real bot
//! binary: a closed window defers a pod-restarting change (the running pod and its
//! configuration stay), an open window lets it roll, a bot no window selects rolls at
//! once, `pauseTrading` pauses and restores, an emergency stop is never gated, and an
//! invalid window is reported. Windows are made open or closed "now" by their schedule
//! (`* * * * *` for 1m is always open; a daily start twelve hours away is closed), so no
//! test waits for a wall-clock minute; every wait is a poll with a deadline.
//!
//! The archive tests seed old trades straight into the bot's SQLite database (the PV's
//! host directory) and old rotated log files into its log directory (the pod's
//! emptyDir on the local node), create the window closed, check nothing was touched,
//! then open it: the archive is read back from the real MinIO and compared row by row
//! (file by file) with what disappeared from the bot.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::backups::{apply_s3_secret, delete_prefix, minio_credentials, sha256_of, tail};
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
    // Proof the new operator reconciled the bot: a hot change reaches it, and the
    // window's pause holds at every look on the way (recomputed from the window, not
    // remembered; the handover never lifts it).
    merge_patch(&e, "r", json!({"risk": {"maxPositions": 6}})).await;
    let generation = bots(&e).get("r").await.unwrap().metadata.generation;
    let (addr, token) = bot_addr_token(&e, "r").await;
    poll_until(
        "hot change through the new operator",
        DEADLINE,
        Duration::from_millis(200),
        || {
            let (addr, token) = (addr.clone(), token.clone());
            async move {
                let (_, s) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
                assert_eq!(
                    s["paused"], true,
                    "the pause was lifted during the handover"
                );
                let (_, cfg) = bot_api(&addr, &token, "GET", "/api/v1/config", "").await;
                (cfg["risk"]["maxPositions"] == 6).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", tail(&op)));
    // The new operator's status for that generation reports the pause. (The bot may
    // hold the new config before the status write that follows it lands, and the old
    // operator may have died before writing Paused=True: hence the wait.)
    wait_bot(
        &e,
        "r",
        "Paused=True written by the new operator",
        move |b| {
            b.status
                .as_ref()
                .is_some_and(|s| s.observed_generation == generation)
                && condition(b, "Paused").as_deref() == Some("True")
        },
        &op,
    )
    .await;
    assert_eq!(bot_status(&e, "r").await["paused"], true);

    // The window closes: the new operator restores the spec's pause (none).
    patch_window(&e, "quiet", json!({"schedule": closed_schedule()})).await;
    wait_bot_paused(&e, "r", false, &op).await;
    teardown(e).await;
}

/// A bot write that changes nothing a window reads (an unrelated annotation here, as
/// the figures a running bot writes about three times a minute would be) does not
/// reconcile the windows of its namespace; a label change does, and the window's
/// `selectedBots` follows it.
#[tokio::test]
async fn only_bot_changes_a_window_reads_reconcile_the_window() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-trig", &[]).await;
    let ns = Some(e.ns.name());
    apply_yaml(
        &e.cluster.client,
        ns,
        &window_yaml(
            "sel",
            &closed_schedule(),
            "  botSelector: {matchLabels: {tier: prod}}\n",
        ),
    )
    .await
    .unwrap();
    apply_yaml(
        &e.cluster.client,
        ns,
        &bot_yaml("t", "").replace(
            "metadata: {name: t}",
            "metadata: {name: t, labels: {tier: prod}}",
        ),
    )
    .await
    .unwrap();
    wait_bot(&e, "t", "Running", running, &op).await;
    wait_window(
        &e,
        "sel",
        "the bot selected",
        |w| w.status.as_ref().is_some_and(|s| s.selected_bots == ["t"]),
        &op,
    )
    .await;
    let reconciles = "iq720_operator_reconciliations_total{controller=\"maintenancewindow\"}";
    let before = op.metric(reconciles).await;
    for i in 0..20 {
        annotate_bot(&e, "t", "example.com/note", &i.to_string()).await;
    }
    // The label change comes after every annotation in the watch: once the window
    // shows it, the operator has seen them all.
    patch_bot(&e, "t", json!({"metadata": {"labels": {"tier": "dev"}}})).await;
    wait_window(
        &e,
        "sel",
        "the bot no longer selected",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.selected_bots.is_empty())
        },
        &op,
    )
    .await;
    let ran = op.metric(reconciles).await - before;
    assert!(
        (1.0..=3.0).contains(&ran),
        "{ran} window reconciles for 20 annotation writes and one label change"
    );
    teardown(e).await;
}

// ------------------------------------------------------------ archives and log cleanup

const S3_SECRET: &str = "mw-s3";
/// Trades the archive tests seed: closed ten days ago (pruned) and one hour ago (kept).
const OLD_TRADES: [i64; 3] = [900_001, 900_002, 900_003];
const RECENT_TRADE: i64 = 900_010;

/// A Secret with the MinIO credentials (`secret_key` None: the real one).
async fn mw_s3_secret(e: &Env, secret_key: Option<&str>) {
    let (access, real) = minio_credentials(e);
    apply_s3_secret(e, S3_SECRET, &access, secret_key.unwrap_or(&real)).await;
}

fn archive_prefix(e: &Env) -> String {
    format!("mw-e2e/{}", e.ns.name())
}

/// `spec.archive` with a MinIO destination.
fn archive_spec(e: &Env) -> String {
    format!(
        "  archive:\n    destination:\n      bucket: {}\n      prefix: {}\n      endpoint: {}\n      forcePathStyle: true\n      credentialsSecretRef: {{name: {S3_SECRET}}}\n",
        iq720_tests::s3_bucket(&e.cluster).unwrap(),
        archive_prefix(e),
        e.cluster.env.var("IQ720_S3_ENDPOINT").unwrap(),
    )
}

async fn archive_keys(e: &Env) -> Vec<String> {
    let s3 = iq720_tests::s3_client(&e.cluster).unwrap();
    let bucket = iq720_tests::s3_bucket(&e.cluster).unwrap();
    iq720_tests::list_keys(&s3, &bucket, &format!("{}/", archive_prefix(e)))
        .await
        .unwrap()
}

async fn cleanup_archives(e: &Env) {
    delete_prefix(e, &archive_prefix(e)).await;
}

/// The bot pod's log directory: its `logs` emptyDir on the local node.
async fn bot_log_dir(e: &Env, bot: &str) -> std::path::PathBuf {
    let uid = pod_uid(e, bot).await;
    e.cluster
        .env
        .node_dir()
        .join("pods")
        .join(uid)
        .join("volumes")
        .join("logs")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn sqlite(db: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// Seeds closed trades (two orders each) ten days old and one an hour old, and an
/// equity snapshot ten days old, beside whatever the running bot writes.
fn seed_trades(db: &std::path::Path) {
    let c = sqlite(db);
    let day = 86_400_000;
    let mut rows: Vec<(i64, i64)> = OLD_TRADES
        .iter()
        .map(|id| (*id, now_ms() - 10 * day))
        .collect();
    rows.push((RECENT_TRADE, now_ms() - 3_600_000));
    for (id, closed) in rows {
        c.execute(
            "INSERT INTO trades (id, pair, side, is_open, amount, stake_amount, open_rate, open_date, fee_open,
               close_rate, close_date, fee_close, close_profit, close_profit_abs, exit_reason, strategy, max_rate)
             VALUES (?1, 'XRP/USDT', 'long', 0, 1.0, 100.0, 100.0, ?2, 0.1, 101.0, ?3, 0.1, 0.008, 0.8, 'exit_signal', 'rsi', 101.0)",
            rusqlite::params![id, closed - 60_000, closed],
        )
        .unwrap();
        for (n, side) in [(0, "buy"), (1, "sell")] {
            c.execute(
                "INSERT INTO orders (id, trade_id, pair, side, status, amount, price, filled, fee, created_at, updated_at)
                 VALUES (?1, ?2, 'XRP/USDT', ?3, 'closed', 1.0, 100.0, 1.0, 0.1, ?4, ?4)",
                rusqlite::params![id * 10 + n, id, side, closed],
            )
            .unwrap();
        }
    }
    c.execute(
        "INSERT INTO equity_snapshots (ts, equity, cash, open_positions) VALUES (?1, 10000.0, 10000.0, 0)",
        [now_ms() - 10 * day],
    )
    .unwrap();
}

/// Ids of the seeded trades still in the bot's database.
fn seeded_ids(db: &std::path::Path) -> Vec<i64> {
    let c = sqlite(db);
    let mut st = c
        .prepare("SELECT id FROM trades WHERE id >= 900000 ORDER BY id")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn prune_run(w: &MaintenanceWindow, bot: &str) -> Option<iq720_crds::maintenance_window::TaskRun> {
    w.status
        .as_ref()?
        .task_runs
        .iter()
        .find(|r| r.bot == bot && r.task == "pruneTradeHistory")
        .cloned()
}

#[tokio::test]
async fn prune_with_archive_stores_exactly_the_pruned_rows_in_minio_and_only_inside_the_window() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-archive", &[]).await;
    let ns = Some(e.ns.name());
    mw_s3_secret(&e, None).await;
    apply_yaml(&e.cluster.client, ns, &bot_yaml("arc", ""))
        .await
        .unwrap();
    wait_bot(&e, "arc", "Running", running, &op).await;
    let db = bot_db(&e, "arc").await;
    seed_trades(&db);

    // Closed: the window reports, runs nothing, and the rows stay.
    let yaml = window_yaml(
        "archive",
        &closed_schedule(),
        &format!(
            "  tasks: {{pruneTradeHistory: {{olderThanDays: 5}}}}\n{}",
            archive_spec(&e)
        ),
    )
    .replace("duration: 1m", "duration: 2h");
    apply_yaml(&e.cluster.client, ns, &yaml).await.unwrap();
    let w = wait_window(
        &e,
        "archive",
        "closed window Ready",
        |w| {
            window_condition(w, "Ready").is_some_and(|(s, _)| s == "True")
                && w.status
                    .as_ref()
                    .is_some_and(|s| !s.active && s.selected_bots == ["arc"])
        },
        &op,
    )
    .await;
    assert!(prune_run(&w, "arc").is_none());
    let mut all = OLD_TRADES.to_vec();
    all.push(RECENT_TRADE);
    assert_eq!(seeded_ids(&db), all, "nothing pruned outside the window");
    assert!(archive_keys(&e).await.is_empty());

    // The window opens: archive, verify, prune.
    patch_window(
        &e,
        "archive",
        json!({"schedule": open_this_hour_schedule()}),
    )
    .await;
    let w = wait_window(
        &e,
        "archive",
        "prune with archive ran",
        |w| prune_run(w, "arc").is_some(),
        &op,
    )
    .await;
    let run = prune_run(&w, "arc").unwrap();
    assert_eq!(run.result, "Succeeded", "{run:?}");
    let key = run.archive_key.clone().expect("archive key in status");
    assert!(
        key.starts_with(&format!(
            "{}/{}/arc/archive/trades-",
            archive_prefix(&e),
            e.ns.name()
        )) && key.ends_with(".jsonl.gz"),
        "{key}"
    );
    assert!(run.message.contains("verified"), "{}", run.message);

    // The object: sha256 in its metadata, the exact rows that left the bot.
    let s3 = iq720_tests::s3_client(&e.cluster).unwrap();
    let bucket = iq720_tests::s3_bucket(&e.cluster).unwrap();
    let bytes = iq720_tests::get_object(&s3, &bucket, &key).await.unwrap();
    assert_eq!(run.archive_bytes, Some(bytes.len() as i64));
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let meta = head.metadata().unwrap();
    assert_eq!(meta["iq720-managed-by"], "iq720-operator");
    assert_eq!(meta["iq720-maintenancewindow"], "archive");
    assert_eq!(meta["iq720-sha256"], sha256_of(&bytes));
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(bytes.as_slice()),
        &mut text,
    )
    .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let manifest = &lines.last().unwrap()["manifest"];
    let ids_in = |table: &str, field: &str| -> Vec<i64> {
        lines
            .iter()
            .filter(|l| l["table"] == table)
            .map(|l| l["row"][field].as_i64().unwrap())
            .collect()
    };
    let archived_trades = ids_in("trades", "id");
    // The bot's own trades are minutes old: only the seeded old ones are archived.
    assert_eq!(archived_trades, OLD_TRADES.to_vec(), "{text}");
    let mut order_trades = ids_in("orders", "tradeId");
    order_trades.dedup();
    assert_eq!(order_trades, OLD_TRADES.to_vec());
    assert_eq!(ids_in("orders", "id").len(), 6);
    let rows = (lines.len() - 1) as i64;
    assert_eq!(manifest["trades"], 3);
    assert_eq!(manifest["maxTradeId"], OLD_TRADES[2]);
    assert_eq!(run.deleted, Some(rows), "rows pruned = rows archived");
    // Gone from the bot: exactly the archived trades; the newer one stays.
    assert_eq!(seeded_ids(&db), vec![RECENT_TRADE]);
    let c = sqlite(&db);
    let orphans: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE trade_id BETWEEN 900001 AND 900003",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    let kept_orders: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE trade_id = ?1",
            [RECENT_TRADE],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept_orders, 2);
    assert!(
        events(&e, "arc")
            .await
            .iter()
            .any(|r| r == "MaintenanceTaskSucceeded"),
        "Event on the bot"
    );
    cleanup_archives(&e).await;
    teardown(e).await;
}

#[tokio::test]
async fn a_failed_archive_deletes_no_rows() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-archfail", &[]).await;
    let ns = Some(e.ns.name());
    mw_s3_secret(&e, Some("not-the-secret-key")).await;
    apply_yaml(&e.cluster.client, ns, &bot_yaml("fail", ""))
        .await
        .unwrap();
    wait_bot(&e, "fail", "Running", running, &op).await;
    let db = bot_db(&e, "fail").await;
    seed_trades(&db);
    let yaml = window_yaml(
        "archive",
        &open_this_hour_schedule(),
        &format!(
            "  tasks: {{pruneTradeHistory: {{olderThanDays: 5}}}}\n{}",
            archive_spec(&e)
        ),
    )
    .replace("duration: 1m", "duration: 2h");
    apply_yaml(&e.cluster.client, ns, &yaml).await.unwrap();
    let w = wait_window(
        &e,
        "archive",
        "prune attempted",
        |w| prune_run(w, "fail").is_some(),
        &op,
    )
    .await;
    let run = prune_run(&w, "fail").unwrap();
    assert_eq!(run.result, "Failed", "{run:?}");
    assert!(
        run.message.contains("no rows were deleted"),
        "{}",
        run.message
    );
    assert!(
        run.archive_key.is_none() && run.deleted.is_none(),
        "{run:?}"
    );
    assert!(
        !run.message.contains("not-the-secret-key"),
        "no secret in status"
    );
    let mut all = OLD_TRADES.to_vec();
    all.push(RECENT_TRADE);
    assert_eq!(seeded_ids(&db), all, "every row is still there");
    assert!(archive_keys(&e).await.is_empty(), "no partial object");
    assert!(
        events(&e, "fail")
            .await
            .iter()
            .any(|r| r == "MaintenanceTaskFailed")
    );
    // Not retried within the same window: still one failed run.
    assert_eq!(
        op.metric(
            "iq720_operator_maintenance_tasks_total{result=\"Failed\",task=\"pruneTradeHistory\"}"
        )
        .await,
        1.0
    );
    teardown(e).await;
}

/// `YYYY-MM-DD` (UTC) `days_ago` days before today.
fn date_days_ago(days_ago: i64) -> String {
    let days = now_ms().div_euclid(86_400_000) - days_ago;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Names and contents of the entries of a (ustar/gnu) tar.
fn tar_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() {
        let h = &bytes[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size_text = String::from_utf8_lossy(&h[124..136]);
        let size =
            usize::from_str_radix(size_text.trim_matches(|c: char| c == '\0' || c == ' '), 8)
                .unwrap();
        out.push((name, bytes[at + 512..at + 512 + size].to_vec()));
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

#[tokio::test]
async fn log_cleanup_archives_and_deletes_old_rotated_logs_only_inside_the_window() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-logs", &[]).await;
    let ns = Some(e.ns.name());
    mw_s3_secret(&e, None).await;
    apply_yaml(&e.cluster.client, ns, &bot_yaml("lg", ""))
        .await
        .unwrap();
    wait_bot(&e, "lg", "Running", running, &op).await;
    let dir = bot_log_dir(&e, "lg").await;
    assert!(
        dir.join("trading.log").exists(),
        "the bot writes {}",
        dir.display()
    );
    // As the bot names them: compressed (taken), past deleteAfter 30d (taken), recent
    // and uncompressed (kept).
    let compressed = format!("trading.log.{}.gz", date_days_ago(10));
    let expired = format!("security.log.{}", date_days_ago(40));
    let recent = format!("errors.log.{}", date_days_ago(1));
    for (name, content) in [
        (&compressed, "gz-bytes"),
        (&expired, "old security"),
        (&recent, "yesterday"),
    ] {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let yaml = window_yaml(
        "logs",
        &closed_schedule(),
        &format!("  tasks: {{logCleanup: {{}}}}\n{}", archive_spec(&e)),
    )
    .replace("duration: 1m", "duration: 2h");
    apply_yaml(&e.cluster.client, ns, &yaml).await.unwrap();
    wait_window(
        &e,
        "logs",
        "closed window Ready",
        |w| {
            window_condition(w, "Ready").is_some_and(|(s, _)| s == "True")
                && w.status
                    .as_ref()
                    .is_some_and(|s| !s.active && s.selected_bots == ["lg"])
        },
        &op,
    )
    .await;
    for name in [&compressed, &expired, &recent] {
        assert!(
            dir.join(name).exists(),
            "{name} untouched outside the window"
        );
    }

    patch_window(&e, "logs", json!({"schedule": open_this_hour_schedule()})).await;
    let w = wait_window(
        &e,
        "logs",
        "log cleanup ran",
        |w| {
            w.status.as_ref().is_some_and(|s| {
                s.task_runs
                    .iter()
                    .any(|r| r.bot == "lg" && r.task == "logCleanup")
            })
        },
        &op,
    )
    .await;
    let run = w
        .status
        .unwrap()
        .task_runs
        .into_iter()
        .find(|r| r.task == "logCleanup")
        .unwrap();
    assert_eq!(run.result, "Succeeded", "{run:?}");
    assert_eq!(run.deleted, Some(2), "{run:?}");
    assert_eq!(
        run.bytes_freed,
        Some(("gz-bytes".len() + "old security".len()) as i64)
    );
    assert!(!dir.join(&compressed).exists() && !dir.join(&expired).exists());
    assert!(
        dir.join(&recent).exists(),
        "a recent uncompressed file stays"
    );
    assert!(dir.join("trading.log").exists(), "the current file stays");
    // The archive holds the deleted files, byte for byte, after its manifest.
    let key = run.archive_key.unwrap();
    assert!(
        key.contains("/lg/archive/logs-") && key.ends_with(".tar"),
        "{key}"
    );
    let s3 = iq720_tests::s3_client(&e.cluster).unwrap();
    let bucket = iq720_tests::s3_bucket(&e.cluster).unwrap();
    let bytes = iq720_tests::get_object(&s3, &bucket, &key).await.unwrap();
    let entries = tar_entries(&bytes);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec![expired.as_str(), compressed.as_str()];
    expected.sort();
    assert_eq!(names[0], "MANIFEST.json");
    assert_eq!(names[1..].to_vec(), expected);
    for (name, content) in &entries[1..] {
        let want = if *name == compressed {
            "gz-bytes"
        } else {
            "old security"
        };
        assert_eq!(content.as_slice(), want.as_bytes());
    }
    cleanup_archives(&e).await;
    teardown(e).await;
}

#[tokio::test]
async fn a_pruning_window_without_an_archive_destination_is_rejected_at_admission() {
    let e = env().await;
    let err = apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &window_yaml(
            "noarch",
            OPEN_SCHEDULE,
            "  tasks: {pruneTradeHistory: {olderThanDays: 90}}\n",
        ),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("spec.archive is not set"), "{err}");
    let err = apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &window_yaml("both", OPEN_SCHEDULE, "  archive: {}\n"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("exactly one of destination or backupSchedule"),
        "{err}"
    );
    // archive: false prunes without one; a BackupSchedule's destination may be named.
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &window_yaml(
            "ok",
            OPEN_SCHEDULE,
            "  tasks: {pruneTradeHistory: {olderThanDays: 90}, logCleanup: {archive: true}}\n  archive: {backupSchedule: nightly}\n",
        ),
    )
    .await
    .unwrap();
    teardown(e).await;
}

#[tokio::test]
async fn a_key_rotation_waiting_for_a_closed_window_is_listed_as_deferred() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-mw-keys", &[]).await;
    let ns = Some(e.ns.name());
    apply_yaml(&e.cluster.client, ns, &bot_yaml("k", ""))
        .await
        .unwrap();
    apply_yaml(
        &e.cluster.client,
        ns,
        &window_yaml("keys", &closed_schedule(), ""),
    )
    .await
    .unwrap();
    wait_bot(&e, "k", "Running", running, &op).await;
    let has_rotation = |w: &MaintenanceWindow| {
        w.status.as_ref().is_some_and(|s| {
            s.deferred_operations
                .iter()
                .any(|d| d.bot == "k" && d.operation == "keyRotation")
        })
    };
    let w = wait_window(
        &e,
        "keys",
        "closed window selects k",
        |w| w.status.as_ref().is_some_and(|s| s.selected_bots == ["k"]),
        &op,
    )
    .await;
    assert!(!has_rotation(&w), "nothing is due yet");
    // An on-demand rotation while the only window is closed: it waits, and the window
    // lists it.
    bots(&e)
        .patch(
            "k",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"trading.iq720.io/rotate-keys": "r1"}}}),
            ),
        )
        .await
        .unwrap();
    wait_window(&e, "keys", "keyRotation deferred", has_rotation, &op).await;
    // The window opens: the rotation starts and is no longer deferred.
    patch_window(&e, "keys", json!({"schedule": OPEN_SCHEDULE})).await;
    wait_window(
        &e,
        "keys",
        "keyRotation released",
        move |w| w.status.as_ref().is_some_and(|s| s.active) && !has_rotation(w),
        &op,
    )
    .await;
    wait_bot(
        &e,
        "k",
        "rotation request acted on",
        |b| {
            b.status
                .as_ref()
                .and_then(|s| s.api_keys.as_ref())
                .and_then(|k| k.last_rotation_request.as_deref())
                == Some("r1")
        },
        &op,
    )
    .await;
    teardown(e).await;
}
