//! The `TradingBot` custom resource: one trading bot, run as a StatefulSet of one pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LocalRef, SecretRef};

/// Default image repository of the bot.
pub const DEFAULT_BOT_IMAGE: &str = "ghcr.io/iq720/iq720-bot";
/// Label naming the TradingBot an object belongs to: the objects the operator makes
/// for it, its pods and its restore-drill pods.
pub const BOT_LABEL: &str = "trading.iq720.io/bot";
/// Annotation asking for an API token rotation now: each distinct value rotates once
/// (inside an allowed maintenance window when the bot is selected by one), for example
/// `kubectl annotate tb NAME trading.iq720.io/rotate-keys="$(date +%s)" --overwrite`.
pub const ROTATE_KEYS_ANNOTATION: &str = "trading.iq720.io/rotate-keys";
/// Annotation lifting the halt of automatic updates after several consecutive
/// rollbacks (condition `AutoUpdatesHalted`): each distinct value resets the count
/// once, for example
/// `kubectl annotate tb NAME trading.iq720.io/resume-updates="$(date +%s)" --overwrite`.
pub const RESUME_UPDATES_ANNOTATION: &str = "trading.iq720.io/resume-updates";

/// Desired state of a trading bot.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "trading.iq720.io",
    version = "v1alpha1",
    kind = "TradingBot",
    doc = "A trading bot run by the IQ-720 operator: one StatefulSet of one pod with its trade database, configuration and API tokens.",
    plural = "tradingbots",
    singular = "tradingbot",
    shortname = "tb",
    category = "iq720",
    namespaced,
    status = "TradingBotStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.currentVersion"}"#,
    printcolumn = r#"{"name":"Wanted","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Positions","type":"integer","jsonPath":".status.openPositions"}"#,
    printcolumn = r#"{"name":"WinRate","type":"string","jsonPath":".status.winRate"}"#,
    printcolumn = r#"{"name":"PnL","type":"string","jsonPath":".status.pnl"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 52").message("a TradingBot name must be at most 52 characters: it names the bot's StatefulSet, whose pod and revision labels add a suffix and must stay within 63"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("a TradingBot name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter and ending with a letter or digit): it names the bot's Service")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'live' || has(self.exchange.credentialsSecretRef)").message("live mode requires spec.exchange.credentialsSecretRef: a live bot cannot trade without exchange API credentials").field_path(".exchange"))]
#[x_kube(validation = Rule::new("self.mode != 'live' || self.exchange.name != 'paper'").message("live mode needs a real exchange; spec.exchange.name 'paper' only works with mode paper").field_path(".exchange.name"))]
pub struct TradingBotSpec {
    /// Bot release to run, for example `0.1.0` or `v0.1.0`. The pod image is
    /// `image.repository:version`. Changing it is an upgrade and waits for an open
    /// maintenance window when one selects this bot.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$')").message("version must be a release such as 1.4.2 or an image tag made of letters, digits, '_', '.' and '-'"))]
    #[x_kube(validation = Rule::new("self != 'latest'").message("version 'latest' is not allowed: pin a release so that upgrades are deliberate and can be rolled back"))]
    pub version: String,

    /// Container image settings.
    #[serde(default)]
    pub image: ImageSpec,

    /// Trading mode: `paper` simulates fills against live-like market data and never
    /// sends orders; `live` trades real money on the exchange.
    #[serde(default)]
    pub mode: TradingMode,

    /// Exchange the bot trades on and the credentials it uses.
    #[serde(default)]
    pub exchange: ExchangeSpec,

    /// Markets to trade, as `BASE/QUOTE` symbols such as `BTC/USDT`. At least one, no duplicates.
    #[schemars(length(max = 50), inner(length(max = 32)))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("pairs must list at least one market, for example BTC/USDT"))]
    #[x_kube(validation = Rule::new("self.all(p, self.filter(q, q == p).size() == 1)").message("pairs must not contain the same market twice"))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[A-Z0-9]{2,12}/[A-Z0-9]{2,12}$'))").message("each pair must be BASE/QUOTE in upper case, for example BTC/USDT"))]
    pub pairs: Vec<String>,

    /// Trading strategy and its parameters.
    #[serde(default)]
    pub strategy: StrategySpec,

    /// Risk limits. Every limit is enforced by the bot before an order is sent.
    #[serde(default)]
    pub risk: RiskSpec,

