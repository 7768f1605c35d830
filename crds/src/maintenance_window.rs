//! The `MaintenanceWindow` custom resource: recurring time windows in which disruptive
//! operations on the selected bots may run.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired maintenance window.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "trading.iq720.io",
    version = "v1alpha1",
    kind = "MaintenanceWindow",
    doc = "A recurring time window in which disruptive operations (upgrades, key rotation, database and log maintenance) may run on the TradingBots it selects.",
    plural = "maintenancewindows",
    singular = "maintenancewindow",
    shortname = "mw",
    category = "iq720",
    namespaced,
    status = "MaintenanceWindowStatus",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".spec.duration"}"#,
    printcolumn = r#"{"name":"Active","type":"boolean","jsonPath":".status.active"}"#,
    printcolumn = r#"{"name":"Next","type":"date","jsonPath":".status.nextWindow"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tasks) || !has(self.tasks.pruneTradeHistory) || !self.tasks.pruneTradeHistory.archive || has(self.archive)").message("tasks.pruneTradeHistory.archive is true (the default) but spec.archive is not set: set spec.archive.destination or spec.archive.backupSchedule, or set archive: false to prune without an archive").field_path(".archive"))]
#[x_kube(validation = Rule::new("!has(self.tasks) || !has(self.tasks.logCleanup) || !has(self.tasks.logCleanup.archive) || !self.tasks.logCleanup.archive || has(self.archive)").message("tasks.logCleanup.archive is true but spec.archive is not set").field_path(".archive"))]
pub struct MaintenanceWindowSpec {
    /// Cron expression (five fields) of the window starts, for example `0 2 * * 0` for
    /// 02:00 every Sunday. Checked by the operator; a bad expression is reported in the
    /// InvalidSpec condition.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("schedule must be a cron expression such as '0 2 * * 0'"))]
    pub schedule: String,
    /// How long each window stays open, for example `2h`.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(crate::common::DURATION_RULE).message(crate::common::DURATION_MESSAGE))]
    #[x_kube(validation = Rule::new("!self.matches('^(0+(ms|s|m|h|d))+$')").message("duration must be longer than zero"))]
    pub duration: String,
    /// IANA time zone the schedule is read in, for example `America/New_York`.
    #[serde(default = "crate::common::default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// Labels of the TradingBots (in this namespace) this window governs. An empty
    /// selector selects every bot in the namespace.
    #[serde(default)]
    pub bot_selector: LabelSelector,
    /// Disruptive operations allowed inside the window.
    #[serde(default)]
    pub allow: AllowSpec,
    /// Pause new entries on the selected bots while the window is open.
    #[serde(default)]
    pub pause_trading: bool,
    /// Tasks run once per window and selected bot: database tasks (when
    /// `allow.databaseMaintenance`) and log cleanup (when `allow.logCleanup`).
    #[serde(default)]
    pub tasks: TasksSpec,
    /// Where archives written before deletions go: the trade history a
    /// `pruneTradeHistory` with `archive: true` removes, and the log files a
    /// `logCleanup` removes. Objects are
    /// `<prefix>/<namespace>/<bot>/archive/trades-<UTC>.jsonl.gz` and
    /// `.../archive/logs-<UTC>.tar`, with their sha256 in the object metadata; rows or
    /// files are deleted only after the stored object was downloaded again and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveSpec>,
}

/// The S3 destination of a window's archives: either its own or that of a
/// BackupSchedule (bucket, prefix and credentials reused, so the archives sit beside
/// the bot's backups).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.destination) != has(self.backupSchedule)").message("archive needs exactly one of destination or backupSchedule"))]
pub struct ArchiveSpec {
    /// S3 location of the archives (the same fields as a BackupSchedule's
    /// destination; the credentials Secret must be in this namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<crate::common::S3Location>,
    /// Name of a BackupSchedule in this namespace whose `destination` is used. When it
    /// does not exist the archive fails and nothing is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub backup_schedule: Option<String>,
}

