//! Request and response bodies of the bot API (`/api/v1/*`) that the operator uses.
//!
//! Why here: the operator used to read the bot's answers by string keys
//! (`status.get("openPositions")`) with silent defaults, so a renamed field turned into
//! "0 open positions" instead of an error. These structs name the fields as the bot
//! sends them today; the bot's tests decode its real answers into them
//! (`bot/tests/contract.rs`). Fields the operator needs are required, so a bot that
//! stops sending one is a decode error; the rest are optional, and unknown fields are
//! ignored, so a bot may add fields without breaking an older operator.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::config::{FailbackPolicy, HotConfig, Mode, RiskConfig, SourceUse};
use crate::duration::HumanDuration;

/// Halt reason the bot records when it runs close-all (emergency stop or deletion).
/// A bot halted for this reason while its TradingBot does not ask for an emergency stop
/// is resumed by the operator: the stop was lifted, or the bot was recreated over the
/// retained volume of a deleted one. Halts for any other reason (risk limits) are never
/// lifted by the operator.
pub const CLOSE_ALL_HALT_REASON: &str = "emergency close-all requested over the API";

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    /// Bot name (`namespace/name` when run by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Version of the bot binary.
    pub version: String,
    /// Trading mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Exchange name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// `running`, `paused` or `halted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// New entries paused.
    pub paused: bool,
    /// New entries halted (risk limit or close-all).
    pub halted: bool,
    /// Why the bot is halted (`null` when it is not).
    #[serde(default)]
    pub halt_reason: Option<String>,
    /// Open positions, including those on pairs no longer configured.
    pub open_positions: u64,
    /// `risk.maxPositions` in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_positions: Option<u32>,
    /// Equity in the stake currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equity: Option<f64>,
    /// Free cash in the stake currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cash: Option<f64>,
    /// Realised profit and loss in the stake currency.
    pub realized_pnl: f64,
    /// Paper account starting balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_balance: Option<f64>,
    /// Stake currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stake_currency: Option<String>,
    /// Strategy name in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Traded pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<Vec<String>>,
    /// Name of the market-data source in use.
    pub active_market_data: String,
    /// Market-data state.
    pub market_data: MarketDataStatus,
    /// Seconds since the bot started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<f64>,
    /// Seconds since the engine loop last completed an iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_loop_age_seconds: Option<f64>,
    /// Schema version of the bot's database (`PRAGMA user_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
}

/// `marketData` of the status (also the body of `GET /api/v1/datasource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketDataStatus {
    /// Whether the active source is within `staleAfter`.
    pub fresh: bool,
    /// Role of the active source: `primary` or `backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// Name of the active source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_name: Option<String>,
    /// Why the active source is active: `initial`, `failover`, `failback`, `manual`,
    /// `pinned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<String>,
    /// `marketData.use` in force: `auto`, or the source the bot is pinned to (absent
    /// from bots older than the field).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_source: Option<SourceUse>,
    /// Automatic failovers since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failovers: Option<u64>,
    /// Fail-back policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback: Option<FailbackPolicy>,
    /// Staleness threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<HumanDuration>,
    /// Per-source state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceStatus>,
}

/// One market-data source in the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// Display name.
    pub name: String,
    /// Kind (`simulator`, `csv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `primary` or `backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Whether it is the active source.
    pub active: bool,
    /// Seconds since its last tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
    /// Whether that age is within `staleAfter`.
    pub fresh: bool,
    /// Whether the test hook holds it stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<bool>,
    /// Ticks produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticks: Option<u64>,
}

/// `GET /api/v1/performance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceResponse {
    /// Closed trades since the start of the UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub today: Option<PeriodStats>,
    /// Closed trades of the last 7 days.
    #[serde(default, rename = "last7Days", skip_serializing_if = "Option::is_none")]
    pub last_7_days: Option<PeriodStats>,
    /// All closed trades.
    pub all_time: PeriodStats,
    /// Open positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_positions: Option<u64>,
    /// Equity in the stake currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equity: Option<f64>,
    /// Paper account starting balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_balance: Option<f64>,
    /// Realised profit and loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realized_pnl: Option<f64>,
    /// Equity change since start, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pnl_percent: Option<f64>,
    /// Stake currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stake_currency: Option<String>,
}

/// Win/loss figures over a period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeriodStats {
    /// Closed trades.
    pub trades: u64,
    /// Closed with profit > 0.
    #[serde(default)]
    pub wins: u64,
    /// Closed with profit ≤ 0.
    #[serde(default)]
    pub losses: u64,
    /// `wins / trades` as a fraction in [0, 1] (0 when there are no trades).
    pub win_rate: f64,
    /// Sum of profit in the stake currency.
    #[serde(default)]
    pub pnl: f64,
}

/// `GET /api/v1/config` and the answer to `PATCH /api/v1/config`: the bot's whole
/// effective configuration, of which the operator reads the hot-reloadable part.
pub type ConfigResponse = HotConfig;

/// `PATCH /api/v1/config`: a JSON merge patch (RFC 7386) of hot-reloadable fields.
/// Unset fields are left alone; a strategy parameter set to `None` is sent as `null`,
/// which removes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigPatch {
    /// New risk limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskConfig>,
    /// New strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyPatch>,
    /// Pause or unpause new entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// New log retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogsPatch>,
    /// New market-data pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_data: Option<MarketDataPatch>,
}

/// The market-data part of a [`ConfigPatch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketDataPatch {
    /// New `marketData.use`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_source: Option<SourceUse>,
}