    /// Market-data sources with automatic failover, or pinned to one source
    /// (`marketData.use`, applied without a restart).
    #[serde(default)]
    pub market_data: MarketDataSpec,

    /// Stop opening new positions; open positions keep being managed (stop-loss,
    /// exits). Applied to the running bot without a restart.
    #[serde(default)]
    pub paused: bool,

    /// Emergency stop: close every position, halt trading and scale the bot to zero.
    /// Set back to false to bring the bot back (it starts halted and is then resumed
    /// by the operator). Never deferred by a maintenance window.
    #[serde(default)]
    pub emergency_stop: bool,

    /// Log file retention inside the bot.
    #[serde(default)]
    pub logs: LogsSpec,

    /// Rotation of the bot's own API tokens.
    #[serde(default)]
    pub api_keys: ApiKeysSpec,

    /// How version updates are carried out.
    #[serde(default)]
    pub update: UpdateSpec,

    /// Persistent volume for the bot's SQLite trade database.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Bootstrap the trade database from a backup before the bot first starts. Only an
    /// empty volume is restored into; a volume that holds a database is never
    /// overwritten (see `status.restore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,

    /// Compute resources of the bot container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels the bot pod must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of the bot pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Affinity rules of the bot pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Priority class of the bot pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Container image settings of the bot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository; the tag is `spec.version`.
    #[serde(default = "default_repository")]
    #[schemars(length(min = 1, max = 255))]
    pub repository: String,
    /// Image pull policy.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Secrets used to pull the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<SecretRef>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_repository(),
            pull_policy: PullPolicy::default(),
            pull_secrets: Vec::new(),
        }
    }
}

fn default_repository() -> String {
    DEFAULT_BOT_IMAGE.to_string()
}

/// When the kubelet pulls the image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull only when the image is not on the node.
    #[default]
    IfNotPresent,
    /// Pull at every start.
    Always,
    /// Never pull.
    Never,
}

/// Trading mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TradingMode {
    /// Simulated fills, no real orders.
    #[default]
    Paper,
    /// Real orders with real money.
    Live,
}

/// Exchange connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeSpec {
    /// Exchange identifier, for example `binance` or `kraken`; `paper` is the built-in
    /// simulated exchange.
    #[serde(default = "default_exchange")]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Secret with the exchange API key and secret (keys `apiKey` and `apiSecret`).
    /// Required in live mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

impl Default for ExchangeSpec {
    fn default() -> Self {
        Self {
            name: default_exchange(),
            credentials_secret_ref: None,
        }
    }
}

fn default_exchange() -> String {
    "paper".to_string()
}

/// Strategy selection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategySpec {
    /// Strategy family.
    #[serde(default)]
    pub name: StrategyName,
    /// Numeric strategy parameters: `rsiPeriod`, `rsiBuy`, `rsiSell`, `macdFast`,
    /// `macdSlow`, `macdSignal`, `bbPeriod`, `bbStdDev`, `minConfirmations`. Unknown
    /// names are reported in the InvalidSpec condition. Hot-reloadable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub params: BTreeMap<String, f64>,
}

/// Built-in strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    /// RSI, MACD and Bollinger bands combined: enter when all agree.
    #[default]
    RsiMacdBollinger,
    /// RSI mean reversion.
    Rsi,
    /// MACD trend following.
    Macd,
    /// Bollinger band mean reversion.
    Bollinger,
}

/// Risk limits enforced by the bot.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RiskSpec {
    /// Maximum number of positions open at once (1 to 100).
    #[serde(default = "default_max_positions")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("maxPositions must be between 1 and 100 (the bot holds at most 100 positions)"))]
    pub max_positions: i32,
    /// Maximum notional size of one position in the quote currency, for example 1000 (USDT).
    #[serde(default = "default_max_position_size")]
    #[x_kube(validation = Rule::new("self > 0.0").message("maxPositionSize must be greater than 0"))]
    pub max_position_size: f64,
    /// Share of equity risked per position, in percent, in (0, 100].
    #[serde(default = "default_position_risk_percent")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 100.0").message("positionRiskPercent must be greater than 0 and at most 100"))]
    pub position_risk_percent: f64,
    /// Drawdown from the equity peak, in percent in (0, 100], that halts new entries.
    #[serde(default = "default_max_drawdown_percent")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 100.0").message("maxDrawdownPercent must be greater than 0 and at most 100"))]
    pub max_drawdown_percent: f64,
    /// Loss within one UTC day, in percent of the day's starting equity in (0, 100],
    /// that halts new entries until the next day.
    #[serde(default = "default_daily_loss_limit_percent")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 100.0").message("dailyLossLimitPercent must be greater than 0 and at most 100"))]
    pub daily_loss_limit_percent: f64,
    /// Stop-loss applied to every position.
    #[serde(default)]
    pub stop_loss: StopLossSpec,
}

