//! Renders a TradingBot spec into the bot's YAML configuration (see bot/README.md).
//!
//! The document is built from the contract's types ([`iq720_contract::config`]), the
//! same types the bot parses, so a renamed or missing field is a compile error here
//! rather than a crash-looping pod. Validation ([`super::super::validate`]) runs the
//! contract's checks on exactly what [`document`] renders.
//!
//! The configuration has two parts:
//! - hot-reloadable fields (`risk`, `strategy`, `paused`, `logs.compressAfter`,
//!   `logs.deleteAfter`, `marketData.use`, the contract's [`HOT_RELOADABLE`]) that the
//!   operator applies
//!   through the bot's `PATCH /api/v1/config` without a restart, and
//! - everything else, whose checksum goes into the pod template so that a change
//!   rolls the pod.
//!
//! Both parts are written to the ConfigMap, so a restarted bot always starts with the
//! current desired values.

use std::path::PathBuf;

use iq720_contract::api::{ConfigPatch, ConfigResponse, LogsPatch, MarketDataPatch, StrategyPatch};
use iq720_contract::config::{
    ApiConfig, Config, ExchangeConfig, FailbackPolicy, HOT_RELOADABLE, LogsConfig,
    MarketDataConfig, Mode, Problem, RiskConfig, SourceConfig, SourceUse, StopLossConfig,
    StopLossKind, StrategyConfig,
};
use iq720_contract::duration::HumanDuration;
use iq720_contract::strategy::StrategyKind;
use iq720_crds::TradingBot;
use iq720_crds::trading_bot::{
    LogLevel, MarketDataKind, MarketDataSource, MarketDataUse, StrategyName, TradingMode,
};
use kube::ResourceExt;
use serde_json::Value;
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

/// Simulator seed of the primary source when the spec sets none.
const PRIMARY_SEED: i64 = 1;
/// Simulator seed of the backup source when the spec sets none (differs from the
/// primary's, so the two sources are independent).
const BACKUP_SEED: i64 = 2;

/// The rendered configuration, split into its hot-reloadable and restart parts.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedConfig {
    /// The full configuration document.
    pub full: Config,
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

fn strategy_kind(name: StrategyName) -> StrategyKind {
    match name {
        StrategyName::RsiMacdBollinger => StrategyKind::RsiMacdBollinger,
        StrategyName::Rsi => StrategyKind::Rsi,
        StrategyName::Macd => StrategyKind::Macd,
        StrategyName::Bollinger => StrategyKind::Bollinger,
    }
}

fn source(src: &MarketDataSource, default_seed: i64) -> SourceConfig {
    let seed = src.seed.unwrap_or(default_seed).unsigned_abs();
    let kind = match src.kind {
        MarketDataKind::Simulator => "simulator",
        MarketDataKind::CsvReplay => "csv",
        // Rendered as what it is, so the contract refuses it like the bot would.
        MarketDataKind::Exchange => "exchange",
    };
    SourceConfig {
        kind: kind.to_string(),
        path: match src.kind {
            MarketDataKind::CsvReplay => src.path.as_ref().map(PathBuf::from),
            MarketDataKind::Simulator | MarketDataKind::Exchange => None,
        },
        ..SourceConfig::simulator(seed)
    }
}

/// Parses a spec duration; an unparsable one is a problem of `field` and renders as
/// `default`.
fn duration(
    field: &str,
    text: &str,
    default: HumanDuration,
    problems: &mut Vec<Problem>,
) -> HumanDuration {
    HumanDuration::parse(text).unwrap_or_else(|e| {
        problems.push(Problem::new(field, e.to_string()));
        default
    })
}

