//! The bot configuration document: what the operator renders into the bot's ConfigMap,
//! what the bot parses at start, returns from `GET /api/v1/config` and accepts in
//! `PATCH /api/v1/config`; its defaults and its validation.
//!
//! Why here: the operator and the bot must agree on every field name, default and rule.
//! The operator renders these types (so a renamed field is a compile error, not a
//! crash-looping pod) and runs [`Config::problems`] on what it rendered, the same
//! check the bot runs in [`Config::validate`]. Every struct denies unknown fields so a
//! typo in a hand-written configuration is reported instead of silently ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration::HumanDuration;
pub use crate::problem::Problem;
use crate::risk;
pub use crate::strategy::{StrategyKind, StrategyParams};

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

impl From<Problem> for ConfigError {
    fn from(p: Problem) -> Self {
        ConfigError::Invalid {
            field: p.field,
            message: p.message,
        }
    }
}

/// The first problem as an error, or `Ok` when there is none.
fn first(problems: Vec<Problem>) -> Result<(), ConfigError> {
    match problems.into_iter().next() {
        Some(p) => Err(p.into()),
        None => Ok(()),
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

impl StrategyConfig {
    /// Resolve kind and parameters, validating each (the error names the first bad
    /// field; see [`crate::strategy::resolve`] for all of them).
    pub fn resolve(&self) -> Result<(StrategyKind, StrategyParams), ConfigError> {
        crate::strategy::resolve(&self.name, &self.params).map_err(|ps| {
            ps.into_iter()
                .next()
                .map(ConfigError::from)
                .unwrap_or_else(|| ConfigError::Parse("strategy rejected".into()))
        })
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

/// Which market-data source the bot uses (`marketData.use`, hot-reloadable).
///
/// Why: the runbook's manual switch (`switch_data_source.py --source backup`) becomes
/// a declarative pin in the TradingBot spec. A pinned bot never fails over or back on
/// its own: it stays on the pinned source even when that source is stale, and says so
/// (`selection: pinned`, `fresh: false`), so an operator can report it truthfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceUse {
    /// Automatic failover to the backup when the active source is stale, and fail-back
    /// as `failback` says (the behaviour without a pin).
    #[default]
    Auto,
    /// Pinned to `marketData.primary`.
    Primary,
    /// Pinned to `marketData.backup` (which must be configured).
    Backup,
}

impl SourceUse {
    /// Lower-case name as in the configuration (`auto`, `primary`, `backup`).
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceUse::Auto => "auto",
            SourceUse::Primary => "primary",
            SourceUse::Backup => "backup",
        }
    }

    /// Whether this pins the bot to one source.
    pub fn is_pinned(&self) -> bool {
        *self != SourceUse::Auto
    }
}

impl std::fmt::Display for SourceUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule of `marketData.use`: pinning to the backup needs a backup source. Shared
/// by the bot's validation and the operator's (the CRD also checks it at admission).
pub fn source_use_problem(use_source: SourceUse, has_backup: bool) -> Option<Problem> {
    (use_source == SourceUse::Backup && !has_backup).then(|| {
        Problem::new(
            "marketData.use",
            "use: backup needs marketData.backup: no backup source is configured",
        )
    })
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
    /// `auto` (failover and fail-back), or pin to `primary` or `backup`
    /// (hot-reloadable).
    #[serde(default, rename = "use")]
    pub use_source: SourceUse,
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
            use_source: SourceUse::Auto,
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

impl Default for Config {
    /// Every field at its default; `pairs` is empty, which validation refuses, so a
    /// caller sets at least the pairs.
    fn default() -> Self {
        Config {
            name: d_name(),
            mode: Mode::default(),
            exchange: ExchangeConfig::default(),
            pairs: Vec::new(),
            starting_balance: d_balance(),
            stake_currency: d_stake_currency(),
            strategy: StrategyConfig::default(),
            risk: RiskConfig::default(),
            market_data: MarketDataConfig::default(),
            broker: BrokerConfig::default(),
            paused: false,
            logs: LogsConfig::default(),
            api: ApiConfig::default(),
            data_dir: d_data_dir(),
            log_dir: d_log_dir(),
            snapshot_interval: d_snapshot(),
        }
    }
}

/// Field paths (and their sub-fields) that `PATCH /api/v1/config` may change at runtime.
pub const HOT_RELOADABLE: &[&str] = &[
    "risk",
    "strategy",
    "paused",
    "logs.compressAfter",
    "logs.deleteAfter",
    "marketData.use",
];

/// Largest number of pairs one bot trades.
pub const MAX_PAIRS: usize = 100;
/// Longest `BASE` or `QUOTE` of a pair, in characters.
pub const MAX_SYMBOL_LEN: usize = 16;
/// Shortest `marketData.staleAfter`.
pub const MIN_STALE_AFTER: Duration = Duration::from_millis(50);
/// Shortest `snapshotInterval`.
pub const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);
/// Largest `marketData.tickRate` (ticks per second per pair).
pub const MAX_TICK_RATE: f64 = 10_000.0;
/// Largest `broker.feePercent` and `broker.slippagePercent`.
pub const MAX_BROKER_PERCENT: f64 = 10.0;
/// Source kinds this build implements (`marketData.*.kind`).
pub const SOURCE_KINDS: &[&str] = &["simulator", "csv"];

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

    /// Check ranges and cross-field rules; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        first(self.problems())
    }

    /// Every problem of the configuration, in a stable order (the first is what
    /// [`Config::validate`] reports); empty when the bot accepts it.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() {
            out.push(Problem::new("name", "must not be empty"));
        }
        if self.mode == Mode::Live {
            out.push(Problem::new(
                "mode",
                "live trading is not supported by this release (no exchange adapter yet); use paper",
            ));
        }
        pair_problems(&self.pairs, &mut out);
        if !risk::is_positive(self.starting_balance) {
            out.push(Problem::new("startingBalance", "must be a positive number"));
        }
        if let Err(ps) = crate::strategy::resolve(&self.strategy.name, &self.strategy.params) {
            out.extend(ps);
        }
        out.extend(self.risk.problems());
        self.market_data.problems_into(&mut out);
        for (field, v) in [
            ("broker.feePercent", self.broker.fee_percent),
            ("broker.slippagePercent", self.broker.slippage_percent),
        ] {
            if !(v.is_finite() && (0.0..=MAX_BROKER_PERCENT).contains(&v)) {
                out.push(Problem::new(field, "must be between 0 and 10"));
            }
        }
        out.extend(self.logs.problems());
        if let Err(e) = parse_listen_addr(&self.api.listen_addr) {
            out.push(Problem::new(
                "api.listenAddr",
                format!("not a socket address: {e}"),
            ));
        }
        if self.snapshot_interval.0 < MIN_SNAPSHOT_INTERVAL {
            out.push(Problem::new("snapshotInterval", "must be at least 100ms"));
        }
        out
    }

    /// The hot-reloadable part of this configuration.
    pub fn hot(&self) -> HotConfig {
        HotConfig {
            risk: self.risk,
            strategy: self.strategy.clone(),
            paused: self.paused,
            logs: HotLogs {
                compress_after: self.logs.compress_after,
                delete_after: self.logs.delete_after,
            },
            market_data: HotMarketData {
                use_source: self.market_data.use_source,
            },
        }
    }
}

