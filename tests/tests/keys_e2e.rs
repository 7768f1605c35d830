//! End-to-end tests of the rotation of a bot's own API tokens on the real local cluster
//! with the real bot binary (which accepts every key of its mounted token Secret):
//! an on-demand rotation overlaps the old and the new token for the grace period, then
//! only the new one works; an operator killed between the rotation's steps is replaced
//! by one that completes the rotation and still reaches the bot; a bot selected by a
//! MaintenanceWindow rotates only while a window allowing `keyRotation` is open. No
//! token value may appear in the operator's log, the bot's status or its Events.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::bots::*;
use common::{Operator, bot_api};
use iq720_crds::TradingBot;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{apply_yaml, poll_until};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

const ROTATE: &str = "trading.iq720.io/rotate-keys";

/// Rank of a token key as the operator orders them: `token` 0, `token-<n>` n.
fn rank(key: &str) -> Option<u64> {
    if key == "token" {
        return Some(0);
    }
    key.strip_prefix("token-")?.parse().ok()
}

/// The token keys of the bot's Secret with their values, newest first.
async fn tokens(e: &Env, bot: &str) -> Vec<(String, String)> {
    let secret = Api::<Secret>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get(&format!("{bot}-api-token"))
        .await
        .unwrap();
    let mut out: Vec<(u64, String, String)> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| {
            let r = rank(&k)?;
            Some((r, k, String::from_utf8(v.0).unwrap().trim().to_string()))
        })
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse(t.0));
    out.into_iter().map(|(_, k, v)| (k, v)).collect()
}

/// Polls until the Secret holds exactly `n` token keys; returns them, newest first.
async fn wait_tokens(e: &Env, bot: &str, n: usize, op: &Operator) -> Vec<(String, String)> {
    let r = poll_until(
        &format!("token Secret of {bot} holds {n} key(s)"),
        DEADLINE,
        Duration::from_millis(100),
        || async move {
            let t = tokens(e, bot).await;
            (t.len() == n).then_some(t)
        },
    )
    .await;
    match r {
        Ok(t) => t,
        Err(err) => panic!("{err}\noperator log tail:\n{}", tail(op)),
    }
}

fn tail(op: &Operator) -> String {
    let log = op.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn bot_addr(e: &Env, bot: &str) -> String {
    let pod = bot_pod(e, bot).await.expect("bot pod");
    format!("{}:8080", pod.status.unwrap().pod_ip.unwrap())
}

/// HTTP status of `GET /api/v1/status` with `token`.
async fn status_with(addr: &str, token: &str) -> u16 {
    bot_api(addr, token, "GET", "/api/v1/status", "").await.0
}

/// Polls until the bot answers `want` to `token`.
async fn wait_answer(addr: &str, token: &str, want: u16, what: &str) {
    poll_until(what, DEADLINE, Duration::from_millis(200), || async move {
        (status_with(addr, token).await == want).then_some(())
    })
    .await
    .unwrap();
}

async fn annotate(e: &Env, bot: &str, value: &str) {
    annotate_bot(e, bot, ROTATE, value).await;
}

fn api_keys(b: &TradingBot) -> Option<&iq720_crds::trading_bot::ApiKeysStatus> {
    b.status.as_ref()?.api_keys.as_ref()
}

fn rotation_done(b: &TradingBot) -> bool {
    api_keys(b).is_some_and(|k| k.last_rotated.is_some() && k.rotation.is_none())
}

/// Every Event note about the bot.
async fn event_notes(e: &Env, bot: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|ev| ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(bot))
        .map(|ev| (ev.reason.unwrap_or_default(), ev.note.unwrap_or_default()))
        .collect()
}

/// No token value in the operator logs, the bot's status or its Events.
async fn assert_no_leak(e: &Env, bot: &str, secrets: &[&str], ops: &[&Operator]) {
    let status = serde_json::to_string(&bots(e).get(bot).await.unwrap().status).unwrap();
    let notes = event_notes(e, bot).await;
    for s in secrets {
        assert!(!status.contains(s), "a token is in the status");
        for (reason, note) in &notes {
            assert!(!note.contains(s), "a token is in Event {reason}");
        }
        for op in ops {
            assert!(
                !op.log_text().contains(s),
                "a token is in the operator log {}",
                op.log.display()
            );
        }
    }
}