/// The bot configuration for a spec, with the problems found while rendering it
/// (durations that do not parse; such a field keeps the bot's default). Fields are
/// named by their path in the bot configuration, e.g. `logs.compressAfter`.
pub fn document(bot: &TradingBot, namespace: &str, name: &str) -> (Config, Vec<Problem>) {
    let spec = &bot.spec;
    let mut problems = Vec::new();
    let log_defaults = LogsConfig::default();
    let md_defaults = MarketDataConfig::default();
    let config = Config {
        name: format!("{namespace}/{name}"),
        mode: match spec.mode {
            TradingMode::Paper => Mode::Paper,
            TradingMode::Live => Mode::Live,
        },
        exchange: ExchangeConfig {
            name: spec.exchange.name.clone(),
            credentials_dir: spec
                .exchange
                .credentials_secret_ref
                .as_ref()
                .map(|_| PathBuf::from(EXCHANGE_CREDENTIALS_DIR)),
        },
        pairs: spec.pairs.clone(),
        strategy: StrategyConfig {
            name: strategy_kind(spec.strategy.name).as_str().to_string(),
            params: spec.strategy.params.clone(),
        },
        risk: RiskConfig {
            // Below zero cannot be a u32; 0 is refused by the contract like any
            // value below the minimum.
            max_positions: u32::try_from(spec.risk.max_positions).unwrap_or(0),
            max_position_size: spec.risk.max_position_size,
            position_risk_percent: spec.risk.position_risk_percent,
            max_drawdown_percent: spec.risk.max_drawdown_percent,
            daily_loss_limit_percent: spec.risk.daily_loss_limit_percent,
            stop_loss: StopLossConfig {
                kind: match spec.risk.stop_loss.kind {
                    iq720_crds::trading_bot::StopLossKind::Fixed => StopLossKind::Fixed,
                    iq720_crds::trading_bot::StopLossKind::Trailing => StopLossKind::Trailing,
                },
                percent: spec.risk.stop_loss.percent,
            },
        },
        market_data: MarketDataConfig {
            primary: source(&spec.market_data.primary, PRIMARY_SEED),
            backup: spec
                .market_data
                .backup
                .as_ref()
                .map(|b| source(b, BACKUP_SEED)),
            stale_after: duration(
                "marketData.staleAfter",
                &spec.market_data.stale_after,
                md_defaults.stale_after,
                &mut problems,
            ),
            failback: if spec.market_data.failback {
                FailbackPolicy::Auto
            } else {
                FailbackPolicy::Manual
            },
            use_source: match spec.market_data.use_source {
                MarketDataUse::Auto => SourceUse::Auto,
                MarketDataUse::Primary => SourceUse::Primary,
                MarketDataUse::Backup => SourceUse::Backup,
            },
            ..md_defaults
        },
        paused: spec.paused,
        logs: LogsConfig {
            compress_after: duration(
                "logs.compressAfter",
                &spec.logs.compress_after,
                log_defaults.compress_after,
                &mut problems,
            ),
            delete_after: duration(
                "logs.deleteAfter",
                &spec.logs.delete_after,
                log_defaults.delete_after,
                &mut problems,
            ),
            level: match spec.logs.level {
                LogLevel::Error => "error",
                LogLevel::Warn => "warn",
                LogLevel::Info => "info",
                LogLevel::Debug => "debug",
            }
            .to_string(),
        },
        api: ApiConfig {
            listen_addr: format!("0.0.0.0:{API_PORT}"),
            token_dir: PathBuf::from(TOKEN_DIR),
        },
        data_dir: PathBuf::from(DATA_DIR),
        log_dir: PathBuf::from(LOG_DIR),
        ..Config::default()
    };
    (config, problems)
}

/// The hot-reloadable part of a configuration as a JSON merge patch.
fn hot_value(config: &Config) -> Value {
    // Serialising these types cannot fail: string map keys, no fallible serialisers.
    serde_json::to_value(config.hot()).unwrap_or_default()
}