impl Default for RiskSpec {
    fn default() -> Self {
        Self {
            max_positions: default_max_positions(),
            max_position_size: default_max_position_size(),
            position_risk_percent: default_position_risk_percent(),
            max_drawdown_percent: default_max_drawdown_percent(),
            daily_loss_limit_percent: default_daily_loss_limit_percent(),
            stop_loss: StopLossSpec::default(),
        }
    }
}

fn default_max_positions() -> i32 {
    3
}
fn default_max_position_size() -> f64 {
    1000.0
}
fn default_position_risk_percent() -> f64 {
    1.0
}
fn default_max_drawdown_percent() -> f64 {
    20.0
}
fn default_daily_loss_limit_percent() -> f64 {
    5.0
}

/// Stop-loss rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StopLossSpec {
    /// `fixed` keeps the stop at the entry price minus `percent`; `trailing` moves it up
    /// with the best price seen.
    #[serde(default, rename = "type")]
    pub kind: StopLossKind,
    /// Distance of the stop from the reference price, in percent in (0, 100).
    #[serde(default = "default_stop_loss_percent")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 100.0").message("stopLoss.percent must be greater than 0 and less than 100"))]
    pub percent: f64,
}

impl Default for StopLossSpec {
    fn default() -> Self {
        Self {
            kind: StopLossKind::default(),
            percent: default_stop_loss_percent(),
        }
    }
}

fn default_stop_loss_percent() -> f64 {
    2.0
}

/// Kind of stop-loss.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StopLossKind {
    /// A fixed distance below the entry price.
    #[default]
    Fixed,
    /// A distance below the highest price since entry.
    Trailing,
}

/// Market-data sources.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.use) || self.use != 'backup' || has(self.backup)").message("marketData.use: backup needs marketData.backup: no backup source is configured").field_path(".use"))]
pub struct MarketDataSpec {
    /// Source used while it is fresh.
    #[serde(default)]
    pub primary: MarketDataSource,
    /// Source switched to when the primary is stale for `staleAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<MarketDataSource>,
    /// Age of the newest tick after which a source counts as stale, for example `30s`.
    #[serde(default = "default_stale_after")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::common::DURATION_RULE).message(crate::common::DURATION_MESSAGE))]
    pub stale_after: String,
    /// Return to the primary once it has been fresh again for `staleAfter`.
    #[serde(default = "crate::common::default_true")]
    pub failback: bool,
    /// Which source the bot uses: `auto` (default) fails over to the backup when the
    /// active source is stale and back as `failback` says; `primary` or `backup` pins
    /// the bot to that source, fresh or not, with no automatic switch (the manual
    /// switch of the old runbook). `backup` needs `backup`. Applied to the running bot
    /// without a restart; `status.activeMarketData` shows the source in use, and
    /// `MarketDataHealthy` is False (reason `PinnedSourceStale`) while the pinned
    /// source is stale.
    #[serde(default, rename = "use")]
    pub use_source: MarketDataUse,
}

impl Default for MarketDataSpec {
    fn default() -> Self {
        Self {
            primary: MarketDataSource::default(),
            backup: None,
            stale_after: default_stale_after(),
            failback: true,
            use_source: MarketDataUse::Auto,
        }
    }
}

/// Which market-data source a bot uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MarketDataUse {
    /// Automatic failover and fail-back.
    #[default]
    Auto,
    /// Pinned to the primary source.
    Primary,
    /// Pinned to the backup source.
    Backup,
}

fn default_stale_after() -> String {
    "30s".to_string()
}

