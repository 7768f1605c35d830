//! Status: conditions, phase and the figures read from the bot, and the one place
//! that writes them. Status is written only when it differs from the stored one, with
//! server-side apply under this controller's own status field manager.

use iq720_contract::api::{PerformanceResponse, SecurityResponse, StatusResponse};
use iq720_contract::config::SourceUse;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_crds::{TradingBot, TradingBotStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::debug;

use super::STATUS_MANAGER;
use super::error::Result;
pub use crate::shared::conditions::{is_true, remove_condition, set_condition};
use crate::shared::context::Context;

/// Condition types written by the TradingBot controller.
pub mod condition {
    /// The bot runs and answers its API.
    pub const READY: &str = "Ready";
    /// The active market-data source is fresh.
    pub const MARKET_DATA_HEALTHY: &str = "MarketDataHealthy";
    /// New entries are paused.
    pub const PAUSED: &str = "Paused";
    /// An emergency stop is in force.
    pub const EMERGENCY_STOPPED: &str = "EmergencyStopped";
    /// The spec has a problem the CRD schema cannot catch.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Every owned object was applied (False names the object and the apiserver's
    /// reason, e.g. a name taken by an object the bot does not own).
    pub const RESOURCES_APPLIED: &str = "ResourcesApplied";
    /// The data volume matches `spec.storage` (False: a change that cannot be made).
    pub const STORAGE_IN_SYNC: &str = "StorageInSync";
    /// A pod-restarting change waits for a maintenance window (True: the message says
    /// what waits and when the window opens; the running pod stays as it is).
    pub use crate::shared::gate::MAINTENANCE_PENDING;
}

/// Whether two statuses differ only in the live figures (PnL, win rate), which are
/// written at a bounded rate instead of at every poll.
pub fn only_figures_differ(old: &TradingBotStatus, new: &TradingBotStatus) -> bool {
    let blank = |s: &TradingBotStatus| TradingBotStatus {
        pnl: None,
        win_rate: None,
        ..s.clone()
    };
    blank(old) == blank(new)
}

/// The condition of a type in a status.
pub fn find_condition<'a>(
    st: &'a TradingBotStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    crate::shared::conditions::find(&st.conditions, type_)
}

/// What [`write`] did.
#[derive(Debug, Clone)]
pub enum Written {
    /// The new status was stored; the object as the apiserver returned it (its new
    /// `resourceVersion` is the precondition of a later write in the same reconcile).
    Stored(Box<TradingBot>),
    /// Nothing to store: equal to the stored status, or only live figures changed
    /// and their bounded write rate is not due.
    Unchanged,
    /// The status was computed from an object that is no longer the newest (another
    /// write came first). Nothing was stored; the newer object triggers a new
    /// reconcile, which computes the status again.
    Stale,
}

impl Written {
    /// Whether what this reconcile decided is now the stored truth (or was already),
    /// so that its Events and counters may be announced. False only for [`Written::Stale`].
    pub fn landed(&self) -> bool {
        !matches!(self, Written::Stale)
    }
}

/// The key of a bot's status-write and figure-read times in the context.
pub fn figures_key(namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", super::CONTROLLER)
}

/// Writes the status when it differs from the stored one.
///
/// Why the `resourceVersion` precondition: a reconcile can run on a cached object
/// that is older than the last status write (a pod event arrives before the watch
/// delivers that write). A status computed from it would undo the newer one and
/// announce the same transition twice (for example a rollback: two Events and the
/// counter at 2). With the object's `resourceVersion` in the apply patch the
/// apiserver refuses such a write (409), and the caller announces nothing.
pub async fn write(ctx: &Context, bot: &TradingBot, new: TradingBotStatus) -> Result<Written> {
    if bot.status.as_ref() == Some(&new) {
        return Ok(Written::Unchanged);
    }
    let key = figures_key(&bot.namespace().unwrap_or_default(), &bot.name_any());
    if let Some(old) = &bot.status
        && only_figures_differ(old, &new)
        && !ctx.figures_due(&key)
    {
        // Live figures change at every poll; they reach the status at a bounded rate.
        return Ok(Written::Unchanged);
    }
    let api: Api<TradingBot> =
        Api::namespaced(ctx.client.clone(), &bot.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": TradingBot::api_version(&()),
        "kind": TradingBot::kind(&()),
        "metadata": { "resourceVersion": bot.resource_version() },
        "status": new,
    });
    let stored = match api
        .patch_status(
            &bot.name_any(),
            &PatchParams::apply(STATUS_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(stored) => stored,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            debug!(bot = %bot.name_any(), "status computed from an older object; not written");
            ctx.metrics
                .stale_status_writes
                .with_label_values(&[super::CONTROLLER])
                .inc();
            return Ok(Written::Stale);
        }
        Err(e) => return Err(e.into()),
    };
    ctx.metrics
        .status_writes
        .with_label_values(&[super::CONTROLLER])
        .inc();
    ctx.status_written(&key, true);
    let phase = new.phase.map(|p| format!("{p:?}")).unwrap_or_default();
    ctx.record_phase(
        &bot.namespace().unwrap_or_default(),
        &bot.name_any(),
        Some(phase),
    );
    Ok(Written::Stored(Box::new(stored)))
}

