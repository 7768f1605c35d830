//! Checks of a TradingBot spec that the CRD's CEL rules cannot express. A failure
//! becomes the `InvalidSpec` condition, never a crash or a hot loop.
//!
//! Everything the bot sees is checked by the bot's own rules: the spec is rendered
//! into the bot configuration ([`super::build::bot_config::document`]) and the
//! contract's [`Config::problems`](iq720_contract::config::Config::problems) runs on
//! it, the same check the bot runs at start and on every hot reload. So a spec passes
//! here exactly when the bot accepts its configuration; the bot's field paths are
//! reported as spec paths (`risk.maxPositions` → `spec.risk.maxPositions`). The
//! checks kept here cover only fields the bot never sees: Kubernetes quantities, API
//! key rotation and the update timeout.

use iq720_contract::duration;
use iq720_crds::{TradingBot, TradingBotStatus};
use kube::ResourceExt;

use super::build::bot_config;
use super::status::{condition, set_condition};
use crate::shared::quantity;

/// Writes the `InvalidSpec` condition for `problems` (False with "the spec is valid"
/// when there are none).
pub fn report(st: &mut TradingBotStatus, problems: &[String], generation: Option<i64>) {
    if problems.is_empty() {
        set_condition(
            &mut st.conditions,
            condition::INVALID_SPEC,
            false,
            "Valid",
            "the spec is valid",
            generation,
        );
    } else {
        set_condition(
            &mut st.conditions,
            condition::INVALID_SPEC,
            true,
            "InvalidSpec",
            &problems.join("; "),
            generation,
        );
    }
}

/// Problems of the Kubernetes-typed fields (quantities) that the schema accepts as
/// free strings and the apiserver would refuse in the StatefulSet.
fn kubernetes_problems(bot: &TradingBot, out: &mut Vec<String>) {
    let spec = &bot.spec;
    match quantity::parse(&spec.storage.size) {
        Some(v) if v > 0.0 => {}
        Some(_) => out.push("spec.storage.size must be greater than zero".to_string()),
        None => out.push(format!(
            "spec.storage.size `{}` is not a Kubernetes quantity such as 1Gi or 500Mi",
            spec.storage.size
        )),
    }
    if let Some(res) = &spec.resources {
        for (kind, list) in [("limits", &res.limits), ("requests", &res.requests)] {
            for (name, q) in list.iter().flatten() {
                match quantity::parse(&q.0) {
                    Some(v) if v >= 0.0 => {}
                    Some(_) => out.push(format!("spec.resources.{kind}.{name} must not be negative")),
                    None => out.push(format!(
                        "spec.resources.{kind}.{name} `{}` is not a Kubernetes quantity such as 500m, 256Mi or 1Gi",
                        q.0
                    )),
                }
            }
        }
        if let (Some(limits), Some(requests)) = (&res.limits, &res.requests) {
            for (name, req) in requests {
                if let (Some(l), Some(r)) = (
                    limits.get(name).and_then(|q| quantity::parse(&q.0)),
                    quantity::parse(&req.0),
                ) && r > l
                {
                    out.push(format!(
                        "spec.resources.requests.{name} ({}) must not exceed spec.resources.limits.{name}",
                        req.0
                    ));
                }
            }
        }
    }
}

/// Problems of the fields the operator uses itself (the bot never sees them).
fn operator_problems(bot: &TradingBot, out: &mut Vec<String>) {
    let spec = &bot.spec;
    for (field, value) in [
        (
            "spec.apiKeys.rotationInterval",
            &spec.api_keys.rotation_interval,
        ),
        ("spec.apiKeys.gracePeriod", &spec.api_keys.grace_period),
        ("spec.update.healthTimeout", &spec.update.health_timeout),
    ] {
        match duration::parse(value) {
            Err(e) => out.push(format!("{field}: {e}")),
            Ok(d) if d.is_zero() => out.push(format!("{field} must be longer than zero")),
            Ok(_) => {}
        }
    }
}

/// Top-level fields of the bot configuration that come from the spec under the same
/// name; everything else is set by the operator itself.
const FROM_SPEC: &[&str] = &[
    "mode",
    "exchange",
    "pairs",
    "strategy",
    "risk",
    "marketData",
    "paused",
    "logs",
];

