//! Deletion: halt the bot and close its positions before its pod goes away, then let
//! the finalizer go. Runs whatever the spec says, and also when the pod is already
//! terminating (foreground deletion, Argo CD's default, deletes the StatefulSet and its
//! pod while this runs): a terminating bot keeps answering its API during its grace
//! period, and close-all is retried until the deadline.
//!
//! On failure the deletion proceeds after the deadline with a Warning Event: a
//! finalizer that can never finish would keep the namespace from being deleted.

use iq720_crds::TradingBot;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use super::build::Owner;
use super::emergency::{StopOutcome, close_all_with_retry};
use super::error::Result;
use super::status;
use crate::botlink::BotRef;
use crate::shared::context::Context;
use kube::api::Api;

/// Closes the bot's positions before its deletion finishes.
pub async fn cleanup(bot: &TradingBot, ctx: &Context) -> Result<Action> {
    let owner = Owner::of(bot)?;
    let target = BotRef::new(&owner.namespace, &owner.name);
    // Decide on a fresh read: a cleanup that already closed everything may run again
    // (the finalizer is removed in a separate write) after the pod is gone.
    let api: Api<TradingBot> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let Some(fresh) = api.get_opt(&owner.name).await? else {
        return Ok(Action::await_change());
    };
    let last = fresh.status.clone().unwrap_or_default();
    let stopped_flat = last.emergency_stop.as_ref().is_some_and(|e| {
        e.completed_at.is_some() && e.cleared_at.is_none() && !e.positions_may_remain
    });
    let outcome = if stopped_flat {
        StopOutcome::Flat { closed: 0 }
    } else {
        close_all_with_retry(ctx, &target, ctx.settings.close_all_deadline, &last).await?
    };
    if matches!(outcome, StopOutcome::Flat { .. }) && last.open_positions != Some(0) {
        // Recorded before the finalizer goes, so a repeated cleanup knows it is flat.
        let mut st = last.clone();
        st.open_positions = Some(0);
        status::write(ctx, &fresh, st).await?;
    }
    match &outcome {
        StopOutcome::Flat { closed } => {
            ctx.event(
                bot,
                EventType::Normal,
                "PositionsClosed",
                "Delete",
                format!("bot halted and {closed} position(s) closed before deletion"),
            )
            .await;
        }
        o if !o.may_remain() => {
            info!(bot = %owner.name, "deleting a bot whose pod is not running and that held no positions");
        }
        StopOutcome::Failed(why) => {
            ctx.event(
                bot,
                EventType::Warning,
                "PositionsMayRemainOpen",
                "Delete",
                format!(
                    "could not close positions before deletion ({why}); check the exchange account"
                ),
            )
            .await;
        }
        StopOutcome::NotRunning {
            last_known_open, ..
        } => {
            ctx.event(
                bot,
                EventType::Warning,
                "PositionsMayRemainOpen",
                "Delete",
                format!(
                    "the bot pod was not running, so its positions could not be closed before \
                     deletion (last reported open: {}); check the exchange account",
                    last_known_open.map_or("unknown".to_string(), |n| n.to_string())
                ),
            )
            .await;
        }
    }
    ctx.record_phase(&owner.namespace, &owner.name, None);
    ctx.applied.forget_owner(&owner.reference.uid);
    ctx.tokens.forget(&owner.namespace, &owner.name);
    ctx.hot_confirmed.forget(&owner.namespace, &owner.name);
    super::keys::forget_due(ctx, &target);
    ctx.status_written(
        &super::status::figures_key(&owner.namespace, &owner.name),
        false,
    );
    Ok(Action::await_change())
}
