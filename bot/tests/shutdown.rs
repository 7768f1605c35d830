//! Shutdown through the real binary and real signals: on SIGTERM the bot stops trading
//! at once; with open positions it keeps serving the API for the drain period so the
//! operator can close them (foreground deletion deletes the pod while the finalizer
//! still calls close-all), and exits as soon as it is flat or the period ends; a flat
//! bot exits promptly; a second signal exits at once. Also: `restore --force` cannot
//! overwrite the database of a running bot (it needs the data directory's lock).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Bot, cli, http, open_db, poll};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Enter fast (RSI over 3 ticks below 40) but hardly ever exit on its own (RSI above 99,
/// stop-loss 50 %), so positions opened before the signal are still open at it.
const HOLDS_POSITIONS: &str = r#"
strategy: {name: rsi, params: {rsiPeriod: 3, rsiBuy: 40, rsiSell: 99}}
risk: {stopLoss: {type: fixed, percent: 50}}
"#;

/// A bot with the given drain, holding at least one open position.
fn bot_with_positions(drain: &str) -> Bot {
    let mut bot = Bot::unstarted();
    bot.env.push(("IQ720_SHUTDOWN_DRAIN".into(), drain.into()));
    bot.launch(HOLDS_POSITIONS);
    poll("positions open", Duration::from_secs(30), || {
        (bot.status()["openPositions"].as_u64().unwrap() >= 1).then_some(())
    });
    bot
}

/// Wait until the bot reports the drain on `/readyz` (503, `checks.draining`); this
/// fails on a bot that stopped serving at the signal.
fn wait_draining(bot: &Bot) {
    poll("/readyz reports draining", Duration::from_secs(10), || {
        let r = http(bot.port, "GET", "/readyz", None, None).ok()?;
        (r.status == 503 && r.json()["checks"]["draining"] == true).then_some(())
    });
}

fn trade_ids(v: &Value, list: &str, id: &str) -> BTreeSet<i64> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[id].as_i64().unwrap())
        .collect()
}

fn open_trade_ids_in_db(bot: &Bot) -> BTreeSet<i64> {
    let db = open_db(&bot.data_dir().join("trades.db"));
    let mut stmt = db
        .prepare("SELECT id FROM trades WHERE is_open = 1")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn halt_in_db(bot: &Bot) -> Option<String> {
    let db = open_db(&bot.data_dir().join("trades.db"));
    db.query_row(
        "SELECT value FROM bot_state WHERE key = 'halted_reason'",
        [],
        |r| r.get(0),
    )
    .ok()
}

/// `fields` of the JSON log lines whose message contains `needle`.
fn log_fields(bot: &Bot, needle: &str) -> Vec<Value> {
    bot.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["fields"].clone())
        .filter(|f| f["message"].as_str().is_some_and(|m| m.contains(needle)))
        .collect()
}

