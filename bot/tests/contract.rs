//! The bot keeps the contract the operator relies on (`iq720-contract`): its real
//! answers to `/status`, `/performance`, `/config`, `PATCH /config`, pause, resume and
//! close-all decode into the contract's types with every field under the name the bot
//! sends, and a real close-all halts with the contract's `CLOSE_ALL_HALT_REASON`, the
//! reason the operator looks for before it resumes a bot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Bot, poll};
use iq720_contract::CLOSE_ALL_HALT_REASON;
use iq720_contract::api::{
    CloseAllResponse, ConfigPatch, ConfigResponse, ErrorResponse, PauseResponse,
    PerformanceResponse, ResumeResponse, StatusResponse, StrategyPatch,
};
use iq720_contract::config::Config;
use iq720_contract::report::{PerformanceReport, ReportPeriod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Asserts that every field of `typed`, serialised again, is in `raw` with the same
/// value. A contract field whose name does not match the bot's would be missing (or
/// defaulted) in `typed` and fail here, so decoding alone cannot hide a rename.
fn assert_subset(what: &str, typed: &Value, raw: &Value, path: &str) {
    match (typed, raw) {
        (Value::Object(t), Value::Object(r)) => {
            for (k, v) in t {
                let p = format!("{path}.{k}");
                let rv = r
                    .get(k)
                    .unwrap_or_else(|| panic!("{what}: the bot sends no `{p}`; it sent {raw}"));
                assert_subset(what, v, rv, &p);
            }
        }
        (Value::Array(t), Value::Array(r)) => {
            assert_eq!(t.len(), r.len(), "{what}: length of {path}");
            for (i, (a, b)) in t.iter().zip(r).enumerate() {
                assert_subset(what, a, b, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{what}: {path}");
        }
        (a, b) => assert_eq!(a, b, "{what}: {path}"),
    }
}

/// Decodes a raw answer into the contract type `T` and checks it field by field.
fn decode<T: DeserializeOwned + Serialize>(what: &str, raw: &Value) -> T {
    let typed: T = serde_json::from_value(raw.clone())
        .unwrap_or_else(|e| panic!("{what} does not decode into the contract type: {e}\n{raw}"));
    assert_subset(what, &serde_json::to_value(&typed).unwrap(), raw, "");
    typed
}

/// A request that must answer 200 with JSON.
fn ok_json(bot: &Bot, method: &str, path: &str, body: Option<&str>) -> Value {
    let r = bot.req(method, path, body);
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    r.json()
}

#[test]
fn real_answers_decode_into_the_contract_types() {
    let bot = Bot::start("");
    poll("a trade closes", Duration::from_secs(30), || {
        let perf = bot.get_json("/api/v1/performance");
        (perf["allTime"]["trades"].as_u64().unwrap_or(0) >= 1).then_some(())
    });

    let status: StatusResponse = decode("GET /status", &bot.status());
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert!(!status.halted && status.halt_reason.is_none());
    assert_eq!(status.active_market_data, "sim-primary");
    assert_eq!(status.market_data.sources.len(), 2);
    // every optional field the bot sends today is read under its name
    for (field, present) in [
        ("name", status.name.is_some()),
        ("mode", status.mode.is_some()),
        ("maxPositions", status.max_positions.is_some()),
        ("equity", status.equity.is_some()),
        ("pairs", status.pairs.is_some()),
        (
            "marketData.staleAfter",
            status.market_data.stale_after.is_some(),
        ),
        (
            "engineLoopAgeSeconds",
            status.engine_loop_age_seconds.is_some(),
        ),
    ] {
        assert!(present, "status field {field} not read");
    }

    let perf: PerformanceResponse =
        decode("GET /performance", &bot.get_json("/api/v1/performance"));
    assert!(perf.all_time.trades >= 1);
    assert!((0.0..=1.0).contains(&perf.all_time.win_rate));
    assert!(perf.today.is_some() && perf.last_7_days.is_some() && perf.pnl_percent.is_some());

    // GET /report: the contract's document, and its figures are the trade history's
    let report: PerformanceReport =
        decode("GET /report", &bot.get_json("/api/v1/report?period=weekly"));
    assert_eq!(report.period, ReportPeriod::Weekly);
    let ms = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let (from, to) = (ms(&report.from), ms(&report.to));
    assert_eq!(to - from, ReportPeriod::Weekly.length_ms());
    let trades = bot.get_json("/api/v1/trades?limit=10000");
    let closed: Vec<&Value> = trades["trades"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["closeTimestamp"]
                .as_i64()
                .is_some_and(|c| c >= from && c < to)
        })
        .collect();
    assert!(report.trades >= 1, "{report:?}");
    assert_eq!(report.trades as usize, closed.len(), "{report:?}");
    let pnl: f64 = closed
        .iter()
        .map(|t| t["closeProfitAbs"].as_f64().unwrap())
        .sum();
    assert!((report.pnl - pnl).abs() < 1e-9, "{} vs {pnl}", report.pnl);
    let wins = closed
        .iter()
        .filter(|t| t["closeProfitAbs"].as_f64().unwrap() > 0.0)
        .count();
    assert_eq!(report.wins as usize, wins);
    // the same period (trades closed since are outside it): the same count
    let text = bot.req(
        "GET",
        &format!("/api/v1/report?period=weekly&format=text&end={to}"),
        None,
    );
    assert_eq!(text.status, 200);
    assert!(
        text.text().contains("IQ-720 weekly performance report")
            && text.text().contains(&format!("{} closed", report.trades)),
        "{}",
        text.text()
    );

    // GET /config: the hot part the operator reads, and the whole document as the
    // contract's (strict) configuration type
    let raw_config = bot.get_json("/api/v1/config");
    let config: ConfigResponse = decode("GET /config", &raw_config);
    assert_eq!(config.risk.max_positions, 3);
    assert_eq!(config.strategy.params.get("rsiPeriod"), Some(&3.0));
    let whole: Config = decode("GET /config (whole)", &raw_config);
    assert_eq!(whole.hot(), config);
    assert!(whole.validate().is_ok());

    // PATCH /config with the contract's request type, removing a parameter
    let patch = ConfigPatch {
        strategy: Some(StrategyPatch {
            name: None,
            params: BTreeMap::from([("rsiPeriod".to_string(), None)]),
        }),
        paused: Some(true),
        ..ConfigPatch::default()
    };
    let body = serde_json::to_string(&patch).unwrap();
    let patched: ConfigResponse = decode(
        "PATCH /config",
        &ok_json(&bot, "PATCH", "/api/v1/config", Some(&body)),
    );
    assert!(patched.paused);
    assert!(!patched.strategy.params.contains_key("rsiPeriod"));

    // a refused patch answers the contract's error body with a stable code
    let r = bot.req(
        "PATCH",
        "/api/v1/config",
        Some(r#"{"risk": {"maxPositions": 101}}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let e: ErrorResponse = decode("PATCH /config refused", &r.json());
    assert_eq!(e.error.code, "invalid_config");
    assert!(
        e.error.message.contains("risk.maxPositions"),
        "{}",
        e.error.message
    );

    let pause: PauseResponse = decode(
        "POST /trading/pause",
        &ok_json(&bot, "POST", "/api/v1/trading/pause", None),
    );
    assert!(pause.paused && !pause.halted);
    let resume: ResumeResponse = decode(
        "POST /trading/resume",
        &ok_json(&bot, "POST", "/api/v1/trading/resume", None),
    );
    assert!(!resume.paused && !resume.halted);
}

#[test]
fn close_all_halts_with_the_contract_reason() {
    let bot = Bot::start("");
    poll("positions open", Duration::from_secs(30), || {
        (bot.status()["openPositions"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    let report: CloseAllResponse = decode(
        "POST /emergency/close-all",
        &ok_json(&bot, "POST", "/api/v1/emergency/close-all", None),
    );
    assert!(report.halted);
    assert!(
        !report.positions.is_empty(),
        "nothing was closed: {report:?}"
    );
    assert_eq!(report.open_positions, 0);
    assert_eq!(report.halt_reason.as_deref(), Some(CLOSE_ALL_HALT_REASON));

    let status: StatusResponse = decode("GET /status after close-all", &bot.status());
    assert!(status.halted);
    assert_eq!(status.open_positions, 0);
    assert_eq!(status.halt_reason.as_deref(), Some(CLOSE_ALL_HALT_REASON));

    // a second close-all on a flat bot keeps the same reason
    let again: CloseAllResponse = decode(
        "POST /emergency/close-all (flat)",
        &ok_json(&bot, "POST", "/api/v1/emergency/close-all", None),
    );
    assert!(again.already_flat && again.positions.is_empty());
    assert_eq!(again.halt_reason.as_deref(), Some(CLOSE_ALL_HALT_REASON));
}
