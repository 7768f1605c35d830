//! Bot configuration: the YAML schema, its defaults and its validation.
//!
//! The schema is documented in `bot/README.md`. Every struct denies unknown fields so a
//! typo in a rendered ConfigMap is reported instead of silently ignored.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors raised while loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path of the file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The YAML/JSON did not match the schema (the message names the field path).
    #[error("invalid config: {0}")]
    Parse(String),
    /// A field has a value outside its allowed range.
    #[error("invalid config: field `{field}`: {message}")]
    Invalid {
        /// Dotted field path, e.g. `risk.maxPositions`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A duration written as a human string: `250ms`, `5s`, `10m`, `2h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Build from seconds.
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    /// Build from days.
    pub const fn days(d: u64) -> Self {
        HumanDuration(Duration::from_secs(d * 86_400))
    }
    /// Parse one or more `<number><unit>` groups (unit ms, s, m, h or d), e.g. `30s`,
    /// `1h30m`, `7d`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if text.is_empty() {
            return Err("empty duration (use e.g. 30s, 15m, 1h30m or 7d)".into());
        }
        let mut rest = text;
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "duration `{text}` must be whole numbers with units (e.g. 30s, 1h30m, 7d)"
                ));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("duration `{text}` is too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let factor = match unit {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => {
                    return Err(format!(
                        "duration `{text}` has no unit (use ms, s, m, h or d)"
                    ));
                }
                _ => {
                    return Err(format!(
                        "duration `{text}` has unknown unit `{unit}` (use ms, s, m, h or d)"
                    ));
                }
            };
            total_ms = n
                .checked_mul(factor)
                .and_then(|v| v.checked_add(total_ms))
                .ok_or_else(|| format!("duration `{text}` is too large"))?;
        }
        Ok(HumanDuration(Duration::from_millis(total_ms)))
    }
    /// Whole days, rounded up (a retention of `12h` acts on files at least 1 day old).
    pub fn days_ceil(&self) -> u64 {
        self.0.as_secs().div_ceil(86_400)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms.is_multiple_of(size) {
                return write!(f, "{}{}", ms / size, unit);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Trading mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Simulated fills with the paper broker (the only mode this build trades in).
    #[default]
    Paper,
    /// Real exchange orders (refused by validation until an exchange adapter exists).
    Live,
}

/// Exchange settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Exchange name (informational in paper mode).
    #[serde(default = "default_exchange")]
    pub name: String,
    /// Directory holding mounted exchange credentials (unused in paper mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<PathBuf>,
}

fn default_exchange() -> String {
    "simulated".into()
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            name: default_exchange(),
            credentials_dir: None,
        }
    }
}

/// Strategy selection and parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyConfig {
    /// One of `rsi`, `macd`, `bollinger`, `rsiMacdBollinger`.
    #[serde(default = "default_strategy")]
    pub name: String,
    /// Numeric parameters; see [`StrategyParams`] for names and defaults.
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
}

fn default_strategy() -> String {
    "rsiMacdBollinger".into()
}

impl Default for StrategyConfig {
    fn default() -> Self {
        StrategyConfig {
            name: default_strategy(),
            params: BTreeMap::new(),
        }
    }
}

/// The strategy kinds this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    /// RSI oversold/overbought.
    Rsi,
    /// MACD histogram zero crossings.
    Macd,
    /// Bollinger band mean reversion.
    Bollinger,
    /// Votes of the three above.
    RsiMacdBollinger,
}

impl StrategyKind {
    /// Parse a strategy name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rsi" => Some(StrategyKind::Rsi),
            "macd" => Some(StrategyKind::Macd),
            "bollinger" => Some(StrategyKind::Bollinger),
            "rsiMacdBollinger" | "rsi_macd_bollinger" => Some(StrategyKind::RsiMacdBollinger),
            _ => None,
        }
    }
}

/// Resolved strategy parameters (defaults filled in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrategyParams {
    /// RSI look-back (`rsiPeriod`, default 14).
    pub rsi_period: usize,
    /// Enter below this RSI (`rsiBuy`, default 30).
    pub rsi_buy: f64,
    /// Exit above this RSI (`rsiSell`, default 70).
    pub rsi_sell: f64,
    /// MACD fast EMA (`macdFast`, default 12).
    pub macd_fast: usize,
    /// MACD slow EMA (`macdSlow`, default 26).
    pub macd_slow: usize,
    /// MACD signal EMA (`macdSignal`, default 9).
    pub macd_signal: usize,
    /// Bollinger look-back (`bbPeriod`, default 20).
    pub bb_period: usize,
    /// Bollinger width in standard deviations (`bbStdDev`, default 2.0).
    pub bb_std_dev: f64,
    /// Votes needed to enter with `rsiMacdBollinger` (`minConfirmations`, default 2).
    pub min_confirmations: usize,
}

