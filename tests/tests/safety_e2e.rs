//! Safety properties of the TradingBot controller on the real local cluster with the
//! real bot binary: an emergency stop runs whatever else is wrong with the spec and a
//! confirmed stop stays confirmed; an immutable storage change never wedges a bot; the
//! operator never takes over objects it does not own; every bad spec the apiserver
//! accepts ends in an `InvalidSpec` condition that says what to fix.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::Operator;
use common::bots::*;
use iq720_crds::TradingBot;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{apply_yaml, poll_until, wait_for_condition};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn condition_of(b: &TradingBot, type_: &str) -> Option<(String, String, String)> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn replicas_zero(e: &Env, name: &str) {
    let sets: Api<StatefulSet> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    wait_for_condition(
        &sets,
        name,
        |s: Option<&StatefulSet>| {
            s.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas) == Some(0)
        },
        DEADLINE,
    )
    .await
    .unwrap();
}

async fn bot_reports(e: &Env, name: &str, what: &str, pred: fn(&Value) -> bool) {
    let (addr, token) = bot_addr_token(e, name).await;
    poll_until(what, DEADLINE, Duration::from_millis(200), || {
        let (addr, token) = (addr.clone(), token.clone());
        async move {
            let (_, s) = common::bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
            pred(&s).then_some(())
        }
    })
    .await
    .unwrap();
}

/// Item 1 and 5 of the core issue: a typo in the spec must not skip the emergency
/// stop, pause must still reach the bot, an `Invalid` phase must not hide the stop, and
/// reconciles after the pod is gone must not downgrade a confirmed flat result.
#[tokio::test]
async fn emergency_stop_and_pause_run_on_an_invalid_spec_and_stay_confirmed() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-safe-1", &[]).await;
    apply_running(&e, "typo", "", &op).await;
    merge_patch(
        &e,
        "typo",
        json!({"strategy": {"params": {"rsiPeriodd": 3}}}),
    )
    .await;
    wait_bot(
        &e,
        "typo",
        "InvalidSpec",
        |b| condition(b, "InvalidSpec").as_deref() == Some("True"),
        &op,
    )
    .await;
    // pause still reaches the running bot
    merge_patch(&e, "typo", json!({"paused": true})).await;
    bot_reports(&e, "typo", "the bot is paused despite the typo", |s| {
        s["paused"] == true
    })
    .await;
    // the emergency stop runs
    merge_patch(&e, "typo", json!({"emergencyStop": true})).await;
    let b = wait_bot(&e, "typo", "emergency stop completed", stop_completed, &op).await;
    let st = b.status.clone().unwrap();
    let es = st.emergency_stop.clone().unwrap();
    assert!(!es.positions_may_remain, "the bot was reachable: {es:?}");
    assert_eq!(phase(&b), Some(TradingBotPhase::EmergencyStopped));
    assert_eq!(condition(&b, "InvalidSpec").as_deref(), Some("True"));
    let (_, reason, _) = condition_of(&b, "EmergencyStopped").unwrap();
    assert_eq!(reason, "Completed");
    replicas_zero(&e, "typo").await;
    wait_pod_gone(&e, "typo").await;
    // More reconciles with the pod gone (metadata changes trigger them) must keep the
    // confirmed result.
    for i in 0..3 {
        let r0 = op.metric("iq720_operator_reconciliations_total").await;
        bots(&e)
            .patch(
                "typo",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": i.to_string()}}})),
            )
            .await
            .unwrap();
        poll_until(
            "one more reconcile",
            DEADLINE,
            Duration::from_millis(100),
            || {
                let op = &op;
                async move {
                    (op.metric("iq720_operator_reconciliations_total").await > r0).then_some(())
                }
            },
        )
        .await
        .unwrap();
    }
    let b = bots(&e).get("typo").await.unwrap();
    let (_, reason, message) = condition_of(&b, "EmergencyStopped").unwrap();
    assert_eq!(reason, "Completed", "{message}");
    assert!(
        !b.status
            .unwrap()
            .emergency_stop
            .unwrap()
            .positions_may_remain
    );
    // The stop's Events are published in order; its last one is ScaledToZero.
    let reasons = wait_events(&e, "typo", &["ScaledToZero"]).await;
    assert!(
        !reasons.iter().any(|r| r == "PositionsMayRemainOpen"),
        "a confirmed stop must never raise a false alarm: {reasons:?}"
    );
    teardown(e).await;
}

