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
//! Tasks run only when the window's `allow.databaseMaintenance` is set, on bots that
//! run (not emergency stopped). `archive: true` would write the pruned rows to S3
//! before deleting them; that is not implemented yet, so such a prune is recorded as
//! `Skipped` and deletes nothing (rows are never deleted unarchived when the spec asks
//! for an archive).

use std::time::{Duration, Instant};

use iq720_crds::maintenance_window::TaskRun;
use iq720_crds::{MaintenanceWindow, TradingBot};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::status::time;
use super::window::Period;
use crate::botlink::BotRef;
use crate::botlink::client::BotEndpoint;
use crate::botlink::endpoint;
use crate::botlink::token;
use crate::shared::context::Context;

/// Deadline of one task call.
const TASK_DEADLINE: Duration = Duration::from_secs(300);

/// Task names as recorded in status.
pub const VACUUM: &str = "vacuum";
/// Task names as recorded in status.
pub const PRUNE: &str = "pruneTradeHistory";

/// What the tasks step did.
#[derive(Debug, Default)]
pub struct TasksOutcome {
    /// Some bot was not ready: try again soon while the window is open.
    pub retry: bool,
}

/// The tasks a window asks for.
pub fn wanted(mw: &MaintenanceWindow) -> Vec<&'static str> {
    if !mw.spec.allow.database_maintenance {
        return Vec::new();
    }
    let mut t = Vec::new();
    if mw.spec.tasks.vacuum {
        t.push(VACUUM);
    }
    if mw.spec.tasks.prune_trade_history.is_some() {
        t.push(PRUNE);
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
    ep: &BotEndpoint,
    task: &str,
) -> (&'static str, String) {
    let began = Instant::now();
    match task {
        VACUUM => match ctx.bots.vacuum(ep, TASK_DEADLINE).await {
            Ok((before, after)) => (
                "Succeeded",
                format!(
                    "vacuum reclaimed {} bytes ({before} -> {after}) in {:.1}s",
                    before.saturating_sub(after),
                    began.elapsed().as_secs_f64()
                ),
            ),
            Err(e) => ("Failed", format!("vacuum failed: {e}")),
        },
        _ => {
            let Some(prune) = mw.spec.tasks.prune_trade_history.as_ref() else {
                return ("Skipped", "no pruneTradeHistory in the spec".into());
            };
            if prune.archive {
                return (
                    "Skipped",
                    "archive to S3 before pruning is not implemented yet; no rows were deleted \
                     (set archive: false to prune without an archive)"
                        .into(),
                );
            }
            let days = u32::try_from(prune.older_than_days.max(1)).unwrap_or(1);
            match ctx.bots.prune(ep, days, TASK_DEADLINE).await {
                Ok(rows) => (
                    "Succeeded",
                    format!(
                        "pruned {rows} closed trade(s) older than {days} day(s) in {:.1}s",
                        began.elapsed().as_secs_f64()
                    ),
                ),
                Err(e) => ("Failed", format!("prune failed: {e}")),
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
            let (result, message) = run_one(ctx, mw, &ep, task).await;
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
    }
}
