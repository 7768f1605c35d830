//! The BackupSchedule controller: cron-scheduled and on-demand backups of the
//! selected TradingBots' trade databases, streamed to S3, verified with the bot's own
//! archive check, pruned by retention, reported in status, Events and metrics.
//!
//! Why it is shaped like this: a reconcile decides from the stored status alone what
//! is due (a scheduled slot, a new `backup-now` value, or a retry of a failed run), so
//! an operator restart neither repeats nor loses a run; it then requeues exactly at
//! the next slot or retry time (never polls). Stopped bots (emergency stop, scaled to
//! zero) are skipped with reason `BotStopped` rather than backed up from their volume:
//! the bot owns its database and the only consistent snapshot is its own online
//! backup; a skip is not a failure and causes no retry loop. Steps are one module
//! each: [`validate`], [`schedule`] (pure), [`run`], [`verify`], [`retention`],
//! [`drill`] (restore drills in a throwaway pod), [`status`].

pub mod drill;
pub mod error;
pub mod retention;
pub mod run;
pub mod schedule;
pub mod status;
pub mod validate;
pub mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iq720_crds::backup_schedule::{
    BACKUP_NOW_ANNOTATION, BackupResult, BackupScheduleStatus, DRILL_NOW_ANNOTATION,
};
use iq720_crds::{BackupSchedule, TradingBot};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{debug, info, warn};

use crate::shared::conditions::set_condition;
use crate::shared::context::Context;
use error::{BackupError, Error, Result};
use run::Outcome;
use status::condition;

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "backupschedule";
/// Field manager of this controller's status writes (BackupSchedule status, and
/// `lastBackup` plus the LastBackupSucceeded condition on TradingBots).
pub const STATUS_MANAGER: &str = "iq720-operator-backupschedule";

/// Tunables of the BackupSchedule controller.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Deadline of one bot's backup attempt (snapshot, upload and verification).
    pub attempt_deadline: Duration,
    /// Size of a multipart upload part (at least 5 MiB; the memory held per upload).
    pub part_size: usize,
    /// Bots backed up at the same time within one run.
    pub concurrency: usize,
    /// Scratch directory for verification (the download and the unpacked database).
    pub work_dir: PathBuf,
    /// Retries of a failed run before waiting for the next slot.
    pub max_retries: i32,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            attempt_deadline: Duration::from_secs(15 * 60),
            part_size: 8 * 1024 * 1024,
            concurrency: 4,
            work_dir: std::env::temp_dir().join("iq720-backups"),
            max_retries: 5,
        }
    }
}

struct State {
    ctx: Arc<Context>,
    settings: BackupSettings,
}

/// Why a run happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Scheduled,
    OnDemand,
    Retry,
}

fn ts(t: &Time) -> Timestamp {
    Timestamp::from_second(t.0.as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn time(t: Timestamp) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or_default())
}

fn selector(bks: &BackupSchedule) -> Result<Selector> {
    Selector::try_from(bks.spec.bot_selector.clone()).map_err(|e| Error::Selector(e.to_string()))
}

async fn selected_bots(ctx: &Context, bks: &BackupSchedule) -> Result<Vec<TradingBot>> {
    let api: Api<TradingBot> =
        Api::namespaced(ctx.client.clone(), &bks.namespace().unwrap_or_default());
    let lp = ListParams::default().labels_from(&selector(bks)?);
    let mut bots = api.list(&lp).await?.items;
    bots.retain(|b| b.metadata.deletion_timestamp.is_none());
    bots.sort_by_key(|b| b.name_any());
    Ok(bots)
}

