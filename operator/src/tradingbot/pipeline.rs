//! The TradingBot reconcile pipeline, one step per module:
//! decide ([`super::decide`]) → emergency stop ([`super::emergency`], before anything
//! else) → validate ([`super::validate`]) → build ([`super::build`], pure) → apply
//! ([`super::apply`]) → converse with the bot ([`super::converse`]) → status
//! ([`super::status`], one write, only on change).

use iq720_crds::trading_bot::TradingBotPhase;
use iq720_crds::{TradingBot, TradingBotStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Duration;
use tracing::{debug, warn};

use super::apply::{self, StorageOutcome};
use super::build::{self, Owner};
use super::decide::{self, Plan};
use super::error::{Error, Result};
use super::status::{self, condition, set_condition};
use super::{converse, emergency, validate};
use crate::botlink::BotRef;
use crate::botlink::client::BotApiError;
use crate::botlink::endpoint::{self, PodLookup};
use crate::botlink::token::{self, TokenError};
use crate::shared::apply::is_controlled_by;
use crate::shared::cache::lookup;
use crate::shared::conditions;
use crate::shared::context::Context;

/// Requeue after a failure that may pass on retry.
const RETRY_SOON: Duration = Duration::from_secs(5);

/// Reconciles a TradingBot that is not being deleted.
pub async fn reconcile(bot: &TradingBot, ctx: &Context) -> Result<Action> {
    let owner = Owner::of(bot)?;
    let problems = validate::problems(bot);
    match decide::plan(bot, &problems) {
        Plan::EmergencyStop => emergency::reconcile(bot, ctx, &owner, &problems).await,
        Plan::Invalid => invalid(bot, ctx, &owner, &problems).await,
        Plan::Run => run(bot, ctx, &owner).await,
    }
}

fn base_status(bot: &TradingBot) -> TradingBotStatus {
    let mut st = bot.status.clone().unwrap_or_default();
    st.observed_generation = bot.metadata.generation;
    st
}

/// Reports the problems and waits for a spec change; the running bot keeps running as
/// it is, and pause still reaches it.
async fn invalid(
    bot: &TradingBot,
    ctx: &Context,
    owner: &Owner,
    problems: &[String],
) -> Result<Action> {
    let generation = bot.metadata.generation;
    let mut st = base_status(bot);
    validate::report(&mut st, problems, generation);
    decide::mark_cleared(&mut st, now());
    st.phase = Some(TradingBotPhase::Invalid);
    if decide::invalid_event_due(bot.status.as_ref(), generation) {
        ctx.event(
            bot,
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            problems.join("; "),
        )
        .await;
    }
    let target = BotRef::new(&owner.namespace, &owner.name);
    if let Some(tok) = token::read(&ctx.client, &target).await?
        && let Some(pod) = endpoint::lookup(&ctx.client, &target, &tok).await?.found()
        && pod.ready
        && !pod.terminating
        && let Err(e) = converse::sync_pause(ctx, bot, &pod.endpoint).await
    {
        warn!(bot = %owner.name, error = %e, "cannot set pause on a bot with an invalid spec");
    }
    status::write(ctx, bot, st).await?;
    // Nothing changes until the spec does: no requeue, no hot loop.
    Ok(Action::await_change())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn run(bot: &TradingBot, ctx: &Context, owner: &Owner) -> Result<Action> {
    let generation = bot.metadata.generation;
    let mut st = base_status(bot);
    validate::report(&mut st, &[], generation);
    let recovering = decide::mark_cleared(&mut st, now());
    let target = BotRef::new(&owner.namespace, &owner.name);

    // token
    let token_meta = owner.metadata(target.token_secret_name());
    let cached_token = ctx.tokens.get(&owner.namespace, &owner.name);
    let tok = match cached_token {
        Some(t) => t,
        None => match token::ensure(&ctx.client, &target, token_meta, |s| {
            is_controlled_by(s, &owner.reference.uid)
        })
        .await
        {
            Ok(t) => {
                ctx.tokens.put(&owner.namespace, &owner.name, &t);
                t
            }
            Err(TokenError::NotOwned(name)) => {
                let message = format!(
                    "Secret {name} exists and is not owned by this bot; refusing to take it over (delete or rename it)"
                );
                refuse(ctx, bot, &mut st, &message).await;
                st.phase = Some(TradingBotPhase::Failed);
                status::write(ctx, bot, st).await?;
                return Ok(Action::await_change());
            }
            Err(e) => return Err(e.into()),
        },
    };

    // build, apply
    let mut desired = build::desired(bot, 1, &ctx.settings.bot_ingress)?;
    let outcome = apply::apply_all(ctx, owner, &mut desired).await;
    if outcome.all_applied() {
        set_condition(
            &mut st.conditions,
            condition::RESOURCES_APPLIED,
            true,
            "Applied",
            "every owned object is applied",
            generation,
        );
    } else {
        let message = outcome.message();
        refuse(ctx, bot, &mut st, &message).await;
    }
    match &outcome.storage {
        Some(StorageOutcome::Refused(why)) => {
            let changed = conditions::find(&st.conditions, condition::STORAGE_IN_SYNC)
                .is_none_or(|c| c.message != *why);
            set_condition(
                &mut st.conditions,
                condition::STORAGE_IN_SYNC,
                false,
                "ChangeRefused",
                why,
                generation,
            );
            if changed {
                ctx.event(
                    bot,
                    EventType::Warning,
                    "StorageChangeRefused",
                    "Apply",
                    why.clone(),
                )
                .await;
            }
        }
        Some(StorageOutcome::Expanding { to }) => {
            set_condition(
                &mut st.conditions,
                condition::STORAGE_IN_SYNC,
                true,
                "Expanded",
                &format!(
                    "the data volume was asked to grow to {to}; the StatefulSet's claim template keeps its original size (immutable)"
                ),
                generation,
            );
        }
        Some(StorageOutcome::InSync) => {
            set_condition(
                &mut st.conditions,
                condition::STORAGE_IN_SYNC,
                true,
                "InSync",
                "the data volume matches spec.storage",
                generation,
            );
        }
        None => {}
    }
    if recovering {
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            true,
            "Recovering",
            "emergency stop cleared; the bot restarts halted and is resumed once ready",
            generation,
        );
    } else {
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            false,
            "NotStopped",
            "no emergency stop",
            generation,
        );
    }
    let requeue = if outcome.has_transient_failure() {
        RETRY_SOON
    } else {
        ctx.settings.bot_poll_interval
    };

    // converse
    let found = match ctx.cache.stores() {
        Some(stores) => endpoint::from_cached(
            lookup(&stores.pods, &owner.namespace, &target.pod_name()).as_deref(),
            &tok,
        ),
        None => endpoint::lookup(&ctx.client, &target, &tok).await?,
    };
    let pod = match found {
        PodLookup::Found(p) if p.ready && !p.terminating => p,
        PodLookup::Found(_) | PodLookup::NoAddress => {
            converse::starting(&mut st, "the bot pod is not ready yet", generation);
            status::write(ctx, bot, st).await?;
            return Ok(Action::requeue(requeue));
        }
        PodLookup::Missing => {
            converse::starting(&mut st, "the bot pod is not running yet", generation);
            status::write(ctx, bot, st).await?;
            return Ok(Action::requeue(requeue));
        }
    };
    match converse::converse(ctx, bot, &pod.endpoint, &desired, &mut st).await {
        Ok(report) => status::apply_report(&mut st, &report, generation),
        Err(Error::Bot(e)) => {
            debug!(bot = %owner.name, error = %e, "bot API call failed");
            if matches!(e, BotApiError::Status { status: 401, .. }) {
                // The token Secret changed: read it again next time.
                ctx.tokens.forget(&owner.namespace, &owner.name);
            }
            set_condition(
                &mut st.conditions,
                condition::READY,
                false,
                "BotUnreachable",
                &e.to_string(),
                generation,
            );
            st.phase = Some(TradingBotPhase::Starting);
        }
        Err(e) => return Err(e),
    }
    status::write(ctx, bot, st).await?;
    Ok(Action::requeue(requeue))
}

/// Records that owned objects could not be applied: `ResourcesApplied` False and a
/// Warning Event when the message is new.
async fn refuse(ctx: &Context, bot: &TradingBot, st: &mut TradingBotStatus, message: &str) {
    let changed = conditions::find(&st.conditions, condition::RESOURCES_APPLIED)
        .is_none_or(|c| c.status != "False" || c.message != message);
    set_condition(
        &mut st.conditions,
        condition::RESOURCES_APPLIED,
        false,
        "ApplyFailed",
        message,
        bot.metadata.generation,
    );
    if changed {
        warn!(bot = ?bot.metadata.name, message, "owned objects not applied");
        ctx.event(
            bot,
            EventType::Warning,
            "ApplyFailed",
            "Apply",
            message.to_string(),
        )
        .await;
    }
}