#[test]
fn sigterm_with_positions_keeps_the_api_until_close_all_then_exits() {
    // A long drain: exiting well before it proves the exit came from being flat.
    let mut bot = bot_with_positions("60s");
    let signalled = Instant::now();
    bot.signal("TERM");
    wait_draining(&bot);
    // Trading has stopped: the engine loop no longer turns, so no tick is consumed.
    let health = http(bot.port, "GET", "/healthz", None, None).unwrap();
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "draining");
    let positions = bot.get_json("/api/v1/positions");
    let open = trade_ids(&positions, "positions", "tradeId");
    assert!(!open.is_empty(), "{positions}");

    // What the operator's finalizer does on a terminating pod.
    let r = bot.req("POST", "/api/v1/emergency/close-all", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let closed_at = Instant::now();
    let report = r.json();
    assert_eq!(report["alreadyFlat"], false, "{report}");
    assert_eq!(report["openPositions"], 0, "{report}");
    assert_eq!(
        trade_ids(&report, "positions", "tradeId"),
        open,
        "close-all closed exactly the open positions: {report}"
    );
    for p in report["positions"].as_array().unwrap() {
        assert_eq!(p["status"], "closed", "{p}");
    }
    // The operator confirms with a status call right after: still answered.
    let st = bot.status();
    assert_eq!(
        (st["openPositions"].as_u64(), st["halted"].as_bool()),
        (Some(0), Some(true)),
        "{st}"
    );

    let (status, exited_at) = bot
        .wait_exit(Duration::from_secs(10))
        .expect("the bot exits soon after it is flat");
    assert!(status.success(), "{status}");
    assert!(
        exited_at - closed_at < Duration::from_secs(10)
            && exited_at - signalled < Duration::from_secs(40),
        "exited because it was flat, not at the end of the 60 s drain"
    );
    assert!(open_trade_ids_in_db(&bot).is_empty());
    let db = open_db(&bot.data_dir().join("trades.db"));
    for id in &open {
        let reason: String = db
            .query_row("SELECT exit_reason FROM trades WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(reason, "emergency_close_all");
    }
    assert!(
        !log_fields(&bot, "flat after close-all").is_empty(),
        "{}",
        bot.stdout()
    );
}

#[test]
fn a_flat_bot_exits_promptly_on_sigterm() {
    let mut bot = Bot::unstarted();
    bot.env.push(("IQ720_SHUTDOWN_DRAIN".into(), "60s".into()));
    bot.launch("paused: true"); // no entries: flat
    assert_eq!(bot.status()["openPositions"], 0);
    let signalled = Instant::now();
    bot.signal("TERM");
    let (status, exited_at) = bot
        .wait_exit(Duration::from_secs(5))
        .expect("a flat bot does not drain");
    assert!(status.success(), "{status}");
    assert!(exited_at - signalled < Duration::from_secs(5));
    assert!(
        !log_fields(&bot, "no open positions").is_empty(),
        "{}",
        bot.stdout()
    );
}

#[test]
fn without_close_all_the_bot_exits_after_the_drain_keeping_its_positions() {
    let drain = Duration::from_secs(3);
    let mut bot = bot_with_positions("3s");
    let signalled = Instant::now();
    bot.signal("TERM");
    wait_draining(&bot);
    let positions = bot.get_json("/api/v1/positions");
    let open = trade_ids(&positions, "positions", "tradeId");
    assert!(!open.is_empty(), "{positions}");
    // For as long as it serves, nothing trades: the trade list and the tick counters
    // (the engine loop polls the feed) stay as they were at the signal.
    let trades = bot.get_json("/api/v1/trades?limit=10000");
    let ticks = bot.ticks();
    let mut checks = 0;
    let exit = loop {
        if let Some(done) = bot.exited() {
            break (done, Instant::now());
        }
        assert!(
            signalled.elapsed() < drain + Duration::from_secs(10),
            "the bot did not exit after its drain"
        );
        // The process may exit between the check above and these calls.
        if let Ok(now) = http(
            bot.port,
            "GET",
            "/api/v1/trades?limit=10000",
            Some(common::TOKEN),
            None,
        ) && now.status == 200
        {
            assert_eq!(
                now.json(),
                trades,
                "no trade opened or closed during the drain"
            );
            checks += 1;
        }
        if let Ok(st) = http(bot.port, "GET", "/api/v1/status", Some(common::TOKEN), None)
            && st.status == 200
        {
            let st = st.json();
            let seen = st["marketData"]["sources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["ticks"].as_u64().unwrap())
                .max()
                .unwrap();
            assert_eq!(seen, ticks, "the engine loop stopped polling the feed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (status, exited_at) = exit;
    assert!(status.success(), "{status}");
    assert!(checks >= 5, "observed the drain {checks} times only");
    assert!(
        exited_at - signalled >= drain,
        "exited after {:?}, before the {drain:?} drain",
        exited_at - signalled
    );
    // Positions kept as they were, and no halt persisted: a restart trades on.
    assert_eq!(open_trade_ids_in_db(&bot), open);
    assert_eq!(halt_in_db(&bot), None);
    let ended = log_fields(&bot, "shutdown drain over with positions open");
    assert_eq!(ended.len(), 1, "{}", bot.stdout());
    bot.env.clear();
    bot.launch(HOLDS_POSITIONS);
    let restored = log_fields(&bot, "state restored from database");
    let last = restored.last().unwrap();
    assert_eq!(
        last["open_positions"].as_u64(),
        Some(open.len() as u64),
        "{last}"
    );
    assert_eq!(last["halted"], "", "{last}");
    let st = bot.status();
    assert_eq!(
        (st["state"].as_str(), st["halted"].as_bool()),
        (Some("running"), Some(false)),
        "{st}"
    );
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    let mut bot = bot_with_positions("60s");
    bot.signal("TERM");
    wait_draining(&bot);
    let open = trade_ids(&bot.get_json("/api/v1/positions"), "positions", "tradeId");
    let second = Instant::now();
    bot.signal("INT");
    let (status, exited_at) = bot
        .wait_exit(Duration::from_secs(5))
        .expect("a second signal ends the drain");
    assert!(status.success(), "{status}");
    assert!(exited_at - second < Duration::from_secs(5));
    assert_eq!(open_trade_ids_in_db(&bot), open, "positions kept");
    assert_eq!(halt_in_db(&bot), None);
    let second = log_fields(&bot, "second shutdown signal");
    assert_eq!(second.len(), 1, "{}", bot.stdout());
    assert_eq!(second[0]["signal"], "SIGINT");
}

#[test]
fn restore_force_cannot_overwrite_a_running_bots_database() {
    let bot = bot_with_positions("0");
    // An archive of another, empty data directory.
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other");
    drop(iq720_bot::store::Store::open(&other).unwrap());
    let archive = tmp.path().join("empty.tar.gz");
    let (code, out, err) = cli(&[
        "backup",
        "--data-dir",
        other.to_str().unwrap(),
        "--out",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out} {err}");
    let before = bot.get_json("/api/v1/trades?limit=10000&open=true");
    let (code, out, err) = cli(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        bot.data_dir().to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains("in use by another bot process")
            && err.contains("trades.db.lock")
            && err.contains(&format!("pid {}", bot.pid())),
        "{err}"
    );
    assert!(!bot.data_dir().join("trades.db.restoring").exists());
    // The live bot still has its trades (an empty database was not swapped in).
    let after = bot.get_json("/api/v1/trades?limit=10000&open=true");
    assert!(after["count"].as_u64().unwrap() >= 1, "{after}");
    assert!(before["count"].as_u64().unwrap() >= 1, "{before}");
    assert!(!open_trade_ids_in_db(&bot).is_empty());
}
