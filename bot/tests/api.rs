//! API contract tests against the real binary: auth, errors, config hot reload,
//! health endpoints, token rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Bot, TOKEN, http, poll};
use std::time::Duration;

const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/positions"),
    ("GET", "/api/v1/trades"),
    ("GET", "/api/v1/performance"),
    ("GET", "/api/v1/report?period=weekly"),
    ("GET", "/api/v1/config"),
    ("PATCH", "/api/v1/config"),
    ("POST", "/api/v1/trading/pause"),
    ("POST", "/api/v1/trading/resume"),
    ("POST", "/api/v1/emergency/close-all"),
    ("GET", "/api/v1/datasource"),
    ("PUT", "/api/v1/datasource"),
    ("POST", "/api/v1/backup"),
    ("POST", "/api/v1/maintenance/vacuum"),
    ("POST", "/api/v1/maintenance/prune"),
    ("GET", "/api/v1/does-not-exist"),
];

#[test]
fn auth_is_required_and_enforced_on_every_api_route() {
    let bot = Bot::start("paused: true");
    for (method, path) in API_ROUTES {
        for token in [None, Some("wrong-token-xxxxxxxx"), Some("")] {
            let r = http(bot.port, method, path, token, None).unwrap();
            assert_eq!(
                r.status, 401,
                "{method} {path} with {token:?} must be 401, got {}",
                r.status
            );
            assert_eq!(r.json()["error"]["code"], "unauthorized");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
    }
    // nothing above changed state: still not halted
    assert_eq!(bot.status()["halted"], false);
    // with the token the routes answer (not 401)
    for (method, path) in API_ROUTES {
        let body = match *path {
            "/api/v1/config" if *method == "PATCH" => Some("{\"paused\": true}"),
            "/api/v1/datasource" if *method == "PUT" => Some("{\"active\": \"primary\"}"),
            "/api/v1/maintenance/prune" => Some("{\"olderThanDays\": 30, \"dryRun\": true}"),
            _ => None,
        };
        let r = bot.req(method, path, body);
        assert_ne!(r.status, 401, "{method} {path}");
        let expect = if path.ends_with("does-not-exist") {
            404
        } else {
            200
        };
        assert_eq!(r.status, expect, "{method} {path}: {}", r.text());
    }
    // failures were counted and written to the security log without the token value
    let failures: f64 = ["missing", "invalid", "malformed"]
        .iter()
        .map(|r| {
            bot.metric(&format!("iq720_bot_auth_failures_total{{reason=\"{r}\"}}"))
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(failures, (API_ROUTES.len() * 3) as f64);
    let sec = std::fs::read_to_string(bot.log_dir().join("security.log")).unwrap();
    assert!(
        sec.contains("auth_failure") && sec.contains("/api/v1/status"),
        "{sec}"
    );
    assert!(!sec.contains("wrong-token-xxxxxxxx") && !sec.contains(TOKEN));
    // health endpoints stay open
    for p in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            http(bot.port, "GET", p, None, None).unwrap().status,
            200,
            "{p}"
        );
    }
}

#[test]
fn bad_requests_get_clear_json_errors() {
    let bot = Bot::start("paused: true");
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, u16, &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "PATCH",
            "/api/v1/config",
            Some("{not json"),
            400,
            "bad_request",
            "invalid JSON",
        ),
        (
            "PATCH",
            "/api/v1/config",
            Some("[1,2]"),
            422,
            "invalid_config",
            "JSON object",
        ),
        (
            "PATCH",
            "/api/v1/config",
            Some("{\"pairs\": [\"X/Y\"], \"marketData\": {\"staleAfter\": \"1s\"}}"),
            422,
            "field_not_hot_reloadable",
            "marketData.staleAfter, pairs",
        ),
        (
            "PATCH",
            "/api/v1/config",
            Some("{\"risk\": {\"maxPositions\": 0}}"),
            422,
            "invalid_config",
            "risk.maxPositions",
        ),
        (
            "PATCH",
            "/api/v1/config",
            Some("{\"risk\": {\"maxPositions\": \"lots\"}}"),
            422,
            "invalid_config",
            "maxPositions",
        ),
        (
            "PATCH",
            "/api/v1/config",
            Some("{\"strategy\": {\"params\": {\"bogus\": 1}}}"),
            422,
            "invalid_config",
            "strategy.params.bogus",
        ),
        (
            "GET",
            "/api/v1/trades?since=yesterday",
            None,
            400,
            "bad_request",
            "since",
        ),
        (
            "GET",
            "/api/v1/trades?limit=0",
            None,
            400,
            "bad_request",
            "limit",
        ),
        (
            "GET",
            "/api/v1/trades?color=red",
            None,
            400,
            "bad_request",
            "color",
        ),
        ("GET", "/api/v1/report", None, 400, "bad_request", "period"),
        (
            "GET",
            "/api/v1/report?period=fortnightly",
            None,
            400,
            "bad_request",
            "daily, weekly or monthly",
        ),
        (
            "GET",
            "/api/v1/report?period=weekly&format=pdf",
            None,
            400,
            "bad_request",
            "format",
        ),
        (
            "GET",
            "/api/v1/report?period=weekly&end=last-friday",
            None,
            400,
            "bad_request",
            "end",
        ),
        (
            "PUT",
            "/api/v1/datasource",
            Some("{\"active\": \"tertiary\"}"),
            400,
            "bad_request",
            "tertiary",
        ),
        (
            "PUT",
            "/api/v1/datasource",
            Some("{}"),
            400,
            "bad_request",
            "active",
        ),
        (
            "PUT",
            "/api/v1/datasource",
            Some("{\"bogus\": 1}"),
            400,
            "bad_request",
            "bogus",
        ),
        (
            "POST",
            "/api/v1/maintenance/prune",
            Some("{}"),
            400,
            "bad_request",
            "olderThanDays",
        ),
        (
            "POST",
            "/api/v1/maintenance/prune",
            Some("{\"olderThanDays\": -3}"),
            400,
            "bad_request",
            "invalid JSON",
        ),
        (
            "DELETE",
            "/api/v1/status",
            None,
            405,
            "method_not_allowed",
            "method",
        ),
        ("GET", "/api/v1/nope", None, 404, "not_found", "route"),
        ("GET", "/nope", None, 404, "not_found", "route"),
    ];
    for (method, path, body, status, code, needle) in cases {
        let r = bot.req(method, path, *body);
        assert_eq!(r.status, *status, "{method} {path} {body:?}: {}", r.text());
        let j = r.json();
        assert_eq!(j["error"]["code"], *code, "{method} {path}: {j}");
        let msg = j["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{method} {path}: message `{msg}` should mention `{needle}`"
        );
    }
    // refused patches changed nothing
    let cfg = bot.get_json("/api/v1/config");
    assert_eq!(cfg["risk"]["maxPositions"], 3);
    assert_eq!(cfg["pairs"][0], "BTC/USDT");
}

