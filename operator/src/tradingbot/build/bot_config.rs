//! Renders a TradingBot spec into the bot's YAML configuration (see bot/README.md).
//!
//! The configuration has two parts:
//! - hot-reloadable fields (`risk`, `strategy`, `paused`, `logs.compressAfter`,
//!   `logs.deleteAfter`) that the operator applies through the bot's
//!   `PATCH /api/v1/config` without a restart, and
//! - everything else, whose checksum goes into the pod template so that a change
//!   rolls the pod.
//!
//! Both parts are written to the ConfigMap, so a restarted bot always starts with the
//! current desired values.

use iq720_crds::TradingBot;
use iq720_crds::trading_bot::{MarketDataKind, MarketDataSource, StrategyName, TradingMode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::labels::API_PORT;

/// Where the ConfigMap is mounted in the bot container.
pub const CONFIG_DIR: &str = "/etc/iq720";
/// File name of the configuration inside the ConfigMap.
pub const CONFIG_FILE: &str = "config.yaml";
/// Where the API token Secret is mounted.
pub const TOKEN_DIR: &str = "/var/run/iq720/tokens";
/// Where exchange credentials are mounted in live mode.
pub const EXCHANGE_CREDENTIALS_DIR: &str = "/var/run/iq720/exchange";
/// Data volume mount path (SQLite database).
pub const DATA_DIR: &str = "/var/lib/iq720";
/// Log directory mount path.
pub const LOG_DIR: &str = "/var/log/iq720";

/// The rendered configuration, split into its hot-reloadable and restart parts.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedConfig {
    /// The full configuration document.
    pub full: Value,
    /// The hot-reloadable fields as a JSON merge patch for `PATCH /api/v1/config`.
    pub hot: Value,
    /// SHA-256 (hex) of the restart-requiring part.
    pub restart_checksum: String,
}

impl RenderedConfig {
    /// The full configuration as YAML, the ConfigMap's content.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(&self.full)
    }
}

fn strategy_name(name: StrategyName) -> &'static str {
    match name {
        StrategyName::RsiMacdBollinger => "rsiMacdBollinger",
        StrategyName::Rsi => "rsi",
        StrategyName::Macd => "macd",
        StrategyName::Bollinger => "bollinger",
    }
}

fn source(src: &MarketDataSource, default_seed: i64) -> Value {
    let mut v = serde_json::Map::new();
    match src.kind {
        MarketDataKind::Simulator | MarketDataKind::Exchange => {
            v.insert("kind".into(), json!("simulator"));
        }
        MarketDataKind::CsvReplay => {
            v.insert("kind".into(), json!("csv"));
            if let Some(path) = &src.path {
                v.insert("path".into(), json!(path));
            }
        }
    }
    v.insert(
        "seed".into(),
        json!(src.seed.unwrap_or(default_seed).unsigned_abs()),
    );
    Value::Object(v)
}

/// The hot-reloadable part of the configuration.
pub fn hot_part(bot: &TradingBot) -> Value {
    let spec = &bot.spec;
    json!({
        "risk": {
            "maxPositions": spec.risk.max_positions.max(1),
            "maxPositionSize": spec.risk.max_position_size,
            "positionRiskPercent": spec.risk.position_risk_percent,
            "maxDrawdownPercent": spec.risk.max_drawdown_percent,
            "dailyLossLimitPercent": spec.risk.daily_loss_limit_percent,
            "stopLoss": {
                "type": match spec.risk.stop_loss.kind {
                    iq720_crds::trading_bot::StopLossKind::Fixed => "fixed",
                    iq720_crds::trading_bot::StopLossKind::Trailing => "trailing",
                },
                "percent": spec.risk.stop_loss.percent,
            },
        },
        "strategy": {
            "name": strategy_name(spec.strategy.name),
            "params": spec.strategy.params,
        },
        "paused": spec.paused,
        "logs": {
            "compressAfter": spec.logs.compress_after,
            "deleteAfter": spec.logs.delete_after,
        },
    })
}

/// The restart-requiring part of the configuration.
pub fn restart_part(bot: &TradingBot, namespace: &str, name: &str) -> Value {
    let spec = &bot.spec;
    let mut exchange = json!({ "name": spec.exchange.name });
    if spec.exchange.credentials_secret_ref.is_some() {
        exchange["credentialsDir"] = json!(EXCHANGE_CREDENTIALS_DIR);
    }
    let mut market_data = json!({
        "primary": source(&spec.market_data.primary, 1),
        "staleAfter": spec.market_data.stale_after,
        "failback": if spec.market_data.failback { "auto" } else { "manual" },
    });
    if let Some(backup) = &spec.market_data.backup {
        market_data["backup"] = source(backup, 2);
    }
    json!({
        "name": format!("{namespace}/{name}"),
        "mode": match spec.mode { TradingMode::Paper => "paper", TradingMode::Live => "live" },
        "exchange": exchange,
        "pairs": spec.pairs,
        "marketData": market_data,
        "logs": { "level": match spec.logs.level {
            iq720_crds::trading_bot::LogLevel::Error => "error",
            iq720_crds::trading_bot::LogLevel::Warn => "warn",
            iq720_crds::trading_bot::LogLevel::Info => "info",
            iq720_crds::trading_bot::LogLevel::Debug => "debug",
        } },
        "api": { "listenAddr": format!("0.0.0.0:{API_PORT}"), "tokenDir": TOKEN_DIR },
        "dataDir": DATA_DIR,
        "logDir": LOG_DIR,
    })
}

