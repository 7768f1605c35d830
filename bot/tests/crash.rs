//! SIGKILL at arbitrary moments while trading: the database stays intact and no pair
//! ever has two open trades; restarts resume the open positions from the database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Bot, open_db, poll};
use std::collections::BTreeSet;
use std::time::Duration;

fn check_db(bot: &Bot) -> (i64, BTreeSet<i64>) {
    let db = open_db(&bot.data_dir().join("trades.db"));
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let dup: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT pair FROM trades WHERE is_open = 1 GROUP BY pair HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dup, 0, "duplicated open trade");
    let orphans: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE trade_id NOT IN (SELECT id FROM trades)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "orders without a trade");
    // every trade has its buy order, every closed trade its sell order
    let missing: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM trades t WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.trade_id = t.id AND o.side = 'buy')
               OR (t.is_open = 0 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.trade_id = t.id AND o.side = 'sell'))",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(missing, 0, "trade without its orders");
    let total: i64 = db
        .query_row("SELECT COUNT(*) FROM trades", [], |r| r.get(0))
        .unwrap();
    let mut st = db
        .prepare("SELECT id FROM trades WHERE is_open = 1")
        .unwrap();
    let open: BTreeSet<i64> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        open.len() <= 3,
        "more open trades than maxPositions: {open:?}"
    );
    (total, open)
}

#[test]
fn sigkill_loop_keeps_db_intact_without_duplicate_open_trades() {
    let mut bot = Bot::start("");
    let mut last_total = 0;
    // kill after varying delays so the kill lands at different points of the loop
    for (round, delay_ms) in [350u64, 720, 130, 910, 460, 60, 580, 270]
        .into_iter()
        .enumerate()
    {
        std::thread::sleep(Duration::from_millis(delay_ms));
        bot.kill();
        let (total, _) = check_db(&bot);
        assert!(
            total >= last_total,
            "round {round}: trades lost ({total} < {last_total})"
        );
        last_total = total;
        bot.launch("");
    }
    poll("trading after restarts", Duration::from_secs(20), || {
        (check_db(&bot).0 > last_total).then_some(())
    });
    bot.kill();
    let (_, open_in_db) = check_db(&bot);
    // restart paused: the positions the bot reports are exactly the ones in the database
    bot.launch("paused: true");
    let pos = bot.get_json("/api/v1/positions");
    let reported: BTreeSet<i64> = pos["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tradeId"].as_i64().unwrap())
        .collect();
    assert!(
        reported.is_subset(&open_in_db),
        "reported {reported:?} vs db {open_in_db:?}"
    );
    let (_, open_now) = check_db(&bot);
    assert!(
        open_now.is_subset(&open_in_db),
        "no new entries while paused"
    );
}