fn pair_problems(pairs: &[String], out: &mut Vec<Problem>) {
    if pairs.is_empty() {
        out.push(Problem::new("pairs", "must list at least one pair"));
    }
    if pairs.len() > MAX_PAIRS {
        out.push(Problem::new("pairs", "at most 100 pairs"));
    }
    for (i, pair) in pairs.iter().enumerate() {
        if !valid_pair(pair) {
            out.push(Problem::new(
                format!("pairs[{i}]"),
                format!("`{pair}` is not BASE/QUOTE (upper-case letters and digits)"),
            ));
        } else if pairs[..i].contains(pair) {
            out.push(Problem::new(
                format!("pairs[{i}]"),
                format!("duplicate pair `{pair}`"),
            ));
        }
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

impl RiskConfig {
    /// Every problem of the risk block, fields named `risk.*`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !(risk::MAX_POSITIONS_MIN..=risk::MAX_POSITIONS_MAX).contains(&self.max_positions) {
            out.push(Problem::new(
                "risk.maxPositions",
                format!(
                    "must be between {} and {}",
                    risk::MAX_POSITIONS_MIN,
                    risk::MAX_POSITIONS_MAX
                ),
            ));
        }
        if !risk::is_positive(self.max_position_size) {
            out.push(Problem::new(
                "risk.maxPositionSize",
                "must be a positive number",
            ));
        }
        for (field, v) in [
            ("risk.positionRiskPercent", self.position_risk_percent),
            ("risk.maxDrawdownPercent", self.max_drawdown_percent),
            ("risk.dailyLossLimitPercent", self.daily_loss_limit_percent),
        ] {
            if !risk::is_percent(v) {
                out.push(Problem::new(field, "must be a percentage in (0, 100]"));
            }
        }
        if !risk::is_stop_loss_percent(self.stop_loss.percent) {
            out.push(Problem::new("risk.stopLoss.percent", "must be in (0, 100)"));
        }
        out
    }
}