/// What the operator learned from the bot's `/status` and `/performance`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BotReport {
    /// Version the bot reports.
    pub version: Option<String>,
    /// New entries paused.
    pub paused: bool,
    /// Entries halted (risk limit or emergency stop), with the reason.
    pub halted: Option<String>,
    /// Open positions.
    pub open_positions: i32,
    /// Win rate over all closed trades, as read in this poll.
    pub win_rate: WinRate,
    /// Realised PnL in the stake currency.
    pub pnl: f64,
    /// Name of the market-data source in use.
    pub active_market_data: Option<String>,
    /// Whether the active source is fresh.
    pub market_data_fresh: bool,
    /// `marketData.use` the bot reports (`None` from bots older than the field).
    pub market_data_use: Option<SourceUse>,
    /// Whether the source the bot is not using is fresh (`None`: there is none, or the
    /// bot does not say).
    pub other_source_fresh: Option<bool>,
    /// The bot's security audit (`/api/v1/security`), read once per poll, when it
    /// answered; later steps (exchange credentials) read it from here.
    pub security: Option<SecurityResponse>,
}

/// A bot's win rate as one poll saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum WinRate {
    /// Not asked for in this poll (it is read at the figures' rate): the stored
    /// figure stays.
    #[default]
    NotRead,
    /// No trade closed yet.
    NoTrades,
    /// Percent of closed trades that won.
    Percent(f64),
}

impl BotReport {
    /// The figures the operator needs, from the bot's typed `/status` answer and its
    /// `/performance` answer when it was asked for one in this poll.
    pub fn from_api(status: &StatusResponse, performance: Option<&PerformanceResponse>) -> Self {
        // The bot reports winRate as a fraction of closed trades (0 when none).
        let win_rate = match performance.map(|p| &p.all_time) {
            None => WinRate::NotRead,
            Some(all) if all.trades == 0 => WinRate::NoTrades,
            Some(all) => WinRate::Percent(all.win_rate * 100.0),
        };
        Self {
            version: Some(status.version.clone()),
            paused: status.paused,
            halted: status.halted.then(|| {
                status
                    .halt_reason
                    .clone()
                    .unwrap_or_else(|| "halted".to_string())
            }),
            open_positions: i32::try_from(status.open_positions).unwrap_or(i32::MAX),
            win_rate,
            pnl: status.realized_pnl,
            active_market_data: Some(status.active_market_data.clone()),
            market_data_fresh: status.market_data.fresh,
            market_data_use: status.market_data.use_source,
            other_source_fresh: status
                .market_data
                .sources
                .iter()
                .find(|s| !s.active)
                .map(|s| s.fresh),
            security: None,
        }
    }
}