/// Item 2: a storage change the volume cannot take is reported, and pause and the
/// emergency stop keep working.
#[tokio::test]
async fn storage_change_never_wedges_the_bot() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-safe-2", &[]).await;
    apply_running(&e, "disk", "", &op).await;
    let pvc = Api::<PersistentVolumeClaim>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get("data-disk-0")
        .await
        .unwrap();
    assert_eq!(
        pvc.spec.unwrap().access_modes.unwrap(),
        vec!["ReadWriteOncePod".to_string()],
        "the database volume is fenced to one pod"
    );
    // The local StorageClass does not allow expansion: the change is refused clearly.
    merge_patch(&e, "disk", json!({"storage": {"size": "2Gi"}})).await;
    let b = wait_bot(
        &e,
        "disk",
        "StorageInSync False",
        |b| condition(b, "StorageInSync").as_deref() == Some("False"),
        &op,
    )
    .await;
    let (_, reason, message) = condition_of(&b, "StorageInSync").unwrap();
    assert_eq!(reason, "ChangeRefused");
    assert!(message.contains("2Gi"), "{message}");
    assert_eq!(
        condition(&b, "ResourcesApplied").as_deref(),
        Some("True"),
        "every other object is still applied"
    );
    // pause still works
    merge_patch(&e, "disk", json!({"paused": true})).await;
    wait_bot(
        &e,
        "disk",
        "Paused",
        |b| condition(b, "Paused").as_deref() == Some("True"),
        &op,
    )
    .await;
    // a shrink is refused too
    merge_patch(&e, "disk", json!({"storage": {"size": "512Mi"}})).await;
    wait_bot(
        &e,
        "disk",
        "shrink refused",
        |b| {
            condition_of(b, "StorageInSync")
                .is_some_and(|(s, _, m)| s == "False" && m.contains("cannot shrink"))
        },
        &op,
    )
    .await;
    // and the emergency stop still ends with trading halted
    merge_patch(&e, "disk", json!({"emergencyStop": true})).await;
    let b = wait_bot(&e, "disk", "emergency stop completed", stop_completed, &op).await;
    assert!(
        !b.status
            .unwrap()
            .emergency_stop
            .unwrap()
            .positions_may_remain
    );
    replicas_zero(&e, "disk").await;
    assert!(
        events(&e, "disk")
            .await
            .iter()
            .any(|r| r == "StorageChangeRefused")
    );
    teardown(e).await;
}

/// Item 8: objects with the bot's names that the bot does not own are never adopted.
#[tokio::test]
async fn foreign_objects_are_never_taken_over() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-safe-3", &[]).await;
    let client = e.cluster.client.clone();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), e.ns.name());
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "thief-config"},
        "data": {"owner": "someone else"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &foreign).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), e.ns.name());
    let foreign_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "squatter-api-token"},
        "stringData": {"token": "not-the-operators"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &foreign_secret)
        .await
        .unwrap();
    apply_yaml(&client, Some(e.ns.name()), &bot_yaml("thief", ""))
        .await
        .unwrap();
    apply_yaml(&client, Some(e.ns.name()), &bot_yaml("squatter", ""))
        .await
        .unwrap();
    let b = wait_bot(
        &e,
        "thief",
        "ResourcesApplied False",
        |b| condition(b, "ResourcesApplied").as_deref() == Some("False"),
        &op,
    )
    .await;
    let (_, _, message) = condition_of(&b, "ResourcesApplied").unwrap();
    assert!(
        message.contains("ConfigMap thief-config") && message.contains("not owned"),
        "{message}"
    );
    let cm = cms.get("thief-config").await.unwrap();
    assert_eq!(cm.data.unwrap()["owner"], "someone else");
    assert!(cm.metadata.owner_references.is_none_or(|o| o.is_empty()));
    assert!(events(&e, "thief").await.iter().any(|r| r == "ApplyFailed"));
    let b = wait_bot(
        &e,
        "squatter",
        "ResourcesApplied False",
        |b| condition(b, "ResourcesApplied").as_deref() == Some("False"),
        &op,
    )
    .await;
    let (_, _, message) = condition_of(&b, "ResourcesApplied").unwrap();
    assert!(message.contains("squatter-api-token"), "{message}");
    let s = secrets.get("squatter-api-token").await.unwrap();
    assert!(s.metadata.owner_references.is_none_or(|o| o.is_empty()));
    teardown(e).await;
}

