//! Database tasks run inside an open window, once per window and bot, through the bot
//! API: `vacuum` (`POST /api/v1/maintenance/vacuum`) and `pruneTradeHistory`
//! (`POST /api/v1/maintenance/prune`).
//!
//! Why "once" is read from status: each run is recorded in `status.taskRuns` with the
//! start of the window it ran in, so a reconcile (or a restarted operator) knows what
//! already ran in the current window; a bot whose pod is not ready yet is tried again
//! at the next reconcile of the same window, a run that failed is not (it is reported
//! and waits for the next window, so a broken bot is not hammered).
//!
//! Database tasks run only when the window's own `allow.databaseMaintenance` is set,
//! log cleanup (`POST /api/v1/maintenance/logs`) only when its own `allow.logCleanup`
//! is set: a task belongs to the window that declares it, so another open window's
//! flags neither enable nor block it. Tasks run on bots that run (not emergency
//! stopped). `pruneTradeHistory` with `archive: true`, and `logCleanup` when the window
//! has `spec.archive`, first write what they delete to S3 and verify it
//! ([`super::archive`]); when that fails nothing is deleted and the run is `Failed`.

use std::time::{Duration, Instant};

use iq720_crds::maintenance_window::TaskRun;
use iq720_crds::{MaintenanceWindow, TradingBot};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::archive::{self, Owner};
use super::status::time;
use crate::botlink::BotRef;
use crate::botlink::client::BotEndpoint;
use crate::botlink::endpoint;
use crate::botlink::token;
use crate::shared::context::Context;
use crate::shared::window::Period;
use iq720_contract::maintenance::LogCleanupRequest;

/// Deadline of one task call.
const TASK_DEADLINE: Duration = Duration::from_secs(300);

/// Task names as recorded in status.
pub const VACUUM: &str = "vacuum";
/// Task names as recorded in status.
pub const PRUNE: &str = "pruneTradeHistory";
/// Task names as recorded in status.
pub const LOG_CLEANUP: &str = "logCleanup";

/// What one task run came to, as recorded in `status.taskRuns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Succeeded`, `Failed` or `Skipped`.
    pub result: &'static str,
    /// One sentence: what happened.
    pub message: String,
    /// Object key of the verified archive.
    pub archive_key: Option<String>,
    /// Its size.
    pub archive_bytes: Option<u64>,
    /// Rows or files deleted.
    pub deleted: Option<u64>,
    /// Bytes freed.
    pub bytes_freed: Option<u64>,
}

impl Outcome {
    fn new(result: &'static str, message: impl Into<String>) -> Self {
        Self {
            result,
            message: message.into(),
            archive_key: None,
            archive_bytes: None,
            deleted: None,
            bytes_freed: None,
        }
    }
}

fn to_i64(v: Option<u64>) -> Option<i64> {
    v.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// What the tasks step did.
#[derive(Debug, Default)]
pub struct TasksOutcome {
    /// Some bot was not ready: try again soon while the window is open.
    pub retry: bool,
}

/// The tasks a window asks for and allows itself.
pub fn wanted(mw: &MaintenanceWindow) -> Vec<&'static str> {
    let mut t = Vec::new();
    if mw.spec.allow.database_maintenance {
        if mw.spec.tasks.vacuum {
            t.push(VACUUM);
        }
        if mw.spec.tasks.prune_trade_history.is_some() {
            t.push(PRUNE);
        }
    }
    if mw.spec.allow.log_cleanup && mw.spec.tasks.log_cleanup.is_some() {
        t.push(LOG_CLEANUP);
    }
    t
}

/// Whether `task` already ran on `bot` in the window that opened at `start`.
pub fn ran(runs: &[TaskRun], bot: &str, task: &str, start: Timestamp) -> bool {
    runs.iter().any(|r| {
        r.bot == bot && r.task == task && r.window_start.0.as_second() == start.as_second()
    })
}

/// Records a run, replacing the previous run of the same bot and task.
fn record(runs: &mut Vec<TaskRun>, run: TaskRun) {
    runs.retain(|r| !(r.bot == run.bot && r.task == run.task));
    runs.push(run);
    runs.sort_by(|a, b| a.bot.cmp(&b.bot).then(a.task.cmp(&b.task)));
}

async fn endpoint_of(ctx: &Context, bot: &TradingBot) -> Option<BotEndpoint> {
    let target = BotRef::new(&bot.namespace()?, bot.name_any());
    let tok = token::read(&ctx.client, &target).await.ok()??;
    let pod = endpoint::lookup(&ctx.client, &target, &tok)
        .await
        .ok()?
        .found()?;
    (pod.ready && !pod.terminating).then_some(pod.endpoint)
}

