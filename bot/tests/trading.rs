//! Trading behaviour through the real binary: pause, emergency close-all (also across
//! restarts), market data failover, backup/restore round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Bot, cli, open_db, poll};
use serde_json::Value;
use std::time::Duration;

fn opened(bot: &Bot) -> f64 {
    bot.metric("iq720_bot_trades_opened_total").unwrap()
}

fn max_trade_id(bot: &Bot) -> i64 {
    let t = bot.get_json("/api/v1/trades?limit=1");
    t["trades"]
        .as_array()
        .unwrap()
        .first()
        .map(|t| t["id"].as_i64().unwrap())
        .unwrap_or(0)
}

#[test]
fn pause_stops_entries_and_resume_restarts_them() {
    let bot = Bot::start("");
    poll("some trades open", Duration::from_secs(20), || {
        (opened(&bot) >= 3.0).then_some(())
    });
    let r = bot.req("POST", "/api/v1/trading/pause", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["paused"], true);
    let last_id = max_trade_id(&bot);
    let before = opened(&bot);
    bot.wait_ticks(1500);
    assert_eq!(opened(&bot), before, "no entries while paused");
    assert_eq!(
        max_trade_id(&bot),
        last_id,
        "no new trade rows while paused"
    );
    let st = bot.status();
    assert_eq!(st["state"], "paused");
    // exits still happen while paused: positions drain
    poll(
        "positions drain while paused",
        Duration::from_secs(20),
        || (bot.status()["openPositions"] == 0).then_some(()),
    );
    let r = bot.req("POST", "/api/v1/trading/resume", None);
    assert_eq!(r.status, 200);
    poll("entries resume", Duration::from_secs(20), || {
        (opened(&bot) > before).then_some(())
    });
    assert_eq!(bot.status()["state"], "running");
}