/// The operator still talks to the bot with the token it holds: a pause reaches it.
async fn operator_reaches_bot(e: &Env, bot: &str, op: &Operator) {
    merge_patch(e, bot, json!({"paused": true})).await;
    wait_bot(
        e,
        bot,
        "paused through the bot API after the rotation",
        |b| {
            condition(b, "Paused").as_deref() == Some("True")
                && condition(b, "Ready").as_deref() == Some("True")
        },
        op,
    )
    .await;
}

/// The operator's rotation-due gauge of one bot, in Unix seconds.
async fn rotation_due_gauge(op: &Operator, ns: &str, bot: &str) -> Option<i64> {
    let text = iq720_tests::http::get(&op.metrics_addr, "/metrics")
        .await
        .ok()?
        .text();
    text.lines()
        .filter(|l| l.starts_with("iq720_operator_api_keys_rotation_due_timestamp_seconds{"))
        .filter(|l| {
            l.contains(&format!("bot=\"{bot}\"")) && l.contains(&format!("namespace=\"{ns}\""))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as i64)
}

/// Waits until the gauge equals `status.apiKeys.nextRotation` (the alert's input).
async fn wait_gauge_matches(e: &Env, op: &Operator, bot: &str, next: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = rotation_due_gauge(op, e.ns.name(), bot).await;
        if got == Some(next) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "iq720_operator_api_keys_rotation_due_timestamp_seconds for {bot} is {got:?}, status.apiKeys.nextRotation is {next}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn on_demand_rotation_overlaps_for_the_grace_period_then_drops_the_old_token() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "keys-a", &[]).await;
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &bot_yaml(
            "rot",
            "  apiKeys: {rotationInterval: 90d, gracePeriod: 8s}\n",
        ),
    )
    .await
    .unwrap();
    let b = wait_bot(
        &e,
        "rot",
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    // before any rotation: the next one is scheduled from the Secret's creation
    assert!(
        api_keys(&b).is_some_and(|k| k.next_rotation.is_some() && k.last_rotated.is_none()),
        "nextRotation before the first rotation: {:?}",
        api_keys(&b)
    );
    let first_due = api_keys(&b)
        .unwrap()
        .next_rotation
        .as_ref()
        .unwrap()
        .0
        .as_second();
    wait_gauge_matches(&e, &op, "rot", first_due).await;
    let before = wait_tokens(&e, "rot", 1, &op).await;
    assert_eq!(before[0].0, "token");
    let old = before[0].1.clone();
    let addr = bot_addr(&e, "rot").await;
    assert_eq!(status_with(&addr, &old).await, 200);

    annotate(&e, "rot", "1").await;
    // step 1: the Secret holds the old and the new token
    let both = wait_tokens(&e, "rot", 2, &op).await;
    let (new_key, new) = both[0].clone();
    assert!(rank(&new_key).unwrap() > 0, "new key {new_key}");
    assert_eq!(both[1].1, old);
    assert_ne!(new, old);
    // steps 2-3: the bot accepted the new token and the operator switched to it
    let b = wait_bot(
        &e,
        "rot",
        "switched to the new token",
        |b| {
            api_keys(b)
                .and_then(|k| k.rotation.as_ref())
                .is_some_and(|r| r.switched_at.is_some())
        },
        &op,
    )
    .await;
    let keys = api_keys(&b).unwrap();
    assert_eq!(keys.rotation.as_ref().unwrap().new_key, new_key);
    assert_eq!(keys.last_rotation_request.as_deref(), Some("1"));
    // grace period: a client with the old token and one with the new are both served
    assert_eq!(status_with(&addr, &old).await, 200, "old token in grace");
    assert_eq!(status_with(&addr, &new).await, 200, "new token in grace");
    // The operator waited until the bot held the new token before using it: the
    // rotation left no rejected call in the bot's security audit.
    let (_, audit) = bot_api(&addr, &new, "GET", "/api/v1/security", "").await;
    assert_eq!(audit["authFailures"]["total"], 0, "{audit}");
    assert_eq!(
        tokens(&e, "rot").await.len(),
        2,
        "both answers must come from within the grace period (8 s)"
    );
    // step 4: after the grace period the old token is removed and refused
    let b = wait_bot(&e, "rot", "rotation done", rotation_done, &op).await;
    let keys = api_keys(&b).unwrap();
    assert!(keys.next_rotation.is_some());
    assert!(keys.next_rotation.as_ref().unwrap().0 > keys.last_rotated.as_ref().unwrap().0);
    let next_due = keys.next_rotation.as_ref().unwrap().0.as_second();
    assert!(next_due > first_due, "the rotation moved the due time");
    wait_gauge_matches(&e, &op, "rot", next_due).await;
    let after = wait_tokens(&e, "rot", 1, &op).await;
    assert_eq!(after[0], (new_key.clone(), new.clone()));
    wait_answer(
        &addr,
        &old,
        401,
        "the old token is refused after the grace period",
    )
    .await;
    assert_eq!(status_with(&addr, &new).await, 200, "the new token works");
    let reasons = events(&e, "rot").await;
    for r in ["KeyRotationStarted", "KeyRotationSwitched", "KeyRotated"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "Event {r} missing: {reasons:?}"
        );
    }
    // the operator uses the new token
    operator_reaches_bot(&e, "rot", &op).await;
    // once per value: the same annotation value does not rotate again
    let rotated = keys.last_rotated.clone();
    let b = bots(&e).get("rot").await.unwrap();
    assert_eq!(api_keys(&b).unwrap().last_rotated, rotated);
    assert_eq!(tokens(&e, "rot").await, after);
    assert_eq!(
        events(&e, "rot")
            .await
            .iter()
            .filter(|r| *r == "KeyRotationStarted")
            .count(),
        1
    );
    assert_no_leak(&e, "rot", &[&old, &new], &[&op]).await;
    teardown(e).await;
}

