//! End-to-end test of exchange credentials on the real local cluster, with the real
//! operator and the real bot binary (paper mode with `spec.exchange.credentialsSecretRef`):
//!
//! - the bot picks up changed credentials from its mounted Secret without a restart
//!   (`GET /api/v1/security` → `exchangeCredentials.fingerprint` changes, same pod UID);
//! - an invalid set (empty `apiKey`) is rejected: the fingerprint stays, `lastError`
//!   names the key, the reload metrics count both outcomes;
//! - the operator reads the age from the Secret's `trading.iq720.io/rotated-at`
//!   annotation: `KeyRotationDue` Unknown without it, True with a Warning Event when it
//!   is older than `spec.apiKeys.rotationInterval`, False when fresh.
//!
//! No credential value may appear in the bot's answer, the status or an Event.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::bots::*;
use common::{Operator, bot_api, bot_metrics};
use iq720_crds::TradingBot;
use iq720_tests::poll_until;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const SECRET: &str = "exchange-keys";
const ANNOTATION: &str = "trading.iq720.io/rotated-at";
/// The kubelet (here the local node agent, every 3 s) refreshes the mounted Secret,
/// then the bot notices within its 2 s poll.
const PICKUP: Duration = Duration::from_secs(60);

fn secrets(e: &Env) -> Api<Secret> {
    Api::namespaced(e.cluster.client.clone(), e.ns.name())
}

async fn put_keys(e: &Env, api_key: &str, api_secret: &str) {
    let data = json!({"stringData": {"apiKey": api_key, "apiSecret": api_secret}});
    secrets(e)
        .patch(SECRET, &PatchParams::default(), &Patch::Merge(data))
        .await
        .unwrap();
}