impl ConfigPatch {
    /// A patch that only pauses (`true`) or unpauses new entries.
    pub fn paused(paused: bool) -> Self {
        ConfigPatch {
            paused: Some(paused),
            ..ConfigPatch::default()
        }
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &ConfigPatch::default()
    }
}

/// The strategy part of a [`ConfigPatch`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyPatch {
    /// Strategy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Parameters to set (`Some`) or remove (`None`, sent as `null`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Option<f64>>,
}

/// The logs part of a [`ConfigPatch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsPatch {
    /// New `logs.compressAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress_after: Option<HumanDuration>,
    /// New `logs.deleteAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after: Option<HumanDuration>,
}

/// `POST /api/v1/trading/pause`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseResponse {
    /// Always true afterwards.
    pub paused: bool,
    /// Whether the bot is also halted.
    pub halted: bool,
    /// Why it is halted.
    #[serde(default)]
    pub halt_reason: Option<String>,
}

/// `POST /api/v1/trading/resume` (clears a pause and a halt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeResponse {
    /// Always false afterwards.
    pub paused: bool,
    /// Always false afterwards.
    pub halted: bool,
    /// The halt reason that was cleared, if any.
    #[serde(default)]
    pub cleared_halt_reason: Option<String>,
}

/// `POST /api/v1/emergency/close-all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseAllResponse {
    /// True afterwards: the bot is halted.
    pub halted: bool,
    /// Halt reason in force ([`CLOSE_ALL_HALT_REASON`] unless an earlier halt stays).
    #[serde(default)]
    pub halt_reason: Option<String>,
    /// Whether there was nothing to close.
    #[serde(default)]
    pub already_flat: bool,
    /// Orders canceled.
    #[serde(default)]
    pub canceled_orders: u64,
    /// One entry per position closed.
    pub positions: Vec<ClosedPosition>,
    /// Positions still open (0 on success).
    pub open_positions: u64,
}

/// One position closed by close-all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosedPosition {
    /// Trade id.
    pub trade_id: i64,
    /// Pair.
    pub pair: String,
    /// Amount sold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    /// Fill price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_rate: Option<f64>,
    /// Profit in the stake currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profit_abs: Option<f64>,
    /// `closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The body of every API error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an API error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_config`, `field_not_hot_reloadable`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// `GET /api/v1/security`: the bot's authentication audit since it started.
///
/// Why: the runbook's security audit asks who uses the API and whether anyone knocks
/// with a wrong token. The answer names tokens by their *id* (the key name of the token
/// Secret, which is the file name in the mounted token directory) and never carries a
/// token value or any part of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityResponse {
    /// Rejected authentications.
    pub auth_failures: AuthFailures,
    /// The tokens the bot accepts now, with their use.
    pub tokens: Vec<TokenUse>,
    /// The exchange credentials the bot uses (absent when none are configured, and
    /// from bots older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_credentials: Option<ExchangeCredentialsReport>,
}

/// The exchange credentials in use, mounted from `spec.exchange.credentialsSecretRef`
/// and re-read when the Secret changes. Never a key or secret value, nor any part of
/// one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeCredentialsReport {
    /// First 12 hex characters of the sha256 over the key names and values of the set
    /// in use (a one-way digest: it tells two sets apart, it does not reveal them);
    /// `null` while no verified set is loaded.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// When the set in use was loaded (RFC 3339).
    #[serde(default)]
    pub loaded_at: Option<String>,
    /// When the bot last saw the mounted files change (RFC 3339), applied or not.
    #[serde(default)]
    pub last_change_seen: Option<String>,
    /// Why the newest set seen was not taken (the previous set stays in use); `null`
    /// when the newest set is the one in use.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Rejected authentications since the bot started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthFailures {
    /// All rejected `/api/v1` requests.
    pub total: u64,
    /// Rejections by reason: `missing` (no Authorization header), `malformed` (not
    /// `Bearer <token>`), `invalid` (an unknown token), `no_tokens_configured`.
    #[serde(default)]
    pub by_reason: BTreeMap<String, u64>,
    /// When the last rejection happened (RFC 3339), `null` before the first.
    #[serde(default)]
    pub last_failure_at: Option<String>,
}

/// One accepted token and its use since the bot started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUse {
    /// The token's id: its key name in the token Secret (e.g. `token-1767225600`).
    pub id: String,
    /// When a request last authenticated with it (RFC 3339), `null` if never.
    #[serde(default)]
    pub last_used_at: Option<String>,
    /// Requests that authenticated with it.
    pub uses: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_patch_serialises_as_a_merge_patch() {
        assert_eq!(
            serde_json::to_value(ConfigPatch::paused(true)).unwrap(),
            json!({"paused": true})
        );
        let p = ConfigPatch {
            strategy: Some(StrategyPatch {
                name: Some("rsi".into()),
                params: BTreeMap::from([("rsiPeriod".into(), None), ("rsiBuy".into(), Some(25.0))]),
            }),
            ..ConfigPatch::default()
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"strategy": {"name": "rsi", "params": {"rsiBuy": 25.0, "rsiPeriod": null}}})
        );
        assert!(ConfigPatch::default().is_empty());
    }

    #[test]
    fn status_requires_what_the_operator_reads() {
        let ok = json!({"version": "1", "paused": false, "halted": true, "haltReason": "x",
            "openPositions": 0, "realizedPnl": 0.0, "activeMarketData": "p",
            "marketData": {"fresh": true}, "somethingNew": 1});
        let s: StatusResponse = serde_json::from_value(ok.clone()).unwrap();
        assert_eq!(s.halt_reason.as_deref(), Some("x"));
        let mut missing = ok;
        missing.as_object_mut().unwrap().remove("openPositions");
        assert!(serde_json::from_value::<StatusResponse>(missing).is_err());
    }
}