#[tokio::test]
async fn operator_killed_between_rotation_steps_completes_it_and_keeps_access() {
    let e = env().await;
    let mut op = Operator::start(&e.kubeconfig, e.ns.name(), "keys-kill-1", &[]).await;
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &bot_yaml(
            "phoenix",
            "  apiKeys: {rotationInterval: 90d, gracePeriod: 5s}\n",
        ),
    )
    .await
    .unwrap();
    wait_bot(
        &e,
        "phoenix",
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    let old = wait_tokens(&e, "phoenix", 1, &op).await[0].1.clone();
    annotate(&e, "phoenix", "first").await;

    // kill 1: right after the Secret holds two keys (before or while the bot loads the
    // new one); the new operator starts with an empty token cache
    let both = wait_tokens(&e, "phoenix", 2, &op).await;
    op.child.start_kill().unwrap();
    op.child.wait().await.unwrap();
    let (new_key, new) = both[0].clone();
    let first = op;
    let mut op = Operator::start(&e.kubeconfig, e.ns.name(), "keys-kill-2", &[]).await;

    // kill 2: in the grace period, after the switch
    wait_bot(
        &e,
        "phoenix",
        "switched after the first restart",
        |b| {
            api_keys(b)
                .and_then(|k| k.rotation.as_ref())
                .is_some_and(|r| r.switched_at.is_some())
        },
        &op,
    )
    .await;
    op.child.start_kill().unwrap();
    op.child.wait().await.unwrap();
    let second = op;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "keys-kill-3", &[]).await;

    let b = wait_bot(
        &e,
        "phoenix",
        "rotation done after restarts",
        rotation_done,
        &op,
    )
    .await;
    let keys = api_keys(&b).unwrap();
    assert_eq!(keys.last_rotation_request.as_deref(), Some("first"));
    let after = wait_tokens(&e, "phoenix", 1, &op).await;
    assert_eq!(
        after[0],
        (new_key, new.clone()),
        "the new token, not a third one"
    );
    let addr = bot_addr(&e, "phoenix").await;
    wait_answer(&addr, &old, 401, "old token refused after the rotation").await;
    assert_eq!(status_with(&addr, &new).await, 200);
    operator_reaches_bot(&e, "phoenix", &op).await;
    assert_no_leak(&e, "phoenix", &[&old, &new], &[&first, &second, &op]).await;
    teardown(e).await;
}