impl Default for StrategyParams {
    fn default() -> Self {
        StrategyParams {
            rsi_period: 14,
            rsi_buy: 30.0,
            rsi_sell: 70.0,
            macd_fast: 12,
            macd_slow: 26,
            macd_signal: 9,
            bb_period: 20,
            bb_std_dev: 2.0,
            min_confirmations: 2,
        }
    }
}

/// The parameter names accepted in `strategy.params`.
pub const STRATEGY_PARAM_NAMES: &[&str] = &[
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

impl StrategyConfig {
    /// Resolve kind and parameters, validating each.
    pub fn resolve(&self) -> Result<(StrategyKind, StrategyParams), ConfigError> {
        let kind = StrategyKind::parse(&self.name).ok_or_else(|| {
            ConfigError::invalid(
                "strategy.name",
                format!(
                    "unknown strategy `{}` (expected rsi, macd, bollinger or rsiMacdBollinger)",
                    self.name
                ),
            )
        })?;
        let mut p = StrategyParams::default();
        for (key, &value) in &self.params {
            let field = format!("strategy.params.{key}");
            if !value.is_finite() {
                return Err(ConfigError::invalid(field, "must be a finite number"));
            }
            let period = |v: f64| -> Result<usize, ConfigError> {
                if v.fract() != 0.0 || !(2.0..=1000.0).contains(&v) {
                    Err(ConfigError::invalid(
                        format!("strategy.params.{key}"),
                        "must be a whole number between 2 and 1000",
                    ))
                } else {
                    Ok(v as usize)
                }
            };
            match key.as_str() {
                "rsiPeriod" => p.rsi_period = period(value)?,
                "rsiBuy" => p.rsi_buy = value,
                "rsiSell" => p.rsi_sell = value,
                "macdFast" => p.macd_fast = period(value)?,
                "macdSlow" => p.macd_slow = period(value)?,
                "macdSignal" => p.macd_signal = period(value)?,
                "bbPeriod" => p.bb_period = period(value)?,
                "bbStdDev" => {
                    if !(0.1..=10.0).contains(&value) {
                        return Err(ConfigError::invalid(field, "must be between 0.1 and 10"));
                    }
                    p.bb_std_dev = value
                }
                "minConfirmations" => {
                    if value.fract() != 0.0 || !(1.0..=3.0).contains(&value) {
                        return Err(ConfigError::invalid(field, "must be 1, 2 or 3"));
                    }
                    p.min_confirmations = value as usize
                }
                _ => {
                    return Err(ConfigError::invalid(
                        field,
                        format!(
                            "unknown parameter (known: {})",
                            STRATEGY_PARAM_NAMES.join(", ")
                        ),
                    ));
                }
            }
        }
        if !(0.0 < p.rsi_buy && p.rsi_buy < p.rsi_sell && p.rsi_sell < 100.0) {
            return Err(ConfigError::invalid(
                "strategy.params.rsiBuy",
                "need 0 < rsiBuy < rsiSell < 100",
            ));
        }
        if p.macd_fast >= p.macd_slow {
            return Err(ConfigError::invalid(
                "strategy.params.macdFast",
                "must be smaller than macdSlow",
            ));
        }
        Ok((kind, p))
    }
}

/// Stop-loss flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StopLossKind {
    /// Fixed distance below the entry price.
    #[default]
    Fixed,
    /// Fixed distance below the highest price seen since entry.
    Trailing,
}

/// Stop-loss settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopLossConfig {
    /// `fixed` or `trailing`.
    #[serde(rename = "type", default)]
    pub kind: StopLossKind,
    /// Distance in percent (0 < p < 100).
    #[serde(default = "default_stop_percent")]
    pub percent: f64,
}

fn default_stop_percent() -> f64 {
    2.0
}

impl Default for StopLossConfig {
    fn default() -> Self {
        StopLossConfig {
            kind: StopLossKind::Fixed,
            percent: default_stop_percent(),
        }
    }
}