/// Item 6: foreground deletion (Argo CD's default) deletes the pod while the finalizer
/// runs; positions are still closed. The same bot recreated over its retained volume is
/// not left halted without a word.
#[tokio::test]
async fn foreground_deletion_closes_positions_and_a_recreated_bot_trades() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-safe-6", &[]).await;
    let client = e.cluster.client.clone();
    apply_yaml(&client, Some(e.ns.name()), &bot_yaml("fg", ""))
        .await
        .unwrap();
    wait_open_positions(&e, "fg", &op).await;
    bots(&e)
        .delete("fg", &kube::api::DeleteParams::foreground())
        .await
        .unwrap();
    wait_deleted(&e, "fg", &op).await;
    let reasons = events(&e, "fg").await;
    assert!(
        reasons.iter().any(|r| r == "PositionsClosed"),
        "foreground deletion must still close positions: {reasons:?}\n{}",
        op.log_text()
    );
    assert!(
        !reasons.iter().any(|r| r == "PositionsMayRemainOpen"),
        "{reasons:?}"
    );
    // Recreated over the retained claim: the close-all halt is in its database.
    apply_yaml(&client, Some(e.ns.name()), &bot_yaml("fg", ""))
        .await
        .unwrap();
    wait_bot(
        &e,
        "fg",
        "recreated bot trades",
        |b| phase(b) == Some(TradingBotPhase::Running),
        &op,
    )
    .await;
    bot_reports(&e, "fg", "not halted", |s| s["halted"] == false).await;
    assert!(events(&e, "fg").await.iter().any(|r| r == "Resumed"));
    teardown(e).await;
}

/// The deletion's cleanup can run twice: its own status write triggers a reconcile
/// that may start before the finalizer's removal reaches the operator's cache. By then
/// the garbage collector may have deleted the bot's token Secret (foreground deletion)
/// while the pod still answers. CI once saw both `PositionsClosed` and
/// `PositionsMayRemainOpen` on one deletion this way. The race is forced here: no
/// operator runs, the test calls the cleanup itself, deletes the token Secret as the
/// garbage collector would, and calls the cleanup again on the fresh object.
#[tokio::test]
async fn a_repeated_deletion_cleanup_closes_nothing_and_warns_nothing() {
    use iq720_operator::shared::context::{Context, Settings};
    use iq720_operator::shared::metrics::Metrics;
    use iq720_operator::tradingbot::cleanup::{CLEANED_UP, cleanup};

    let e = env().await;
    let mut op = Operator::start(&e.kubeconfig, e.ns.name(), "op-safe-twice", &[]).await;
    let client = e.cluster.client.clone();
    apply_yaml(&client, Some(e.ns.name()), &bot_yaml("twice", ""))
        .await
        .unwrap();
    wait_open_positions(&e, "twice", &op).await;
    // From here only this test acts on the bot; the finalizer holds the deletion.
    op.child.kill().await.unwrap();
    bots(&e)
        .delete("twice", &kube::api::DeleteParams::background())
        .await
        .unwrap();
    let deleting = bots(&e).get("twice").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let ctx = Context::new(
        client.clone(),
        Metrics::new().unwrap(),
        Settings::default(),
        None,
    );
    cleanup(&deleting, &ctx).await.unwrap();
    bot_reports(&e, "twice", "flat and halted", |s| {
        s["openPositions"] == 0 && s["halted"] == true
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), e.ns.name());
    secrets
        .delete("twice-api-token", &Default::default())
        .await
        .unwrap();
    // The second run, on the object as it is now.
    let again = bots(&e).get("twice").await.unwrap();
    let st = again.status.clone().unwrap();
    assert_eq!(st.open_positions, Some(0));
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", CLEANED_UP)
    );
    cleanup(&again, &ctx).await.unwrap();
    let reasons = events(&e, "twice").await;
    assert!(
        reasons.iter().any(|r| r == "PositionsClosed"),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r == "PositionsMayRemainOpen"),
        "a bot closed flat was announced as possibly open: {reasons:?}"
    );
    // The finalizer goes as the operator would let it go.
    patch_bot(&e, "twice", json!({"metadata": {"finalizers": null}})).await;
    wait_deleted(&e, "twice", &op).await;
    teardown(e).await;
}

/// One bad spec: a merge patch over a valid bot (or a bad name), and the words the
/// admission error or the `InvalidSpec` message must contain.
struct Case {
    name: &'static str,
    patch: Value,
    expect: &'static [&'static str],
}