/// Deep-merges `patch` into `target` (objects merge, everything else replaces).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Renders the whole configuration of a bot.
pub fn render(bot: &TradingBot, namespace: &str, name: &str) -> RenderedConfig {
    let restart = restart_part(bot, namespace, name);
    let hot = hot_part(bot);
    let mut full = restart.clone();
    merge(&mut full, &hot);
    // serde_json maps are sorted, so the serialisation is canonical.
    let digest = Sha256::digest(restart.to_string().as_bytes());
    let restart_checksum = digest.iter().map(|b| format!("{b:02x}")).collect();
    RenderedConfig {
        full,
        hot,
        restart_checksum,
    }
}

/// Returns the hot fields whose value differs between the bot's reported
/// configuration and the desired one, as a merge patch (None when nothing differs).
pub fn hot_diff(desired_hot: &Value, reported: &Value) -> Option<Value> {
    let mut patch = serde_json::Map::new();
    if let Value::Object(fields) = desired_hot {
        for (key, want) in fields {
            let have = reported.get(key).cloned().unwrap_or(Value::Null);
            if !covers(&have, want) || (key == "strategy" && removed_params(&have, want)) {
                patch.insert(key.clone(), with_removals(key, &have, want));
            }
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// Whether the bot still has strategy parameters that the spec no longer sets.
fn removed_params(have: &Value, want: &Value) -> bool {
    let (Some(h), Some(w)) = (
        have.get("params").and_then(Value::as_object),
        want.get("params").and_then(Value::as_object),
    ) else {
        return false;
    };
    h.keys().any(|k| !w.contains_key(k))
}

/// The patch for one hot field; removed strategy parameters are sent as null, which a
/// JSON merge patch reads as "delete".
fn with_removals(key: &str, have: &Value, want: &Value) -> Value {
    let mut out = want.clone();
    if key == "strategy"
        && let (Some(h), Some(params)) = (
            have.get("params").and_then(Value::as_object),
            out.get_mut("params").and_then(Value::as_object_mut),
        )
    {
        for k in h.keys() {
            params.entry(k.clone()).or_insert(Value::Null);
        }
    }
    out
}

/// Whether `have` already contains every leaf of `want` (numbers compared as f64,
/// durations compared after normalisation).
fn covers(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => {
            // A map of params must match exactly, not just contain the wanted keys:
            // a removed strategy parameter has to reach the bot too.
            w.iter()
                .all(|(k, wv)| h.get(k).is_some_and(|hv| covers(hv, wv)))
        }
        (Value::Number(h), Value::Number(w)) => match (h.as_f64(), w.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()).max(1.0),
            _ => false,
        },
        (Value::String(h), Value::String(w)) => {
            h == w
                || matches!((crate::duration::parse(h), crate::duration::parse(w)), (Ok(a), Ok(b)) if a == b)
        }
        (h, w) => h == w,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use iq720_crds::TradingBotSpec;

    fn bot(extra: Value) -> TradingBot {
        let mut spec = json!({"version": "0.1.0", "pairs": ["BTC/USDT", "ETH/USDT"]});
        merge(&mut spec, &extra);
        let spec: TradingBotSpec = serde_json::from_value(spec).unwrap();
        TradingBot::new("paper", spec)
    }

    #[test]
    fn rendered_config_is_accepted_by_the_bot() {
        let b = bot(
            json!({"strategy": {"params": {"rsiPeriod": 10}}, "marketData": {"backup": {"type": "simulator", "seed": 7}}}),
        );
        let yaml = render(&b, "ns", "paper").to_yaml().unwrap();
        let parsed = iq720_bot::config::Config::from_yaml(&yaml).unwrap();
        assert_eq!(parsed.pairs, vec!["BTC/USDT", "ETH/USDT"]);
        assert_eq!(parsed.strategy.params.get("rsiPeriod"), Some(&10.0));
        assert!(parsed.market_data.backup.is_some());
        assert_eq!(parsed.name, "ns/paper");
    }

    #[test]
    fn hot_changes_keep_the_checksum() {
        let a = render(&bot(json!({})), "ns", "b");
        let b = render(
            &bot(
                json!({"paused": true, "risk": {"maxPositions": 9}, "strategy": {"params": {"rsiPeriod": 7}}}),
            ),
            "ns",
            "b",
        );
        assert_eq!(a.restart_checksum, b.restart_checksum);
        assert_ne!(a.hot, b.hot);
    }

    #[test]
    fn restart_changes_change_the_checksum() {
        let a = render(&bot(json!({})), "ns", "b");
        for change in [
            json!({"pairs": ["SOL/USDT"]}),
            json!({"marketData": {"staleAfter": "10s"}}),
            json!({"logs": {"level": "debug"}}),
        ] {
            let b = render(&bot(change.clone()), "ns", "b");
            assert_ne!(a.restart_checksum, b.restart_checksum, "{change}");
        }
    }

    #[test]
    fn hot_diff_finds_only_changed_fields() {
        let desired = hot_part(&bot(json!({"paused": true})));
        let mut reported = hot_part(&bot(json!({})));
        reported["logs"]["compressAfter"] = json!("168h"); // same as 7d
        reported["extra"] = json!(1);
        let diff = hot_diff(&desired, &reported).unwrap();
        assert_eq!(diff, json!({"paused": true}));
        assert_eq!(hot_diff(&desired, &desired), None);
    }

    #[test]
    fn removed_strategy_params_are_sent_as_null() {
        let desired = hot_part(&bot(json!({})));
        let reported = hot_part(&bot(json!({"strategy": {"params": {"rsiPeriod": 7}}})));
        let diff = hot_diff(&desired, &reported).unwrap();
        assert_eq!(diff["strategy"]["params"], json!({"rsiPeriod": null}));
    }
}