/// The restart-requiring part of a configuration: the whole document without the
/// [`HOT_RELOADABLE`] fields.
fn restart_value(config: &Config) -> Value {
    let mut doc = serde_json::to_value(config).unwrap_or_default();
    for path in HOT_RELOADABLE {
        let mut keys: Vec<&str> = path.split('.').collect();
        let Some(last) = keys.pop() else { continue };
        let parent = keys.into_iter().try_fold(&mut doc, |v, k| v.get_mut(k));
        if let Some(Value::Object(map)) = parent {
            map.remove(last);
        }
    }
    doc
}

fn identity(bot: &TradingBot) -> (String, String) {
    (bot.namespace().unwrap_or_default(), bot.name_any())
}

/// The hot-reloadable part of the configuration.
pub fn hot_part(bot: &TradingBot) -> Value {
    let (namespace, name) = identity(bot);
    hot_value(&document(bot, &namespace, &name).0)
}

/// The restart-requiring part of the configuration.
pub fn restart_part(bot: &TradingBot, namespace: &str, name: &str) -> Value {
    restart_value(&document(bot, namespace, name).0)
}

/// Renders the whole configuration of a bot. Call it for a spec that
/// [`super::super::validate::problems`] accepted: a duration that does not parse
/// renders as the bot's default.
pub fn render(bot: &TradingBot, namespace: &str, name: &str) -> RenderedConfig {
    let (full, _) = document(bot, namespace, name);
    let restart = restart_value(&full);
    // serde_json maps are sorted, so the serialisation is canonical.
    let digest = Sha256::digest(restart.to_string().as_bytes());
    let restart_checksum = digest.iter().map(|b| format!("{b:02x}")).collect();
    RenderedConfig {
        hot: hot_value(&full),
        full,
        restart_checksum,
    }
}

/// Whether two numbers are equal up to float noise.
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()).max(1.0)
}

fn risk_matches(a: &RiskConfig, b: &RiskConfig) -> bool {
    a.max_positions == b.max_positions
        && close(a.max_position_size, b.max_position_size)
        && close(a.position_risk_percent, b.position_risk_percent)
        && close(a.max_drawdown_percent, b.max_drawdown_percent)
        && close(a.daily_loss_limit_percent, b.daily_loss_limit_percent)
        && a.stop_loss.kind == b.stop_loss.kind
        && close(a.stop_loss.percent, b.stop_loss.percent)
}

