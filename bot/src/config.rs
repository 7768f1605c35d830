//! Bot configuration: the YAML schema, its defaults and its validation.
//!
//! The types and rules live in the `iq720-contract` crate, which the operator uses too:
//! the operator renders these types into the bot's ConfigMap and runs the same
//! validation on what it rendered, so a spec the operator accepts is a configuration
//! this bot accepts. This module re-exports them under the names the rest of the bot
//! uses. The schema is documented in `bot/README.md`; every struct denies unknown
//! fields so a typo in a rendered ConfigMap is reported instead of silently ignored.

pub use iq720_contract::config::{
    ApiConfig, BrokerConfig, Config, ConfigError, ExchangeConfig, FailbackPolicy, HOT_RELOADABLE,
    HotConfig, HotLogs, LogsConfig, MarketDataConfig, Mode, Problem, RiskConfig, SourceConfig,
    SourceUse, StopLossConfig, StopLossKind, StrategyConfig, parse_listen_addr, validate_logs,
    validate_risk,
};
pub use iq720_contract::duration::{DurationError, HumanDuration};
pub use iq720_contract::strategy::{
    PARAM_NAMES as STRATEGY_PARAM_NAMES, StrategyKind, StrategyParams,
};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn err_field(yaml: &str) -> String {
        match Config::from_yaml(yaml) {
            Err(ConfigError::Invalid { field, .. }) => field,
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted invalid config: {yaml}"),
        }
    }

    #[test]
    fn example_config_is_valid() {
        let c = Config::from_yaml(include_str!("../config.example.yaml")).unwrap();
        assert_eq!(c.pairs.len(), 3);
        assert_eq!(c.risk.stop_loss.kind, StopLossKind::Trailing);
        assert!(c.market_data.backup.is_some());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_yaml("pairs: [BTC/USDT]").unwrap();
        assert_eq!(c.risk.max_positions, 3);
        assert_eq!(c.market_data.stale_after, HumanDuration::secs(5));
        assert_eq!(c.logs.compress_after, HumanDuration::days(7));
        assert_eq!(c.mode, Mode::Paper);
    }

    #[test]
    fn round_trips_through_yaml() {
        let c = Config::from_yaml(
            "pairs: [BTC/USDT, ETH/USDT]\nrisk: {stopLoss: {type: trailing, percent: 1.5}}",
        )
        .unwrap();
        let text = serde_yaml::to_string(&c).unwrap();
        assert_eq!(Config::from_yaml(&text).unwrap(), c);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err_field("pairs: []"), "pairs");
        assert_eq!(err_field("pairs: [btc-usdt]"), "pairs[0]");
        assert_eq!(err_field("pairs: [A/B, A/B]"), "pairs[1]");
        assert_eq!(
            err_field("pairs: [A/B]\nrisk: {maxPositions: 0}"),
            "risk.maxPositions"
        );
        assert_eq!(
            err_field("pairs: [A/B]\nrisk: {maxDrawdownPercent: 150}"),
            "risk.maxDrawdownPercent"
        );
        assert_eq!(
            err_field("pairs: [A/B]\nrisk: {stopLoss: {percent: 0}}"),
            "risk.stopLoss.percent"
        );
        assert_eq!(err_field("pairs: [A/B]\nmode: live"), "mode");
        assert_eq!(
            err_field("pairs: [A/B]\nstrategy: {name: foo}"),
            "strategy.name"
        );
        assert_eq!(
            err_field("pairs: [A/B]\nstrategy: {params: {rsiPeriod: 1.5}}"),
            "strategy.params.rsiPeriod"
        );
        assert_eq!(
            err_field("pairs: [A/B]\nstrategy: {params: {bogus: 1}}"),
            "strategy.params.bogus"
        );
        assert_eq!(
            err_field("pairs: [A/B]\nstrategy: {params: {rsiBuy: 80}}"),
            "strategy.params.rsiBuy"
        );
        assert_eq!(
            err_field("pairs: [A/B]\nlogs: {compressAfter: 7d, deleteAfter: 3d}"),
            "logs.deleteAfter"
        );
        assert_eq!(
            err_field("pairs: [A/B]\nlogs: {compressAfter: 12h, deleteAfter: 1d}"),
            "logs.deleteAfter"
        );
        assert!(
            Config::from_yaml("pairs: [A/B]\nlogs: {compressAfter: 12h, deleteAfter: 36h}").is_ok()
        );
        assert_eq!(
            err_field("pairs: [A/B]\nmarketData: {backup: {kind: csv}}"),
            "marketData.backup.path"
        );
        assert_eq!(
            err_field("pairs: [A/B]\napi: {listenAddr: nope}"),
            "api.listenAddr"
        );
    }

    #[test]
    fn serde_errors_name_the_path() {
        let e = Config::from_yaml("pairs: [A/B]\nrisk: {maxPositions: many}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("risk.maxPositions"), "{e}");
        let e = Config::from_yaml("pairs: [A/B]\nrisk: {maxPosition: 3}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("maxPosition"), "{e}");
        let e = Config::from_yaml("pairs: [A/B]\nmarketData: {staleAfter: 5 parsecs}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("marketData") && e.contains("parsecs"), "{e}");
        let e = Config::from_yaml("risk: {}").unwrap_err().to_string();
        assert!(e.contains("pairs"), "{e}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_addr("10.0.0.5:8080").unwrap().port(), 8080);
        assert_eq!(parse_listen_addr("[fd00::5]:8080").unwrap().port(), 8080);
        assert!(parse_listen_addr("fd00::5:8080").unwrap().is_ipv6());
        assert!(parse_listen_addr("nope").is_err());
        assert!(parse_listen_addr("1.2.3.4").is_err());
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(
            HumanDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(HumanDuration::parse("7d").unwrap().days_ceil(), 7);
        assert_eq!(
            HumanDuration::parse("1h30m").unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(HumanDuration::parse("1d12h").unwrap().days_ceil(), 2);
        assert_eq!(
            HumanDuration::parse("2s500ms").unwrap().0,
            Duration::from_millis(2500)
        );
        assert!(HumanDuration::parse("").is_err());
        assert!(HumanDuration::parse("1h30").is_err());
        assert!(HumanDuration::parse("h").is_err());
        assert!(HumanDuration::parse("7").is_err());
        assert!(HumanDuration::parse("7y").is_err());
        assert!(HumanDuration::parse("-1s").is_err());
        assert_eq!(HumanDuration::secs(120).to_string(), "2m");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }
}
