//! Checks of a TradingBot spec that the CRD's CEL rules cannot express. A failure
//! becomes the `InvalidSpec` condition, never a crash or a hot loop.

use iq720_crds::trading_bot::{MarketDataKind, TradingMode};
use iq720_crds::{TradingBot, TradingBotStatus};

use super::status::{condition, set_condition};
use crate::duration;
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

/// Strategy parameters the bot understands (see bot/README.md).
pub const STRATEGY_PARAMS: &[&str] = &[
    "rsiPeriod",
    "rsiBuy",
    "rsiSell",
    "macdFast",
    "macdSlow",
    "macdSignal",
    "bbPeriod",
    "bbStdDev",
    "minConfirmations",
];

/// Returns every problem of the spec, each naming its field; empty when valid.
pub fn problems(bot: &TradingBot) -> Vec<String> {
    let spec = &bot.spec;
    let mut out = Vec::new();
    kubernetes_problems(bot, &mut out);
    let compress = duration::parse(&spec.logs.compress_after);
    let delete = duration::parse(&spec.logs.delete_after);
    match (&compress, &delete) {
        // The bot retains logs in whole days.
        (Ok(c), Ok(d)) if d.as_secs() / 86_400 <= c.as_secs() / 86_400 => out.push(format!(
            "spec.logs.deleteAfter ({}) must be more whole days than spec.logs.compressAfter ({})",
            spec.logs.delete_after, spec.logs.compress_after
        )),
        _ => {}
    }
    for (field, value) in [
        ("spec.logs.compressAfter", &spec.logs.compress_after),
        ("spec.logs.deleteAfter", &spec.logs.delete_after),
        ("spec.marketData.staleAfter", &spec.market_data.stale_after),
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
    if let Ok(stale) = duration::parse(&spec.market_data.stale_after)
        && stale < std::time::Duration::from_secs(1)
    {
        out.push("spec.marketData.staleAfter must be at least 1s".to_string());
    }
    if spec.risk.max_positions > 1000 {
        out.push("spec.risk.maxPositions must be at most 1000".to_string());
    }
    if spec.mode == TradingMode::Live {
        out.push(
            "spec.mode live is not supported by this release: no exchange adapter is available yet; use mode paper"
                .to_string(),
        );
    }
    let sources = std::iter::once(("primary", &spec.market_data.primary))
        .chain(spec.market_data.backup.iter().map(|b| ("backup", b)));
    for (role, src) in sources {
        if src.kind == MarketDataKind::Exchange {
            out.push(format!(
                "spec.marketData.{role}.type exchange is not supported by this release; use simulator or csvReplay"
            ));
        }
    }
    if spec.market_data.backup.as_ref() == Some(&spec.market_data.primary) {
        out.push("spec.marketData.backup must differ from spec.marketData.primary".to_string());
    }
    for name in spec.strategy.params.keys() {
        if !STRATEGY_PARAMS.contains(&name.as_str()) {
            out.push(format!(
                "spec.strategy.params.{name} is not a known parameter (known: {})",
                STRATEGY_PARAMS.join(", ")
            ));
        }
    }
    for (name, value) in &spec.strategy.params {
        if !value.is_finite() {
            out.push(format!(
                "spec.strategy.params.{name} must be a finite number"
            ));
        }
    }
    let p = |k: &str| spec.strategy.params.get(k).copied();
    let (fast, slow) = (p("macdFast").unwrap_or(12.0), p("macdSlow").unwrap_or(26.0));
    if fast >= slow {
        out.push("spec.strategy.params.macdFast must be smaller than macdSlow".to_string());
    }
    let (buy, sell) = (p("rsiBuy").unwrap_or(30.0), p("rsiSell").unwrap_or(70.0));
    if !(0.0 < buy && buy < sell && sell < 100.0) {
        out.push("spec.strategy.params need 0 < rsiBuy < rsiSell < 100".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn bot(spec: serde_json::Value) -> TradingBot {
        TradingBot::new("b", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn strategy_parameter_names_match_the_bot() {
        assert_eq!(STRATEGY_PARAMS, iq720_bot::config::STRATEGY_PARAM_NAMES);
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
            p.iter()
                .any(|m| m.contains("deleteAfter (7d) must be more whole days")),
            "{p:?}"
        );
    }

    #[test]
    fn identical_backup_source_is_reported() {
        let src = json!({"type": "simulator", "seed": 1});
        let b = bot(
            json!({"version": "1.0.0", "pairs": ["BTC/USDT"], "marketData": {"primary": src, "backup": src}}),
        );
        assert!(
            problems(&b)
                .iter()
                .any(|m| m.contains("backup must differ"))
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
                .any(|m| m.contains("spec.strategy.params.rsiPeriodd"))
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
    }
}