/// The `MarketDataHealthy` condition of a report: status, reason, message. A pinned
/// source (`spec.marketData.use`) is never failed away from, so its staleness is said
/// as such, with what would help. The message holds no ages, so an unchanged state
/// never rewrites the status.
pub fn market_data_health(report: &BotReport) -> (bool, &'static str, String) {
    let name = report.active_market_data.as_deref().unwrap_or("?");
    match (report.market_data_use, report.market_data_fresh) {
        (Some(pin @ (SourceUse::Primary | SourceUse::Backup)), true) => (
            true,
            "Pinned",
            format!(
                "spec.marketData.use pins the bot to the {pin} source {name}, which is fresh; no automatic failover while pinned"
            ),
        ),
        (Some(pin @ (SourceUse::Primary | SourceUse::Backup)), false) => {
            let hint = match report.other_source_fresh {
                Some(true) => {
                    "; the other source is fresh: set spec.marketData.use to auto to fail over"
                }
                Some(false) => "; the other source is stale too",
                None => "",
            };
            (
                false,
                "PinnedSourceStale",
                format!(
                    "spec.marketData.use pins the bot to the {pin} source {name}, which is stale (no automatic failover while pinned){hint}"
                ),
            )
        }
        (_, true) => (
            true,
            "Fresh",
            "the active market-data source is fresh".to_string(),
        ),
        (_, false) => (
            false,
            "Stale",
            "the active market-data source is stale".to_string(),
        ),
    }
}

/// Formats a win rate for the printer column, e.g. `57.1%`.
pub fn format_win_rate(rate: f64) -> String {
    format!("{rate:.1}%")
}

/// Formats PnL for the printer column, e.g. `+12.40`.
pub fn format_pnl(pnl: f64) -> String {
    format!("{pnl:+.2}")
}

