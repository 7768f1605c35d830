//! Status of BackupSchedules and the backup fields of TradingBots, and the only
//! places that write them.
//!
//! BackupSchedule status is written whole, only when it changed, with server-side
//! apply under [`super::STATUS_MANAGER`].
//!
//! On a TradingBot this controller owns `status.lastBackup` and the
//! `LastBackupSucceeded` condition, applied under the same manager with nothing else.
//! The TradingBot controller applies its whole status under its own manager; it builds
//! that status from the stored one, so it carries these fields along instead of
//! dropping them (step 2 of the e2e test
//! `on_demand_backup_is_streamed_verified_pruned_and_keeps_secrets_out` checks this
//! against the apiserver). `conditions` is an atomic list in the CRD, so an apply must name the
//! whole list: this controller sends the bot's current conditions with its own one set.
//! If a concurrent TradingBot write based on an older read drops the fields anyway,
//! the next reconcile puts them back (this controller watches TradingBots).

use iq720_crds::backup_schedule::{BackupRecord, BackupScheduleStatus};
use iq720_crds::trading_bot::LastBackup;
use iq720_crds::{BackupSchedule, TradingBot};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::Result;
use super::{CONTROLLER, STATUS_MANAGER};
use crate::shared::conditions::set_condition;
use crate::shared::context::Context;

/// Condition types of this controller.
pub mod condition {
    /// The schedule is valid and active.
    pub const READY: &str = "Ready";
    /// The spec has a problem the CRD schema cannot catch.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The last backup run backed up every bot it should have (False carries the
    /// error text); also set on each TradingBot for its own last backup.
    pub const LAST_BACKUP_SUCCEEDED: &str = "LastBackupSucceeded";
}

/// Reports an invalid spec. Returns whether the InvalidSpec message is new (an Event
/// is due).
pub fn invalid(
    st: &mut BackupScheduleStatus,
    problems: &[String],
    generation: Option<i64>,
) -> bool {
    let new = crate::shared::conditions::report_invalid(
        &mut st.conditions,
        problems,
        "the spec is invalid; see the InvalidSpec condition",
        generation,
    );
    st.next_schedule_time = None;
    new
}

/// Reports a valid spec.
pub fn valid(st: &mut BackupScheduleStatus, suspended: bool, generation: Option<i64>) {
    set_condition(
        &mut st.conditions,
        condition::INVALID_SPEC,
        false,
        "Valid",
        "the spec is valid",
        generation,
    );
    let (reason, message) = if suspended {
        (
            "Suspended",
            "scheduled backups are suspended; on-demand backups still run",
        )
    } else {
        ("Scheduled", "backups run on the schedule")
    };
    set_condition(
        &mut st.conditions,
        condition::READY,
        true,
        reason,
        message,
        generation,
    );
}

/// Writes the status when it differs from the stored one. Returns whether it wrote.
pub async fn write(
    ctx: &Context,
    bks: &BackupSchedule,
    new: &BackupScheduleStatus,
) -> Result<bool> {
    if bks.status.as_ref() == Some(new) {
        return Ok(false);
    }
    crate::shared::status::apply_status(&ctx.client, bks, new, STATUS_MANAGER).await?;
    ctx.metrics
        .status_writes
        .with_label_values(&[CONTROLLER])
        .inc();
    Ok(true)
}

/// Whether a record counts as a good backup (verified, or stored while verification
/// was off and never failed it).
pub fn good(r: &BackupRecord, verify: bool) -> bool {
    r.verified || (!verify && r.verification_error.is_none())
}

/// The bot's newest good backup in a status, as `status.lastBackup`.
pub fn last_backup(records: &[BackupRecord], bot: &str, verify: bool) -> Option<LastBackup> {
    records
        .iter()
        .filter(|r| r.bot == bot && good(r, verify))
        .max_by(|a, b| {
            a.completed_at
                .0
                .cmp(&b.completed_at.0)
                .then(a.key.cmp(&b.key))
        })
        .map(|r| LastBackup {
            key: r.key.clone(),
            time: r.completed_at.clone(),
            verified: r.verified,
        })
}

/// What this controller wants on a TradingBot's status.
#[derive(Debug, Clone, PartialEq)]
pub struct BotBackupStatus {
    /// `status.lastBackup` (None: leave it out).
    pub last_backup: Option<LastBackup>,
    /// The LastBackupSucceeded condition (None: keep whatever is there).
    pub condition: Option<(bool, String, String)>,
}

/// Applies `lastBackup` and the LastBackupSucceeded condition to a TradingBot when
/// they differ from what it has. Returns whether it wrote.
pub async fn apply_bot(ctx: &Context, bot: &TradingBot, want: &BotBackupStatus) -> Result<bool> {
    let current = bot.status.clone().unwrap_or_default();
    let mut conditions: Vec<Condition> = current.conditions.clone();
    if let Some((ok, reason, message)) = &want.condition {
        set_condition(
            &mut conditions,
            condition::LAST_BACKUP_SUCCEEDED,
            *ok,
            reason,
            message,
            bot.metadata.generation,
        );
    }
    let last_backup = want.last_backup.clone().or(current.last_backup.clone());
    if conditions == current.conditions && last_backup == current.last_backup {
        return Ok(false);
    }
    let mut status = json!({ "conditions": conditions });
    if let Some(lb) = &last_backup {
        status["lastBackup"] = serde_json::to_value(lb)?;
    }
    let patch = json!({
        "apiVersion": TradingBot::api_version(&()),
        "kind": TradingBot::kind(&()),
        "status": status,
    });
    let api: Api<TradingBot> =
        Api::namespaced(ctx.client.clone(), &bot.namespace().unwrap_or_default());
    api.patch_status(
        &bot.name_any(),
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics
        .status_writes
        .with_label_values(&[CONTROLLER])
        .inc();
    Ok(true)
}
