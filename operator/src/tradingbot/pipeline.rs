//! The TradingBot reconcile pipeline, one step per module:
//! decide ([`super::decide`]: `spec.emergencyStop` OR the namespace's fleet kill
//! switch, [`super::fleet`]) → emergency stop ([`super::emergency`], before anything
//! else) → validate ([`super::validate`]) → one step of a version rollout before the
//! build ([`super::rollout::prepare`]: which version the template gets, halt entries)
//! → build ([`super::build`], pure) → apply ([`super::apply`]) → converse with the bot
//! ([`super::converse`]) → one step of an API token rotation ([`super::keys`]) → a
//! performance report when one is asked for ([`super::report`]) → the
//! rollout's health gate ([`super::rollout::finish`]) → status ([`super::status`], one
//! write, only on change).
//!
//! Maintenance windows: before apply, the gate ([`crate::shared::gate`])
//! says whether a pod restart may happen now; if not, apply keeps the running pod
//! template and the bot gets `MaintenancePending` True with what waits and when the
//! window opens. Hot-reloadable changes, pause and emergency stop never wait. The
//! wanted pause is `spec.paused` OR an open `pauseTrading` window, recomputed from the
//! windows at every reconcile (so it survives an operator restart and a user's own
//! `paused: true` is never undone). The reconcile requeues at min(poll interval, next
//! opening or closing of the bot's windows): a deferred change rolls at the opening.