/// One market-data source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'exchange' || has(self.endpoint)").message("a market-data source of type exchange needs an endpoint"))]
#[x_kube(validation = Rule::new("self.type != 'csvReplay' || has(self.path)").message("a market-data source of type csvReplay needs a path"))]
pub struct MarketDataSource {
    /// Kind of source.
    #[serde(default, rename = "type")]
    pub kind: MarketDataKind,
    /// Streaming endpoint of an exchange feed, for example `wss://stream.example.com/ws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
    /// Path of a CSV file to replay (inside the bot's data volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// Seed of the simulator; the same seed gives the same prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
}

/// Kind of market-data source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MarketDataKind {
    /// Built-in price simulator.
    #[default]
    Simulator,
    /// Replay of recorded ticks from a CSV file.
    CsvReplay,
    /// Live exchange feed.
    Exchange,
}

/// Log retention.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogsSpec {
    /// Compress rotated log files older than this, for example `7d`.
    #[serde(default = "default_compress_after")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::common::DURATION_RULE).message(crate::common::DURATION_MESSAGE))]
    pub compress_after: String,
    /// Delete log files older than this, for example `30d`.
    #[serde(default = "default_delete_after")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::common::DURATION_RULE).message(crate::common::DURATION_MESSAGE))]
    pub delete_after: String,
    /// Log level of the bot.
    #[serde(default)]
    pub level: LogLevel,
}

impl Default for LogsSpec {
    fn default() -> Self {
        Self {
            compress_after: default_compress_after(),
            delete_after: default_delete_after(),
            level: LogLevel::default(),
        }
    }
}

fn default_compress_after() -> String {
    "7d".to_string()
}
fn default_delete_after() -> String {
    "30d".to_string()
}

/// Log verbosity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation.
    #[default]
    Info,
    /// Verbose diagnostics.
    Debug,
}

/// Rotation of the bot's API tokens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysSpec {
    /// Rotate the bot's API tokens this often, for example `90d`.
    #[serde(default = "default_rotation_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::common::DURATION_RULE).message(crate::common::DURATION_MESSAGE))]
    pub rotation_interval: String,
    /// How long the previous token stays valid after a rotation, for example `1h`.
    #[serde(default = "default_grace_period")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::common::DURATION_RULE).message(crate::common::DURATION_MESSAGE))]
    pub grace_period: String,
}

impl Default for ApiKeysSpec {
    fn default() -> Self {
        Self {
            rotation_interval: default_rotation_interval(),
            grace_period: default_grace_period(),
        }
    }
}

fn default_rotation_interval() -> String {
    "90d".to_string()
}
fn default_grace_period() -> String {
    "1h".to_string()
}

/// How version updates are carried out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSpec {
    /// Take a backup of the trade database before changing the version.
    #[serde(default = "crate::common::default_true")]
    pub pre_update_backup: bool,
    /// How long the new version has to become healthy, for example `5m`.
    #[serde(default = "default_health_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::common::DURATION_RULE).message(crate::common::DURATION_MESSAGE))]
    pub health_timeout: String,
    /// Go back to the previous version when the new one does not become healthy in time.
    #[serde(default = "crate::common::default_true")]
    pub auto_rollback: bool,
}

impl Default for UpdateSpec {
    fn default() -> Self {
        Self {
            pre_update_backup: true,
            health_timeout: default_health_timeout(),
            auto_rollback: true,
        }
    }
}

fn default_health_timeout() -> String {
    "5m".to_string()
}

/// Persistent storage of the trade database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested volume size, as a Kubernetes quantity such as `1Gi`.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(\\\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$')").message("storage.size must be a quantity such as 512Mi or 1Gi"))]
    pub size: String,
    /// Storage class of the volume; unset uses the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "1Gi".to_string()
}

/// Where to restore the trade database from. The bot's pod restores it in an init
/// container (`iq720-bot restore --s3-key ...`, S3 credentials from the schedule's
/// Secret as environment variables) before the bot starts, and only into an empty
/// volume: a volume that already holds a database is left untouched
/// (`status.restore.result: SkippedNotEmpty`). The backup is pinned in
/// `status.restore.key` the first time it is resolved.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// BackupSchedule (in this namespace) whose destination holds the backup; its
    /// endpoint, bucket and credentials Secret are used for the download.
    pub backup_schedule_ref: LocalRef,
    /// Object key of the backup to restore. Unset: this bot's newest verified backup
    /// in the BackupSchedule's status; until one exists, a new bot is not started
    /// (condition `Restored` False, reason `NoVerifiedBackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.size() > 0 && !self.startsWith('/') && !self.contains('..')").message("restore.key must be an object key such as 'prefix/namespace/bot/20260101T030000.000Z.tar.gz'"))]
    pub key: Option<String>,
}

