//! End-to-end test of the security audit on the real local cluster, with the real
//! operator and the real bot binary: calls with a wrong token are counted by the bot
//! (`GET /api/v1/security`, which names tokens by their Secret key, never by value),
//! reach `status.security.authFailures` of the TradingBot, and are announced by one
//! Warning Event `AuthFailures` per increase, not on every poll.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::bots::*;
use common::{Operator, bot_api};
use iq720_crds::TradingBot;
use iq720_tests::poll_until;

const WRONG: &str = "wrong-token-0000deadbeef0000";
const ATTEMPTS: u64 = 4;

fn auth_failures(b: &TradingBot) -> Option<i64> {
    Some(b.status.as_ref()?.security.as_ref()?.auth_failures)
}

/// `AuthFailures` Events of the bot: (note, times it was recorded).
async fn auth_failure_events(e: &Env, bot: &str) -> Vec<(String, i32)> {
    bot_events(e, bot)
        .await
        .into_iter()
        .filter(|ev| ev.reason.as_deref() == Some("AuthFailures"))
        .map(|ev| {
            let times = ev.series.as_ref().map_or(1, |s| s.count);
            (ev.note.unwrap_or_default(), times)
        })
        .collect()
}

#[tokio::test]
async fn wrong_tokens_are_counted_by_the_bot_and_reported_in_status_and_events() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-security", &[]).await;
    let name = "sec-audit";
    apply_running(&e, name, "", &op).await;
    // The first poll records an empty audit: the field exists before any failure.
    wait_bot(
        &e,
        name,
        "status.security with no failures",
        |b| auth_failures(b) == Some(0),
        &op,
    )
    .await;
    assert!(auth_failure_events(&e, name).await.is_empty());

    let (addr, token) = bot_addr_token(&e, name).await;
    for _ in 0..ATTEMPTS {
        let (status, body) = bot_api(&addr, WRONG, "GET", "/api/v1/status", "").await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, audit) = bot_api(&addr, &token, "GET", "/api/v1/security", "").await;
    assert_eq!(status, 200, "{audit}");
    let text = audit.to_string();
    assert!(
        !text.contains(token.trim()) && !text.contains(WRONG) && !text.contains(&token[..8]),
        "the audit shows a token value: {text}"
    );
    let failures = &audit["authFailures"];
    assert_eq!(failures["total"], ATTEMPTS, "{text}");
    assert_eq!(failures["byReason"]["invalid"], ATTEMPTS, "{text}");
    assert!(failures["lastFailureAt"].is_string(), "{text}");
    let tokens = audit["tokens"].as_array().unwrap();
    let used = tokens
        .iter()
        .find(|t| t["id"] == "token")
        .unwrap_or_else(|| panic!("the Secret key `token` is not listed: {text}"));
    // The operator polls with the token, and this call used it too.
    assert!(
        used["uses"].as_u64().unwrap() >= 2 && used["lastUsedAt"].is_string(),
        "{text}"
    );

    let bot = wait_bot(
        &e,
        name,
        "status.security.authFailures = ATTEMPTS",
        |b| auth_failures(b) == Some(ATTEMPTS as i64),
        &op,
    )
    .await;
    let security = bot.status.as_ref().unwrap().security.clone().unwrap();
    assert!(security.last_auth_failure_at.is_some(), "{security:?}");
    let status_text = serde_json::to_string(&bot.status).unwrap();
    assert!(!status_text.contains(token.trim()) && !status_text.contains(WRONG));

    let events = poll_until(
        "Warning Event AuthFailures",
        DEADLINE,
        Duration::from_millis(200),
        || async { Some(auth_failure_events(&e, name).await).filter(|v| !v.is_empty()) },
    )
    .await
    .unwrap();
    for (note, _) in &events {
        assert!(
            !note.contains(token.trim()) && !note.contains(WRONG),
            "{note}"
        );
    }
    // No new Event while nothing new happens: let the operator poll a few more times.
    let polls = op.metric("iq720_operator_reconciliations_total").await;
    poll_until(
        "three more polls",
        DEADLINE,
        Duration::from_millis(200),
        || async {
            (op.metric("iq720_operator_reconciliations_total").await >= polls + 3.0).then_some(())
        },
    )
    .await
    .unwrap();
    let again = auth_failure_events(&e, name).await;
    assert_eq!(
        again, events,
        "AuthFailures was announced again without new failures"
    );
    // One Event per increase, each recorded once, together counting every failure.
    assert!(
        events.iter().all(|(_, times)| *times == 1),
        "an AuthFailures Event was recorded more than once: {events:?}"
    );
    let announced: u64 = events
        .iter()
        .map(|(note, _)| {
            note.strip_prefix("the bot rejected ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("unexpected note: {note}"))
        })
        .sum();
    assert_eq!(announced, ATTEMPTS, "{events:?}");
    println!("AuthFailures Events: {events:?}");
    teardown(e).await;
}