use iq720_crds::trading_bot::TradingBotPhase;
use iq720_crds::{TradingBot, TradingBotStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::borrow::Cow;
use std::time::Duration;
use tracing::{debug, warn};

use super::apply::{self, StorageOutcome, TemplateOutcome};
use super::build::{self, Owner};
use super::decide::{self, FleetSwitch, Plan};
use super::error::{Error, Result};
use super::fleet::Fleet;
use super::status::{self, condition, set_condition};
use super::{converse, emergency, keys, validate};
use crate::botlink::BotRef;
use crate::botlink::client::BotApiError;
use crate::botlink::endpoint::{self, PodLookup};
use crate::botlink::token::{self, TokenError};
use crate::shared::apply::is_controlled_by;
use crate::shared::cache::lookup;
use crate::shared::conditions;
use crate::shared::context::Context;
use crate::shared::gate::{self, Gate, Operation, Verdict};

/// Requeue after a failure that may pass on retry.
const RETRY_SOON: Duration = Duration::from_secs(5);

/// Reconciles a TradingBot that is not being deleted. `fleet_switch` is its
/// namespace's fleet kill switch (`Err`: it cannot be read now).
pub async fn reconcile(
    bot: &TradingBot,
    ctx: &Context,
    fleet: &Fleet,
    fleet_switch: Result<bool, kube::Error>,
) -> Result<Action> {
    let owner = Owner::of(bot)?;
    let problems = validate::problems(bot);
    let (switch, unreadable) = match fleet_switch {
        Ok(on) => (FleetSwitch::from(on), None),
        Err(e) => (FleetSwitch::Unknown, Some(e)),
    };
    super::notify_test::handle(ctx, bot).await;
    match decide::plan(bot, switch, &problems) {
        Plan::EmergencyStop(trigger) => {
            emergency::reconcile(bot, ctx, &owner, &problems, trigger, &fleet.stops).await
        }
        Plan::FleetUnknown => match unreadable {
            Some(e) => {
                warn!(bot = %owner.name, namespace = %owner.namespace, error = %e,
                    "cannot read the namespace's fleet emergency stop; the bot is left as it is");
                Err(e.into())
            }
            None => Ok(Action::requeue(RETRY_SOON)),
        },
        Plan::Invalid => invalid(bot, ctx, &owner, &problems).await,
        Plan::Run => run(bot, ctx, &owner, fleet).await,
    }
}

/// A stop of this bot became wanted while this routine reconcile ran: it ends here,
/// before it could scale the bot up or resume it, and the stop's reconcile (queued
/// behind this one) runs at once.
fn give_way(owner: &Owner) -> Result<Action> {
    debug!(bot = %owner.name, "an emergency stop is wanted; the routine reconcile gives way");
    Ok(Action::requeue(Duration::ZERO))
}

/// The maintenance windows selecting this bot; `Err` (the windows cannot be read)
/// carries the reason, and then a restart waits (fail closed) while everything else
/// goes on.
async fn gate_for(ctx: &Context, bot: &TradingBot, namespace: &str) -> Result<Gate, String> {
    match gate::windows_in(ctx, namespace).await {
        Ok(windows) => Ok(Gate::for_bot(bot.labels(), &windows)),
        Err(e) => {
            warn!(bot = ?bot.metadata.name, error = %e, "cannot read MaintenanceWindows");
            Err(format!(
                "MaintenanceWindows cannot be read ({e}); a pod restart waits"
            ))
        }
    }
}

/// What pause the bot should have: the spec's, or an open `pauseTrading` window's.
fn wanted_pause(bot: &TradingBot, gate: &Result<Gate, String>) -> converse::Pause {
    let window = gate
        .as_ref()
        .ok()
        .and_then(|g| g.pausing_window(jiff::Timestamp::now()))
        .map(str::to_string);
    converse::Pause {
        paused: bot.spec.paused || window.is_some(),
        window: window.filter(|_| !bot.spec.paused),
    }
}

/// Requeue delay: the poll interval, or sooner when a window opens or closes before.
fn requeue_with_windows(requeue: Duration, gate: &Result<Gate, String>) -> Duration {
    let now = jiff::Timestamp::now();
    gate.as_ref()
        .ok()
        .and_then(|g| g.next_boundary(now))
        .map_or(requeue, |at| {
            requeue.min(crate::shared::window::until(now, at))
        })
}

/// Sets `MaintenancePending` from the apply's template outcome; Events and the
/// deferral metric when a wait begins or ends.
async fn report_maintenance(
    ctx: &Context,
    bot: &TradingBot,
    st: &mut TradingBotStatus,
    template: Option<&TemplateOutcome>,
    verdict: &Result<Verdict, String>,
) {
    let generation = bot.metadata.generation;
    let was_pending = conditions::find(&st.conditions, condition::MAINTENANCE_PENDING)
        .is_some_and(|c| c.status == "True");
    match template {
        Some(TemplateOutcome::Held { changes }) => {
            let why = match verdict {
                Ok(v) => v.waiting_for(),
                Err(e) => e.clone(),
            };
            let message = format!("pod restart waiting: {}; {why}", changes.join(", "));
            set_condition(
                &mut st.conditions,
                condition::MAINTENANCE_PENDING,
                true,
                "WaitingForWindow",
                &message,
                generation,
            );
            if !was_pending {
                ctx.metrics
                    .maintenance_operations_deferred
                    .with_label_values(&[Operation::Upgrade.name()])
                    .inc();
                ctx.event(
                    bot,
                    EventType::Normal,
                    "UpgradeDeferred",
                    "Maintenance",
                    message,
                )
                .await;
            }
        }
        Some(TemplateOutcome::Applied { rolled }) => {
            if was_pending {
                let note = match verdict {
                    Ok(v) => format!("the waiting pod restart rolls out: {}", v.waiting_for()),
                    Err(_) => "the waiting pod restart rolls out".to_string(),
                };
                ctx.event(
                    bot,
                    EventType::Normal,
                    "UpgradeReleased",
                    "Maintenance",
                    note.clone(),
                )
                .await;
                set_condition(
                    &mut st.conditions,
                    condition::MAINTENANCE_PENDING,
                    false,
                    "Released",
                    &note,
                    generation,
                );
            } else if *rolled
                || conditions::find(&st.conditions, condition::MAINTENANCE_PENDING).is_some()
            {
                set_condition(
                    &mut st.conditions,
                    condition::MAINTENANCE_PENDING,
                    false,
                    "NothingWaiting",
                    "no change waits for a maintenance window",
                    generation,
                );
            }
        }
        None => {}
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
    let pause = wanted_pause(bot, &gate_for(ctx, bot, &owner.namespace).await);
    if let Some(tok) = token::read(&ctx.client, &target).await?
        && let Some(pod) = endpoint::lookup(&ctx.client, &target, &tok).await?.found()
        && pod.ready
        && !pod.terminating
        && let Err(e) = converse::sync_pause(ctx, bot, &pod.endpoint, &pause, None).await
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

async fn run(bot: &TradingBot, ctx: &Context, owner: &Owner, fleet: &Fleet) -> Result<Action> {
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

    // maintenance windows: may the pod restart now?
    let gate = gate_for(ctx, bot, &owner.namespace).await;
    let verdict = gate
        .as_ref()
        .map(|g| g.verdict(Operation::Upgrade, jiff::Timestamp::now()))
        .map_err(Clone::clone);
    let hold = verdict.as_ref().map_or(true, |v| !v.may_run());
    // version rollout (rollout.rs): the version the template gets, halt, window bypass
    let (rollout, mut announce) = super::rollout::prepare(ctx, bot, &mut st, hold).await;
    let hold = hold && !rollout.bypass_window;

    // build, apply
    if fleet.stop_wanted_now(bot) {
        return give_way(owner);
    }
    let mut desired = build::desired(&rollout.builder_input(bot), 1, &ctx.settings.bot_ingress)?;
    // spec.restore: the restore init container (or zero replicas until a backup exists)
    super::restore::step(ctx, bot, &mut st)
        .await
        .apply(&mut desired.stateful_set);
    // after a rollback: restore the pre-update backup if the schema moved beyond reach
    if let Some(rr) = &rollout.rollback_restore
        && let Some(source) = super::rollout::rollback_restore_source(ctx, bot, rr).await
    {
        build::stateful_set::add_restore(&mut desired.stateful_set, &source);
    }
    let outcome = apply::apply_all(ctx, owner, &mut desired, hold).await;
    report_maintenance(ctx, bot, &mut st, outcome.template.as_ref(), &verdict).await;
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
        requeue_with_windows(ctx.settings.bot_poll_interval, &gate)
    };
    let pause = rollout.pause(wanted_pause(bot, &gate));

    // converse
    // One read of the pod (from the cache when there is one): its address, and why it
    // is stuck when it cannot run.
    let (found, stuck) = match ctx.cache.stores() {
        Some(stores) => {
            let pod = lookup(&stores.pods, &owner.namespace, &target.pod_name());
            (
                crate::shared::cached_pod::from_cached(pod.as_deref(), &tok),
                pod.and_then(|p| p.summary.stuck.clone()),
            )
        }
        None => (endpoint::lookup(&ctx.client, &target, &tok).await?, None),
    };
    let pod = match found {
        PodLookup::Found(p) if p.ready && !p.terminating => p,
        PodLookup::Found(_) | PodLookup::NoAddress => {
            match &stuck {
                Some(why) => pod_failing(ctx, bot, &mut st, why).await,
                None => converse::starting(&mut st, "the bot pod is not ready yet", generation),
            }
            super::report::step(ctx, bot, owner, None, &mut st).await;
            let (next, later) = super::rollout::finish(ctx, bot, &mut st, None, stuck).await;
            announce.merge(later);
            let written = status::write(ctx, bot, st).await?;
            announce.announce(ctx, bot, &written).await;
            return Ok(Action::requeue(next.map_or(requeue, |n| requeue.min(n))));
        }
        PodLookup::Missing => {
            converse::starting(&mut st, "the bot pod is not running yet", generation);
            super::report::step(ctx, bot, owner, None, &mut st).await;
            let (next, later) = super::rollout::finish(ctx, bot, &mut st, None, None).await;
            announce.merge(later);
            let written = status::write(ctx, bot, st).await?;
            announce.announce(ctx, bot, &written).await;
            return Ok(Action::requeue(next.map_or(requeue, |n| requeue.min(n))));
        }
    };
    let mut requeue = requeue;
    if fleet.stop_wanted_now(bot) {
        return give_way(owner);
    }
    // The bot as last stored: a key rotation step stores its record mid-reconcile,
    // and the final status write's precondition is that newer resourceVersion.
    let mut current = Cow::Borrowed(bot);
    match converse::converse(ctx, bot, &pod.endpoint, &desired, &pause, &mut st).await {
        Ok(report) => {
            status::apply_report(&mut st, &report, generation);
            if report.halted.is_none() && decide::finish_recovery(&mut st, generation) {
                ctx.event(
                    bot,
                    EventType::Normal,
                    "Recovered",
                    "Resume",
                    "emergency stop cleared: the bot is back and trading (it had no close-all halt to lift)"
                        .to_string(),
                )
                .await;
            }
            // API token rotation (see keys.rs): one step, requeue by the next step's time.
            let next_key_step = keys::step(
                ctx,
                &mut current,
                &target,
                &pod.endpoint,
                report.security.as_ref(),
                &gate,
                &mut st,
            )
            .await;
            requeue = requeue.min(next_key_step);
            // exchange credentials (see credentials.rs): KeyRotationDue, the bot's report
            requeue = requeue.min(
                super::credentials::step(ctx, &current, report.security.as_ref(), &mut st).await,
            );
            // a performance report asked for with the annotation (see report.rs)
            super::report::step(ctx, bot, owner, Some(&pod.endpoint), &mut st).await;
        }
        Err(Error::Bot(e)) => {
            debug!(bot = %owner.name, error = %e, "bot API call failed");
            if matches!(e, BotApiError::Status { status: 401, .. }) {
                // The token Secret changed: the newest token, or another one the bot
                // still accepts (mid-rotation), is cached for the next reconcile.
                keys::unauthorized(ctx, &target, &pod.endpoint).await;
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
            super::report::step(ctx, bot, owner, None, &mut st).await;
        }
        Err(e) => return Err(e),
    }
    let bot: &TradingBot = &current;
    let (next, later) = super::rollout::finish(ctx, bot, &mut st, Some(&pod.endpoint), None).await;
    if let Some(next) = next {
        requeue = requeue.min(next);
    }
    announce.merge(later);
    let written = status::write(ctx, bot, st).await?;
    announce.announce(ctx, bot, &written).await;
    Ok(Action::requeue(requeue))
}

/// The bot's container cannot run as specified (image not found, crash loop): phase
/// `Failed` with the container's reason in the `Ready` condition, and a Warning Event
/// when the reason is new, instead of a silent `Starting`.
async fn pod_failing(ctx: &Context, bot: &TradingBot, st: &mut TradingBotStatus, why: &str) {
    let message = format!(
        "the bot container cannot run: {why}; check spec.version and spec.image, and the bot's log"
    );
    let changed = conditions::find(&st.conditions, condition::READY)
        .is_none_or(|c| c.reason != "PodFailing" || c.message != message);
    st.phase = Some(TradingBotPhase::Failed);
    set_condition(
        &mut st.conditions,
        condition::READY,
        false,
        "PodFailing",
        &message,
        bot.metadata.generation,
    );
    if changed {
        ctx.event(bot, EventType::Warning, "BotPodFailing", "Run", message)
            .await;
    }
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