async fn run_one(
    ctx: &Context,
    mw: &MaintenanceWindow,
    bot: &str,
    ep: &BotEndpoint,
    task: &str,
) -> Outcome {
    let began = Instant::now();
    let deadline = tokio::time::Instant::now() + TASK_DEADLINE;
    let namespace = mw.namespace().unwrap_or_default();
    let window = mw.name_any();
    let owner = Owner {
        namespace: &namespace,
        bot,
        window: &window,
    };
    let secs = || began.elapsed().as_secs_f64();
    match task {
        VACUUM => match ctx.bots.vacuum(ep, TASK_DEADLINE).await {
            Ok((before, after)) => Outcome {
                bytes_freed: Some(before.saturating_sub(after)),
                ..Outcome::new(
                    "Succeeded",
                    format!(
                        "vacuum reclaimed {} bytes ({before} -> {after}) in {:.1}s",
                        before.saturating_sub(after),
                        secs()
                    ),
                )
            },
            Err(e) => Outcome::new("Failed", format!("vacuum failed: {e}")),
        },
        LOG_CLEANUP => {
            let Some(spec) = mw.spec.tasks.log_cleanup.as_ref() else {
                return Outcome::new("Skipped", "no logCleanup in the spec");
            };
            let req = LogCleanupRequest {
                older_than_days: spec
                    .older_than_days
                    .map(|d| u32::try_from(d.max(1)).unwrap_or(1)),
                files: None,
                dry_run: false,
            };
            let archive = mw
                .spec
                .archive
                .as_ref()
                .filter(|_| spec.archive != Some(false));
            match archive {
                None => match ctx.bots.clean_logs(ep, &req, TASK_DEADLINE).await {
                    Ok(r) => Outcome {
                        deleted: Some(r.files.len() as u64),
                        bytes_freed: Some(r.bytes),
                        ..Outcome::new(
                            "Succeeded",
                            format!(
                                "deleted {} rotated log file(s), {} bytes, in {:.1}s",
                                r.files.len(),
                                r.bytes,
                                secs()
                            ),
                        )
                    },
                    Err(e) => Outcome::new("Failed", format!("log cleanup failed: {e}")),
                },
                Some(a) => {
                    match archive::logs_with_archive(ctx, a, &owner, ep, &req, deadline).await {
                        Ok(d) if d.key.is_none() => Outcome {
                            deleted: Some(0),
                            bytes_freed: Some(0),
                            ..Outcome::new(
                                "Succeeded",
                                "no rotated log files to clean; nothing archived or deleted",
                            )
                        },
                        Ok(d) => Outcome {
                            archive_key: d.key.clone(),
                            archive_bytes: Some(d.bytes),
                            deleted: Some(d.deleted),
                            bytes_freed: Some(d.freed),
                            ..Outcome::new(
                                "Succeeded",
                                format!(
                                    "archived {} rotated log file(s) to {} ({} bytes, verified), then deleted {} file(s), {} bytes, in {:.1}s",
                                    d.archived,
                                    d.url,
                                    d.bytes,
                                    d.deleted,
                                    d.freed,
                                    secs()
                                ),
                            )
                        },
                        Err(e) => Outcome::new(
                            "Failed",
                            format!("log archive failed, no log file was deleted: {e}"),
                        ),
                    }
                }
            }
        }
        _ => {
            let Some(prune) = mw.spec.tasks.prune_trade_history.as_ref() else {
                return Outcome::new("Skipped", "no pruneTradeHistory in the spec");
            };
            let days = u32::try_from(prune.older_than_days.max(1)).unwrap_or(1);
            if prune.archive {
                let Some(a) = mw.spec.archive.as_ref() else {
                    return Outcome::new(
                        "Failed",
                        "archive: true but the window has no spec.archive; no rows were deleted",
                    );
                };
                return match archive::prune_with_archive(ctx, a, &owner, ep, days, deadline).await {
                    Ok(d) if d.key.is_none() => Outcome {
                        deleted: Some(0),
                        ..Outcome::new(
                            "Succeeded",
                            format!(
                                "no closed trade older than {days} day(s); nothing archived or pruned"
                            ),
                        )
                    },
                    Ok(d) => Outcome {
                        archive_key: d.key.clone(),
                        archive_bytes: Some(d.bytes),
                        deleted: Some(d.deleted),
                        ..Outcome::new(
                            "Succeeded",
                            format!(
                                "archived {} row(s) older than {days} day(s) to {} ({} bytes, sha256 and rows verified), then pruned {} row(s) in {:.1}s",
                                d.archived,
                                d.url,
                                d.bytes,
                                d.deleted,
                                secs()
                            ),
                        )
                    },
                    Err(e) => Outcome::new(
                        "Failed",
                        format!("archive before prune failed, no rows were deleted: {e}"),
                    ),
                };
            }
            match ctx.bots.prune(ep, days, TASK_DEADLINE).await {
                Ok(rows) => Outcome {
                    deleted: Some(rows),
                    ..Outcome::new(
                        "Succeeded",
                        format!(
                            "pruned {rows} closed trade(s) older than {days} day(s) in {:.1}s",
                            secs()
                        ),
                    )
                },
                Err(e) => Outcome::new("Failed", format!("prune failed: {e}")),
            }
        }
    }
}

