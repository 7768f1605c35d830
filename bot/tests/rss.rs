//! Resident memory of the real process with 5 pairs trading (run in release mode):
//! `cargo test -p iq720-bot --release --test rss -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Bot, poll};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
#[ignore = "measurement: run in release mode with --ignored"]
fn rss_under_30_mb_with_5_pairs_trading() {
    let bot = Bot::start(
        "pairs: [BTC/USDT, ETH/USDT, SOL/USDT, ADA/USDT, XRP/USDT]\nrisk: {maxPositions: 5}\nmarketData: {tickRate: 100}",
    );
    poll("trades happen", Duration::from_secs(30), || {
        (bot.metric("iq720_bot_trades_opened_total").unwrap_or(0.0) >= 20.0).then_some(())
    });
    // keep the API busy too while sampling
    let start = Instant::now();
    let mut max = 0;
    let mut samples = 0;
    while start.elapsed() < Duration::from_secs(20) {
        bot.status();
        bot.get_json("/api/v1/trades?limit=100");
        bot.get_json("/api/v1/performance");
        max = max.max(rss_kib(bot.pid()));
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let opened = bot.metric("iq720_bot_trades_opened_total").unwrap();
    println!(
        "RSS max {max} KiB ({:.1} MiB) over {samples} samples in 20 s; {opened} trades opened, 5 pairs at 100 ticks/s each",
        max as f64 / 1024.0
    );
    // the live tick-to-decision histogram of the same process
    let count = bot
        .metric("iq720_bot_tick_to_decision_seconds_count")
        .unwrap();
    for le in ["0.00001", "0.000025", "0.00005"] {
        let n = bot
            .metric(&format!(
                "iq720_bot_tick_to_decision_seconds_bucket{{le=\"{le}\"}}"
            ))
            .unwrap();
        println!(
            "tick_to_decision <= {le} s: {n} of {count} ({:.3}%)",
            n / count * 100.0
        );
    }
    assert!(max < 30 * 1024, "RSS {max} KiB exceeds 30 MiB");
}