fn case(name: &'static str, patch: Value, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        patch,
        expect,
    }
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn corpus() -> Vec<Case> {
    let long = "a-very-long-trading-bot-name-that-cannot-name-a-pod-x";
    vec![
        // names (admission)
        case(long, json!({}), &["at most 52 characters"]),
        case("dotted.name", json!({}), &["DNS-1035"]),
        case("9lives", json!({}), &["DNS-1035"]),
        case("Upper", json!({}), &["RFC 1123", "DNS-1035"]),
        // schema and CEL (admission)
        case("c-latest", json!({"version": "latest"}), &["latest"]),
        case(
            "c-version-space",
            json!({"version": "1 0"}),
            &["version must be"],
        ),
        case("c-no-pairs", json!({"pairs": []}), &["at least one market"]),
        case(
            "c-dup-pairs",
            json!({"pairs": ["BTC/USDT", "BTC/USDT"]}),
            &["twice"],
        ),
        case(
            "c-lower-pair",
            json!({"pairs": ["btc/usdt"]}),
            &["BASE/QUOTE"],
        ),
        case(
            "c-maxpos-0",
            json!({"risk": {"maxPositions": 0}}),
            &["maxPositions"],
        ),
        case(
            "c-size-0",
            json!({"risk": {"maxPositionSize": 0}}),
            &["maxPositionSize"],
        ),
        case(
            "c-risk-0",
            json!({"risk": {"positionRiskPercent": 0}}),
            &["positionRiskPercent"],
        ),
        case(
            "c-dd-150",
            json!({"risk": {"maxDrawdownPercent": 150}}),
            &["maxDrawdownPercent"],
        ),
        case(
            "c-daily-neg",
            json!({"risk": {"dailyLossLimitPercent": -1}}),
            &["dailyLossLimitPercent"],
        ),
        case(
            "c-stop-100",
            json!({"risk": {"stopLoss": {"percent": 100}}}),
            &["stopLoss"],
        ),
        case(
            "c-live-nocreds",
            json!({"mode": "live", "exchange": {"name": "binance"}}),
            &["credentialsSecretRef"],
        ),
        case(
            "c-live-paper",
            json!({"mode": "live", "exchange": {"name": "paper", "credentialsSecretRef": {"name": "k"}}}),
            &["real exchange"],
        ),
        case(
            "c-mode-demo",
            json!({"mode": "demo"}),
            &["Unsupported value", "mode"],
        ),
        case(
            "c-stale-words",
            json!({"marketData": {"staleAfter": "5 minutes"}}),
            &["duration"],
        ),
        case(
            "c-compress-days",
            json!({"logs": {"compressAfter": "7days"}}),
            &["duration"],
        ),
        case(
            "c-exch-noendpoint",
            json!({"marketData": {"primary": {"type": "exchange"}}}),
            &["endpoint"],
        ),
        case(
            "c-csv-nopath",
            json!({"marketData": {"primary": {"type": "csvReplay"}}}),
            &["path"],
        ),
        // cross-field and bot rules (operator: InvalidSpec)
        case(
            "c-param-typo",
            json!({"strategy": {"params": {"rsiPeriodd": 3}}}),
            &["rsiPeriodd"],
        ),
        case(
            "c-logs-order",
            json!({"logs": {"compressAfter": "30d", "deleteAfter": "7d"}}),
            &["whole days"],
        ),
        case(
            "c-macd-order",
            json!({"strategy": {"params": {"macdFast": 30, "macdSlow": 10}}}),
            &["macdFast"],
        ),
        case(
            "c-rsi-order",
            json!({"strategy": {"params": {"rsiBuy": 80, "rsiSell": 20}}}),
            &["rsiBuy"],
        ),
        case(
            "c-cpu-typo",
            json!({"resources": {"limits": {"cpu": "two"}}}),
            &["quantity", "cpu"],
        ),
        case(
            "c-storage-typo",
            json!({"storage": {"size": "1Gb"}}),
            &["spec.storage.size"],
        ),
        case(
            "c-req-gt-limit",
            json!({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}),
            &["must not exceed"],
        ),
        case(
            "c-same-backup",
            json!({"marketData": {"primary": {"type": "simulator", "seed": 1}, "backup": {"type": "simulator", "seed": 1}}}),
            &["must differ"],
        ),
        case(
            "c-live-mode",
            json!({"mode": "live", "exchange": {"name": "binance", "credentialsSecretRef": {"name": "k"}}}),
            &["not supported by this release"],
        ),
        case(
            "c-exch-feed",
            json!({"marketData": {"primary": {"type": "exchange", "endpoint": "wss://x"}}}),
            &["exchange is not supported"],
        ),
        case(
            "c-maxpos-1000",
            json!({"risk": {"maxPositions": 1000}}),
            &["maxPositions must be between 1 and 100"],
        ),
        case(
            "c-mem-negative",
            json!({"resources": {"limits": {"memory": "-1Gi"}}}),
            &["must not be negative"],
        ),
        case(
            "c-rotation-0",
            json!({"apiKeys": {"rotationInterval": "0s"}}),
            &["longer than zero"],
        ),
    ]
}

