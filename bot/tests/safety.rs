//! Safety guarantees through the real binary: open trades on pairs no longer configured
//! (orphans) are counted and closed by close-all, a second bot on the same data
//! directory refuses to start, and `/healthz` fails while engine iterations keep failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Bot, free_port, http, open_db, poll};
use iq720_bot::engine::{EngineEvent, Position};
use iq720_bot::store::Store;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn position(trade_id: i64, pair_idx: usize, open_rate: f64) -> Position {
    Position {
        trade_id,
        pair_idx,
        amount: 2.0,
        stake: 2.0 * open_rate,
        open_rate,
        open_ms: 1_700_000_000_000,
        fee_open: 0.2,
        max_rate: open_rate,
    }
}

/// Seed open trades on BTC/USDT (configured in the test config) and on XRP/USDT and
/// ADA/USDT (not configured: orphans once the bot starts with the test config).
fn seed_open_trades(bot: &Bot) {
    let pairs: Vec<String> = ["BTC/USDT", "XRP/USDT", "ADA/USDT"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let store = Store::open(&bot.data_dir()).unwrap();
    let events: Vec<EngineEvent> = [(1, 0, 100.0), (2, 1, 0.5), (3, 2, 0.25)]
        .into_iter()
        .map(|(id, idx, rate)| EngineEvent::Opened {
            position: position(id, idx, rate),
            order_id: id,
        })
        .collect();
    store.persist(&events, &pairs, "rsi").unwrap();
}

fn open_trades_in_db(bot: &Bot) -> i64 {
    open_db(&bot.data_dir().join("trades.db"))
        .query_row("SELECT COUNT(*) FROM trades WHERE is_open = 1", [], |r| {
            r.get(0)
        })
        .unwrap()
}

#[test]
fn orphaned_positions_are_counted_and_closed_by_close_all() {
    let mut bot = Bot::unstarted();
    seed_open_trades(&bot);
    // paused: the seeded trades are the only positions
    bot.launch("paused: true");
    let st = bot.status();
    assert_eq!(st["openPositions"], 3, "orphans count as open: {st}");
    assert_eq!(st["orphanedPositions"], 2, "{st}");
    let pos = bot.get_json("/api/v1/positions");
    assert_eq!(pos["count"], 3, "{pos}");
    let orphaned: Vec<&str> = pos["positions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["orphaned"] == true)
        .map(|p| p["pair"].as_str().unwrap())
        .collect();
    assert_eq!(orphaned.len(), 2, "{pos}");
    assert!(orphaned.contains(&"XRP/USDT") && orphaned.contains(&"ADA/USDT"));

    let r = bot.req("POST", "/api/v1/emergency/close-all", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = r.json();
    assert_eq!(r["alreadyFlat"], false, "{r}");
    assert_eq!(r["openPositions"], 0, "{r}");
    let mut closed: Vec<i64> = r["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tradeId"].as_i64().unwrap())
        .collect();
    closed.sort_unstable();
    assert_eq!(closed, vec![1, 2, 3], "{r}");
    assert_eq!(
        open_trades_in_db(&bot),
        0,
        "nothing left open in the database"
    );

    let trades = bot.get_json("/api/v1/trades?limit=10");
    for t in trades["trades"].as_array().unwrap() {
        assert_eq!(t["isOpen"], false, "{t}");
        let expect = if t["pair"] == "BTC/USDT" {
            "emergency_close_all"
        } else {
            "emergency_orphan"
        };
        assert_eq!(t["exitReason"], expect, "{t}");
        // no price was ever seen for an orphan: closed at its entry price (± slippage)
        let (open, close) = (
            t["openRate"].as_f64().unwrap(),
            t["closeRate"].as_f64().unwrap(),
        );
        if expect == "emergency_orphan" {
            assert!((close - open).abs() / open < 0.01, "{t}");
        }
    }
    let st = bot.status();
    assert_eq!(st["openPositions"], 0, "{st}");
    assert_eq!(st["orphanedPositions"], 0, "{st}");
    let again = bot.req("POST", "/api/v1/emergency/close-all", None).json();
    assert_eq!(again["alreadyFlat"], true, "{again}");

    // a restart finds nothing open, orphan or not
    bot.stop();
    bot.launch("paused: true");
    let st = bot.status();
    assert_eq!(
        (
            st["openPositions"].as_u64(),
            st["orphanedPositions"].as_u64()
        ),
        (Some(0), Some(0)),
        "{st}"
    );
    assert_eq!(st["state"], "halted");
}

#[test]
fn a_second_bot_on_the_same_data_dir_exits_naming_the_lock() {
    let bot = Bot::start("");
    let first_pid = bot.pid();
    let port = free_port();
    let out = std::fs::File::create(bot.root.join("second.stdout")).unwrap();
    let err_path = bot.root.join("second.stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let mut second = Command::new(env!("CARGO_BIN_EXE_iq720-bot"))
        .args(["run", "--config"])
        .arg(bot.root.join("config.yaml"))
        .env("IQ720_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("IQ720_DATA_DIR", bot.data_dir())
        .env("IQ720_LOG_DIR", bot.root.join("logs-second"))
        .env("IQ720_TOKEN_DIR", bot.token_dir())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let answered = http(port, "GET", "/healthz", None, None).is_ok();
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second bot kept running on a data dir in use (serving HTTP: {answered})");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("trades.db.lock"),
        "names the lock: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {first_pid}")),
        "names the holder (pid {first_pid}): {stderr}"
    );
    // the first bot is unaffected
    assert_eq!(
        http(bot.port, "GET", "/healthz", None, None)
            .unwrap()
            .status,
        200
    );
    bot.wait_ticks(200);
}

fn healthz(bot: &Bot) -> (u16, serde_json::Value) {
    let r = http(bot.port, "GET", "/healthz", None, None).unwrap();
    (r.status, r.json())
}

#[test]
fn healthz_fails_while_engine_iterations_keep_failing_and_recovers() {
    let bot = Bot::start("snapshotInterval: 100ms");
    assert_eq!(healthz(&bot).0, 200);
    // Inject failures from outside the process: every write the engine makes aborts.
    let db = rusqlite::Connection::open(bot.data_dir().join("trades.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER test_fail_snapshots BEFORE INSERT ON equity_snapshots
           BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;
         CREATE TRIGGER test_fail_trades BEFORE INSERT ON trades
           BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;
         CREATE TRIGGER test_fail_trade_updates BEFORE UPDATE ON trades
           BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;",
    )
    .unwrap();
    let body = poll(
        "/healthz fails while iterations fail",
        Duration::from_secs(20),
        || {
            let (code, body) = healthz(&bot);
            (code == 503).then_some(body)
        },
    );
    // The first failures are the injected ones; later ones may be follow-ups (e.g. the
    // sell order of a trade whose insert was refused fails its foreign key).
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("consecutive engine iterations failed")
            && reason.contains("database error"),
        "{body}"
    );
    assert!(
        bot.metric("iq720_bot_engine_iteration_failures_total")
            .unwrap()
            >= 5.0
    );
    let errors = std::fs::read_to_string(bot.log_dir().join("errors.log")).unwrap();
    assert!(errors.contains("injected write failure"), "{errors}");
    assert!(
        body["consecutiveFailedIterations"].as_u64().unwrap() >= 5,
        "{body}"
    );
    db.execute_batch(
        "DROP TRIGGER test_fail_snapshots; DROP TRIGGER test_fail_trades;
         DROP TRIGGER test_fail_trade_updates;",
    )
    .unwrap();
    let body = poll("/healthz recovers", Duration::from_secs(20), || {
        let (code, body) = healthz(&bot);
        (code == 200).then_some(body)
    });
    assert_eq!(body["consecutiveFailedIterations"], 0, "{body}");
}