/// Risk limits (all hot-reloadable).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RiskConfig {
    /// Maximum simultaneously open positions.
    #[serde(default = "d_max_positions")]
    pub max_positions: u32,
    /// Maximum stake per position, in the stake currency.
    #[serde(default = "d_max_position_size")]
    pub max_position_size: f64,
    /// Percent of equity risked per trade (distance to stop × stake).
    #[serde(default = "d_position_risk")]
    pub position_risk_percent: f64,
    /// Halt entries when equity falls this many percent below its peak.
    #[serde(default = "d_max_drawdown")]
    pub max_drawdown_percent: f64,
    /// Halt entries when equity falls this many percent below the start of the UTC day.
    #[serde(default = "d_daily_loss")]
    pub daily_loss_limit_percent: f64,
    /// Stop-loss rule.
    #[serde(default)]
    pub stop_loss: StopLossConfig,
}

fn d_max_positions() -> u32 {
    3
}
fn d_max_position_size() -> f64 {
    1000.0
}
fn d_position_risk() -> f64 {
    1.0
}
fn d_max_drawdown() -> f64 {
    20.0
}
fn d_daily_loss() -> f64 {
    5.0
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            max_positions: d_max_positions(),
            max_position_size: d_max_position_size(),
            position_risk_percent: d_position_risk(),
            max_drawdown_percent: d_max_drawdown(),
            daily_loss_limit_percent: d_daily_loss(),
            stop_loss: StopLossConfig::default(),
        }
    }
}

/// One market-data source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    /// `simulator` or `csv`.
    #[serde(default = "d_source_kind")]
    pub kind: String,
    /// Display name (defaults to the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Simulator: PRNG seed (same seed, same prices).
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Simulator: per-tick volatility in the calm regime (fraction, e.g. 0.001).
    #[serde(default = "d_volatility")]
    pub volatility: f64,
    /// Simulator: start price of every pair.
    #[serde(default = "d_start_price")]
    pub start_price: f64,
    /// CSV replay: path of a `timestamp,pair,price` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// CSV replay: start over at the end of the file.
    #[serde(default = "d_true", rename = "loop")]
    pub loop_replay: bool,
    /// Test hook: the source stops producing ticks this long after start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_after: Option<HumanDuration>,
}

fn d_source_kind() -> String {
    "simulator".into()
}
fn d_seed() -> u64 {
    1
}
fn d_volatility() -> f64 {
    0.001
}
fn d_start_price() -> f64 {
    100.0
}
fn d_true() -> bool {
    true
}

impl SourceConfig {
    /// A simulator source with the given seed.
    pub fn simulator(seed: u64) -> Self {
        SourceConfig {
            kind: d_source_kind(),
            name: None,
            seed,
            volatility: d_volatility(),
            start_price: d_start_price(),
            path: None,
            loop_replay: true,
            stall_after: None,
        }
    }
    /// The display name (`name`, else the role: `primary` / `backup`).
    pub fn display_name(&self, role: &str) -> String {
        self.name.clone().unwrap_or_else(|| role.to_string())
    }
}

/// Fail-back policy after a failover to the backup source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailbackPolicy {
    /// Return to the primary once it has been fresh for `failbackAfter`.
    #[default]
    Auto,
    /// Stay on the backup until switched over the API.
    Manual,
}

/// Market data settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarketDataConfig {
    /// Primary source.
    #[serde(default = "d_primary")]
    pub primary: SourceConfig,
    /// Optional backup source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<SourceConfig>,
    /// A source with no tick for this long is stale.
    #[serde(default = "d_stale_after")]
    pub stale_after: HumanDuration,
    /// `auto` or `manual`.
    #[serde(default)]
    pub failback: FailbackPolicy,
    /// How long the primary must be fresh again before an automatic fail-back
    /// (defaults to `staleAfter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_after: Option<HumanDuration>,
    /// Ticks per second per pair.
    #[serde(default = "d_tick_rate")]
    pub tick_rate: f64,
}

fn d_primary() -> SourceConfig {
    SourceConfig::simulator(1)
}
fn d_stale_after() -> HumanDuration {
    HumanDuration::secs(5)
}
fn d_tick_rate() -> f64 {
    10.0
}

impl Default for MarketDataConfig {
    fn default() -> Self {
        MarketDataConfig {
            primary: d_primary(),
            backup: None,
            stale_after: d_stale_after(),
            failback: FailbackPolicy::Auto,
            failback_after: None,
            tick_rate: d_tick_rate(),
        }
    }
}

/// Paper broker costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerConfig {
    /// Fee per fill in percent of the notional.
    #[serde(default = "d_fee")]
    pub fee_percent: f64,
    /// Adverse slippage per fill in percent of the price.
    #[serde(default = "d_slippage")]
    pub slippage_percent: f64,
}

fn d_fee() -> f64 {
    0.1
}
fn d_slippage() -> f64 {
    0.05
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            fee_percent: d_fee(),
            slippage_percent: d_slippage(),
        }
    }
}

