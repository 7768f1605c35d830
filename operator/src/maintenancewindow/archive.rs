//! Archives written to S3 before a window's task deletes anything: the trade history a
//! `pruneTradeHistory` with `archive: true` removes, and the log files a `logCleanup`
//! removes when the window has an archive destination.
//!
//! Why in this order — stream, verify, then delete exactly what was verified: a prune
//! cannot be undone, so the only rows it may remove are rows known to be readable in
//! S3. The bot streams the archive together with headers describing it (row or file
//! count, sha256, and for trades the cutoff and highest trade id); the operator streams
//! it into S3 with the shared multipart upload ([`crate::shared::s3`], never held
//! whole in memory, aborted on failure so no partial object is listed), records the
//! sha256 in the object's metadata, downloads the object again, checks its sha256
//! against the upload and the bot's header, and reads it back with the bot's own
//! reader ([`iq720_bot::maintenance`]: manifest present, counts match). Only then it
//! asks the bot to delete the archive's selection: trades up to the archived highest id
//! closed before the archived cutoff, with the archived row count as a guard the bot
//! refuses on (409, nothing deleted) — or, for logs, the archived file names. Any
//! failure before that point deletes nothing, and the task is recorded `Failed`.
//!
//! Where the archive goes: `spec.archive.destination`, or the `destination` of the
//! BackupSchedule named by `spec.archive.backupSchedule` (so archives sit beside the
//! bot's backups with the same credentials). Keys:
//! `<prefix>/<namespace>/<bot>/archive/{trades-<UTC>.jsonl.gz,logs-<UTC>.tar}`.

use std::collections::HashMap;
use std::time::Duration;

use iq720_contract::maintenance::{
    HEADER_ARCHIVE_CUTOFF_MS, HEADER_ARCHIVE_MAX_TRADE_ID, HEADER_ARCHIVE_ROWS,
    HEADER_ARCHIVE_SHA256, LOGS_ARCHIVE_PATH, LogCleanupRequest, PRUNE_ARCHIVE_PATH,
    PruneArchiveRequest, PruneRequest,
};
use iq720_crds::BackupSchedule;
use iq720_crds::common::S3Location;
use iq720_crds::maintenance_window::ArchiveSpec;
use jiff::Timestamp;
use kube::api::Api;

use crate::botlink::client::{BotApiError, BotEndpoint};
use crate::shared::context::Context;
use crate::shared::s3::{
    self, ARCHIVE_DIR, MANAGED_BY, META_BOT, META_MANAGED_BY, META_NAMESPACE, META_ROWS,
    META_WINDOW, S3Error, S3Target,
};

/// Size of one multipart part.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Wait for the bot's answer head (it writes the archive before answering).
const HEAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an archive (and therefore the deletion) did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The destination could not be resolved.
    #[error("archive destination: {0}")]
    Destination(String),
    /// S3 failed (credentials, bucket, transfer).
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The bot failed or refused.
    #[error(transparent)]
    Bot(#[from] BotApiError),
    /// The stored archive does not match what the bot sent.
    #[error("archive verification failed: {0}")]
    Verify(String),
}

/// A verified archive and the deletion that followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Object key (`None`: nothing to archive, nothing deleted).
    pub key: Option<String>,
    /// `s3://bucket/key` for messages.
    pub url: String,
    /// Archive size in bytes.
    pub bytes: u64,
    /// Rows (trades archive) or files (log archive) in the archive.
    pub archived: u64,
    /// Rows or files deleted afterwards.
    pub deleted: u64,
    /// Log bytes freed (log cleanup only).
    pub freed: u64,
}

/// `<prefix>/<namespace>/<bot>/archive/<kind>-<UTC with ms>.<ext>`.
pub fn object_key(
    prefix: &str,
    namespace: &str,
    bot: &str,
    kind: &str,
    ext: &str,
    at: Timestamp,
) -> String {
    let prefix = prefix.trim_matches('/');
    let base = if prefix.is_empty() {
        format!("{namespace}/{bot}/{ARCHIVE_DIR}")
    } else {
        format!("{prefix}/{namespace}/{bot}/{ARCHIVE_DIR}")
    };
    format!("{base}/{kind}-{}.{ext}", at.strftime("%Y%m%dT%H%M%S%.3fZ"))
}