/// Item 12: at least 30 bad specs, each rejected at admission with a message that
/// names the problem, or accepted and reported as `InvalidSpec` with such a message
/// (never a crash-looping pod, a silent `Starting` or a reconcile error without status).
#[tokio::test]
async fn every_bad_spec_is_rejected_at_admission_or_reported() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-corpus", &[]).await;
    let cases = corpus();
    assert!(cases.len() >= 30, "the corpus must hold at least 30 specs");
    let base: Value = serde_yaml::from_str(&bot_yaml("base", "")).unwrap();
    let mut accepted = Vec::new();
    for c in &cases {
        let mut obj = base.clone();
        obj["metadata"]["name"] = json!(c.name);
        merge(&mut obj["spec"], &c.patch);
        let text = serde_json::to_string(&obj).unwrap();
        match apply_yaml(&e.cluster.client, Some(e.ns.name()), &text).await {
            Err(err) => {
                let msg = err.to_string();
                assert!(
                    c.expect.iter().any(|w| msg.contains(w)),
                    "{}: rejected with a message that does not say why: {msg}",
                    c.name
                );
            }
            Ok(_) => accepted.push(c),
        }
    }
    for c in accepted {
        let b = wait_bot(
            &e,
            c.name,
            &format!("{} reported InvalidSpec", c.name),
            |b| condition(b, "InvalidSpec").as_deref() == Some("True"),
            &op,
        )
        .await;
        let (_, _, message) = condition_of(&b, "InvalidSpec").unwrap();
        assert!(
            c.expect.iter().any(|w| message.contains(w)),
            "{}: InvalidSpec message does not say what to fix: {message}",
            c.name
        );
        assert_eq!(phase(&b), Some(TradingBotPhase::Invalid), "{}", c.name);
    }
    teardown(e).await;
}

/// A reconcile can run on a cached object older than the last status write (a pod
/// event arrives before the watch delivers that write). Its status must not undo the
/// newer one, and what it decided must not be announced a second time (CI once saw a
/// rollback counted twice this way). The writer sends the object's `resourceVersion`
/// as the precondition; the apiserver refuses the stale write.
#[tokio::test]
async fn a_status_decided_on_an_older_object_is_not_written() {
    use iq720_crds::TradingBotStatus;
    use iq720_operator::shared::context::{Context, Settings};
    use iq720_operator::shared::metrics::Metrics;
    use iq720_operator::tradingbot::status::{Written, write};

    let e = env().await;
    let client = e.cluster.client.clone();
    // No operator here: only this test writes the status.
    apply_yaml(&client, Some(e.ns.name()), &bot_yaml("stale", ""))
        .await
        .unwrap();
    let older = bots(&e).get("stale").await.unwrap();
    let ctx = Context::new(client, Metrics::new().unwrap(), Settings::default(), None);
    let first = TradingBotStatus {
        phase: Some(TradingBotPhase::Running),
        open_positions: Some(2),
        ..Default::default()
    };
    let stored = write(&ctx, &older, first).await.unwrap();
    let Written::Stored(newer) = stored else {
        panic!("the first write is stored: {stored:?}");
    };
    // Decided again on the older object: refused, nothing changes.
    let decided_on_older = TradingBotStatus {
        phase: Some(TradingBotPhase::Failed),
        open_positions: Some(0),
        ..Default::default()
    };
    let again = write(&ctx, &older, decided_on_older.clone()).await.unwrap();
    assert!(
        matches!(again, Written::Stale),
        "a status computed from an older object was written (landed: {})",
        again.landed()
    );
    assert!(!again.landed());
    let now = bots(&e).get("stale").await.unwrap();
    let st = now.status.unwrap();
    assert_eq!(st.phase, Some(TradingBotPhase::Running));
    assert_eq!(st.open_positions, Some(2));
    assert_eq!(
        ctx.metrics
            .stale_status_writes
            .with_label_values(&["tradingbot"])
            .get(),
        1
    );
    // On the newest object the same status is written.
    let written = write(&ctx, &newer, decided_on_older).await.unwrap();
    assert!(
        matches!(written, Written::Stored(_)),
        "not stored on the newest object"
    );
    let st = bots(&e).get("stale").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(TradingBotPhase::Failed));
    teardown(e).await;
}
