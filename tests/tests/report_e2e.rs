//! End-to-end test of the performance report (the runbook's `generate_report.py
//! --period weekly`) on the real local cluster, with the real operator and bot:
//!
//! - trades with known figures are written into the running bot's own database (a pair
//!   the bot does not trade, closed 2, 10 and 40 days ago), beside what it trades;
//! - `trading.iq720.io/report=weekly` gives `status.report` Ready, a `ReportReady`
//!   Event, and the ConfigMap `<bot>-report` whose `weekly.json` has exactly the
//!   figures of the bot's trade history over its period (recomputed here from
//!   `GET /api/v1/trades`), and a `weekly.txt` for people;
//! - `monthly` adds its keys and keeps the weekly ones;
//! - a value that names no period is `Invalid` with a Warning Event and writes nothing;
//! - each request is answered once.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::bots::*;
use common::{Operator, bot_api};
use iq720_contract::report::{PerformanceReport, REPORT_ANNOTATION};
use iq720_crds::TradingBot;
use iq720_crds::trading_bot::{ReportResult, TradingBotPhase};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::Value;

const DAY: i64 = 86_400_000;
/// A pair the bot does not trade, so these figures are exactly the seeded ones.
const PAIR: &str = "XRP/USDT";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Closed XRP/USDT trades: (id, closed days ago, profit net of fees, fees).
const SEEDED: [(i64, i64, f64, f64); 4] = [
    (910_001, 2, 5.0, 0.2),
    (910_002, 2, -2.0, 0.2),
    (910_003, 10, 7.0, 0.2),
    (910_004, 40, 100.0, 0.2),
];

fn seed(db: &std::path::Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let now = now_ms();
    for (id, days, pnl, fees) in SEEDED {
        let closed = now - days * DAY;
        c.execute(
            "INSERT INTO trades (id, pair, side, is_open, amount, stake_amount, open_rate, open_date, fee_open,
               close_rate, close_date, fee_close, close_profit, close_profit_abs, exit_reason, strategy, max_rate)
             VALUES (?1, ?2, 'long', 0, 1.0, 100.0, 100.0, ?3, ?4, 100.0, ?5, ?4, ?6 / 100.0, ?6, 'seeded', 'rsi', 100.0)",
            rusqlite::params![id, PAIR, closed - 3_600_000, fees / 2.0, closed, pnl],
        )
        .unwrap();
    }
}

/// Asks for a report with `request` and waits until `status.report` answers it with
/// `result`.
async fn ask(
    e: &Env,
    name: &str,
    request: &str,
    result: ReportResult,
    op: &Operator,
) -> TradingBot {
    annotate_bot(e, name, REPORT_ANNOTATION, request).await;
    let wanted = request.to_string();
    wait_bot(
        e,
        name,
        &format!("status.report {result:?} for {request}"),
        move |b| report_result(b, &wanted) == Some(result),
        op,
    )
    .await
}

fn report_result(b: &TradingBot, request: &str) -> Option<ReportResult> {
    let r = b.status.as_ref()?.report.as_ref()?;
    (r.request == request).then_some(r.result)
}

async fn report_map(e: &Env, name: &str) -> ConfigMap {
    Api::<ConfigMap>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get(&format!("{name}-report"))
        .await
        .unwrap()
}

fn stored(map: &ConfigMap, key: &str) -> String {
    map.data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no key {key} in {:?}",
                map.data.as_ref().map(|d| d.keys().collect::<Vec<_>>())
            )
        })
}

