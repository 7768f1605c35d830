//! Deletion: halt the bot and close its positions before its pod goes away, then let
//! the finalizer go. Runs whatever the spec says, and also when the pod is already
//! terminating (foreground deletion, Argo CD's default, deletes the StatefulSet and its
//! pod while this runs): a terminating bot keeps answering its API during its grace
//! period, and close-all is retried until the deadline.
//!
//! On failure the deletion proceeds after the deadline with a Warning Event: a
//! finalizer that can never finish would keep the namespace from being deleted.
//!
//! Why the outcome is recorded in the status before the finalizer goes: the cleanup
//! can run twice. Its own status write triggers a reconcile that may start before the
//! finalizer's removal reaches the controller's cache, and the second run sees the
//! bot still deleting. By then the first run has let go of the bot's token and the
//! garbage collector may have deleted the token Secret and the pod: a second close-all
//! would fail and announce "positions may remain open" for a bot that was closed flat
//! (CI saw both Events on one deletion). The second run reads the record (Ready=False
//! with reason [`CLEANED_UP`], only ever written while the bot is being deleted, which
//! cannot be undone) and closes nothing and announces nothing.

use iq720_crds::{TradingBot, TradingBotStatus};
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{debug, info};

use super::build::Owner;
use super::emergency::{StopOutcome, close_all_with_retry};
use super::error::Result;
use super::status;
use crate::botlink::BotRef;
use crate::shared::context::Context;
use kube::api::Api;

/// The Ready condition's reason once the deletion's close-all has an outcome.
pub const CLEANED_UP: &str = "DeletionCleanupDone";

/// Closes the bot's positions before its deletion finishes.
pub async fn cleanup(bot: &TradingBot, ctx: &Context) -> Result<Action> {
    let owner = Owner::of(bot)?;
    let target = BotRef::new(&owner.namespace, &owner.name);
    // Decide on a fresh read: a cleanup that already ran may run again (the finalizer
    // is removed in a separate write), and the cache may not have its record yet.
    let api: Api<TradingBot> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let Some(fresh) = api.get_opt(&owner.name).await? else {
        return Ok(Action::await_change());
    };
    let last = fresh.status.clone().unwrap_or_default();
    if already_cleaned_up(&last) {
        debug!(bot = %owner.name, "the deletion's cleanup already ran; nothing to close again");
    } else {
        let stopped_flat = last.emergency_stop.as_ref().is_some_and(|e| {
            e.completed_at.is_some() && e.cleared_at.is_none() && !e.positions_may_remain
        });
        let outcome = if stopped_flat {
            StopOutcome::Flat { closed: 0 }
        } else {
            close_all_with_retry(ctx, &target, ctx.settings.close_all_deadline, &last).await?
        };
        // Recorded before the Event and before the finalizer goes (see the module doc).
        // Not stored only when another write came first; the outcome is announced
        // all the same (it happened), and the finalizer goes as it would.
        let record = recorded(last, &outcome, fresh.meta().generation);
        if !status::write(ctx, &fresh, record).await?.landed() {
            debug!(bot = %owner.name, "the cleanup's record was not stored");
        }
        announce(ctx, bot, &owner.name, &outcome).await;
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

/// Whether this deletion's cleanup has already run (see the module doc).
fn already_cleaned_up(last: &TradingBotStatus) -> bool {
    status::find_condition(last, status::condition::READY).is_some_and(|c| c.reason == CLEANED_UP)
}

/// The status that records the outcome: Ready=False with [`CLEANED_UP`], and no open
/// positions when the bot was closed flat.
fn recorded(
    mut st: TradingBotStatus,
    outcome: &StopOutcome,
    generation: Option<i64>,
) -> TradingBotStatus {
    let message = match outcome {
        StopOutcome::Flat { closed } => {
            st.open_positions = Some(0);
            format!("being deleted: halted and {closed} position(s) closed")
        }
        o if !o.may_remain() => {
            "being deleted: the pod was not running and held no positions".to_string()
        }
        _ => "being deleted: positions may remain open (see the Warning Event)".to_string(),
    };
    status::set_condition(
        &mut st.conditions,
        status::condition::READY,
        false,
        CLEANED_UP,
        &message,
        generation,
    );
    st
}

/// The Event that tells the user what the deletion did to the bot's positions.
async fn announce(ctx: &Context, bot: &TradingBot, name: &str, outcome: &StopOutcome) {
    match outcome {
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
            info!(bot = %name, "deleting a bot whose pod is not running and that held no positions");
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_of_a_flat_close_is_recognised_and_has_no_open_positions() {
        let before = TradingBotStatus {
            open_positions: Some(3),
            ..TradingBotStatus::default()
        };
        assert!(!already_cleaned_up(&before));
        let after = recorded(before, &StopOutcome::Flat { closed: 3 }, Some(2));
        assert!(already_cleaned_up(&after));
        assert_eq!(after.open_positions, Some(0));
        let ready = status::find_condition(&after, status::condition::READY);
        assert!(ready.is_some_and(|c| c.status == "False" && c.message.contains("3 position")));
    }

    #[test]
    fn a_failed_close_is_recorded_without_claiming_the_bot_is_flat() {
        let before = TradingBotStatus {
            open_positions: Some(3),
            ..TradingBotStatus::default()
        };
        let after = recorded(before, &StopOutcome::Failed("unreachable".into()), None);
        assert!(already_cleaned_up(&after));
        assert_eq!(after.open_positions, Some(3));
    }

    #[test]
    fn a_ready_condition_of_a_running_bot_is_not_the_record() {
        let mut st = TradingBotStatus::default();
        status::set_condition(
            &mut st.conditions,
            status::condition::READY,
            false,
            "PodNotReady",
            "starting",
            None,
        );
        assert!(!already_cleaned_up(&st));
    }
}