/// Fills the bot-derived fields of a status from a report.
pub fn apply_report(status: &mut TradingBotStatus, report: &BotReport, generation: Option<i64>) {
    status.current_version = report.version.clone();
    status.open_positions = Some(report.open_positions);
    match report.win_rate {
        WinRate::NotRead => {}
        WinRate::NoTrades => status.win_rate = None,
        WinRate::Percent(p) => status.win_rate = Some(format_win_rate(p)),
    }
    status.pnl = Some(format_pnl(report.pnl));
    status.active_market_data = report.active_market_data.clone();
    let c = &mut status.conditions;
    set_condition(
        c,
        condition::READY,
        true,
        "BotRunning",
        "the bot runs and answers its API",
        generation,
    );
    let (healthy, reason, message) = market_data_health(report);
    set_condition(
        c,
        condition::MARKET_DATA_HEALTHY,
        healthy,
        reason,
        &message,
        generation,
    );
    if report.paused {
        set_condition(
            c,
            condition::PAUSED,
            true,
            "Paused",
            "new entries are paused; open positions are managed",
            generation,
        );
    } else {
        set_condition(
            c,
            condition::PAUSED,
            false,
            "Trading",
            "new entries allowed",
            generation,
        );
    }
    status.phase = Some(if let Some(reason) = &report.halted {
        set_condition(
            c,
            condition::READY,
            true,
            "BotHalted",
            &format!("the bot halted new entries: {reason}"),
            generation,
        );
        TradingBotPhase::Halted
    } else if report.paused {
        TradingBotPhase::Paused
    } else {
        TradingBotPhase::Running
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_alone_are_rate_limited_positions_are_not() {
        let old = TradingBotStatus {
            pnl: Some("+1.00".into()),
            win_rate: Some("50.0%".into()),
            open_positions: Some(1),
            ..TradingBotStatus::default()
        };
        let figures = TradingBotStatus {
            pnl: Some("+2.00".into()),
            win_rate: Some("51.0%".into()),
            ..old.clone()
        };
        assert!(only_figures_differ(&old, &figures));
        let positions = TradingBotStatus {
            open_positions: Some(2),
            ..figures.clone()
        };
        assert!(!only_figures_differ(&old, &positions));
        let phase = TradingBotStatus {
            phase: Some(TradingBotPhase::Paused),
            ..figures
        };
        assert!(!only_figures_differ(&old, &phase));
    }

    fn status(v: serde_json::Value) -> StatusResponse {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn report_reads_the_typed_answers() {
        let st = status(json!({"version": "0.1.0", "paused": true, "halted": false,
            "haltReason": null, "openPositions": 2, "realizedPnl": -3.5,
            "activeMarketData": "backup", "marketData": {"fresh": true}}));
        let perf: PerformanceResponse =
            serde_json::from_value(json!({"allTime": {"winRate": 0.625, "trades": 8}})).unwrap();
        let r = BotReport::from_api(&st, Some(&perf));
        assert_eq!(r.open_positions, 2);
        assert!(r.paused && r.halted.is_none() && r.market_data_fresh);
        assert_eq!(r.active_market_data.as_deref(), Some("backup"));
        let mut ts = TradingBotStatus::default();
        apply_report(&mut ts, &r, Some(3));
        assert_eq!(ts.phase, Some(TradingBotPhase::Paused));
        assert_eq!(ts.win_rate.as_deref(), Some("62.5%"));
        assert_eq!(ts.pnl.as_deref(), Some("-3.50"));
        assert!(is_true(&ts.conditions, condition::PAUSED));
    }

    #[test]
    fn halt_reason_and_no_trades() {
        let st = status(json!({"version": "0.1.0", "paused": false, "halted": true,
            "haltReason": iq720_contract::CLOSE_ALL_HALT_REASON, "openPositions": 0,
            "realizedPnl": 0.0, "activeMarketData": "primary", "marketData": {"fresh": false}}));
        let perf: PerformanceResponse =
            serde_json::from_value(json!({"allTime": {"winRate": 0.0, "trades": 0}})).unwrap();
        let r = BotReport::from_api(&st, Some(&perf));
        assert_eq!(
            r.halted.as_deref(),
            Some(iq720_contract::CLOSE_ALL_HALT_REASON)
        );
        assert_eq!(r.win_rate, WinRate::NoTrades);
        let mut ts = TradingBotStatus {
            win_rate: Some("50.0%".into()),
            ..TradingBotStatus::default()
        };
        apply_report(&mut ts, &r, None);
        assert_eq!(ts.phase, Some(TradingBotPhase::Halted));
        assert_eq!(ts.win_rate, None, "no trades: no win rate");
    }

    #[test]
    fn a_win_rate_not_read_in_this_poll_keeps_the_stored_figure() {
        let st = status(json!({"version": "0.1.0", "paused": false, "halted": false,
            "openPositions": 1, "realizedPnl": 2.0, "activeMarketData": "primary",
            "marketData": {"fresh": true}}));
        let r = BotReport::from_api(&st, None);
        assert_eq!(r.win_rate, WinRate::NotRead);
        let mut ts = TradingBotStatus {
            win_rate: Some("62.5%".into()),
            ..TradingBotStatus::default()
        };
        apply_report(&mut ts, &r, None);
        assert_eq!(ts.win_rate.as_deref(), Some("62.5%"));
        assert_eq!(
            ts.pnl.as_deref(),
            Some("+2.00"),
            "PnL comes from /status, read every poll"
        );
    }

    #[test]
    fn a_pinned_stale_source_is_not_healthy_and_says_why() {
        let perf: PerformanceResponse =
            serde_json::from_value(json!({"allTime": {"winRate": 0.0, "trades": 0}})).unwrap();
        let report = |fresh: bool, use_: &str| {
            BotReport::from_api(
                &status(json!({"version": "0.1.0", "paused": false, "halted": false,
                    "openPositions": 0, "realizedPnl": 0.0, "activeMarketData": "sim-b",
                    "marketData": {"fresh": fresh, "use": use_, "active": "backup",
                    "sources": [{"name": "sim-a", "active": false, "fresh": true},
                                {"name": "sim-b", "active": true, "fresh": fresh}]}})),
                Some(&perf),
            )
        };
        let (ok, reason, message) = market_data_health(&report(false, "backup"));
        assert!(!ok);
        assert_eq!(reason, "PinnedSourceStale");
        assert!(!message.contains("  "), "{message}");
        assert!(
            message.contains("backup source sim-b")
                && message.contains("set spec.marketData.use to auto"),
            "{message}"
        );
        let (ok, reason, _) = market_data_health(&report(true, "backup"));
        assert!(ok && reason == "Pinned");
        assert_eq!(market_data_health(&report(true, "auto")).1, "Fresh");
        assert_eq!(market_data_health(&report(false, "auto")).1, "Stale");
        let mut ts = TradingBotStatus::default();
        apply_report(&mut ts, &report(false, "backup"), Some(1));
        assert!(!is_true(&ts.conditions, condition::MARKET_DATA_HEALTHY));
        assert_eq!(ts.active_market_data.as_deref(), Some("sim-b"));
    }

    #[test]
    fn garbage_from_the_bot_is_a_decode_error_not_a_default() {
        assert!(serde_json::from_value::<StatusResponse>(json!("nonsense")).is_err());
        assert!(serde_json::from_value::<StatusResponse>(json!({"paused": false})).is_err());
        assert!(serde_json::from_value::<PerformanceResponse>(json!(null)).is_err());
    }
}