async fn reconcile(cached: Arc<BackupSchedule>, state: Arc<State>) -> Result<Action> {
    let ctx = &state.ctx;
    let _measure = ctx.metrics.count_and_measure(CONTROLLER);
    // The watch cache can lag behind this controller's own last status write; what is
    // due is decided from the stored status, so read it fresh (no run twice).
    let api: Api<BackupSchedule> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(bks) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let bks = Arc::new(bks);
    let generation = bks.metadata.generation;
    let old = bks.status.clone().unwrap_or_default();
    let mut st = old.clone();
    st.observed_generation = generation;
    let valid = match validate::validate(&bks.spec) {
        Ok(v) => v,
        Err(problems) => {
            if status::invalid(&mut st, &problems, generation) {
                ctx.event(
                    bks.as_ref(),
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    problems.join("; "),
                )
                .await;
            }
            status::write(ctx, &bks, &st).await?;
            // Nothing can run until the spec changes: no requeue, no hot loop.
            return Ok(Action::await_change());
        }
    };
    let suspended = bks.spec.suspend;
    status::valid(&mut st, suspended, generation);

    let now = Timestamp::now();
    let anchor = old
        .last_schedule_time
        .as_ref()
        .or(bks.metadata.creation_timestamp.as_ref())
        .map_or(now, ts);
    let slots = schedule::slots(&valid.schedule, anchor, now);
    let on_demand = bks
        .annotations()
        .get(BACKUP_NOW_ANNOTATION)
        .filter(|v| old.last_on_demand_request.as_ref() != Some(*v))
        .cloned();
    let retry_at = (old.consecutive_failures > 0
        && old.consecutive_failures <= state.settings.max_retries)
        .then(|| {
            old.last_run_time.as_ref().map(ts).and_then(|t| {
                t.checked_add(
                    jiff::SignedDuration::try_from(schedule::retry_backoff(
                        old.consecutive_failures,
                    ))
                    .ok()?,
                )
                .ok()
            })
        })
        .flatten();
    let scheduled = if suspended { None } else { slots.due };
    let trigger = if on_demand.is_some() {
        Some(Trigger::OnDemand)
    } else if scheduled.is_some() {
        Some(Trigger::Scheduled)
    } else if !suspended && retry_at.is_some_and(|t| t <= now) {
        Some(Trigger::Retry)
    } else {
        None
    };

    let bots = selected_bots(ctx, &bks).await?;
    let mut retry_next = None;
    if let Some(trigger) = trigger {
        info!(schedule = %bks.name_any(), namespace = ?bks.namespace(), ?trigger, bots = bots.len(), "backup run");
        st.last_run_time = Some(time(now));
        if let Some(slot) = scheduled {
            st.last_schedule_time = Some(time(slot));
        }
        if let Some(value) = &on_demand {
            st.last_on_demand_request = Some(value.clone());
        }
        let targets: Vec<&TradingBot> = match (trigger, &old.last_run_time) {
            // A retry backs up only the bots the failed run did not.
            (Trigger::Retry, Some(last)) => bots
                .iter()
                .filter(|b| {
                    !old.recent_backups.iter().any(|r| {
                        r.bot == b.name_any()
                            && status::good(r, bks.spec.verify)
                            && r.completed_at.0 >= last.0
                    })
                })
                .collect(),
            _ => bots.iter().collect(),
        };
        let failed = execute(&state, &bks, &valid, &mut st, &targets, trigger, &bots).await;
        if failed {
            st.consecutive_failures = old.consecutive_failures.saturating_add(1);
            if st.consecutive_failures <= state.settings.max_retries {
                retry_next = now
                    .checked_add(
                        jiff::SignedDuration::try_from(schedule::retry_backoff(
                            st.consecutive_failures,
                        ))
                        .unwrap_or_default(),
                    )
                    .ok();
            }
        } else {
            st.consecutive_failures = 0;
        }
    } else {
        retry_next = retry_at.filter(|t| *t > now);
        heal_bots(ctx, &bks, &st, &bots).await;
    }

    // Restore drills: after every Nth verified backup of a bot, or for every selected
    // bot once per drill-now value (see drill.rs).
    if bks.spec.restore_drill.is_some() {
        drill::count_new_backups(&old.recent_backups, &mut st);
    }
    let drill_now = bks
        .annotations()
        .get(DRILL_NOW_ANNOTATION)
        .filter(|v| old.last_drill_request.as_ref() != Some(*v))
        .cloned();
    let due: Vec<String> = match (&drill_now, &bks.spec.restore_drill) {
        (Some(_), _) => bots.iter().map(|b| b.name_any()).collect(),
        (None, Some(d)) => drill::due(&st, d.every_nth_backup),
        (None, None) => Vec::new(),
    };
    if let Some(value) = drill_now {
        st.last_drill_request = Some(value);
    }
    if !due.is_empty() {
        drill::run(ctx, &bks, &mut st, &due, &bots).await;
    }

    let end = Timestamp::now();
    let next = if suspended {
        None
    } else {
        let anchor = st.last_schedule_time.as_ref().map_or(anchor, ts);
        schedule::slots(&valid.schedule, anchor, end)
            .due
            .map(|_| end)
            .or_else(|| valid.schedule.next_after(end.max(anchor)))
    };
    st.next_schedule_time = next.map(time);
    status::write(ctx, &bks, &st).await?;

    let wake = [next, retry_next.filter(|_| !suspended)]
        .into_iter()
        .flatten()
        .min();
    Ok(match wake {
        Some(t) => {
            let wait = Timestamp::now().duration_until(t).unsigned_abs();
            // +1s so the slot has passed when the reconcile runs.
            Action::requeue(wait.saturating_add(Duration::from_secs(1)))
        }
        None => Action::await_change(),
    })
}