/// The S3 location of `spec` in `namespace`.
pub async fn destination(
    ctx: &Context,
    namespace: &str,
    spec: &ArchiveSpec,
) -> Result<S3Location, ArchiveError> {
    if let Some(d) = &spec.destination {
        return Ok(d.clone());
    }
    let Some(name) = &spec.backup_schedule else {
        return Err(ArchiveError::Destination(
            "spec.archive has neither destination nor backupSchedule".into(),
        ));
    };
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(b)) => Ok(b.spec.destination),
        Ok(None) => Err(ArchiveError::Destination(format!(
            "BackupSchedule {name} not found"
        ))),
        Err(e) => Err(ArchiveError::Destination(format!(
            "cannot read BackupSchedule {name}: {e}"
        ))),
    }
}

fn header_u64(h: &http::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

fn header_i64(h: &http::HeaderMap, name: &str) -> Option<i64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

/// Who wrote an archive, for the object's metadata.
pub struct Owner<'a> {
    /// Namespace of the bot and window.
    pub namespace: &'a str,
    /// Bot name.
    pub bot: &'a str,
    /// Window name.
    pub window: &'a str,
}

fn metadata(owner: &Owner<'_>, rows: u64) -> HashMap<String, String> {
    HashMap::from([
        (META_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (META_NAMESPACE.to_string(), owner.namespace.to_string()),
        (META_BOT.to_string(), owner.bot.to_string()),
        (META_WINDOW.to_string(), owner.window.to_string()),
        (META_ROWS.to_string(), rows.to_string()),
    ])
}

/// Streams `body` to `key`, records the sha256, downloads the object again and checks
/// it against the upload and `bot_sha`; returns the upload and the downloaded file.
async fn store_and_fetch(
    s3: &S3Target,
    key: &str,
    content_type: &str,
    meta: HashMap<String, String>,
    body: hyper::body::Incoming,
    bot_sha: Option<&str>,
    deadline: tokio::time::Instant,
) -> Result<(s3::Uploaded, tempfile::TempDir, std::path::PathBuf), ArchiveError> {
    // With the bot's sha256 the upload completes only if the bytes match it.
    let up = s3::store_with_sha256(
        s3,
        key,
        content_type,
        meta,
        body,
        PART_SIZE,
        bot_sha,
        deadline,
    )
    .await?;
    let dir = tempfile::tempdir().map_err(S3Error::Io)?;
    let path = dir.path().join("archive");
    let (sha, meta_sha) = tokio::time::timeout_at(deadline, s3::download_to_file(s3, key, &path))
        .await
        .map_err(|_| S3Error::Deadline)??;
    if sha != up.sha256 || meta_sha.as_deref() != Some(up.sha256.as_str()) {
        return Err(ArchiveError::Verify(format!(
            "downloaded sha256 {sha} (metadata {meta_sha:?}) differs from the uploaded {}",
            up.sha256
        )));
    }
    Ok((up, dir, path))
}

/// Archives the rows a prune of trades older than `days` would delete, verifies the
/// archive, then prunes exactly those rows.
pub async fn prune_with_archive(
    ctx: &Context,
    spec: &ArchiveSpec,
    owner: &Owner<'_>,
    ep: &BotEndpoint,
    days: u32,
    deadline: tokio::time::Instant,
) -> Result<Done, ArchiveError> {
    let loc = destination(ctx, owner.namespace, spec).await?;
    let s3 = s3::connect(ctx, owner.namespace, &loc).await?;
    let (headers, body) = ctx
        .bots
        .post_stream(
            ep,
            PRUNE_ARCHIVE_PATH,
            &PruneArchiveRequest {
                older_than_days: days,
            },
            HEAD_TIMEOUT,
        )
        .await?;
    let missing = |h: &str| ArchiveError::Verify(format!("the bot sent no {h} header"));
    let rows =
        header_u64(&headers, HEADER_ARCHIVE_ROWS).ok_or_else(|| missing(HEADER_ARCHIVE_ROWS))?;
    let cutoff = header_i64(&headers, HEADER_ARCHIVE_CUTOFF_MS)
        .ok_or_else(|| missing(HEADER_ARCHIVE_CUTOFF_MS))?;
    let max_id = header_i64(&headers, HEADER_ARCHIVE_MAX_TRADE_ID)
        .ok_or_else(|| missing(HEADER_ARCHIVE_MAX_TRADE_ID))?;
    let bot_sha = headers
        .get(HEADER_ARCHIVE_SHA256)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if rows == 0 {
        return Ok(Done {
            key: None,
            url: String::new(),
            bytes: 0,
            archived: 0,
            deleted: 0,
            freed: 0,
        });
    }
    let key = object_key(
        &s3.prefix,
        owner.namespace,
        owner.bot,
        "trades",
        "jsonl.gz",
        Timestamp::now(),
    );
    let (up, _dir, path) = store_and_fetch(
        &s3,
        &key,
        "application/gzip",
        metadata(owner, rows),
        body,
        bot_sha.as_deref(),
        deadline,
    )
    .await?;
    let content = read_stored(path, iq720_bot::maintenance::read_prune_archive).await?;
    let m = &content.manifest;
    if m.rows() != rows || m.cutoff_ms != cutoff || m.max_trade_id != max_id {
        return Err(ArchiveError::Verify(format!(
            "the stored manifest ({} rows, cutoff {}, max trade id {}) differs from what the bot announced ({rows}, {cutoff}, {max_id})",
            m.rows(),
            m.cutoff_ms,
            m.max_trade_id
        )));
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let deleted = ctx
        .bots
        .prune_selected(
            ep,
            &PruneRequest {
                cutoff_ms: Some(m.cutoff_ms),
                max_trade_id: Some(m.max_trade_id),
                expected_rows: Some(rows),
                ..PruneRequest::default()
            },
            remaining.max(Duration::from_secs(30)),
        )
        .await?;
    Ok(Done {
        url: format!("s3://{}/{key}", s3.bucket),
        key: Some(key),
        bytes: up.size,
        archived: rows,
        deleted,
        freed: 0,
    })
}

/// Archives the rotated log files `req` takes, verifies the archive, then deletes
/// exactly the archived files.
pub async fn logs_with_archive(
    ctx: &Context,
    spec: &ArchiveSpec,
    owner: &Owner<'_>,
    ep: &BotEndpoint,
    req: &LogCleanupRequest,
    deadline: tokio::time::Instant,
) -> Result<Done, ArchiveError> {
    let loc = destination(ctx, owner.namespace, spec).await?;
    let s3 = s3::connect(ctx, owner.namespace, &loc).await?;
    let (headers, body) = ctx
        .bots
        .post_stream(ep, LOGS_ARCHIVE_PATH, req, HEAD_TIMEOUT)
        .await?;
    let files = header_u64(&headers, HEADER_ARCHIVE_ROWS).ok_or_else(|| {
        ArchiveError::Verify(format!("the bot sent no {HEADER_ARCHIVE_ROWS} header"))
    })?;
    if files == 0 {
        return Ok(Done {
            key: None,
            url: String::new(),
            bytes: 0,
            archived: 0,
            deleted: 0,
            freed: 0,
        });
    }
    let bot_sha = headers
        .get(HEADER_ARCHIVE_SHA256)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key = object_key(
        &s3.prefix,
        owner.namespace,
        owner.bot,
        "logs",
        "tar",
        Timestamp::now(),
    );
    let (up, _dir, path) = store_and_fetch(
        &s3,
        &key,
        "application/x-tar",
        metadata(owner, files),
        body,
        bot_sha.as_deref(),
        deadline,
    )
    .await?;
    let manifest = read_stored(path, iq720_bot::maintenance::read_log_archive).await?;
    if manifest.files.len() as u64 != files {
        return Err(ArchiveError::Verify(format!(
            "the stored archive lists {} file(s), the bot announced {files}",
            manifest.files.len()
        )));
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let gone = ctx
        .bots
        .clean_logs(
            ep,
            &LogCleanupRequest {
                older_than_days: req.older_than_days,
                files: Some(manifest.files.iter().map(|f| f.name.clone()).collect()),
                dry_run: false,
            },
            remaining.max(Duration::from_secs(30)),
        )
        .await?;
    Ok(Done {
        url: format!("s3://{}/{key}", s3.bucket),
        key: Some(key),
        bytes: up.size,
        archived: files,
        deleted: gone.files.len() as u64,
        freed: gone.bytes,
    })
}

/// Reads a downloaded archive back with the bot's own reader, off the async runtime;
/// any failure is a verification failure.
async fn read_stored<T, E, F>(path: std::path::PathBuf, read: F) -> Result<T, ArchiveError>
where
    T: Send + 'static,
    E: std::fmt::Display,
    F: FnOnce(std::fs::File) -> Result<T, E> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| read(f).map_err(|e| e.to_string()))
    })
    .await
    .map_err(|e| ArchiveError::Verify(format!("reader failed: {e}")))?
    .map_err(ArchiveError::Verify)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_sit_under_the_bots_archive_folder() {
        let at: Timestamp = "2026-11-25T02:03:04.005Z".parse().unwrap();
        assert_eq!(
            object_key("/backups/", "prod", "alpha", "trades", "jsonl.gz", at),
            "backups/prod/alpha/archive/trades-20261125T020304.005Z.jsonl.gz"
        );
        assert_eq!(
            object_key("", "prod", "alpha", "logs", "tar", at),
            "prod/alpha/archive/logs-20261125T020304.005Z.tar"
        );
    }
}