/// Log file retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsConfig {
    /// Rotated files older than this are gzip-compressed (whole days).
    #[serde(default = "d_compress_after")]
    pub compress_after: HumanDuration,
    /// Rotated files older than this are deleted (whole days).
    #[serde(default = "d_delete_after")]
    pub delete_after: HumanDuration,
    /// Log filter (tracing env-filter syntax), e.g. `info`.
    #[serde(default = "d_level")]
    pub level: String,
}

fn d_compress_after() -> HumanDuration {
    HumanDuration::days(7)
}
fn d_delete_after() -> HumanDuration {
    HumanDuration::days(30)
}
fn d_level() -> String {
    "info".into()
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            compress_after: d_compress_after(),
            delete_after: d_delete_after(),
            level: d_level(),
        }
    }
}

/// HTTP API settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address (env `IQ720_LISTEN_ADDR` overrides).
    #[serde(default = "d_listen")]
    pub listen_addr: String,
    /// Directory of bearer tokens (env `IQ720_TOKEN_DIR` overrides).
    #[serde(default = "d_token_dir")]
    pub token_dir: PathBuf,
}

fn d_listen() -> String {
    "0.0.0.0:8080".into()
}
fn d_token_dir() -> PathBuf {
    PathBuf::from("/var/run/iq720/tokens")
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen_addr: d_listen(),
            token_dir: d_token_dir(),
        }
    }
}

/// The whole bot configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Bot name (labels logs and status).
    #[serde(default = "d_name")]
    pub name: String,
    /// `paper` or `live`.
    #[serde(default)]
    pub mode: Mode,
    /// Exchange settings.
    #[serde(default)]
    pub exchange: ExchangeConfig,
    /// Traded pairs, `BASE/QUOTE`.
    pub pairs: Vec<String>,
    /// Paper account starting balance in the stake currency.
    #[serde(default = "d_balance")]
    pub starting_balance: f64,
    /// Stake currency.
    #[serde(default = "d_stake_currency")]
    pub stake_currency: String,
    /// Strategy.
    #[serde(default)]
    pub strategy: StrategyConfig,
    /// Risk limits.
    #[serde(default)]
    pub risk: RiskConfig,
    /// Market data sources.
    #[serde(default)]
    pub market_data: MarketDataConfig,
    /// Paper broker costs.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// Start with new entries paused.
    #[serde(default)]
    pub paused: bool,
    /// Log retention.
    #[serde(default)]
    pub logs: LogsConfig,
    /// HTTP API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Database directory (env `IQ720_DATA_DIR` overrides).
    #[serde(default = "d_data_dir")]
    pub data_dir: PathBuf,
    /// Log directory (env `IQ720_LOG_DIR` overrides).
    #[serde(default = "d_log_dir")]
    pub log_dir: PathBuf,
    /// How often an equity snapshot is written.
    #[serde(default = "d_snapshot")]
    pub snapshot_interval: HumanDuration,
}

fn d_name() -> String {
    "iq720-bot".into()
}
fn d_balance() -> f64 {
    10_000.0
}
fn d_stake_currency() -> String {
    "USDT".into()
}
fn d_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/iq720")
}
fn d_log_dir() -> PathBuf {
    PathBuf::from("/var/log/iq720")
}
fn d_snapshot() -> HumanDuration {
    HumanDuration::secs(60)
}

/// Field paths (and their sub-fields) that `PATCH /api/v1/config` may change at runtime.
pub const HOT_RELOADABLE: &[&str] = &[
    "risk",
    "strategy",
    "paused",
    "logs.compressAfter",
    "logs.deleteAfter",
];