/// Runs the backups of `targets` and folds the outcomes into `st`. Returns whether
/// the run failed (some bot that should have been backed up was not).
async fn execute(
    state: &State,
    bks: &BackupSchedule,
    valid: &validate::Valid,
    st: &mut BackupScheduleStatus,
    targets: &[&TradingBot],
    trigger: Trigger,
    all_bots: &[TradingBot],
) -> bool {
    let ctx = &state.ctx;
    let ns = bks.namespace().unwrap_or_default();
    let verify = bks.spec.verify;
    let s3 = match run::connect(ctx, &ns, &bks.spec.destination).await {
        Ok(s3) => s3,
        Err(e) => {
            let message = match &e {
                crate::shared::s3::S3Error::Credentials(m) => m.clone(),
                other => other.to_string(),
            };
            let results: Vec<(&TradingBot, Outcome, Duration)> = targets
                .iter()
                .map(|b| {
                    (
                        *b,
                        Outcome::Failed(BackupError::Credentials(message.clone()), None),
                        Duration::ZERO,
                    )
                })
                .collect();
            return fold(state, bks, st, results, None, valid, all_bots).await;
        }
    };
    // Backups taken while verification was off are verified once it is on.
    if verify {
        reverify(state, bks, st, &s3).await;
    }
    let jitter_max = if trigger == Trigger::Scheduled {
        bks.spec.jitter_seconds
    } else {
        0
    };
    let attempts: Vec<_> = targets
        .iter()
        .map(|bot| backup_one(state, &s3, bks, bot, jitter_max))
        .collect();
    let results: Vec<(&TradingBot, Outcome, Duration)> = futures::stream::iter(attempts)
        .buffer_unordered(state.settings.concurrency.max(1))
        .collect()
        .await;
    fold(state, bks, st, results, Some(&s3), valid, all_bots).await
}

/// One bot's attempt, after its jitter delay.
async fn backup_one<'a>(
    state: &State,
    s3: &run::S3Target,
    bks: &BackupSchedule,
    bot: &'a TradingBot,
    jitter_max: i32,
) -> (&'a TradingBot, Outcome, Duration) {
    let ns = bot.namespace().unwrap_or_default();
    let delay = schedule::jitter(&ns, &bot.name_any(), jitter_max);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let started = Instant::now();
    let outcome = run::backup_bot(&state.ctx, &state.settings, s3, bks, bot, bks.spec.verify).await;
    (bot, outcome, started.elapsed())
}

/// Verifies records stored while `verify` was off (no result yet).
async fn reverify(
    state: &State,
    bks: &BackupSchedule,
    st: &mut BackupScheduleStatus,
    s3: &run::S3Target,
) {
    let ctx = &state.ctx;
    for r in st
        .recent_backups
        .iter_mut()
        .filter(|r| !r.verified && r.verification_error.is_none())
    {
        let deadline = tokio::time::Instant::now() + state.settings.attempt_deadline;
        match verify::verify_object(s3, &r.key, &r.sha256, &state.settings.work_dir, deadline).await
        {
            Ok(()) => r.verified = true,
            Err(e) => {
                warn!(key = %r.key, error = %e, "stored backup failed verification");
                ctx.event(
                    bks,
                    EventType::Warning,
                    "VerificationFailed",
                    "Verify",
                    format!("backup {} of bot {}: {e}", r.key, r.bot),
                )
                .await;
                ctx.metrics
                    .backups
                    .with_label_values(&[e.metric_label()])
                    .inc();
                r.verification_error = Some(e.to_string());
            }
        }
    }
}

