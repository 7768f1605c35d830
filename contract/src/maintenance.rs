//! The maintenance endpoints of the bot API that MaintenanceWindows drive: the
//! trade-history archive written before a prune, the prune by that archive's
//! selection, and the cleanup (and archive) of rotated log files.
//!
//! Why a contract: the operator archives what the bot streams and then asks the bot to
//! delete *exactly* the archived rows or files. The names that tie the two calls
//! together (the cutoff, the highest trade id, the row count, the file names) must mean
//! the same thing on both sides, so they are defined once here.

use serde::{Deserialize, Serialize};

/// `POST` path of the trade-history archive (gzip'd JSON lines, nothing deleted).
pub const PRUNE_ARCHIVE_PATH: &str = "/api/v1/maintenance/prune/archive";
/// `POST` path of the prune.
pub const PRUNE_PATH: &str = "/api/v1/maintenance/prune";
/// `POST` path of the log cleanup.
pub const LOGS_PATH: &str = "/api/v1/maintenance/logs";
/// `POST` path of the log archive (a tar of the files a cleanup would delete).
pub const LOGS_ARCHIVE_PATH: &str = "/api/v1/maintenance/logs/archive";

/// Response header: rows (prune archive) or files (log archive) in the archive.
pub const HEADER_ARCHIVE_ROWS: &str = "x-iq720-archive-rows";
/// Response header: sha256 (hex) of the archive body as sent.
pub const HEADER_ARCHIVE_SHA256: &str = "x-iq720-archive-sha256";
/// Response header: the prune cutoff (ms since the epoch) of a trade-history archive.
pub const HEADER_ARCHIVE_CUTOFF_MS: &str = "x-iq720-archive-cutoff-ms";
/// Response header: the highest trade id in a trade-history archive.
pub const HEADER_ARCHIVE_MAX_TRADE_ID: &str = "x-iq720-archive-max-trade-id";
/// Response header of the prune: rows deleted.
pub const HEADER_PRUNED_ROWS: &str = "x-iq720-pruned-rows";

/// `format` of a trade-history archive.
pub const PRUNE_ARCHIVE_FORMAT: &str = "iq720.trade-archive/v1";
/// `format` of a log archive.
pub const LOG_ARCHIVE_FORMAT: &str = "iq720.log-archive/v1";
/// Name of the manifest entry of a log archive (its first entry).
pub const LOG_ARCHIVE_MANIFEST: &str = "MANIFEST.json";
/// Error code of a prune whose selection no longer matches the archived row count.
pub const PRUNE_MISMATCH_CODE: &str = "prune_mismatch";

/// Body of `POST /api/v1/maintenance/prune/archive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneArchiveRequest {
    /// Archive the rows a prune of closed trades older than this many days would delete.
    pub older_than_days: u32,
}

/// Body of `POST /api/v1/maintenance/prune`: either `olderThanDays` (prune whatever is
/// older now) or the selection of an archive (`cutoffMs` + `maxTradeId`, with
/// `expectedRows`: refused with 409 `prune_mismatch`, nothing deleted, when the
/// selection no longer has exactly that many rows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneRequest {
    /// Prune closed trades older than this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than_days: Option<u32>,
    /// Prune rows before this instant (ms since the epoch), from an archive's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff_ms: Option<i64>,
    /// Prune trades up to this id only, from an archive's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_trade_id: Option<i64>,
    /// The number of rows archived; any other count deletes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_rows: Option<u64>,
    /// Report without deleting.
    #[serde(default)]
    pub dry_run: bool,
}

/// The last line of a trade-history archive, `{"manifest": {...}}`: what the archive
/// holds and the selection that deletes exactly those rows. Being last, it also marks
/// the archive complete (a truncated archive has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneArchiveManifest {
    /// [`PRUNE_ARCHIVE_FORMAT`].
    pub format: String,
    /// Rows before this instant (ms since the epoch) are in the archive.
    pub cutoff_ms: i64,
    /// Highest trade id in the archive (0 when it holds no trade).
    pub max_trade_id: i64,
    /// Trades in the archive.
    pub trades: u64,
    /// Orders in the archive.
    pub orders: u64,
    /// Equity snapshots in the archive.
    pub equity_snapshots: u64,
    /// When the archive was written (ms since the epoch).
    pub created_ms: i64,
}

impl PruneArchiveManifest {
    /// Rows of every table.
    pub fn rows(&self) -> u64 {
        self.trades + self.orders + self.equity_snapshots
    }
}

/// Which rotated log files a cleanup (or its archive) takes. Files still written to
/// (`trading.log`, ...) are never taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogCleanupRequest {
    /// Take rotated files at least this many days old, compressed or not. Without it:
    /// rotated files already compressed, and those past the bot's `logs.deleteAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than_days: Option<u32>,
    /// Take only these file names (those of an archive); names that are not taken by
    /// the rule above are left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// Report without deleting.
    #[serde(default)]
    pub dry_run: bool,
}

/// One rotated log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFile {
    /// File name in the log directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256 (hex) of the content; set in a log archive's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Answer of `POST /api/v1/maintenance/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogCleanupResponse {
    /// Files deleted (or, with `dryRun`, that would be).
    pub files: Vec<LogFile>,
    /// Bytes of those files.
    pub bytes: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// The first entry of a log archive ([`LOG_ARCHIVE_MANIFEST`]): the files that follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogArchiveManifest {
    /// [`LOG_ARCHIVE_FORMAT`].
    pub format: String,
    /// The files, in archive order, with sizes and sha256.
    pub files: Vec<LogFile>,
    /// When the archive was written (ms since the epoch).
    pub created_ms: i64,
}
