//! The security audit against the real binary: `GET /api/v1/security` and the metrics
//! count rejected authentications by reason and each token's use, by the token's id
//! (its file name in the token directory), and never show a token value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Bot, TOKEN, http};

#[test]
fn security_counts_failures_and_token_use_without_token_values() {
    let bot = Bot::start("paused: true");
    let wrong = "wrong-token-zzzzzzzzzzzz";
    for _ in 0..3 {
        let r = http(bot.port, "GET", "/api/v1/status", Some(wrong), None).unwrap();
        assert_eq!(r.status, 401);
    }
    let r = http(bot.port, "GET", "/api/v1/status", None, None).unwrap();
    assert_eq!(r.status, 401);
    let r = http(bot.port, "GET", "/api/v1/security", None, None).unwrap();
    assert_eq!(r.status, 401, "the audit itself needs a token");
    for _ in 0..2 {
        assert_eq!(bot.req("GET", "/api/v1/status", None).status, 200);
    }
    let r = bot.req("GET", "/api/v1/security", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert!(
        !body.contains(TOKEN) && !body.contains(wrong) && !body.contains(&TOKEN[..8]),
        "the audit must not show token values: {body}"
    );
    let s: iq720_contract::api::SecurityResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(s.auth_failures.total, 5, "{body}");
    assert_eq!(s.auth_failures.by_reason["invalid"], 3, "{body}");
    assert_eq!(s.auth_failures.by_reason["missing"], 2, "{body}");
    assert!(s.auth_failures.last_failure_at.is_some(), "{body}");
    assert_eq!(s.tokens.len(), 1, "{body}");
    assert_eq!(
        s.tokens[0].id, "token",
        "the id is the file (Secret key) name"
    );
    // two /status calls and this /security call
    assert_eq!(s.tokens[0].uses, 3, "{body}");
    let last: jiff::Timestamp = s.tokens[0]
        .last_used_at
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!((jiff::Timestamp::now().as_second() - last.as_second()).abs() < 60);
    assert_eq!(
        bot.metric("iq720_bot_auth_failures_total{reason=\"invalid\"}"),
        Some(3.0)
    );
    let used = bot
        .metric("iq720_bot_token_last_used_timestamp_seconds{token=\"token\"}")
        .unwrap();
    assert!(
        (used - last.as_second() as f64).abs() < 2.0,
        "{used} vs {last}"
    );
    let metrics = http(bot.port, "GET", "/metrics", None, None)
        .unwrap()
        .text();
    assert!(!metrics.contains(TOKEN) && !metrics.contains(wrong));
}