impl Config {
    /// Parse YAML text (JSON is valid YAML) and validate it.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Check ranges and cross-field rules; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid("name", "must not be empty"));
        }
        if self.mode == Mode::Live {
            return Err(ConfigError::invalid(
                "mode",
                "live trading is not available in this build (no exchange adapter); use paper",
            ));
        }
        if self.pairs.is_empty() {
            return Err(ConfigError::invalid("pairs", "must list at least one pair"));
        }
        if self.pairs.len() > 100 {
            return Err(ConfigError::invalid("pairs", "at most 100 pairs"));
        }
        for (i, pair) in self.pairs.iter().enumerate() {
            if !valid_pair(pair) {
                return Err(ConfigError::invalid(
                    format!("pairs[{i}]"),
                    format!("`{pair}` is not BASE/QUOTE (upper-case letters and digits)"),
                ));
            }
            if self.pairs[..i].contains(pair) {
                return Err(ConfigError::invalid(
                    format!("pairs[{i}]"),
                    format!("duplicate pair `{pair}`"),
                ));
            }
        }
        positive("startingBalance", self.starting_balance)?;
        self.strategy.resolve()?;
        validate_risk(&self.risk)?;
        let md = &self.market_data;
        if !(md.tick_rate.is_finite() && md.tick_rate > 0.0 && md.tick_rate <= 10_000.0) {
            return Err(ConfigError::invalid(
                "marketData.tickRate",
                "must be in (0, 10000]",
            ));
        }
        if md.stale_after.0 < Duration::from_millis(50) {
            return Err(ConfigError::invalid(
                "marketData.staleAfter",
                "must be at least 50ms",
            ));
        }
        validate_source("marketData.primary", &md.primary)?;
        if let Some(b) = &md.backup {
            validate_source("marketData.backup", b)?;
        }
        for (field, v) in [
            ("broker.feePercent", self.broker.fee_percent),
            ("broker.slippagePercent", self.broker.slippage_percent),
        ] {
            if !(v.is_finite() && (0.0..=10.0).contains(&v)) {
                return Err(ConfigError::invalid(field, "must be between 0 and 10"));
            }
        }
        validate_logs(&self.logs)?;
        parse_listen_addr(&self.api.listen_addr).map_err(|e| {
            ConfigError::invalid("api.listenAddr", format!("not a socket address: {e}"))
        })?;
        if self.snapshot_interval.0 < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "snapshotInterval",
                "must be at least 100ms",
            ));
        }
        Ok(())
    }
}

/// Parse `host:port`; an unbracketed IPv6 host (as `$(POD_IP):8080` expands to on an
/// IPv6 cluster) is accepted too.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, std::net::AddrParseError> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Ok(a),
        Err(e) => match s.rsplit_once(':') {
            Some((host, port)) if host.contains(':') && !host.starts_with('[') => {
                format!("[{host}]:{port}").parse().map_err(|_| e)
            }
            _ => Err(e),
        },
    }
}

fn positive(field: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::invalid(field, "must be a positive number"))
    }
}

fn percent(field: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 && v <= 100.0 {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            "must be a percentage in (0, 100]",
        ))
    }
}

/// Validate the risk block (also used by hot reload).
pub fn validate_risk(r: &RiskConfig) -> Result<(), ConfigError> {
    if r.max_positions == 0 || r.max_positions > 100 {
        return Err(ConfigError::invalid(
            "risk.maxPositions",
            "must be between 1 and 100",
        ));
    }
    positive("risk.maxPositionSize", r.max_position_size)?;
    percent("risk.positionRiskPercent", r.position_risk_percent)?;
    percent("risk.maxDrawdownPercent", r.max_drawdown_percent)?;
    percent("risk.dailyLossLimitPercent", r.daily_loss_limit_percent)?;
    let sl = r.stop_loss.percent;
    if !(sl.is_finite() && sl > 0.0 && sl < 100.0) {
        return Err(ConfigError::invalid(
            "risk.stopLoss.percent",
            "must be in (0, 100)",
        ));
    }
    Ok(())
}

/// Validate the logs block (also used by hot reload).
pub fn validate_logs(l: &LogsConfig) -> Result<(), ConfigError> {
    if l.delete_after.days_ceil() <= l.compress_after.days_ceil() {
        return Err(ConfigError::invalid(
            "logs.deleteAfter",
            "must be more whole days than compressAfter (files rotate daily)",
        ));
    }
    if tracing_subscriber::EnvFilter::try_new(&l.level).is_err() {
        return Err(ConfigError::invalid("logs.level", "not a valid log filter"));
    }
    Ok(())
}

fn validate_source(field: &str, s: &SourceConfig) -> Result<(), ConfigError> {
    match s.kind.as_str() {
        "simulator" => {
            if !(s.volatility.is_finite() && s.volatility > 0.0 && s.volatility < 0.5) {
                return Err(ConfigError::invalid(
                    format!("{field}.volatility"),
                    "must be in (0, 0.5)",
                ));
            }
            positive(&format!("{field}.startPrice"), s.start_price)
        }
        "csv" => {
            if s.path.is_none() {
                return Err(ConfigError::invalid(
                    format!("{field}.path"),
                    "required for kind csv",
                ));
            }
            Ok(())
        }
        other => Err(ConfigError::invalid(
            format!("{field}.kind"),
            format!("unknown source kind `{other}` (expected simulator or csv)"),
        )),
    }
}

fn valid_pair(p: &str) -> bool {
    let mut parts = p.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.len() <= 16
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