/// Records outcomes: status entries, Events, metrics, retention, TradingBot status.
async fn fold(
    state: &State,
    bks: &BackupSchedule,
    st: &mut BackupScheduleStatus,
    results: Vec<(&TradingBot, Outcome, Duration)>,
    s3: Option<&run::S3Target>,
    valid: &validate::Valid,
    all_bots: &[TradingBot],
) -> bool {
    let ctx = &state.ctx;
    let ns = bks.namespace().unwrap_or_default();
    let verify = bks.spec.verify;
    let (mut ok, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let mut errors: Vec<String> = Vec::new();
    let mut prune_bots: Vec<String> = Vec::new();
    let mut bot_updates: BTreeMap<String, status::BotBackupStatus> = BTreeMap::new();
    for (bot, outcome, took) in results {
        let name = bot.name_any();
        match outcome {
            Outcome::Done(record) => {
                ok += 1;
                ctx.metrics.backups.with_label_values(&["succeeded"]).inc();
                ctx.metrics
                    .backup_duration
                    .with_label_values(&["succeeded"])
                    .observe(took.as_secs_f64());
                ctx.metrics
                    .backup_bytes
                    .inc_by(u64::try_from(record.size_bytes).unwrap_or(0));
                if record.verified {
                    ctx.metrics
                        .backup_newest_verified
                        .with_label_values(&[ns.as_str(), name.as_str()])
                        .set(record.completed_at.0.as_second());
                }
                ctx.event(
                    bks,
                    EventType::Normal,
                    "BackupSucceeded",
                    "Backup",
                    format!(
                        "bot {name}: {} ({} bytes, sha256 {}){}",
                        record.key,
                        record.size_bytes,
                        record.sha256,
                        if record.verified { ", verified" } else { "" }
                    ),
                )
                .await;
                bot_updates.insert(
                    name.clone(),
                    status::BotBackupStatus {
                        last_backup: None,
                        condition: Some((
                            true,
                            "BackupSucceeded".into(),
                            format!(
                                "backup {} stored{}",
                                record.key,
                                if record.verified { " and verified" } else { "" }
                            ),
                        )),
                    },
                );
                st.recent_backups.insert(0, record);
                prune_bots.push(name);
            }
            Outcome::Skipped { reason, message } => {
                skipped += 1;
                ctx.metrics.backups.with_label_values(&["skipped"]).inc();
                ctx.event(
                    bks,
                    EventType::Normal,
                    reason,
                    "Backup",
                    format!("bot {name}: {message}"),
                )
                .await;
            }
            Outcome::Failed(e, record) => {
                failed += 1;
                let label = e.metric_label();
                ctx.metrics.backups.with_label_values(&[label]).inc();
                ctx.metrics
                    .backup_duration
                    .with_label_values(&[label])
                    .observe(took.as_secs_f64());
                warn!(bot = %name, namespace = %ns, error = %e, "backup failed");
                let reason = e.reason();
                let event_reason = if reason == "VerificationFailed" {
                    reason
                } else {
                    "BackupFailed"
                };
                ctx.event(
                    bks,
                    EventType::Warning,
                    event_reason,
                    "Backup",
                    format!("bot {name}: {e}"),
                )
                .await;
                errors.push(format!("{name}: {e}"));
                bot_updates.insert(
                    name.clone(),
                    status::BotBackupStatus {
                        last_backup: None,
                        condition: Some((false, reason.to_string(), e.to_string())),
                    },
                );
                if let Some(r) = record {
                    st.recent_backups.insert(0, r);
                }
                if !errors.is_empty() && errors.len() == 1 {
                    set_condition(
                        &mut st.conditions,
                        condition::LAST_BACKUP_SUCCEEDED,
                        false,
                        reason,
                        &e.to_string(),
                        bks.metadata.generation,
                    );
                }
            }
        }
    }
    // Retention: only bots that just got a good backup, never while failing.
    if let Some(s3) = s3 {
        let keep_last = usize::try_from(bks.spec.retention.keep_last).unwrap_or(1);
        let now = Timestamp::now();
        for bot in &prune_bots {
            let mine: Vec<_> = st
                .recent_backups
                .iter()
                .filter(|r| &r.bot == bot)
                .cloned()
                .collect();
            if !mine.first().is_some_and(|r| status::good(r, verify)) {
                continue;
            }
            for key in retention::plan(&mine, keep_last, valid.max_age, now) {
                match retention::delete_if_ours(s3, &key).await {
                    retention::Pruned::Deleted => {
                        st.recent_backups.retain(|r| r.key != key);
                        ctx.event(
                            bks,
                            EventType::Normal,
                            "Pruned",
                            "Retention",
                            format!("bot {bot}: deleted {key}"),
                        )
                        .await;
                    }
                    retention::Pruned::NotOurs => {
                        ctx.event(
                            bks,
                            EventType::Warning,
                            "PruneSkipped",
                            "Retention",
                            format!("bot {bot}: {key} was not written by the operator; left alone"),
                        )
                        .await;
                    }
                    retention::Pruned::Failed(e) => {
                        ctx.event(
                            bks,
                            EventType::Warning,
                            "PruneFailed",
                            "Retention",
                            format!("bot {bot}: {key}: {e}"),
                        )
                        .await;
                    }
                }
            }
        }
    }
    st.recent_backups.sort_by(|a, b| {
        b.completed_at
            .0
            .cmp(&a.completed_at.0)
            .then(b.key.cmp(&a.key))
    });
    st.last_result = Some(match (ok, failed) {
        (_, 0) if ok > 0 => BackupResult::Succeeded,
        (0, 0) => BackupResult::Skipped,
        (0, _) => BackupResult::Failed,
        _ => BackupResult::PartiallyFailed,
    });
    if failed == 0 && ok > 0 {
        set_condition(
            &mut st.conditions,
            condition::LAST_BACKUP_SUCCEEDED,
            true,
            "BackupSucceeded",
            &format!(
                "{ok} bot(s) backed up{}",
                if skipped > 0 {
                    format!(", {skipped} skipped")
                } else {
                    String::new()
                }
            ),
            bks.metadata.generation,
        );
    } else if failed > 0 {
        set_condition(
            &mut st.conditions,
            condition::LAST_BACKUP_SUCCEEDED,
            false,
            "BackupFailed",
            &errors.join("; "),
            bks.metadata.generation,
        );
    }
    // TradingBot status: lastBackup from the records, the condition from the outcome.
    for bot in all_bots {
        let name = bot.name_any();
        let mut want = bot_updates
            .remove(&name)
            .unwrap_or(status::BotBackupStatus {
                last_backup: None,
                condition: None,
            });
        want.last_backup = status::last_backup(&st.recent_backups, &name, verify);
        if want.last_backup.is_none() && want.condition.is_none() {
            continue;
        }
        if let Err(e) = status::apply_bot(ctx, bot, &want).await {
            warn!(bot = %name, error = %e, "cannot write the bot's backup status");
        }
    }
    failed > 0
}

/// Puts `lastBackup` back on bots whose status lost it (see [`status`]).
async fn heal_bots(
    ctx: &Context,
    bks: &BackupSchedule,
    st: &BackupScheduleStatus,
    bots: &[TradingBot],
) {
    for bot in bots {
        let name = bot.name_any();
        let Some(want) = status::last_backup(&st.recent_backups, &name, bks.spec.verify) else {
            continue;
        };
        let have = bot.status.as_ref().and_then(|s| s.last_backup.as_ref());
        if have.is_some_and(|h| h.time.0 >= want.time.0) {
            continue;
        }
        let update = status::BotBackupStatus {
            last_backup: Some(want),
            condition: None,
        };
        if let Err(e) = status::apply_bot(ctx, bot, &update).await {
            warn!(bot = %name, error = %e, "cannot write the bot's backup status");
        }
    }
}

fn error_policy(bks: Arc<BackupSchedule>, error: &Error, state: Arc<State>) -> Action {
    warn!(schedule = %bks.name_any(), namespace = ?bks.namespace(), error = %error, "reconcile failed");
    state
        .ctx
        .metrics
        .reconcile_failure(CONTROLLER, error.metric_label());
    if error.is_permanent() {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(5))
    }
}

/// Runs the BackupSchedule controller until the stream ends.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, settings: BackupSettings) {
    let client = ctx.client.clone();
    let (schedules, bots) = match &namespace {
        Some(ns) => (
            Api::<BackupSchedule>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<TradingBot>>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let controller = Controller::new(schedules, watcher::Config::default());
    let store = controller.store();
    let state = Arc::new(State { ctx, settings });
    controller
        // A bot's status losing lastBackup, or a bot appearing, wakes the schedules
        // that select it.
        // (metadata only: the labels select, and any change of a bot is an event)
        .watches_stream(
            watcher::watcher(bots, watcher::Config::default())
                .default_backoff()
                .touched_objects(),
            move |bot: PartialObjectMeta<TradingBot>| {
                let ns = bot.namespace();
                store
                    .state()
                    .into_iter()
                    .filter(|s| s.namespace() == ns)
                    .filter(|s| selector(s).is_ok_and(|sel| sel.matches(bot.labels())))
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(schedule = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}
