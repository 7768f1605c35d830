//! Converse step: bring the running bot in line with the spec through its API (hot
//! configuration, pause, resume after a lifted emergency stop) and read its figures.
//!
//! Why a separate step: these are the changes that must never restart the pod, and
//! pause must keep working even when the rest of the spec is invalid.

use iq720_crds::trading_bot::TradingBotPhase;
use iq720_crds::{TradingBot, TradingBotStatus};
use kube::ResourceExt;
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::info;

use super::build::{self, DesiredObjects};
use super::error::Result;
use super::status::{BotReport, condition, set_condition};
use crate::botlink::CLOSE_ALL_HALT_REASON;
use crate::botlink::client::BotEndpoint;
use crate::shared::context::Context;

/// Whether a bot reporting `halted` should be resumed for a spec without an emergency
/// stop: only a halt that close-all caused.
pub fn should_resume(emergency_stop_wanted: bool, halted: Option<&str>) -> bool {
    !emergency_stop_wanted && halted == Some(CLOSE_ALL_HALT_REASON)
}

/// The pause a bot should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pause {
    /// `spec.paused` OR an open maintenance window with `pauseTrading`.
    pub paused: bool,
    /// The window that pauses the bot when the spec does not (for the Event).
    pub window: Option<String>,
}

impl Pause {
    /// The pause the spec alone asks for.
    pub fn of_spec(bot: &TradingBot) -> Self {
        Self {
            paused: bot.spec.paused,
            window: None,
        }
    }
}

/// Sets the bot's pause to `wanted`; returns whether it changed anything.
pub async fn sync_pause(
    ctx: &Context,
    bot: &TradingBot,
    ep: &BotEndpoint,
    wanted: &Pause,
) -> Result<bool> {
    let status = ctx.bots.status(ep).await?;
    let paused_now = status.paused;
    if paused_now == wanted.paused {
        return Ok(false);
    }
    ctx.bots
        .patch_config(ep, &json!({ "paused": wanted.paused }))
        .await?;
    let (reason, note) = match (wanted.paused, &wanted.window) {
        (true, Some(w)) => (
            "Paused",
            format!(
                "new entries paused for maintenance window {w}; open positions keep being managed"
            ),
        ),
        (true, None) => (
            "Paused",
            "new entries paused; open positions keep being managed".to_string(),
        ),
        (false, _) => ("Unpaused", "new entries allowed again".to_string()),
    };
    ctx.event(bot, EventType::Normal, reason, "Pause", note)
        .await;
    Ok(true)
}

/// Brings the running bot in line with the spec and reads its figures.
pub async fn converse(
    ctx: &Context,
    bot: &TradingBot,
    ep: &BotEndpoint,
    desired: &DesiredObjects,
    pause: &Pause,
    st: &mut TradingBotStatus,
) -> Result<BotReport> {
    let generation = bot.metadata.generation;
    let status_json = ctx.bots.status(ep).await?;
    let halted = status_json.halted;
    let reason = status_json.halt_reason.as_deref();
    if halted && should_resume(bot.spec.emergency_stop, reason) {
        ctx.bots.resume(ep).await?;
        let lifted = st.emergency_stop.is_some();
        st.emergency_stop = None;
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            false,
            "Recovered",
            "no emergency stop; the bot was resumed",
            generation,
        );
        let note = if lifted {
            "emergency stop cleared: the bot is back and resumed"
        } else {
            "the bot's database carried the halt of an earlier close-all (a deleted bot of \
             the same name); the spec asks to trade, so the bot was resumed"
        };
        ctx.event(
            bot,
            EventType::Normal,
            "Resumed",
            "Resume",
            note.to_string(),
        )
        .await;
        info!(bot = %bot.name_any(), "resumed a bot halted by close-all");
    }
    // Hot-reloadable configuration (pause is compared with the engine's live state).
    let mut hot = desired.config.hot.clone();
    if let Some(obj) = hot.as_object_mut() {
        obj.remove("paused");
    }
    let reported = ctx.bots.config(ep).await?;
    if let Some(patch) = build::bot_config::hot_diff(&hot, &reported) {
        match ctx.bots.patch_config(ep, &patch).await {
            Ok(_) => {
                ctx.metrics
                    .hot_reloads
                    .with_label_values(&["applied"])
                    .inc();
                let fields: Vec<&String> = patch
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                ctx.event(
                    bot,
                    EventType::Normal,
                    "ConfigReloaded",
                    "HotReload",
                    format!("applied {fields:?} to the running bot without a restart"),
                )
                .await;
            }
            Err(e) => {
                ctx.metrics.hot_reloads.with_label_values(&["failed"]).inc();
                ctx.event(
                    bot,
                    EventType::Warning,
                    "ConfigReloadFailed",
                    "HotReload",
                    e.to_string(),
                )
                .await;
                return Err(e.into());
            }
        }
    }
    sync_pause(ctx, bot, ep, pause).await?;
    let status_json = ctx.bots.status(ep).await?;
    let performance = ctx.bots.performance(ep).await?;
    Ok(BotReport::from_api(&status_json, &performance))
}

/// Status of a bot whose pod is not running or not ready yet.
pub fn starting(st: &mut TradingBotStatus, why: &str, generation: Option<i64>) {
    st.phase = Some(TradingBotPhase::Starting);
    set_condition(
        &mut st.conditions,
        condition::READY,
        false,
        "Starting",
        why,
        generation,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_close_all_halt_is_lifted() {
        assert!(should_resume(false, Some(CLOSE_ALL_HALT_REASON)));
        assert!(!should_resume(true, Some(CLOSE_ALL_HALT_REASON)));
        assert!(!should_resume(false, Some("daily loss limit reached")));
        assert!(!should_resume(false, None));
    }
}