async fn annotate(e: &Env, value: &str) {
    let patch = json!({"metadata": {"annotations": {ANNOTATION: value}}});
    secrets(e)
        .patch(SECRET, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

fn key_rotation_due(b: &TradingBot) -> Option<(String, String, String)> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "KeyRotationDue")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn security(addr: &str, token: &str) -> Value {
    let (status, body) = bot_api(addr, token, "GET", "/api/v1/security", "").await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn creds(addr: &str, token: &str) -> Value {
    security(addr, token).await["exchangeCredentials"].clone()
}

fn status_creds(b: &TradingBot) -> Option<(Option<String>, Option<String>)> {
    let c = b.status.as_ref()?.exchange_credentials.as_ref()?;
    Some((c.fingerprint.clone(), c.last_error.clone()))
}

async fn key_rotation_events(e: &Env, bot: &str) -> Vec<String> {
    event_notes_with_reason(e, bot, "KeyRotationDue").await
}

fn assert_no_values(text: &str, values: &[&str]) {
    for v in values {
        assert!(!text.contains(v), "a credential value leaked: {text}");
    }
}

#[tokio::test]
async fn changed_credentials_are_picked_up_without_restart_and_their_age_is_reported() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-credentials", &[]).await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET},
        "stringData": {"apiKey": "key-one-AAAA", "apiSecret": "secret-one-AAAA"}
    }))
    .unwrap();
    secrets(&e)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let name = "creds";
    let extra = format!(
        "  exchange: {{name: binance, credentialsSecretRef: {{name: {SECRET}}}}}\n  apiKeys: {{rotationInterval: 1d}}\n"
    );
    apply_running(&e, name, &extra, &op).await;

    // No annotation: the age is unknown, and the condition says how to set it.
    let bot = wait_bot(
        &e,
        name,
        "KeyRotationDue Unknown/NoRotationTime",
        |b| key_rotation_due(b).is_some_and(|(s, r, _)| s == "Unknown" && r == "NoRotationTime"),
        &op,
    )
    .await;
    let (_, _, message) = key_rotation_due(&bot).unwrap();
    assert!(
        message.contains(ANNOTATION) && message.contains("kubectl annotate secret"),
        "{message}"
    );

    let (addr, token) = bot_addr_token(&e, name).await;
    let first = creds(&addr, &token).await;
    let fp1 = first["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no fingerprint at start: {first}"))
        .to_string();
    assert_eq!(fp1.len(), 12, "{first}");
    assert!(first["lastError"].is_null(), "{first}");
    assert!(first["loadedAt"].is_string(), "{first}");
    let uid = bot_pod(&e, name).await.unwrap().metadata.uid.unwrap();

    // 1. new values → picked up in place
    put_keys(&e, "key-two-BBBB", "secret-two-BBBB").await;
    let started = std::time::Instant::now();
    let second = poll_until(
        "the bot reports the new credentials' fingerprint",
        PICKUP,
        Duration::from_millis(250),
        || {
            let (addr, token, fp1) = (addr.clone(), token.clone(), fp1.clone());
            async move {
                let c = creds(&addr, &token).await;
                (c["fingerprint"].as_str().is_some_and(|f| f != fp1) && c["lastError"].is_null())
                    .then_some(c)
            }
        },
    )
    .await
    .unwrap();
    println!(
        "new credentials in use {:.1}s after the Secret update",
        started.elapsed().as_secs_f64()
    );
    let fp2 = second["fingerprint"].as_str().unwrap().to_string();
    let pod = bot_pod(&e, name).await.unwrap();
    assert_eq!(
        pod.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "the bot pod was replaced"
    );
    let restarts: i32 = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "the bot container restarted");
    // the operator copies the bot's report into the status
    let fp2_status = Some((Some(fp2.clone()), None));
    wait_bot(
        &e,
        name,
        "status.exchangeCredentials with the new fingerprint",
        move |b| status_creds(b) == fp2_status,
        &op,
    )
    .await;

    // 2. an invalid set (empty apiKey) → rejected, the previous set stays in use
    put_keys(&e, "", "secret-three-CCCC").await;
    let third = poll_until(
        "the bot rejects the invalid credentials",
        PICKUP,
        Duration::from_millis(250),
        || {
            let (addr, token) = (addr.clone(), token.clone());
            async move {
                let c = creds(&addr, &token).await;
                c["lastError"].is_string().then_some(c)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(third["fingerprint"].as_str(), Some(fp2.as_str()), "{third}");
    assert!(
        third["lastError"].as_str().unwrap().contains("apiKey"),
        "{third}"
    );
    let metrics = bot_metrics(&addr).await;
    let reloads = |result: &str| {
        metrics
            .get(&format!(
                "iq720_bot_exchange_credentials_reloads_total{{result=\"{result}\"}}"
            ))
            .copied()
            .unwrap_or(-1.0)
    };
    assert!(reloads("applied") >= 1.0, "{metrics:?}");
    assert!(reloads("rejected") >= 1.0, "{metrics:?}");
    let fp2_kept = fp2.clone();
    let bot = wait_bot(
        &e,
        name,
        "status.exchangeCredentials.lastError with the old fingerprint",
        move |b| {
            status_creds(b)
                .is_some_and(|(fp, err)| fp.as_deref() == Some(fp2_kept.as_str()) && err.is_some())
        },
        &op,
    )
    .await;
    let rejected = poll_until(
        "Warning Event ExchangeCredentialsRejected",
        DEADLINE,
        Duration::from_millis(250),
        || async {
            Some(event_notes_with_reason(&e, name, "ExchangeCredentialsRejected").await)
                .filter(|v| !v.is_empty())
        },
    )
    .await
    .unwrap();
    assert!(
        rejected[0].contains("apiKey") && rejected[0].contains(&fp2),
        "{rejected:?}"
    );
    let status_text = serde_json::to_string(&bot.status).unwrap();
    let audit = security(&addr, &token).await.to_string();
    let values = [
        "key-one-AAAA",
        "secret-one-AAAA",
        "key-two-BBBB",
        "secret-two-BBBB",
        "secret-three-CCCC",
    ];
    assert_no_values(&(audit + &status_text + &rejected.join("\n")), &values);
    assert_eq!(
        bot_pod(&e, name).await.unwrap().metadata.uid.as_deref(),
        Some(uid.as_str())
    );

    // 3. rotated two days ago, interval one day → KeyRotationDue True and an Event
    let old =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(48);
    let old = k8s_openapi::jiff::Timestamp::from_second(old.as_second()).unwrap();
    annotate(&e, &old.to_string()).await;
    let bot = wait_bot(
        &e,
        name,
        "KeyRotationDue True",
        |b| key_rotation_due(b).is_some_and(|(s, _, _)| s == "True"),
        &op,
    )
    .await;
    let (_, reason, message) = key_rotation_due(&bot).unwrap();
    assert_eq!(reason, "RotationOverdue");
    assert!(
        message.contains(&format!("Secret {SECRET} were rotated at {old}"))
            && message.contains("older than rotationInterval 1d"),
        "{message}"
    );
    let events = poll_until(
        "Warning Event KeyRotationDue",
        DEADLINE,
        Duration::from_millis(250),
        || async { Some(key_rotation_events(&e, name).await).filter(|v| !v.is_empty()) },
    )
    .await
    .unwrap();
    assert!(events[0].contains(SECRET), "{events:?}");

    // 4. freshly rotated → False
    let now =
        k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
            .unwrap();
    annotate(&e, &now.to_string()).await;
    let bot = wait_bot(
        &e,
        name,
        "KeyRotationDue False",
        |b| key_rotation_due(b).is_some_and(|(s, _, _)| s == "False"),
        &op,
    )
    .await;
    let (_, reason, _) = key_rotation_due(&bot).unwrap();
    assert_eq!(reason, "Fresh");
    assert_eq!(
        key_rotation_events(&e, name).await.len(),
        events.len(),
        "no new KeyRotationDue Event for fresh credentials"
    );
    let status_text = serde_json::to_string(&bot.status).unwrap();
    let event_text = key_rotation_events(&e, name).await.join("\n");
    assert_no_values(&(status_text + &event_text), &values);
    assert_eq!(
        bot_pod(&e, name).await.unwrap().metadata.uid.as_deref(),
        Some(uid.as_str()),
        "the bot pod was replaced"
    );

    // 5. idle cost: with the credentials checked at every poll, a paused bot whose
    // Secret does not change settles (its TradingBot is no longer written).
    merge_patch(&e, name, json!({"paused": true})).await;
    wait_bot(
        &e,
        name,
        "Paused",
        |b| phase(b) == Some(iq720_crds::trading_bot::TradingBotPhase::Paused),
        &op,
    )
    .await;
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let before = bots(&e).get(name).await.unwrap();
        let polls = op.metric("iq720_operator_reconciliations_total").await;
        poll_until(
            "three more polls",
            DEADLINE,
            Duration::from_millis(200),
            || async {
                (op.metric("iq720_operator_reconciliations_total").await >= polls + 3.0)
                    .then_some(())
            },
        )
        .await
        .unwrap();
        let after = bots(&e).get(name).await.unwrap();
        if after.metadata.resource_version == before.metadata.resource_version {
            assert_eq!(
                key_rotation_due(&after).map(|c| c.0).as_deref(),
                Some("False")
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the TradingBot is still written at every poll: {:#?}",
            after.status
        );
    }
    teardown(e).await;
}
