//! Status: conditions, phase and the figures read from the bot, and the one place
//! that writes them. Status is written only when it differs from the stored one, with
//! server-side apply under this controller's own status field manager.

use iq720_crds::trading_bot::TradingBotPhase;
use iq720_crds::{TradingBot, TradingBotStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

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
}

/// The condition of a type in a status.
pub fn find_condition<'a>(
    st: &'a TradingBotStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    crate::shared::conditions::find(&st.conditions, type_)
}

/// Writes the status when it differs from the stored one. Returns whether it wrote.
pub async fn write(ctx: &Context, bot: &TradingBot, new: TradingBotStatus) -> Result<bool> {
    if bot.status.as_ref() == Some(&new) {
        return Ok(false);
    }
    let api: Api<TradingBot> =
        Api::namespaced(ctx.client.clone(), &bot.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": TradingBot::api_version(&()),
        "kind": TradingBot::kind(&()),
        "status": new,
    });
    api.patch_status(
        &bot.name_any(),
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics
        .status_writes
        .with_label_values(&[super::CONTROLLER])
        .inc();
    let phase = new.phase.map(|p| format!("{p:?}")).unwrap_or_default();
    ctx.record_phase(
        &bot.namespace().unwrap_or_default(),
        &bot.name_any(),
        Some(phase),
    );
    Ok(true)
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
    /// Win rate over all closed trades, in percent (None before the first close).
    pub win_rate: Option<f64>,
    /// Realised PnL in the stake currency.
    pub pnl: f64,
    /// Name of the market-data source in use.
    pub active_market_data: Option<String>,
    /// Whether the active source is fresh.
    pub market_data_fresh: bool,
}

impl BotReport {
    /// Reads the fields the operator needs; missing fields fall back to safe values.
    pub fn from_json(status: &Value, performance: &Value) -> Self {
        let halted = status
            .get("halted")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        // The bot reports winRate as a fraction of closed trades (0 when none).
        let win_rate = match performance
            .pointer("/allTime/trades")
            .and_then(Value::as_i64)
        {
            Some(n) if n > 0 => performance
                .pointer("/allTime/winRate")
                .and_then(Value::as_f64)
                .map(|f| f * 100.0),
            _ => None,
        };
        Self {
            version: status
                .get("version")
                .and_then(Value::as_str)
                .map(str::to_string),
            paused: status
                .get("paused")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            halted: halted.then(|| {
                status
                    .get("haltReason")
                    .and_then(Value::as_str)
                    .unwrap_or("halted")
                    .to_string()
            }),
            open_positions: status
                .get("openPositions")
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(0),
            win_rate,
            pnl: status
                .get("realizedPnl")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            active_market_data: status
                .get("activeMarketData")
                .and_then(Value::as_str)
                .map(str::to_string),
            market_data_fresh: status
                .pointer("/marketData/fresh")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }
}

/// Formats a win rate for the printer column, e.g. `57.1%`.
pub fn format_win_rate(rate: Option<f64>) -> Option<String> {
    rate.map(|r| format!("{r:.1}%"))
}

/// Formats PnL for the printer column, e.g. `+12.40`.
pub fn format_pnl(pnl: f64) -> String {
    format!("{pnl:+.2}")
}

/// Fills the bot-derived fields of a status from a report.
pub fn apply_report(status: &mut TradingBotStatus, report: &BotReport, generation: Option<i64>) {
    status.current_version = report.version.clone();
    status.open_positions = Some(report.open_positions);
    status.win_rate = format_win_rate(report.win_rate);
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
    if report.market_data_fresh {
        set_condition(
            c,
            condition::MARKET_DATA_HEALTHY,
            true,
            "Fresh",
            "the active market-data source is fresh",
            generation,
        );
    } else {
        set_condition(
            c,
            condition::MARKET_DATA_HEALTHY,
            false,
            "Stale",
            "the active market-data source is stale",
            generation,
        );
    }
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
    use super::*;
    use serde_json::json;

    #[test]
    fn report_reads_bot_json() {
        let status = json!({"version": "0.1.0", "paused": true, "halted": false, "openPositions": 2,
            "realizedPnl": -3.5, "activeMarketData": "backup", "marketData": {"fresh": true}});
        let perf = json!({"allTime": {"winRate": 0.625, "trades": 8}});
        let r = BotReport::from_json(&status, &perf);
        assert_eq!(r.open_positions, 2);
        assert!(r.paused && r.halted.is_none() && r.market_data_fresh);
        let mut st = TradingBotStatus::default();
        apply_report(&mut st, &r, Some(3));
        assert_eq!(st.phase, Some(TradingBotPhase::Paused));
        assert_eq!(st.win_rate.as_deref(), Some("62.5%"));
        assert_eq!(st.pnl.as_deref(), Some("-3.50"));
        assert!(is_true(&st.conditions, condition::PAUSED));
    }

    #[test]
    fn garbage_from_the_bot_gives_safe_defaults() {
        let r = BotReport::from_json(&json!("nonsense"), &json!(null));
        assert_eq!(r, BotReport::default());
    }
}