/// The figures the report must have: recomputed from the bot's trade list over the
/// report's own period.
fn assert_matches_history(report: &PerformanceReport, trades: &[Value]) {
    let ms = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let (from, to) = (ms(&report.from), ms(&report.to));
    let closed: Vec<&Value> = trades
        .iter()
        .filter(|t| !t["isOpen"].as_bool().unwrap())
        .filter(|t| {
            t["closeTimestamp"]
                .as_i64()
                .is_some_and(|c| c >= from && c < to)
        })
        .collect();
    let pnl_of = |t: &&Value| t["closeProfitAbs"].as_f64().unwrap();
    assert_eq!(report.trades as usize, closed.len(), "{report:#?}");
    let wins = closed.iter().filter(|t| pnl_of(t) > 0.0).count();
    assert_eq!(report.wins as usize, wins);
    assert_eq!(report.losses as usize, closed.len() - wins);
    let pnl: f64 = closed.iter().map(pnl_of).sum();
    assert!(
        (report.pnl - pnl).abs() < 1e-6,
        "pnl {} vs {pnl}",
        report.pnl
    );
    let fees: f64 = closed
        .iter()
        .map(|t| t["feeOpen"].as_f64().unwrap() + t["feeClose"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(
        (report.fees - fees).abs() < 1e-6,
        "fees {} vs {fees}",
        report.fees
    );
    let best = closed.iter().map(pnl_of).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(report.best_trade.as_ref().map(|t| t.pnl), Some(best));
    let mut per_pair: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for t in &closed {
        let e = per_pair
            .entry(t["pair"].as_str().unwrap().to_string())
            .or_default();
        e.0 += 1;
        e.1 += pnl_of(t);
    }
    let reported: BTreeMap<String, (u64, f64)> = report
        .pairs
        .iter()
        .map(|(p, f)| (p.clone(), (f.trades, f.pnl)))
        .collect();
    assert_eq!(
        reported.keys().collect::<Vec<_>>(),
        per_pair.keys().collect::<Vec<_>>()
    );
    for (pair, (n, pnl)) in per_pair {
        assert_eq!(reported[&pair].0, n, "{pair}");
        assert!((reported[&pair].1 - pnl).abs() < 1e-6, "{pair}");
    }
}

async fn trade_list(e: &Env, name: &str) -> Vec<Value> {
    let (addr, token) = bot_addr_token(e, name).await;
    let (status, body) = bot_api(&addr, &token, "GET", "/api/v1/trades?limit=10000", "").await;
    assert_eq!(status, 200, "{body}");
    body["trades"].as_array().unwrap().clone()
}

#[tokio::test]
async fn report_annotation_stores_the_bots_figures_in_a_configmap_once_per_request() {
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "op-report", &[]).await;
    let name = "rep";
    apply_running(&e, name, "", &op).await;
    seed(&bot_db(&e, name).await);

    // weekly: the two trades closed 2 days ago, not those of 10 and 40 days ago
    let b = ask(&e, name, "weekly", ReportResult::Ready, &op).await;
    let st = b.status.as_ref().unwrap().report.clone().unwrap();
    assert_eq!(st.config_map.as_deref(), Some("rep-report"));
    assert!(st.generated_at.is_some());
    let map = report_map(&e, name).await;
    let weekly: PerformanceReport = serde_json::from_str(&stored(&map, "weekly.json")).unwrap();
    assert_eq!(
        weekly.bot.as_deref(),
        Some(format!("{}/{name}", e.ns.name()).as_str())
    );
    let xrp = &weekly.pairs[PAIR];
    assert_eq!((xrp.trades, xrp.wins), (2, 1), "{weekly:#?}");
    assert!((xrp.pnl - 3.0).abs() < 1e-9, "{weekly:#?}");
    assert_eq!(weekly.exit_reasons.get("seeded"), Some(&2));
    assert_matches_history(&weekly, &trade_list(&e, name).await);
    let text = stored(&map, "weekly.txt");
    println!("{text}");
    assert!(
        text.contains("IQ-720 weekly performance report")
            && text.contains(PAIR)
            && text.contains(&format!("{} closed", weekly.trades)),
        "{text}"
    );
    let notes = wait_events(&e, name, &["ReportReady"]).await;
    println!("events: {notes:?}");
    let ready = event_notes_with_reason(&e, name, "ReportReady").await;
    assert!(
        ready[0].contains("weekly report") && ready[0].contains("rep-report"),
        "{ready:?}"
    );

    // monthly: adds its keys, the weekly ones stay
    ask(&e, name, "monthly-1", ReportResult::Ready, &op).await;
    let map = report_map(&e, name).await;
    let monthly: PerformanceReport = serde_json::from_str(&stored(&map, "monthly.json")).unwrap();
    let xrp = &monthly.pairs[PAIR];
    assert_eq!((xrp.trades, xrp.wins), (3, 2), "{monthly:#?}");
    assert!((xrp.pnl - 10.0).abs() < 1e-9, "{monthly:#?}");
    assert_matches_history(&monthly, &trade_list(&e, name).await);
    assert_eq!(
        serde_json::from_str::<PerformanceReport>(&stored(&map, "weekly.json")).unwrap(),
        weekly,
        "the monthly report replaced the weekly one"
    );
    let version = map.metadata.resource_version.clone();

    // a value that names no period: Invalid, a Warning, nothing written
    let b = ask(&e, name, "fortnightly", ReportResult::Invalid, &op).await;
    let message = b.status.unwrap().report.unwrap().message.unwrap();
    assert!(message.contains("daily, weekly or monthly"), "{message}");
    wait_events(&e, name, &["ReportRequestInvalid"]).await;
    assert_eq!(
        phase(&bots(&e).get(name).await.unwrap()),
        Some(TradingBotPhase::Running)
    );
    assert_eq!(
        report_map(&e, name).await.metadata.resource_version,
        version,
        "an invalid request wrote the report ConfigMap"
    );
    // one report per request: two requests answered, two ReportReady occurrences (an
    // Event repeated within minutes is counted in its series)
    let ready: Vec<_> = bot_events(&e, name)
        .await
        .into_iter()
        .filter(|ev| ev.reason.as_deref() == Some("ReportReady"))
        .collect();
    let occurrences: i32 = ready
        .iter()
        .map(|ev| ev.series.as_ref().map_or(1, |s| s.count))
        .sum();
    assert_eq!(occurrences, 2, "{ready:#?}");
    assert!(
        ready.iter().any(|ev| ev
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("monthly report"))),
        "{ready:#?}"
    );
    teardown(e).await;
}