/// The spec path of a bot configuration field: `risk.maxPositions` →
/// `spec.risk.maxPositions`, `marketData.primary.kind` → `spec.marketData.primary.type`.
fn spec_field(field: &str) -> String {
    let top = field.split(['.', '[']).next().unwrap_or(field);
    if !FROM_SPEC.contains(&top) {
        return format!("the bot configuration field {field} (set by the operator)");
    }
    let renamed = match field.strip_suffix(".kind") {
        Some(source) if source.starts_with("marketData.") => format!("{source}.type"),
        _ => field.to_string(),
    };
    format!("spec.{renamed}")
}

/// Returns every problem of the spec, each naming its field; empty when valid.
pub fn problems(bot: &TradingBot) -> Vec<String> {
    let mut out = Vec::new();
    kubernetes_problems(bot, &mut out);
    operator_problems(bot, &mut out);
    let namespace = bot.namespace().unwrap_or_default();
    let (config, rendering) = bot_config::document(bot, &namespace, &bot.name_any());
    for p in rendering.into_iter().chain(config.problems()) {
        out.push(format!("{}: {}", spec_field(&p.field), p.message));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::{Value, json};

    fn bot(spec: Value) -> TradingBot {
        TradingBot::new("b", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn valid_sample_has_no_problems() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/samples/tradingbot-paper.yaml"
        ))
        .unwrap();
        let sample: TradingBot = serde_yaml::from_str(&text).unwrap();
        assert_eq!(problems(&sample), Vec::<String>::new());
    }

    #[test]
    fn delete_after_must_exceed_compress_after() {
        let b = bot(
            json!({"version": "1.0.0", "pairs": ["BTC/USDT"], "logs": {"compressAfter": "30d", "deleteAfter": "7d"}}),
        );
        let p = problems(&b);
        assert!(
            p.iter().any(|m| m.starts_with("spec.logs.deleteAfter: ")
                && m.contains("deleteAfter (7d) must be more whole days")),
            "{p:?}"
        );
    }

    #[test]
    fn identical_backup_source_is_reported() {
        let src = json!({"type": "simulator", "seed": 1});
        let b = bot(
            json!({"version": "1.0.0", "pairs": ["BTC/USDT"], "marketData": {"primary": src, "backup": src}}),
        );
        let p = problems(&b);
        assert!(
            p.iter()
                .any(|m| m.starts_with("spec.marketData.backup: ") && m.contains("must differ")),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_strategy_param_is_named() {
        let b = bot(
            json!({"version": "1.0.0", "pairs": ["BTC/USDT"], "strategy": {"params": {"rsiPeriodd": 3}}}),
        );
        assert!(
            problems(&b)
                .iter()
                .any(|m| m.starts_with("spec.strategy.params.rsiPeriodd: "))
        );
    }

    #[test]
    fn live_mode_and_exchange_feeds_are_reported() {
        let b = bot(
            json!({"version": "1.0.0", "pairs": ["BTC/USDT"], "mode": "live",
            "exchange": {"name": "binance", "credentialsSecretRef": {"name": "k"}},
            "marketData": {"primary": {"type": "exchange", "endpoint": "wss://x"}}}),
        );
        let p = problems(&b);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("spec.mode: "), "{p:?}");
        assert!(p[1].starts_with("spec.marketData.primary.type: "), "{p:?}");
        assert!(p[1].contains("exchange is not supported"), "{p:?}");
    }

    #[test]
    fn fields_the_bot_never_sees_are_checked_here() {
        let b = bot(json!({"version": "1.0.0", "pairs": ["BTC/USDT"],
            "apiKeys": {"rotationInterval": "0s", "gracePeriod": "1x"},
            "update": {"healthTimeout": "0m"}, "storage": {"size": "1Gb"}}));
        let p = problems(&b);
        assert_eq!(p.len(), 4, "{p:?}");
        // none of them is part of the bot's configuration
        let yaml = bot_config::render(&b, "ns", "b").to_yaml().unwrap();
        assert!(iq720_bot::config::Config::from_yaml(&yaml).is_ok());
        for word in ["apiKeys", "rotationInterval", "healthTimeout", "storage"] {
            assert!(!yaml.contains(word), "{word} in {yaml}");
        }
    }

    #[test]
    fn spec_fields() {
        assert_eq!(spec_field("risk.maxPositions"), "spec.risk.maxPositions");
        assert_eq!(spec_field("pairs[2]"), "spec.pairs[2]");
        assert_eq!(
            spec_field("marketData.backup.kind"),
            "spec.marketData.backup.type"
        );
        assert_eq!(
            spec_field("api.listenAddr"),
            "the bot configuration field api.listenAddr (set by the operator)"
        );
    }

    /// The bot's verdict on the values of a spec: the rendered configuration with the
    /// spec's duration strings put back verbatim (so a duration the operator cannot
    /// parse reaches the bot's parser too), parsed and validated by the bot.
    fn bot_accepts(b: &TradingBot) -> Result<(), String> {
        let mut doc: Value = serde_json::to_value(&bot_config::render(b, "ns", "b").full).unwrap();
        doc["logs"]["compressAfter"] = json!(b.spec.logs.compress_after);
        doc["logs"]["deleteAfter"] = json!(b.spec.logs.delete_after);
        doc["marketData"]["staleAfter"] = json!(b.spec.market_data.stale_after);
        let yaml = serde_yaml::to_string(&doc).unwrap();
        iq720_bot::config::Config::from_yaml(&yaml)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Item 3: a corpus of values at and around every bound the bot checks. For each,
    /// the operator reports no problem exactly when the bot accepts the configuration
    /// rendered from the spec, and an accepted spec's hot part is accepted by the bot's
    /// `PATCH /api/v1/config` too. The expected verdict is part of each row, so the
    /// chosen rule is visible (e.g. `maxPositions` 101 and `36h`/`2d` are refused).
    #[test]
    fn operator_accepts_exactly_what_the_bot_accepts() {
        let mut corpus: Vec<(Value, bool)> = vec![
            (json!({}), true),
            // risk bounds
            (json!({"risk": {"maxPositions": 1}}), true),
            (json!({"risk": {"maxPositions": 100}}), true),
            (json!({"risk": {"maxPositions": 101}}), false),
            (json!({"risk": {"maxPositions": 1000}}), false),
            (json!({"risk": {"maxPositions": 0}}), false),
            (json!({"risk": {"maxPositions": -3}}), false),
            (json!({"risk": {"maxPositionSize": 0.0001}}), true),
            (json!({"risk": {"maxPositionSize": 1e12}}), true),
            (json!({"risk": {"maxPositionSize": 0}}), false),
            (json!({"risk": {"maxPositionSize": -1}}), false),
            (json!({"risk": {"positionRiskPercent": 100}}), true),
            (json!({"risk": {"positionRiskPercent": 0.001}}), true),
            (json!({"risk": {"positionRiskPercent": 100.001}}), false),
            (json!({"risk": {"positionRiskPercent": 0}}), false),
            (json!({"risk": {"maxDrawdownPercent": 100}}), true),
            (json!({"risk": {"maxDrawdownPercent": 150}}), false),
            (json!({"risk": {"dailyLossLimitPercent": 100}}), true),
            (json!({"risk": {"dailyLossLimitPercent": 101}}), false),
            (json!({"risk": {"dailyLossLimitPercent": -1}}), false),
            (
                json!({"risk": {"stopLoss": {"type": "trailing", "percent": 99.99}}}),
                true,
            ),
            (json!({"risk": {"stopLoss": {"percent": 0.01}}}), true),
            (json!({"risk": {"stopLoss": {"percent": 100}}}), false),
            (json!({"risk": {"stopLoss": {"percent": 0}}}), false),
            // strategy cross rules and unknown names
            (json!({"strategy": {"params": {"rsiBuy": 69.9}}}), true),
            (json!({"strategy": {"params": {"rsiBuy": 70}}}), false),
            (
                json!({"strategy": {"params": {"rsiBuy": 80, "rsiSell": 20}}}),
                false,
            ),
            (
                json!({"strategy": {"params": {"macdFast": 25, "macdSlow": 26}}}),
                true,
            ),
            (json!({"strategy": {"params": {"macdFast": 26}}}), false),
            (
                json!({"strategy": {"params": {"macdFast": 30, "macdSlow": 10}}}),
                false,
            ),
            (json!({"strategy": {"params": {"rsiPeriodd": 3}}}), false),
            // log retention: whole days, rounded up
            (
                json!({"logs": {"compressAfter": "36h", "deleteAfter": "2d"}}),
                false,
            ),
            (
                json!({"logs": {"compressAfter": "36h", "deleteAfter": "49h"}}),
                true,
            ),
            (
                json!({"logs": {"compressAfter": "12h", "deleteAfter": "1d"}}),
                false,
            ),
            (
                json!({"logs": {"compressAfter": "12h", "deleteAfter": "36h"}}),
                true,
            ),
            (
                json!({"logs": {"compressAfter": "7d", "deleteAfter": "7d"}}),
                false,
            ),
            (
                json!({"logs": {"compressAfter": "7d", "deleteAfter": "7d1ms"}}),
                true,
            ),
            (
                json!({"logs": {"compressAfter": "30d", "deleteAfter": "7d"}}),
                false,
            ),
            (
                json!({"logs": {"compressAfter": "0s", "deleteAfter": "1d"}}),
                true,
            ),
            (
                json!({"logs": {"compressAfter": "99999999999999999999d"}}),
                false,
            ),
            (
                json!({"logs": {"deleteAfter": "213503982334d213503982334d"}}),
                false,
            ),
            // market data
            (json!({"marketData": {"staleAfter": "50ms"}}), true),
            (json!({"marketData": {"staleAfter": "49ms"}}), false),
            (json!({"marketData": {"staleAfter": "500ms"}}), true),
            (json!({"marketData": {"staleAfter": "0s"}}), false),
            (json!({"marketData": {"staleAfter": "1h30m"}}), true),
            (
                json!({"marketData": {"primary": {"type": "exchange", "endpoint": "wss://x"}}}),
                false,
            ),
            (
                json!({"marketData": {"primary": {"type": "csvReplay", "path": "/data/t.csv"}}}),
                true,
            ),
            (
                json!({"marketData": {"backup": {"type": "simulator"}}}),
                true,
            ),
            (
                json!({"marketData": {"backup": {"type": "simulator", "seed": 1}}}),
                false,
            ),
            (
                json!({"marketData": {"primary": {"type": "simulator", "seed": -7}, "backup": {"type": "simulator", "seed": 7}}}),
                false,
            ),
            (
                json!({"marketData": {"backup": {"type": "exchange", "endpoint": "wss://x"}}}),
                false,
            ),
            (json!({"marketData": {"failback": false}}), true),
            // marketData.use: pinning to the backup needs one
            (json!({"marketData": {"use": "primary"}}), true),
            (json!({"marketData": {"use": "backup"}}), false),
            (
                json!({"marketData": {"use": "backup", "backup": {"type": "simulator"}}}),
                true,
            ),
            // mode, pairs, names, levels
            (
                json!({"mode": "live", "exchange": {"name": "binance", "credentialsSecretRef": {"name": "k"}}}),
                false,
            ),
            (json!({"exchange": {"name": "binance"}}), true),
            (json!({"pairs": ["BTC/USDT", "BTC/USDT"]}), false),
            (json!({"pairs": ["btc/usdt"]}), false),
            (json!({"pairs": ["ABCDEFGHIJKLMNOP/USDT"]}), true),
            (json!({"pairs": ["ABCDEFGHIJKLMNOPQ/USDT"]}), false),
            (
                json!({"pairs": (0..100).map(|i| format!("P{i}/USDT")).collect::<Vec<_>>()}),
                true,
            ),
            (
                json!({"pairs": (0..101).map(|i| format!("P{i}/USDT")).collect::<Vec<_>>()}),
                false,
            ),
            (json!({"pairs": []}), false),
            (json!({"paused": true}), true),
        ];
        for name in ["rsi-macd-bollinger", "rsi", "macd", "bollinger"] {
            corpus.push((json!({"strategy": {"name": name}}), true));
        }
        for level in ["error", "warn", "info", "debug"] {
            corpus.push((json!({"logs": {"level": level}}), true));
        }
        // every strategy parameter at, just inside and just outside its range
        for spec in iq720_contract::strategy::PARAMS {
            use iq720_contract::strategy::ParamRange;
            let (lo, hi, step) = match spec.range {
                ParamRange::Whole { min, max } => (f64::from(min), f64::from(max), 1.0),
                ParamRange::Closed { min, max } => (min, max, 0.01),
                ParamRange::Open { min, max } => (min, max, 0.01),
            };
            let inclusive = !matches!(spec.range, ParamRange::Open { .. });
            let mut rows = vec![
                (lo, inclusive),
                (hi, inclusive),
                (lo - step, false),
                (hi + step, false),
            ];
            if matches!(spec.range, ParamRange::Whole { .. }) {
                rows.push((lo + 0.5, false));
            } else {
                rows.push((lo + step, true));
                rows.push((hi - step, true));
            }
            for (v, in_range) in rows {
                // Keep the cross rules satisfied so that only the range decides.
                let mut params = serde_json::Map::new();
                params.insert(spec.name.to_string(), json!(v));
                match spec.name {
                    "rsiBuy" => {
                        params.insert("rsiSell".into(), json!(99.999));
                    }
                    "rsiSell" => {
                        params.insert("rsiBuy".into(), json!(0.001));
                    }
                    "macdFast" => {
                        params.insert("macdSlow".into(), json!(1000));
                    }
                    "macdSlow" => {
                        params.insert("macdFast".into(), json!(2));
                    }
                    _ => {}
                }
                let crosses = match spec.name {
                    "rsiBuy" => v < 99.999,
                    "rsiSell" => v > 0.001,
                    "macdFast" => v < 1000.0,
                    "macdSlow" => v > 2.0,
                    _ => true,
                };
                corpus.push((json!({"strategy": {"params": params}}), in_range && crosses));
            }
        }
        let mut nan = bot(json!({"version": "1.0.0", "pairs": ["BTC/USDT"]}));
        nan.spec.strategy.params.insert("bbStdDev".into(), f64::NAN);

        let base_running = iq720_bot::config::Config::from_yaml(
            &bot_config::render(
                &bot(json!({"version": "1.0.0", "pairs": ["BTC/USDT"]})),
                "ns",
                "b",
            )
            .to_yaml()
            .unwrap(),
        )
        .unwrap();
        let mut checked = 0;
        let bots = corpus
            .into_iter()
            .map(|(delta, expected)| {
                let mut spec = json!({"version": "1.0.0", "pairs": ["BTC/USDT"]});
                for (k, v) in delta.as_object().unwrap() {
                    spec[k] = v.clone();
                }
                (bot(spec), expected)
            })
            .chain(std::iter::once((nan, false)));
        for (b, expected) in bots {
            let operator = problems(&b);
            let bot_verdict = bot_accepts(&b);
            let spec = serde_json::to_string(&b.spec).unwrap();
            assert_eq!(
                operator.is_empty(),
                bot_verdict.is_ok(),
                "operator and bot disagree on {spec}: operator {operator:?}, bot {bot_verdict:?}"
            );
            assert_eq!(
                operator.is_empty(),
                expected,
                "unexpected verdict on {spec}: {operator:?}"
            );
            if expected && b.spec.pairs == base_running.pairs && b.spec.market_data.backup.is_none()
            {
                // The hot part of an accepted spec is accepted by a running bot (one
                // started with the same restart part: `use: backup` needs the backup
                // the bot was started with, which is tested in bot_config).
                let hot = bot_config::render(&b, "ns", "b").hot;
                iq720_bot::runner::merge_config(&base_running, &hot)
                    .unwrap_or_else(|e| panic!("PATCH of {spec} refused: {e}"));
            }
            checked += 1;
        }
        assert!(checked > 100, "{checked}");
    }
}