/// Validate the risk block (also used by hot reload).
pub fn validate_risk(r: &RiskConfig) -> Result<(), ConfigError> {
    first(r.problems())
}

impl LogsConfig {
    /// Every problem of the logs block. Retentions compare in whole days rounded up
    /// ([`crate::duration::retention_days`]): `deleteAfter` must cover more whole days
    /// than `compressAfter`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !retention_ok(self.compress_after, self.delete_after) {
            out.push(Problem::new(
                "logs.deleteAfter",
                format!(
                    "deleteAfter ({}) must be more whole days than compressAfter ({}): log files \
                     rotate daily and retention counts whole days, rounded up ({} vs {} days)",
                    self.delete_after,
                    self.compress_after,
                    self.delete_after.days_ceil(),
                    self.compress_after.days_ceil()
                ),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            out.push(Problem::new("logs.level", "not a valid log filter"));
        }
        out
    }
}

/// The log retention rule: `delete_after` covers more whole days (rounded up) than
/// `compress_after`.
pub fn retention_ok(compress_after: HumanDuration, delete_after: HumanDuration) -> bool {
    delete_after.days_ceil() > compress_after.days_ceil()
}

/// Validate the logs block (also used by hot reload).
pub fn validate_logs(l: &LogsConfig) -> Result<(), ConfigError> {
    first(l.problems())
}

impl MarketDataConfig {
    fn problems_into(&self, out: &mut Vec<Problem>) {
        let md = self;
        if !(md.tick_rate.is_finite() && md.tick_rate > 0.0 && md.tick_rate <= MAX_TICK_RATE) {
            out.push(Problem::new("marketData.tickRate", "must be in (0, 10000]"));
        }
        if md.stale_after.0 < MIN_STALE_AFTER {
            out.push(Problem::new(
                "marketData.staleAfter",
                "must be at least 50ms",
            ));
        }
        source_problems("marketData.primary", &md.primary, out);
        if let Some(b) = &md.backup {
            source_problems("marketData.backup", b, out);
            if *b == md.primary {
                out.push(Problem::new(
                    "marketData.backup",
                    "must differ from marketData.primary (an identical backup gives no failover)",
                ));
            }
        }
        out.extend(source_use_problem(md.use_source, md.backup.is_some()));
    }
}

fn source_problems(field: &str, s: &SourceConfig, out: &mut Vec<Problem>) {
    match s.kind.as_str() {
        "simulator" => {
            if !(s.volatility.is_finite() && s.volatility > 0.0 && s.volatility < 0.5) {
                out.push(Problem::new(
                    format!("{field}.volatility"),
                    "must be in (0, 0.5)",
                ));
            }
            if !risk::is_positive(s.start_price) {
                out.push(Problem::new(
                    format!("{field}.startPrice"),
                    "must be a positive number",
                ));
            }
        }
        "csv" => {
            if s.path.is_none() {
                out.push(Problem::new(
                    format!("{field}.path"),
                    "required for kind csv",
                ));
            }
        }
        other => out.push(Problem::new(
            format!("{field}.kind"),
            format!("source kind {other} is not supported by this release (use simulator or csv)"),
        )),
    }
}