/// The bootstrap restore of a bot (see `spec.restore`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// BackupSchedule the backup was taken from.
    pub backup_schedule: String,
    /// Object key of the backup the pod restores (pinned when first resolved).
    pub key: String,
    /// SHA-256 of the backup as recorded at upload, when known; the restore checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When the key was pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<Time>,
    /// What the pod's restore step did: `Restored` (the backup was restored into the
    /// empty volume) or `SkippedNotEmpty` (the volume already held a database, which
    /// was left untouched). Unset until the restore step has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// When the restore step finished, as the operator observed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Wall time of the restore step in milliseconds (download, checks, swap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
}

/// Lifecycle phase of a trading bot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TradingBotPhase {
    /// Accepted; owned objects are being created.
    #[default]
    Pending,
    /// The pod is starting or not yet ready.
    Starting,
    /// Trading.
    Running,
    /// Ready but not opening new positions.
    Paused,
    /// Halted by the bot itself (risk limit) or after an emergency stop was cleared.
    Halted,
    /// A version update is in progress.
    Upgrading,
    /// Emergency stop done: positions closed and replicas at zero.
    EmergencyStopped,
    /// The spec is invalid; see the InvalidSpec condition.
    Invalid,
    /// The bot is failing; see the conditions.
    Failed,
}

/// Observed state of a trading bot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TradingBotStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TradingBotPhase>,
    /// Standard conditions: Ready, MarketDataHealthy, Paused, EmergencyStopped,
    /// Upgrading, AutoUpdatesHalted, InvalidSpec, and KeyRotationDue (with
    /// `spec.exchange.credentialsSecretRef`: the credentials are older than
    /// `spec.apiKeys.rotationInterval`, counted from the Secret's annotation
    /// `trading.iq720.io/rotated-at`; Unknown without it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Version the running pod reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Number of open positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_positions: Option<i32>,
    /// Share of winning closed trades, formatted as a percentage such as `57.1%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win_rate: Option<String>,
    /// Realised profit and loss in the quote currency, formatted such as `+12.40`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pnl: Option<String>,
    /// Market-data source in use (`primary` or `backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_market_data: Option<String>,
    /// Newest successful backup of this bot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// State of the bot's API tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeysStatus>,
    /// Outcome of the latest emergency stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_stop: Option<EmergencyStopStatus>,
    /// The bootstrap restore of `spec.restore`: the backup pinned for this bot (chosen
    /// once, so a later backup never changes what a re-created pod restores) and what
    /// the pod's restore step did with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
    /// Version rollouts: the last version that passed the health gate, the rollout in
    /// progress, a version that failed and is not retried, and recent outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Security audit of the bot's API as the bot reports it (`GET /api/v1/security`):
    /// rejected authentications since the bot process started. Updated when the figures
    /// change; an `AuthFailures` Warning Event marks each increase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityStatus>,
    /// The exchange credentials the bot uses, as the bot reports them (`GET
    /// /api/v1/security`): a fingerprint and whether the newest set in the Secret was
    /// refused. Never a key or secret value. Present only with
    /// `spec.exchange.credentialsSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_credentials: Option<ExchangeCredentialsStatus>,
    /// The performance report asked for last with the annotation
    /// `trading.iq720.io/report` (value `daily`, `weekly` or `monthly`, optionally
    /// followed by `-` and any text to ask again): whether it is ready and where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportStatus>,
}

/// A performance report asked for with the annotation `trading.iq720.io/report`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportStatus {
    /// The annotation value this status answers (each distinct value is one request).
    #[schemars(length(max = 253))]
    pub request: String,
    /// `Ready`: the report is in the ConfigMap; `Waiting`: the bot's API does not answer
    /// yet (a stopped or starting bot), it is made once it does; `Failed`: the bot
    /// refused it or it could not be stored, retried at the next reconcile; `Invalid`:
    /// the value names no period, nothing is retried until it changes.
    pub result: ReportResult,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// The ConfigMap holding the reports (`<bot>-report`): key `<period>.json` for
    /// programs and `<period>.txt` for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// When the report was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<Time>,
}