/// Operations a window allows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowSpec {
    /// Version updates.
    #[serde(default = "crate::common::default_true")]
    pub upgrades: bool,
    /// API token rotation.
    #[serde(default = "crate::common::default_true")]
    pub key_rotation: bool,
    /// Database vacuum and pruning.
    #[serde(default = "crate::common::default_true")]
    pub database_maintenance: bool,
    /// Log compression and deletion.
    #[serde(default = "crate::common::default_true")]
    pub log_cleanup: bool,
}

impl Default for AllowSpec {
    fn default() -> Self {
        Self {
            upgrades: true,
            key_rotation: true,
            database_maintenance: true,
            log_cleanup: true,
        }
    }
}

/// Database tasks run inside the window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TasksSpec {
    /// Run SQLite VACUUM on the trade database.
    #[serde(default)]
    pub vacuum: bool,
    /// Archive and delete old trade history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_trade_history: Option<PruneSpec>,
    /// Delete the bot's rotated log files (optionally archiving them first). Runs only
    /// in windows whose `allow.logCleanup` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_cleanup: Option<LogCleanupSpec>,
}

/// Cleanup of a bot's rotated log files. Files the bot still writes to are never
/// touched.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogCleanupSpec {
    /// Delete rotated log files at least this many days old, compressed or not. When
    /// unset: the rotated files the bot already compressed (older than its
    /// `logs.compressAfter`) and those past its `logs.deleteAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("olderThanDays must be at least 1"))]
    pub older_than_days: Option<i32>,
    /// Write the files to `spec.archive` before deleting them. When unset: archive
    /// when `spec.archive` is set. When archiving fails nothing is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<bool>,
}

/// Pruning of closed trades.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PruneSpec {
    /// Prune closed trades older than this many days (at least 1).
    #[x_kube(validation = Rule::new("self >= 1").message("olderThanDays must be at least 1"))]
    pub older_than_days: i32,
    /// Write the pruned rows to `spec.archive` (required when true) before deleting
    /// them; only the rows in the verified archive are deleted, and nothing is when
    /// archiving fails.
    #[serde(default = "crate::common::default_true")]
    pub archive: bool,
}

/// Observed state of a maintenance window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowStatus {
    /// Whether a window is open now.
    #[serde(default)]
    pub active: bool,
    /// The open window, when one is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_window: Option<WindowPeriod>,
    /// Start of the next window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<Time>,
    /// Names of the TradingBots this window selects, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_bots: Vec<String>,
    /// Operations waiting for the next window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred_operations: Vec<DeferredOperation>,
    /// Tasks (`vacuum`, `pruneTradeHistory`, `logCleanup`) run in the current or last
    /// window, one entry per bot and task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_runs: Vec<TaskRun>,
    /// Standard conditions: Ready, InvalidSpec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A time period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowPeriod {
    /// Start of the period.
    pub start: Time,
    /// End of the period.
    pub end: Time,
}

/// An operation held back until a window opens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeferredOperation {
    /// TradingBot the operation applies to.
    pub bot: String,
    /// Kind of operation, for example `upgrade` or `keyRotation`.
    pub operation: String,
    /// Since when the operation is waiting.
    pub since: Time,
}

/// One database task run on one bot in one window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRun {
    /// TradingBot the task ran on.
    pub bot: String,
    /// Task: `vacuum`, `pruneTradeHistory` or `logCleanup`.
    pub task: String,
    /// Start of the window the task ran in (a task runs once per window and bot).
    pub window_start: Time,
    /// When the task finished.
    pub finished: Time,
    /// `Succeeded` or `Failed`.
    pub result: String,
    /// What happened: rows pruned, bytes reclaimed, duration, or the error.
    pub message: String,
    /// Object key of the archive written (and verified) before the deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_key: Option<String>,
    /// Size in bytes of that archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<i64>,
    /// Rows (`pruneTradeHistory`) or files (`logCleanup`) deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<i64>,
    /// Bytes freed: the database shrink of a vacuum, the log bytes of a cleanup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<i64>,
}