#[test]
fn pause_via_config_patch() {
    let bot = Bot::start("");
    let r = bot.req("PATCH", "/api/v1/config", Some(r#"{"paused": true}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    let before = opened(&bot);
    bot.wait_ticks(1200);
    assert_eq!(opened(&bot), before);
    assert_eq!(bot.status()["paused"], true);
}

#[test]
fn close_all_flattens_halts_and_survives_restart() {
    let mut bot = Bot::start("");
    poll("positions open", Duration::from_secs(20), || {
        (bot.status()["openPositions"].as_u64().unwrap() >= 1).then_some(())
    });
    // two concurrent calls: both succeed, nothing is closed twice
    let port = bot.port;
    let call = move || {
        common::http(
            port,
            "POST",
            "/api/v1/emergency/close-all",
            Some(common::TOKEN),
            None,
        )
        .unwrap()
    };
    let a = std::thread::spawn(call);
    let b = std::thread::spawn(call);
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{} / {}",
        a.text(),
        b.text()
    );
    let (a, b) = (a.json(), b.json());
    for r in [&a, &b] {
        assert_eq!(r["halted"], true);
        assert_eq!(r["openPositions"], 0);
    }
    let closed = |r: &Value| -> Vec<i64> {
        r["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["tradeId"].as_i64().unwrap())
            .collect()
    };
    let (ca, cb) = (closed(&a), closed(&b));
    assert!(
        !ca.is_empty() || !cb.is_empty(),
        "something was closed: {a} {b}"
    );
    if a != b {
        // not joined: the later one found the book flat
        assert!(
            ca.is_empty() || cb.is_empty(),
            "a position closed twice: {a} {b}"
        );
    }
    for p in a["positions"]
        .as_array()
        .unwrap()
        .iter()
        .chain(b["positions"].as_array().unwrap())
    {
        assert_eq!(p["status"], "closed");
    }
    let st = bot.status();
    assert_eq!(st["openPositions"], 0);
    assert_eq!(st["state"], "halted");
    assert!(st["haltReason"].as_str().unwrap().contains("close-all"));
    assert_eq!(bot.get_json("/api/v1/positions")["count"], 0);
    // every closed trade is recorded with the emergency exit reason
    let trades = bot.get_json("/api/v1/trades?limit=10000");
    for id in ca.iter().chain(&cb) {
        let t = trades["trades"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == *id)
            .unwrap();
        assert_eq!(t["exitReason"], "emergency_close_all");
        assert_eq!(t["isOpen"], false);
    }
    // a call when flat answers at once
    let r = bot.req("POST", "/api/v1/emergency/close-all", None).json();
    assert_eq!(r["alreadyFlat"], true);
    assert_eq!(r["positions"].as_array().unwrap().len(), 0);
    // stays flat while ticks flow
    let before = opened(&bot);
    bot.wait_ticks(1200);
    assert_eq!(opened(&bot), before);
    assert_eq!(bot.status()["openPositions"], 0);
    // restart: still halted and flat
    bot.stop();
    bot.launch("");
    let st = bot.status();
    assert_eq!(st["state"], "halted", "{st}");
    assert_eq!(st["openPositions"], 0);
    bot.wait_ticks(1200);
    assert_eq!(opened(&bot), 0.0, "no entries after restart while halted");
    // SIGKILL restart too
    bot.kill();
    bot.launch("");
    assert_eq!(bot.status()["state"], "halted");
    // resume clears the halt
    assert_eq!(bot.req("POST", "/api/v1/trading/resume", None).status, 200);
    poll("entries after resume", Duration::from_secs(20), || {
        (opened(&bot) >= 1.0).then_some(())
    });
}

fn active(bot: &Bot) -> (String, String, u64) {
    let st = bot.status();
    (
        st["marketData"]["active"].as_str().unwrap().to_string(),
        st["activeMarketData"].as_str().unwrap().to_string(),
        st["marketData"]["failovers"].as_u64().unwrap(),
    )
}

#[test]
fn failover_when_primary_stalls_is_visible_in_status_and_metrics() {
    // config hook: the primary stops producing 1.5 s after start
    let bot = Bot::start("marketData: {primary: {stallAfter: 1500ms}, failback: manual}");
    assert_eq!(active(&bot).0, "primary");
    let (role, name, failovers) = poll("failover to backup", Duration::from_secs(15), || {
        let a = active(&bot);
        (a.0 == "backup").then_some(a)
    });
    assert_eq!(
        (role.as_str(), name.as_str(), failovers),
        ("backup", "sim-backup", 1)
    );
    assert_eq!(
        bot.metric("iq720_bot_market_data_failovers_total"),
        Some(1.0)
    );
    assert_eq!(
        bot.metric("iq720_bot_market_data_active_source{role=\"backup\",source=\"sim-backup\"}"),
        Some(1.0)
    );
    assert_eq!(
        bot.metric("iq720_bot_market_data_active_source{role=\"primary\",source=\"sim-primary\"}"),
        Some(0.0)
    );
    let age = bot
        .metric("iq720_bot_market_data_age_seconds{role=\"primary\",source=\"sim-primary\"}")
        .unwrap();
    assert!(age > 0.5, "primary age {age}");
    // trading continues on the backup
    let before = bot.ticks();
    bot.wait_ticks(600);
    assert!(bot.ticks() > before);
    let r = common::http(bot.port, "GET", "/readyz", None, None).unwrap();
    assert_eq!(r.status, 200, "ready on the backup: {}", r.text());
    // manual switch back to a stale primary is refused
    let r = bot.req(
        "PUT",
        "/api/v1/datasource",
        Some(r#"{"active": "primary"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn api_stall_hook_failover_failback_and_manual_switch() {
    let bot = Bot::start("");
    let r = bot.req(
        "PUT",
        "/api/v1/datasource",
        Some(r#"{"stalled": {"primary": true}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    poll("failover", Duration::from_secs(10), || {
        (active(&bot).0 == "backup").then_some(())
    });
    assert_eq!(bot.get_json("/api/v1/datasource")["selection"], "failover");
    // recover the primary: automatic fail-back after failbackAfter (1 s)
    bot.req(
        "PUT",
        "/api/v1/datasource",
        Some(r#"{"stalled": {"primary": false}}"#),
    );
    poll("failback", Duration::from_secs(10), || {
        (active(&bot).0 == "primary").then_some(())
    });
    let ds = bot.get_json("/api/v1/datasource");
    assert_eq!(ds["selection"], "failback");
    assert_eq!(ds["failovers"], 1);
    // manual switch
    let r = bot.req("PUT", "/api/v1/datasource", Some(r#"{"active": "backup"}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["active"], "backup");
    assert_eq!(r.json()["selection"], "manual");
    bot.wait_ticks(600);
    assert_eq!(
        active(&bot).0,
        "backup",
        "a manual choice is not failed back"
    );
}

/// `marketData.use` through `PATCH /api/v1/config` (what the operator sends for
/// `spec.marketData.use`): the pin switches at once, holds a stale source without
/// failing over (reported stale, still ready so the operator can lift it), refuses a
/// manual switch against it, and `auto` lets the automatic rules move the bot again.
#[test]
fn market_data_pin_by_config_patch() {
    let bot = Bot::start("");
    assert_eq!(active(&bot).0, "primary");
    assert_eq!(bot.get_json("/api/v1/datasource")["use"], "auto");
    let r = bot.req(
        "PATCH",
        "/api/v1/config",
        Some(r#"{"marketData": {"use": "backup"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["marketData"]["use"], "backup");
    let ds = bot.get_json("/api/v1/datasource");
    assert_eq!(
        (&ds["active"], &ds["selection"], &ds["use"]),
        (
            &Value::from("backup"),
            &Value::from("pinned"),
            &Value::from("backup")
        ),
        "{ds}"
    );
    assert_eq!(active(&bot).1, "sim-backup");
    // a manual switch against the pin is refused
    let r = bot.req(
        "PUT",
        "/api/v1/datasource",
        Some(r#"{"active": "primary"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("pins"), "{}", r.text());
    // the pinned backup stalls: no failover, reported stale, still ready
    let r = bot.req(
        "PUT",
        "/api/v1/datasource",
        Some(r#"{"stalled": {"backup": true}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    poll("pinned backup stale", Duration::from_secs(10), || {
        (bot.get_json("/api/v1/datasource")["fresh"] == false).then_some(())
    });
    bot.wait_ticks(50);
    let (role, _, failovers) = active(&bot);
    assert_eq!((role.as_str(), failovers), ("backup", 0));
    let r = common::http(bot.port, "GET", "/readyz", None, None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["checks"]["marketDataFresh"], false);
    assert_eq!(r.json()["checks"]["marketDataPinned"], true);
    // lifting the pin: the stale backup fails over to the fresh primary
    let r = bot.req(
        "PATCH",
        "/api/v1/config",
        Some(r#"{"marketData": {"use": "auto"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    poll(
        "failover after the pin is lifted",
        Duration::from_secs(10),
        || (active(&bot).0 == "primary").then_some(()),
    );
    assert_eq!(bot.get_json("/api/v1/datasource")["use"], "auto");
    // other marketData fields stay restart-only
    let r = bot.req(
        "PATCH",
        "/api/v1/config",
        Some(r#"{"marketData": {"use": "primary", "staleAfter": "9s"}}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("marketData.staleAfter"), "{}", r.text());
}

/// Pinning to the backup of a bot without one is refused by the contract's rule.
#[test]
fn market_data_pin_to_a_missing_backup_is_refused() {
    let bot = Bot::start("marketData: {backup: null}");
    let r = bot.req(
        "PATCH",
        "/api/v1/config",
        Some(r#"{"marketData": {"use": "backup"}}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("marketData.use"), "{}", r.text());
    assert_eq!(bot.get_json("/api/v1/datasource")["use"], "auto");
}

#[test]
fn backup_restore_round_trip_yields_identical_trades() {
    let mut bot = Bot::start("");
    poll("closed trades", Duration::from_secs(20), || {
        (bot.get_json("/api/v1/performance")["allTime"]["trades"]
            .as_i64()
            .unwrap()
            >= 5)
            .then_some(())
    });
    let tmp = tempfile::tempdir().unwrap();
    // 1. a backup taken while trading is a valid, consistent snapshot
    let live = bot.req("POST", "/api/v1/backup", None);
    assert_eq!(live.status, 200);
    assert_eq!(live.header("content-type"), Some("application/gzip"));
    let live_path = tmp.path().join("live.tar.gz");
    std::fs::write(&live_path, &live.body).unwrap();
    let (code, out, err) = cli(&["verify-backup", live_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("\"schemaVersion\": 1"));
    // 2. freeze trading, back up, restore elsewhere, compare every trade
    bot.req("POST", "/api/v1/emergency/close-all", None);
    let trades = bot.get_json("/api/v1/trades?limit=10000");
    let r = bot.req("POST", "/api/v1/backup", None);
    assert_eq!(r.status, 200);
    let archive = tmp.path().join("frozen.tar.gz");
    std::fs::write(&archive, &r.body).unwrap();
    let target = tmp.path().join("restored");
    let (code, out, err) = cli(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out} {err}");
    // restoring over data needs --force
    let (code, _, err) = cli(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = cli(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    // start a bot on the restored data and compare over the API
    bot.stop();
    let orig_dir = bot.data_dir();
    std::fs::rename(&orig_dir, tmp.path().join("orig")).unwrap();
    std::fs::rename(&target, &orig_dir).unwrap();
    bot.launch("");
    let restored = bot.get_json("/api/v1/trades?limit=10000");
    assert!(!trades["trades"].as_array().unwrap().is_empty());
    assert_eq!(restored["trades"], trades["trades"]);
    assert_eq!(bot.status()["state"], "halted", "halt flag restored too");
    // the live snapshot is internally consistent: no duplicate open trades
    let work = tmp.path().join("live-restore");
    let (code, _, err) = cli(&[
        "restore",
        "--from",
        live_path.to_str().unwrap(),
        "--data-dir",
        work.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let db = open_db(&work.join("trades.db"));
    let dup: i64 = db
        .query_row("SELECT COUNT(*) FROM (SELECT pair FROM trades WHERE is_open = 1 GROUP BY pair HAVING COUNT(*) > 1)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dup, 0);
    // a corrupted archive is rejected
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = tmp.path().join("bad.tar.gz");
    std::fs::write(&bad, bytes).unwrap();
    let (code, _, err) = cli(&["verify-backup", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("invalid backup") || err.contains("error"),
        "{err}"
    );
}

#[test]
fn csv_replay_backup_takes_over() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("ticks.csv");
    let mut text = String::from("timestamp,pair,price\n");
    for i in 0..200 {
        let px = 100.0 + (i as f64 / 7.0).sin() * 3.0;
        for pair in ["BTC/USDT", "ETH/USDT", "SOL/USDT"] {
            text.push_str(&format!("{i},{pair},{px:.4}\n"));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let bot = Bot::start(&format!(
        "marketData: {{primary: {{stallAfter: 1s}}, backup: {{kind: csv, name: replay, path: {}}}, failback: manual}}",
        csv.display()
    ));
    poll(
        "failover to the CSV replay",
        Duration::from_secs(15),
        || (active(&bot).1 == "replay").then_some(()),
    );
    let ds = bot.get_json("/api/v1/datasource");
    let backup = ds["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "backup")
        .unwrap()
        .clone();
    assert_eq!(backup["kind"], "csv");
    bot.wait_ticks(900);
    assert_eq!(
        bot.get_json("/api/v1/datasource")["fresh"],
        true,
        "the looping replay keeps the feed fresh"
    );
}

#[test]
fn persisted_pause_survives_restart_and_is_reported_in_config() {
    let mut bot = Bot::start("");
    assert_eq!(bot.req("POST", "/api/v1/trading/pause", None).status, 200);
    bot.stop();
    bot.launch(""); // config says paused: false
    assert_eq!(bot.status()["paused"], true);
    assert_eq!(
        bot.get_json("/api/v1/config")["paused"],
        true,
        "GET /config reports the effective state"
    );
    let r = bot.req("PATCH", "/api/v1/config", Some(r#"{"paused": false}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(bot.status()["paused"], false);
    bot.stop();
    bot.launch("");
    assert_eq!(bot.status()["paused"], false);
}