/// Compares the hot fields the operator wants (`desired_hot`, the hot part of
/// [`render`], possibly with fields removed) with the configuration the bot reports,
/// and returns the merge patch of the fields that differ (None when nothing differs).
/// Numbers compare up to float noise and durations by value (`168h` equals `7d`);
/// strategy parameters the bot has and the spec no longer sets are sent as `null`,
/// which a JSON merge patch reads as "delete".
pub fn hot_diff(desired_hot: &Value, reported: &ConfigResponse) -> Option<Value> {
    // The hot part is a patch that sets every hot field.
    let Ok(want) = serde_json::from_value::<ConfigPatch>(desired_hot.clone()) else {
        // Not the shape `render` produces: send it whole and let the bot judge it.
        return Some(desired_hot.clone());
    };
    let mut patch = ConfigPatch::default();
    if let Some(risk) = want.risk
        && !risk_matches(&risk, &reported.risk)
    {
        patch.risk = Some(risk);
    }
    if let Some(strategy) = want.strategy {
        let have = &reported.strategy;
        let name_differs = strategy.name.as_ref().is_some_and(|n| *n != have.name);
        let params_differ = strategy.params.len() != have.params.len()
            || strategy
                .params
                .iter()
                .any(|(k, v)| match (v, have.params.get(k)) {
                    (Some(w), Some(h)) => !close(*w, *h),
                    _ => true,
                });
        if name_differs || params_differ {
            let mut params = strategy.params;
            for k in have.params.keys() {
                params.entry(k.clone()).or_insert(None);
            }
            patch.strategy = Some(StrategyPatch {
                name: strategy.name,
                params,
            });
        }
    }
    if let Some(paused) = want.paused
        && paused != reported.paused
    {
        patch.paused = Some(paused);
    }
    if let Some(logs) = want.logs {
        let differs =
            |want: Option<HumanDuration>, have: HumanDuration| want.is_some_and(|w| w != have);
        if differs(logs.compress_after, reported.logs.compress_after)
            || differs(logs.delete_after, reported.logs.delete_after)
        {
            patch.logs = Some(LogsPatch {
                compress_after: logs.compress_after,
                delete_after: logs.delete_after,
            });
        }
    }
    if let Some(md) = want.market_data
        && md
            .use_source
            .is_some_and(|u| u != reported.market_data.use_source)
    {
        patch.market_data = Some(MarketDataPatch {
            use_source: md.use_source,
        });
    }
    if patch.is_empty() {
        return None;
    }
    serde_json::to_value(&patch).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use iq720_crds::TradingBotSpec;
    use serde_json::json;

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

    fn bot(extra: Value) -> TradingBot {
        let mut spec = json!({"version": "0.1.0", "pairs": ["BTC/USDT", "ETH/USDT"]});
        merge(&mut spec, &extra);
        let spec: TradingBotSpec = serde_json::from_value(spec).unwrap();
        TradingBot::new("paper", spec)
    }

    /// What the bot answers to `GET /api/v1/config` for a rendered configuration.
    fn reported(b: &TradingBot) -> ConfigResponse {
        let yaml = render(b, "ns", "paper").to_yaml().unwrap();
        let cfg = iq720_bot::config::Config::from_yaml(&yaml).unwrap();
        serde_json::from_value(serde_json::to_value(cfg).unwrap()).unwrap()
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
        assert_eq!(parsed, render(&b, "ns", "paper").full);
    }

    #[test]
    fn csv_sources_and_credentials_render() {
        let b = bot(json!({
            "exchange": {"name": "kraken", "credentialsSecretRef": {"name": "k"}},
            "marketData": {"primary": {"type": "csvReplay", "path": "/var/lib/iq720/t.csv"}, "failback": false},
        }));
        let full = render(&b, "ns", "b").full;
        assert_eq!(full.market_data.primary.kind, "csv");
        assert_eq!(
            full.market_data.primary.path,
            Some(PathBuf::from("/var/lib/iq720/t.csv"))
        );
        assert_eq!(full.market_data.failback, FailbackPolicy::Manual);
        assert_eq!(
            full.exchange.credentials_dir,
            Some(PathBuf::from(EXCHANGE_CREDENTIALS_DIR))
        );
    }

    #[test]
    fn unparsable_durations_are_problems_of_the_rendering() {
        let b = bot(json!({"logs": {"compressAfter": "99999999999999999999d"}}));
        let (cfg, problems) = document(&b, "ns", "b");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "logs.compressAfter");
        assert_eq!(
            cfg.logs.compress_after,
            LogsConfig::default().compress_after
        );
    }

    #[test]
    fn hot_part_is_the_hot_reloadable_fields() {
        let hot = hot_part(&bot(json!({})));
        let mut keys: Vec<&String> = hot.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["logs", "marketData", "paused", "risk", "strategy"]);
        assert_eq!(hot["marketData"], json!({"use": "auto"}));
        assert_eq!(
            hot["logs"],
            json!({"compressAfter": "7d", "deleteAfter": "30d"})
        );
        let restart = restart_part(&bot(json!({})), "ns", "b");
        assert!(restart.get("risk").is_none() && restart.get("paused").is_none());
        assert!(restart["marketData"].get("use").is_none());
        assert_eq!(restart["logs"], json!({"level": "info"}));
    }

    #[test]
    fn hot_changes_keep_the_checksum() {
        let a = render(&bot(json!({})), "ns", "b");
        let b = render(
            &bot(
                json!({"paused": true, "risk": {"maxPositions": 9}, "strategy": {"params": {"rsiPeriod": 7}}, "logs": {"deleteAfter": "60d"}, "marketData": {"use": "primary"}}),
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
        let mut desired = hot_part(&bot(json!({"paused": true})));
        let mut have = serde_json::to_value(reported(&bot(json!({})))).unwrap();
        have["logs"]["compressAfter"] = json!("168h"); // same as 7d
        have["extra"] = json!(1);
        let have: ConfigResponse = serde_json::from_value(have).unwrap();
        let diff = hot_diff(&desired, &have).unwrap();
        assert_eq!(diff, json!({"paused": true}));
        // converse compares pause with the engine's state, not here
        desired.as_object_mut().unwrap().remove("paused");
        assert_eq!(hot_diff(&desired, &have), None);
        let same = reported(&bot(json!({"paused": true})));
        assert_eq!(
            hot_diff(&hot_part(&bot(json!({"paused": true}))), &same),
            None
        );
    }

    #[test]
    fn changed_risk_and_logs_are_sent_whole() {
        let desired = hot_part(&bot(
            json!({"risk": {"maxPositions": 9}, "logs": {"deleteAfter": "60d"}}),
        ));
        let diff = hot_diff(&desired, &reported(&bot(json!({})))).unwrap();
        assert_eq!(diff["risk"]["maxPositions"], json!(9));
        assert_eq!(diff["risk"]["stopLoss"]["type"], json!("fixed"));
        assert_eq!(
            diff["logs"],
            json!({"compressAfter": "7d", "deleteAfter": "60d"})
        );
        assert!(diff.get("strategy").is_none());
    }

    #[test]
    fn a_market_data_pin_is_a_hot_patch_the_bot_accepts() {
        let backup = json!({"marketData": {"backup": {"type": "simulator"}}});
        let pinned = bot(json!({"marketData": {"backup": {"type": "simulator"}, "use": "backup"}}));
        let a = render(&bot(backup.clone()), "ns", "b");
        let b = render(&pinned, "ns", "b");
        assert_eq!(
            a.restart_checksum, b.restart_checksum,
            "a pin must not roll the pod"
        );
        let have = reported(&bot(backup.clone()));
        let diff = hot_diff(&hot_part(&pinned), &have).unwrap();
        assert_eq!(diff, json!({"marketData": {"use": "backup"}}));
        let current = iq720_bot::config::Config::from_yaml(
            &render(&bot(backup), "ns", "paper").to_yaml().unwrap(),
        )
        .unwrap();
        let patched = iq720_bot::runner::merge_config(&current, &diff).unwrap();
        assert_eq!(patched.market_data.use_source, SourceUse::Backup);
        // pinned and reported pinned: nothing to send; back to auto: sent
        assert_eq!(hot_diff(&hot_part(&pinned), &reported(&pinned)), None);
        let auto = hot_diff(&hot_part(&bot(json!({}))), &reported(&pinned)).unwrap();
        assert_eq!(auto, json!({"marketData": {"use": "auto"}}));
        // an older bot's config without `use` reads as auto
        let mut old = serde_json::to_value(reported(&bot(json!({})))).unwrap();
        old["marketData"].as_object_mut().unwrap().remove("use");
        let old: ConfigResponse = serde_json::from_value(old).unwrap();
        assert_eq!(hot_diff(&hot_part(&bot(json!({}))), &old), None);
    }

    #[test]
    fn removed_strategy_params_are_sent_as_null() {
        let desired = hot_part(&bot(json!({})));
        let have = reported(&bot(json!({"strategy": {"params": {"rsiPeriod": 7}}})));
        let diff = hot_diff(&desired, &have).unwrap();
        assert_eq!(diff["strategy"]["params"], json!({"rsiPeriod": null}));
        // and the bot accepts that patch
        let current = iq720_bot::config::Config::from_yaml(
            &render(
                &bot(json!({"strategy": {"params": {"rsiPeriod": 7}}})),
                "ns",
                "paper",
            )
            .to_yaml()
            .unwrap(),
        )
        .unwrap();
        let patched = iq720_bot::runner::merge_config(&current, &diff).unwrap();
        assert!(patched.strategy.params.is_empty());
    }
}
