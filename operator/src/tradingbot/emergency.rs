//! Emergency stop: close every position, confirm the bot is flat and halted, scale the
//! StatefulSet to zero. If the bot cannot be reached or close-all fails within the
//! deadline, scale to zero anyway and say that positions may remain open.
//!
//! Recovery (flag set back to false) is handled by the normal pipeline: the bot is
//! scaled back to one replica, starts halted (the halt is persisted in its database)
//! and is resumed by the operator once it answers.

use std::sync::Arc;
use std::time::Instant;

use iq720_crds::trading_bot::TradingBotPhase;
use iq720_crds::{TradingBot, TradingBotStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Duration;

use super::build::Owner;
use super::reconcile::{StopOutcome, close_all, finish_stop};
use crate::context::Context;
use crate::error::Result;

/// Reconciles a bot whose `spec.emergencyStop` is true.
pub async fn reconcile(
    bot: Arc<TradingBot>,
    ctx: &Context,
    owner: &Owner,
    token: &str,
    st: TradingBotStatus,
) -> Result<Action> {
    let done = st
        .emergency_stop
        .as_ref()
        .is_some_and(|e| e.completed_at.is_some())
        && st.phase == Some(TradingBotPhase::EmergencyStopped);
    if done {
        // Keep the StatefulSet at zero (re-applied in case someone scaled it up).
        let desired = super::build::desired(&bot, 0)?;
        super::reconcile::apply_objects(ctx, &owner.namespace, &desired).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let started = Instant::now();
    let requested_at = st
        .emergency_stop
        .as_ref()
        .and_then(|e| e.requested_at.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    ctx.event(
        bot.as_ref(),
        EventType::Warning,
        "EmergencyStopRequested",
        "EmergencyStop",
        "closing every position, halting trading and scaling to zero".to_string(),
    )
    .await;
    let outcome = match super::reconcile::bot_endpoint(ctx, owner, token).await? {
        None => StopOutcome {
            closed: None,
            error: Some(
                "the bot pod is not running, so its positions could not be closed".to_string(),
            ),
        },
        Some(ep) => match close_all(ctx, &ep).await {
            Ok(closed) => {
                ctx.event(
                    bot.as_ref(),
                    EventType::Normal,
                    "PositionsClosed",
                    "EmergencyStop",
                    format!("{closed} position(s) closed; the bot is flat and halted"),
                )
                .await;
                StopOutcome {
                    closed: Some(closed),
                    error: None,
                }
            }
            Err(e) => StopOutcome {
                closed: None,
                error: Some(format!("close-all failed: {e}")),
            },
        },
    };
    if let Some(why) = &outcome.error {
        ctx.event(
            bot.as_ref(),
            EventType::Warning,
            "PositionsMayRemainOpen",
            "EmergencyStop",
            format!("{why}; scaling to zero anyway; check the exchange account"),
        )
        .await;
    }
    finish_stop(ctx, &bot, owner, st, requested_at, started, outcome).await
}