/// A daily window starting twelve hours from now (UTC): closed for the whole test.
fn closed_schedule() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("0 {} * * *", (secs / 3600 + 12) % 24)
}

async fn patch_window(e: &Env, name: &str, spec: serde_json::Value) {
    Api::<iq720_crds::MaintenanceWindow>::namespaced(e.cluster.client.clone(), e.ns.name())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
}

/// A reconcile that started after every earlier change has finished: the bot's pause
/// (set through the bot API) follows `paused`.
async fn reconciled_after(e: &Env, bot: &str, paused: bool, op: &Operator) {
    merge_patch(e, bot, json!({ "paused": paused })).await;
    let want = if paused { "True" } else { "False" };
    wait_bot(
        e,
        bot,
        "a later reconcile",
        move |b| condition(b, "Paused").as_deref() == Some(want),
        op,
    )
    .await;
}

fn untouched(b: &TradingBot) -> bool {
    api_keys(b).is_none_or(|k| {
        k.rotation.is_none() && k.last_rotated.is_none() && k.last_rotation_request.is_none()
    })
}

#[tokio::test]
async fn rotation_waits_for_an_open_window_allowing_key_rotation() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "keys-gate", &[]).await;
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &format!(
            "apiVersion: trading.iq720.io/v1alpha1\nkind: MaintenanceWindow\nmetadata: {{name: keys}}\nspec:\n  schedule: \"{}\"\n  duration: 1m\n  timeZone: UTC\n",
            closed_schedule()
        ),
    )
    .await
    .unwrap();
    apply_yaml(
        &e.cluster.client,
        Some(e.ns.name()),
        &bot_yaml(
            "gated",
            "  apiKeys: {rotationInterval: 90d, gracePeriod: 2s}\n",
        ),
    )
    .await
    .unwrap();
    wait_bot(
        &e,
        "gated",
        "Running",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    annotate(&e, "gated", "1").await;
    // a closed window: the request waits
    reconciled_after(&e, "gated", true, &op).await;
    assert_eq!(tokens(&e, "gated").await.len(), 1);
    assert!(untouched(&bots(&e).get("gated").await.unwrap()));
    // an open window that does not allow keyRotation: still waits
    patch_window(
        &e,
        "keys",
        json!({"schedule": "* * * * *", "allow": {"keyRotation": false}}),
    )
    .await;
    poll_until(
        "window open",
        DEADLINE,
        Duration::from_millis(200),
        || async {
            let w = Api::<iq720_crds::MaintenanceWindow>::namespaced(
                e.cluster.client.clone(),
                e.ns.name(),
            )
            .get("keys")
            .await
            .ok()?;
            w.status?.active.then_some(())
        },
    )
    .await
    .unwrap();
    reconciled_after(&e, "gated", false, &op).await;
    assert_eq!(tokens(&e, "gated").await.len(), 1);
    assert!(untouched(&bots(&e).get("gated").await.unwrap()));
    // allowed: the rotation runs
    patch_window(&e, "keys", json!({"allow": {"keyRotation": true}})).await;
    let b = wait_bot(&e, "gated", "rotated in the window", rotation_done, &op).await;
    assert_eq!(
        api_keys(&b).unwrap().last_rotation_request.as_deref(),
        Some("1")
    );
    let after = wait_tokens(&e, "gated", 1, &op).await;
    assert!(rank(&after[0].0).unwrap() > 0);
    teardown(e).await;
}