fn valid_pair(p: &str) -> bool {
    let mut parts = p.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.len() <= MAX_SYMBOL_LEN
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The hot-reloadable part of the configuration ([`HOT_RELOADABLE`]): what the operator
/// sends with `PATCH /api/v1/config` and compares with `GET /api/v1/config`.
///
/// Unknown top-level fields are ignored, so the whole configuration the bot returns
/// reads as its hot part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HotConfig {
    /// Risk limits.
    pub risk: RiskConfig,
    /// Strategy.
    pub strategy: StrategyConfig,
    /// New entries paused.
    pub paused: bool,
    /// The hot part of the log retention.
    pub logs: HotLogs,
    /// The hot part of the market data (absent from bots older than `marketData.use`:
    /// read as `auto`).
    #[serde(default)]
    pub market_data: HotMarketData,
}

/// The hot part of `marketData`. Unknown fields (the sources, `staleAfter`, ...) are
/// ignored, so the whole `marketData` object reads as its hot part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HotMarketData {
    /// `auto`, `primary` or `backup`.
    #[serde(default, rename = "use")]
    pub use_source: SourceUse,
}

/// The hot part of `logs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HotLogs {
    /// Rotated files older than this are gzip-compressed (whole days).
    pub compress_after: HumanDuration,
    /// Rotated files older than this are deleted (whole days).
    pub delete_after: HumanDuration,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_pairs() -> Config {
        Config {
            pairs: vec!["BTC/USDT".into()],
            ..Config::default()
        }
    }

    #[test]
    fn defaults_with_pairs_are_valid_and_round_trip() {
        let c = with_pairs();
        assert_eq!(c.problems(), Vec::<Problem>::new());
        let text = serde_yaml::to_string(&c).unwrap();
        assert_eq!(Config::from_yaml(&text).unwrap(), c);
    }

    #[test]
    fn problems_lists_everything_and_validate_reports_the_first() {
        let mut c = with_pairs();
        c.risk.max_positions = 101;
        c.strategy.params.insert("rsiPeriod".into(), 1.0);
        c.logs.compress_after = HumanDuration::parse("36h").unwrap();
        c.logs.delete_after = HumanDuration::parse("2d").unwrap();
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "strategy.params.rsiPeriod",
                "risk.maxPositions",
                "logs.deleteAfter"
            ]
        );
        match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => {
                assert_eq!(field, "strategy.params.rsiPeriod")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_identical_backup_is_refused() {
        let mut c = with_pairs();
        c.market_data.backup = Some(c.market_data.primary.clone());
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["marketData.backup"]);
        c.market_data.backup = Some(SourceConfig::simulator(2));
        assert!(c.problems().is_empty());
    }

    #[test]
    fn pinning_to_the_backup_needs_a_backup() {
        let mut c = with_pairs();
        c.market_data.use_source = SourceUse::Backup;
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["marketData.use"]);
        c.market_data.backup = Some(SourceConfig::simulator(2));
        assert!(c.problems().is_empty());
        c.market_data.backup = None;
        c.market_data.use_source = SourceUse::Primary;
        assert!(c.problems().is_empty());
        let parsed = Config::from_yaml("pairs: [A/B]\nmarketData: {use: primary}").unwrap();
        assert_eq!(parsed.market_data.use_source, SourceUse::Primary);
        assert!(Config::from_yaml("pairs: [A/B]\nmarketData: {use: backup}").is_err());
        assert!(Config::from_yaml("pairs: [A/B]\nmarketData: {use: secondary}").is_err());
        assert!(HOT_RELOADABLE.contains(&"marketData.use"));
    }

    #[test]
    fn the_whole_document_reads_as_its_hot_part() {
        let c = with_pairs();
        let hot: HotConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(hot, c.hot());
    }
}
