//! The `BackupSchedule` custom resource: scheduled, verified S3 backups of the trade
//! databases of the bots it selects.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::S3Location;

/// Annotation that asks for a backup now. Set it to any new value (for example the
/// current time); the operator takes one backup per distinct value and records the
/// value it handled in `status.lastOnDemandRequest`.
pub const BACKUP_NOW_ANNOTATION: &str = "trading.iq720.io/backup-now";

/// Desired backup schedule.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "trading.iq720.io",
    version = "v1alpha1",
    kind = "BackupSchedule",
    doc = "Scheduled, verified S3 backups of the trade databases of the TradingBots it selects.",
    plural = "backupschedules",
    singular = "backupschedule",
    shortname = "bks",
    category = "iq720",
    namespaced,
    status = "BackupScheduleStatus",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Last Result","type":"string","jsonPath":".status.lastResult"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// Cron expression with five fields (minute hour day-of-month month day-of-week),
    /// for example `0 3 * * *` for 03:00 every day. Checked by the operator; a bad
    /// expression is reported in the InvalidSpec condition.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("schedule must be a cron expression such as '0 3 * * *'"))]
    pub schedule: String,
    /// IANA time zone the schedule is read in, for example `Europe/Berlin`.
    #[serde(default = "crate::common::default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// Labels of the TradingBots (in this namespace) to back up. An empty selector
    /// selects every bot in the namespace.
    #[serde(default)]
    pub bot_selector: LabelSelector,
    /// Where backups are written.
    pub destination: S3Location,
    /// Which backups to keep.
    #[serde(default)]
    pub retention: RetentionSpec,
    /// Download every new backup again and check its checksums and database integrity.
    #[serde(default = "crate::common::default_true")]
    pub verify: bool,
    /// Stop taking scheduled backups; on-demand backups still run.
    #[serde(default)]
    pub suspend: bool,
    /// Spread the bots of a scheduled run over this many seconds: each bot starts
    /// after a fixed delay derived from its namespace and name (the same every run),
    /// so many bots do not all upload in the same second. 0 (the default) starts
    /// every bot at the slot.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("jitterSeconds must be between 0 and 3600"))]
    pub jitter_seconds: i32,
    /// Restore drills: restore the newest verified backup of a bot into a throwaway
    /// pod running the bot image, check the restored database's integrity and count
    /// its rows; the result goes into `status.drills`. Unset: no scheduled drills
    /// (the drill-now annotation still runs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_drill: Option<RestoreDrillSpec>,
}

/// Annotation that asks for a restore drill of every selected bot's newest verified
/// backup now; one drill per distinct value, recorded in `status.lastDrillRequest`.
pub const DRILL_NOW_ANNOTATION: &str = "trading.iq720.io/drill-now";

/// When restore drills run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreDrillSpec {
    /// Drill a bot after every Nth verified backup of it (1: after every backup).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("restoreDrill.everyNthBackup must be between 1 and 1000"))]
    pub every_nth_backup: i32,
    /// Deadline of one drill pod (download, restore, checks), for example `10m`.
    #[serde(default = "default_drill_timeout")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(crate::common::DURATION_RULE).message(crate::common::DURATION_MESSAGE))]
    pub timeout: String,
}

fn default_drill_timeout() -> String {
    "10m".to_string()
}

/// Result of a restore drill.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DrillResult {
    /// The backup was downloaded, its checksums matched, it restored, and the restored
    /// database passed `PRAGMA integrity_check`.
    Succeeded,
    /// Some step failed; see `message`.
    Failed,
}

/// The restore drills of one bot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotDrillStatus {
    /// Name of the TradingBot.
    pub bot: String,
    /// Verified backups of this bot since its last drill (a drill runs when it
    /// reaches `restoreDrill.everyNthBackup`).
    #[serde(default)]
    pub backups_since_drill: i32,
    /// The latest drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<DrillRecord>,
}

/// One restore drill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillRecord {
    /// Object key of the backup drilled.
    pub key: String,
    /// Outcome.
    pub result: DrillResult,
    /// Why the drill failed (or a summary when it succeeded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Rows per table of the restored database.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub row_counts: BTreeMap<String, i64>,
    /// Wall time of the drill pod's work (download, checks, restore, counting) in
    /// milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// When the drill started.
    pub started_at: Time,
    /// When the drill finished.
    pub completed_at: Time,
}

/// Retention of backups, per bot.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Number of newest backups to keep per bot (at least 1).
    #[serde(default = "default_keep_last")]
    #[x_kube(validation = Rule::new("self >= 1").message("retention.keepLast must be at least 1 so that the newest backup is never deleted"))]
    #[x_kube(validation = Rule::new("self <= 100").message("retention.keepLast must be at most 100 (every kept backup is listed in the status)"))]
    pub keep_last: i32,
    /// Delete backups older than this, for example `30d`, but never one of the
    /// `keepLast` newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::common::DURATION_RULE).message(crate::common::DURATION_MESSAGE))]
    pub max_age: Option<String>,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            keep_last: default_keep_last(),
            max_age: None,
        }
    }
}

fn default_keep_last() -> i32 {
    7
}

/// Result of a backup run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupResult {
    /// Every selected bot was backed up (and verified when asked).
    Succeeded,
    /// Some bots were backed up, others failed.
    PartiallyFailed,
    /// No backup succeeded.
    Failed,
    /// Nothing was backed up and nothing failed: no bot selected, or every selected
    /// bot was stopped (emergency stop; see the BotStopped Events).
    Skipped,
}

/// Observed state of a backup schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// The schedule slot of the last scheduled run (on-demand runs do not change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the last run (scheduled, on-demand or retry) started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    /// Runs in a row that did not back up every bot they should have; a failed run is
    /// retried with exponential backoff until the next slot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: i32,
    /// When the next scheduled run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Result of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<BackupResult>,
    /// Value of the backup-now annotation handled last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_on_demand_request: Option<String>,
    /// Backups the operator wrote and still keeps, newest first. Retention removes an
    /// entry together with its object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_backups: Vec<BackupRecord>,
    /// Restore drills per bot (see `spec.restoreDrill`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drills: Vec<BotDrillStatus>,
    /// Value of the drill-now annotation handled last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill_request: Option<String>,
    /// Standard conditions: Ready, InvalidSpec, LastBackupSucceeded, LastDrillSucceeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One backup object in the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// Name of the TradingBot backed up.
    pub bot: String,
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the object, hex encoded.
    pub sha256: String,
    /// Whether the object was downloaded again and verified.
    #[serde(default)]
    pub verified: bool,
    /// Why verification failed, when it did (the backup does not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_error: Option<String>,
    /// When the backup finished.
    pub completed_at: Time,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}