/// Outcome of a report request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReportResult {
    /// The report is stored in the ConfigMap.
    Ready,
    /// Made once the bot's API answers.
    Waiting,
    /// Making or storing it failed; retried at the next reconcile.
    Failed,
    /// The value names no period; nothing is retried until it changes.
    Invalid,
}

/// The exchange credentials in use by the bot. The bot re-reads the mounted Secret
/// when it changes, verifies the new set and switches to it without a restart; a set
/// it refuses leaves the previous one in use and is named in `lastError`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeCredentialsStatus {
    /// First 12 hex characters of the sha256 over the key names and values of the set
    /// the bot uses: it tells two sets apart and cannot be turned back into
    /// credentials. Absent while the bot has no valid set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub fingerprint: Option<String>,
    /// When the bot loaded the set it uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_at: Option<Time>,
    /// Why the bot refused the newest set in the Secret (the previous set stays in
    /// use), for example `key apiKey is missing or empty`; absent when the newest set is
    /// the one in use. Names keys, never values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub last_error: Option<String>,
}

/// The bot's API security audit, from `GET /api/v1/security`. Never contains a token;
/// the per-token use (by the token Secret's key name) is in the bot's own answer and in
/// its metric `iq720_bot_token_last_used_timestamp_seconds`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityStatus {
    /// Requests to the bot's API rejected for a missing, malformed or unknown bearer
    /// token since the bot process started (a restart starts again from zero).
    #[serde(default)]
    pub auth_failures: i64,
    /// When the bot last rejected a request (absent before the first rejection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_auth_failure_at: Option<Time>,
}

/// Version rollouts of a bot. A change of `spec.version` away from `stableVersion`
/// is a rollout: wait for an allowed maintenance window (when one selects the bot) →
/// pre-update backup (when `spec.update.preUpdateBackup`) → halt new entries → roll
/// the pod → health gate within `spec.update.healthTimeout` (pod Ready, the bot reports
/// the new version, its engine loop iterates, market data is fresh). This status never
/// pins the image: the pod template follows `spec.version`, except that a version
/// recorded in `failedVersion` is replaced by `stableVersion` while `spec.version`
/// still names it and `spec.update.autoRollback` is true.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Last version that passed the health gate (or the version the bot first ran);
    /// a failed rollout goes back to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub stable_version: Option<String>,
    /// The rollout in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveRollout>,
    /// A version that failed its health gate. It is not rolled out again while
    /// `spec.version` names it: change `spec.version` to try again or to move on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub failed_version: Option<String>,
    /// Why `failedVersion` failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Rollbacks in a row without a successful rollout in between; at 3 automatic
    /// updates stop (condition `AutoUpdatesHalted`) until the annotation
    /// `trading.iq720.io/resume-updates` gets a new value.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub consecutive_rollbacks: i32,
    /// Value of the `trading.iq720.io/resume-updates` annotation acted on last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub last_resume_request: Option<String>,
    /// Outcomes of the latest rollouts, newest first (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub history: Vec<RolloutRecord>,
    /// The pre-update backup the pod of the stable version restores after a rollback,
    /// if the failed version migrated the database to a schema the stable version
    /// cannot open (the pod's restore step checks the schema on the volume and leaves
    /// a database it can open untouched). Replaced when the next rollout starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_restore: Option<RollbackRestore>,
}

/// A backup a rolled-back pod restores when the failed version migrated the schema.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRestore {
    /// The BackupSchedule that took the backup (its destination and credentials).
    #[schemars(length(max = 253))]
    pub backup_schedule: String,
    /// Object key of the verified pre-update backup.
    #[schemars(length(max = 1024))]
    pub key: String,
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// A rollout in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveRollout {
    /// Identifier of this rollout (also the value of the `trading.iq720.io/backup-now`
    /// annotation of its pre-update backup).
    #[schemars(length(max = 253))]
    pub id: String,
    /// Version the bot runs before the rollout (`stableVersion`).
    #[schemars(length(max = 128))]
    pub from_version: String,
    /// Version being rolled out.
    #[schemars(length(max = 128))]
    pub to_version: String,
    /// Current step.
    pub step: RolloutStep,
    /// When the rollout started (the operator saw the new version).
    pub started_at: Time,
    /// When the pod was rolled to the new version; the health gate's deadline is this
    /// plus `spec.update.healthTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_at: Option<Time>,
    /// The BackupSchedule that took the pre-update backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub backup_schedule: Option<String>,
    /// Object key of the verified pre-update backup, once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_key: Option<String>,
    /// What the current step waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Step of a rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutStep {
    /// Waiting for a maintenance window that allows upgrades.
    WaitingForWindow,
    /// Waiting for the pre-update backup to be verified.
    BackingUp,
    /// Pausing new entries on the running bot before its pod is replaced.
    HaltingEntries,
    /// The pod runs the new version; waiting for it to pass the health gate.
    HealthGate,
}