/// Runs the window's tasks that have not run in the open period `open` on the
/// selected, running bots; records them in `runs`.
pub async fn run(
    ctx: &Context,
    mw: &MaintenanceWindow,
    open: Period,
    selected: &[&TradingBot],
    runs: &mut Vec<TaskRun>,
) -> TasksOutcome {
    let mut outcome = TasksOutcome::default();
    let tasks = wanted(mw);
    if tasks.is_empty() {
        return outcome;
    }
    for bot in selected {
        if bot.spec.emergency_stop || bot.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = bot.name_any();
        let due: Vec<&str> = tasks
            .iter()
            .copied()
            .filter(|t| !ran(runs, &name, t, open.start))
            .collect();
        if due.is_empty() {
            continue;
        }
        let Some(ep) = endpoint_of(ctx, bot).await else {
            outcome.retry = true;
            continue;
        };
        for task in due {
            let out = run_one(ctx, mw, &name, &ep, task).await;
            let (result, message) = (out.result, out.message.clone());
            ctx.metrics
                .maintenance_tasks
                .with_label_values(&[task, result])
                .inc();
            let (type_, reason) = match result {
                "Failed" => (EventType::Warning, "MaintenanceTaskFailed"),
                "Skipped" => (EventType::Normal, "MaintenanceTaskSkipped"),
                _ => (EventType::Normal, "MaintenanceTaskSucceeded"),
            };
            if result == "Failed" {
                warn!(bot = %name, task, message, "maintenance task failed");
            } else {
                info!(bot = %name, task, message, "maintenance task");
            }
            let note = format!("{task} on {name} in window {}: {message}", mw.name_any());
            ctx.event(*bot, type_, reason, "Maintenance", note.clone())
                .await;
            ctx.event(mw, type_, reason, "Maintenance", note).await;
            record(
                runs,
                TaskRun {
                    bot: name.clone(),
                    task: task.to_string(),
                    window_start: time(open.start),
                    finished: time(Timestamp::now()),
                    result: result.to_string(),
                    message,
                    archive_key: out.archive_key,
                    archive_bytes: to_i64(out.archive_bytes),
                    deleted: to_i64(out.deleted),
                    bytes_freed: to_i64(out.bytes_freed),
                },
            );
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run_at(bot: &str, task: &str, start: &str) -> TaskRun {
        let t: Timestamp = start.parse().unwrap();
        TaskRun {
            bot: bot.into(),
            task: task.into(),
            window_start: time(t),
            finished: time(t),
            result: "Succeeded".into(),
            message: String::new(),
            archive_key: None,
            archive_bytes: None,
            deleted: None,
            bytes_freed: None,
        }
    }

    #[test]
    fn a_task_runs_once_per_window_and_bot() {
        let mut runs = vec![run_at("a", VACUUM, "2026-01-04T02:00:00Z")];
        let this: Timestamp = "2026-01-04T02:00:00Z".parse().unwrap();
        let next: Timestamp = "2026-01-11T02:00:00Z".parse().unwrap();
        assert!(ran(&runs, "a", VACUUM, this));
        assert!(!ran(&runs, "a", PRUNE, this));
        assert!(!ran(&runs, "b", VACUUM, this));
        assert!(!ran(&runs, "a", VACUUM, next));
        record(&mut runs, run_at("a", VACUUM, "2026-01-11T02:00:00Z"));
        assert_eq!(runs.len(), 1, "the newest run replaces the previous one");
        assert!(ran(&runs, "a", VACUUM, next));
    }

    #[test]
    fn tasks_need_database_maintenance_allowed() {
        let spec = serde_json::from_value(serde_json::json!({
            "schedule": "0 2 * * 0", "duration": "1h",
            "tasks": {"vacuum": true, "pruneTradeHistory": {"olderThanDays": 90}}
        }))
        .unwrap();
        let mut mw = MaintenanceWindow::new("w", spec);
        assert_eq!(wanted(&mw), vec![VACUUM, PRUNE]);
        mw.spec.allow.database_maintenance = false;
        assert!(wanted(&mw).is_empty());
        mw.spec.tasks.log_cleanup = Some(Default::default());
        assert_eq!(wanted(&mw), vec![LOG_CLEANUP]);
        mw.spec.allow.log_cleanup = false;
        assert!(wanted(&mw).is_empty());
    }
}