#[test]
fn config_patch_applies_hot_fields_without_restart() {
    let bot = Bot::start("");
    let pid = bot.pid();
    let r = bot.req(
        "PATCH",
        "/api/v1/config",
        Some(r#"{"risk": {"maxPositions": 1, "stopLoss": {"type": "trailing", "percent": 1.5}}, "strategy": {"params": {"rsiBuy": 35}}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let cfg = bot.get_json("/api/v1/config");
    assert_eq!(cfg["risk"]["maxPositions"], 1);
    assert_eq!(cfg["risk"]["stopLoss"]["type"], "trailing");
    assert_eq!(cfg["strategy"]["params"]["rsiBuy"], 35.0);
    assert_eq!(
        cfg["risk"]["maxPositionSize"], 500.0,
        "untouched fields keep their values"
    );
    // the engine enforces the new limit: never more than 1 position from now on
    // (positions opened before the patch may still be closing)
    poll("at most one open position", Duration::from_secs(20), || {
        (bot.status()["openPositions"].as_u64().unwrap() <= 1).then_some(())
    });
    for _ in 0..20 {
        assert!(bot.status()["openPositions"].as_u64().unwrap() <= 1);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(bot.status()["maxPositions"], 1);
    assert_eq!(bot.pid(), pid);
}

#[test]
fn health_readiness_and_metrics() {
    let bot = Bot::start("");
    let h = http(bot.port, "GET", "/healthz", None, None).unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    let r = http(bot.port, "GET", "/readyz", None, None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["checks"]["databaseWritable"], true);
    // both sources stalled: not ready (market data stale), still healthy
    let r = bot.req(
        "PUT",
        "/api/v1/datasource",
        Some(r#"{"stalled": {"primary": true, "backup": true}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    poll("readyz fails", Duration::from_secs(10), || {
        let r = http(bot.port, "GET", "/readyz", None, None).unwrap();
        (r.status == 503 && r.json()["checks"]["marketDataFresh"] == false).then_some(())
    });
    assert_eq!(
        http(bot.port, "GET", "/healthz", None, None)
            .unwrap()
            .status,
        200
    );
    let m = http(bot.port, "GET", "/metrics", None, None).unwrap();
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for name in [
        "iq720_bot_trades_total",
        "iq720_bot_realized_pnl",
        "iq720_bot_equity",
        "iq720_bot_open_positions",
        "iq720_bot_market_data_age_seconds",
        "iq720_bot_market_data_failovers_total",
        "iq720_bot_market_data_active_source",
        "iq720_bot_http_requests_total",
        "iq720_bot_engine_loop_lag_seconds",
        "iq720_bot_tick_to_decision_seconds_bucket",
        "iq720_bot_build_info{version=\"",
    ] {
        assert!(text.contains(name), "metric {name} missing");
    }
    assert!(text.contains(
        "iq720_bot_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"503\"}"
    ));
}

#[test]
fn token_rotation_overlaps_then_drops_the_old_token() {
    let bot = Bot::start("paused: true");
    let dir = bot.token_dir();
    // switch to the kubelet layout: ..<ts>/ dirs, ..data symlink, key symlinks
    std::fs::remove_file(dir.join("token")).unwrap();
    let old = "old-token-aaaaaaaaaaaa";
    let new = "new-token-bbbbbbbbbbbb";
    let swap = |ts: &str, files: &[(&str, &str)]| {
        let d = dir.join(format!("..{ts}"));
        std::fs::create_dir(&d).unwrap();
        for (k, v) in files {
            std::fs::write(d.join(k), v).unwrap();
        }
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{ts}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        for (k, _) in files {
            let link = dir.join(k);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{k}"), &link).unwrap();
            }
        }
    };
    let works = |t: &str| {
        http(bot.port, "GET", "/api/v1/status", Some(t), None)
            .unwrap()
            .status
            == 200
    };
    swap("2026_01", &[("token", old)]);
    poll("old token accepted", Duration::from_secs(10), || {
        works(old).then_some(())
    });
    assert!(!works(TOKEN), "the removed file's token is no longer valid");
    // rotation: new token in `token`, old one kept as `previous` during the grace period
    swap("2026_02", &[("token", new), ("previous", old)]);
    poll("new token accepted", Duration::from_secs(10), || {
        works(new).then_some(())
    });
    assert!(works(old), "old token still valid during the overlap");
    // grace period over: key `previous` removed
    swap("2026_03", &[("token", new)]);
    std::fs::remove_file(dir.join("previous")).unwrap();
    poll("old token refused", Duration::from_secs(10), || {
        (!works(old)).then_some(())
    });
    assert!(works(new));
}

#[test]
fn prune_returns_rows_as_json_lines_and_dry_run_keeps_them() {
    let bot = Bot::start("paused: true");
    // an old closed trade (10 days ago), written beside the running bot (WAL)
    let old = jiff::Timestamp::now().as_millisecond() - 10 * 86_400_000;
    {
        let db = rusqlite::Connection::open(bot.data_dir().join("trades.db")).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        db.execute(
            "INSERT INTO trades (id, pair, side, is_open, amount, stake_amount, open_rate, open_date, fee_open,
             close_rate, close_date, fee_close, close_profit, close_profit_abs, exit_reason, strategy)
             VALUES (-5, 'BTC/USDT', 'long', 0, 1, 100, 100, ?1, 0.1, 101, ?2, 0.1, 0.008, 0.8, 'exit_signal', 'rsi')",
            [old - 1000, old],
        )
        .unwrap();
        db.execute(
            "INSERT INTO orders (id, trade_id, pair, side, status, amount, price, filled, fee, created_at, updated_at)
             VALUES (-5, -5, 'BTC/USDT', 'buy', 'filled', 1, 100, 1, 0.1, ?1, ?1)",
            [old - 1000],
        )
        .unwrap();
    }
    let r = bot.req(
        "POST",
        "/api/v1/maintenance/prune",
        Some(r#"{"olderThanDays": 5, "dryRun": true}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("x-iq720-pruned-rows"), Some("2"));
    let lines: Vec<serde_json::Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["table"], "trades");
    assert_eq!(lines[0]["row"]["id"], -5);
    assert_eq!(lines[1]["table"], "orders");
    let has_old = |bot: &Bot| {
        bot.get_json("/api/v1/trades?limit=10000")["trades"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == -5)
    };
    assert!(has_old(&bot), "dry run deletes nothing");
    let r = bot.req(
        "POST",
        "/api/v1/maintenance/prune",
        Some(r#"{"olderThanDays": 5}"#),
    );
    assert_eq!(r.header("x-iq720-pruned-rows"), Some("2"));
    assert!(!has_old(&bot));
    let r = bot.req(
        "POST",
        "/api/v1/maintenance/prune",
        Some(r#"{"olderThanDays": 5}"#),
    );
    assert_eq!(r.header("x-iq720-pruned-rows"), Some("0"));
    assert!(r.body.is_empty());
    let v = bot.req("POST", "/api/v1/maintenance/vacuum", None);
    assert_eq!(v.status, 200, "{}", v.text());
    assert!(v.json()["bytesAfter"].as_u64().unwrap() > 0);
}

#[test]
fn oversized_body_gets_a_json_413() {
    let bot = Bot::start("paused: true");
    let big = format!(
        "{{\"paused\": true, \"pad\": \"{}\"}}",
        "x".repeat(3 * 1024 * 1024)
    );
    let r = bot.req("PATCH", "/api/v1/config", Some(&big));
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
}