/// Outcome of one rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// Version before the rollout.
    #[schemars(length(max = 128))]
    pub from_version: String,
    /// Version rolled out.
    #[schemars(length(max = 128))]
    pub to_version: String,
    /// What happened.
    pub result: RolloutResult,
    /// Why, for anything but success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the rollout started.
    pub started_at: Time,
    /// When it ended.
    pub finished_at: Time,
    /// Milliseconds from the pod roll to the end (health gate passed, or given up and
    /// the rollback applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_ms: Option<i64>,
    /// Object key of the pre-update backup, when one was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_key: Option<String>,
}

/// Result of a rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutResult {
    /// The new version passed the health gate.
    Succeeded,
    /// The new version failed the health gate and the previous one was restored.
    RolledBack,
    /// The new version failed the health gate and stays (`autoRollback: false`).
    Failed,
    /// `spec.version` changed again, or an emergency stop interrupted it, before the
    /// rollout ended.
    Superseded,
}

/// A backup taken of the bot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// Object key of the backup.
    pub key: String,
    /// When the backup finished.
    pub time: Time,
    /// Whether the backup was downloaded again and verified.
    #[serde(default)]
    pub verified: bool,
}

/// State of the bot's API tokens. Never contains a token: only the names of the keys
/// of the token Secret that hold them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysStatus {
    /// When the tokens were last rotated (the old token removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated: Option<Time>,
    /// When the next scheduled rotation is due: `lastRotated` (or, before the first
    /// rotation, the token Secret's creation) plus `spec.apiKeys.rotationInterval`. A
    /// bot selected by a MaintenanceWindow rotates at the first window allowing
    /// `keyRotation` from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation: Option<Time>,
    /// Value of the `trading.iq720.io/rotate-keys` annotation acted on last (each
    /// distinct value asks for one rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub last_rotation_request: Option<String>,
    /// The rotation in progress, recorded before the new token is written to the
    /// Secret so that an operator restart resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<KeyRotationStatus>,
}

/// A rotation of the bot's API tokens in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotationStatus {
    /// Name of the token Secret's key that holds the new token (the name only, such as
    /// `token-1767225600`; never the token).
    #[schemars(length(max = 253))]
    pub new_key: String,
    /// When the rotation started.
    pub started_at: Time,
    /// When the bot accepted the new token and the operator switched to it; the old
    /// token is removed `spec.apiKeys.gracePeriod` later. Unset while the operator
    /// waits for the bot to load the new token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<Time>,
}

/// Outcome of an emergency stop.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyStopStatus {
    /// When the operator saw the stop request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Time>,
    /// When the stop finished: close-all confirmed flat (or gave up), recorded before
    /// the StatefulSet is scaled to zero. Unset while the stop is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// When `spec.emergencyStop` was set back to false; the record is kept until the
    /// bot is back and resumed, and a new stop starts a new record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Time>,
    /// Why positions may remain open, when they may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Number of positions the bot closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions_closed: Option<i32>,
    /// Whether positions may have been left open (the bot could not confirm it was flat).
    #[serde(default)]
    pub positions_may_remain: bool,
}

impl EmergencyStopStatus {
    /// A stop was requested and has not been cleared: the stop is still in force.
    pub fn in_force(&self) -> bool {
        self.cleared_at.is_none() && self.requested_at.is_some()
    }
}

impl TradingBotStatus {
    /// The status records an emergency stop that is in force (started, not cleared).
    pub fn stop_in_force(&self) -> bool {
        self.emergency_stop
            .as_ref()
            .is_some_and(EmergencyStopStatus::in_force)
    }
}
