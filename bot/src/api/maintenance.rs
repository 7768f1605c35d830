//! Maintenance endpoints that MaintenanceWindows drive besides vacuum and prune: the
//! trade-history archive a prune is preceded by, and the cleanup (and archive) of
//! rotated log files.
//!
//! Why archives are files first and streams second: the archive is written to a work
//! file beside the database from one read snapshot, so its sha256, size and row count
//! are known before the first byte is sent (they travel as response headers the
//! operator checks against what it stored). The file is unlinked right after opening,
//! so nothing is left behind whatever happens to the transfer.

use super::routes::{blocking, parse_body};
use super::{ApiError, AppState};
use crate::runner::wall_ms;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use iq720_contract::maintenance::{
    HEADER_ARCHIVE_CUTOFF_MS, HEADER_ARCHIVE_MAX_TRADE_ID, HEADER_ARCHIVE_ROWS,
    HEADER_ARCHIVE_SHA256, LogCleanupRequest, LogCleanupResponse, LogFile, PruneArchiveRequest,
};
use std::path::{Path, PathBuf};
use tracing::info;

/// Work directory for archives: beside the database.
fn work_dir(db: &Path) -> PathBuf {
    db.parent()
        .map(|p| p.join(".maintenance-work"))
        .unwrap_or_else(std::env::temp_dir)
}

/// A fresh work file path (the directory created).
fn work_file(db: &Path, stem: &str, ext: &str) -> Result<PathBuf, ApiError> {
    let dir = work_dir(db);
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(dir.join(format!(
        "{stem}-{}.{ext}",
        jiff::Timestamp::now().as_nanosecond()
    )))
}

/// Opens `path`, unlinks it (the handle keeps it readable) and streams it.
fn stream_file(path: &Path, content_type: &'static str) -> Result<Response, ApiError> {
    let file = std::fs::File::open(path).map_err(|e| ApiError::internal(e.to_string()));
    let _ = std::fs::remove_file(path);
    let file = file?;
    let len = file.metadata().map(|m| m.len()).ok();
    let file = tokio::fs::File::from_std(file);
    let stream = futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(resp)
}

fn set(resp: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        resp.headers_mut().insert(name, v);
    }
}

/// `POST /api/v1/maintenance/prune/archive` `{"olderThanDays": N}`: streams the rows a
/// prune of closed trades older than N days would delete, as gzip'd JSON lines with a
/// manifest line last; deletes nothing. Headers give the row count, the cutoff, the
/// highest trade id and the sha256 of the body: the prune that follows the archive
/// names that selection (`POST /api/v1/maintenance/prune` with `cutoffMs`,
/// `maxTradeId`, `expectedRows`).
pub async fn prune_archive(
    State(bot): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: PruneArchiveRequest = parse_body(&body)?;
    if req.older_than_days < 1 {
        return Err(ApiError::bad_request(
            "`olderThanDays` (integer ≥ 1) is required",
        ));
    }
    let cutoff_ms = wall_ms() - i64::from(req.older_than_days) * 86_400_000;
    let (path, manifest, written) = blocking(&bot, move |b| {
        let path = work_file(b.store.path(), "trades", "jsonl.gz")?;
        match crate::maintenance::write_prune_archive(&b.store, cutoff_ms, &path) {
            Ok((m, w)) => Ok((path, m, w)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(ApiError::internal(e.to_string()))
            }
        }
    })
    .await?;
    info!(
        rows = manifest.rows(),
        trades = manifest.trades,
        cutoff_ms,
        max_trade_id = manifest.max_trade_id,
        bytes = written.bytes,
        "trade-history archive streamed"
    );
    let mut resp = stream_file(&path, "application/gzip")?;
    set(&mut resp, HEADER_ARCHIVE_ROWS, manifest.rows());
    set(&mut resp, HEADER_ARCHIVE_CUTOFF_MS, manifest.cutoff_ms);
    set(
        &mut resp,
        HEADER_ARCHIVE_MAX_TRADE_ID,
        manifest.max_trade_id,
    );
    set(&mut resp, HEADER_ARCHIVE_SHA256, written.sha256);
    Ok(resp)
}

/// The log directory and the rotated files `req` takes now.
fn candidates(
    bot: &crate::runner::Bot,
    req: &LogCleanupRequest,
) -> Result<(PathBuf, Vec<crate::logging::CleanupCandidate>), ApiError> {
    let cfg = bot.config()?;
    let today = (crate::logging::system_clock())();
    let files = crate::logging::cleanup_candidates(
        &cfg.log_dir,
        today,
        req.older_than_days.map(i64::from),
        cfg.logs.delete_after.days_ceil() as i64,
        req.files.as_deref(),
    )
    .map_err(|e| ApiError::internal(format!("cannot list the log directory: {e}")))?;
    Ok((cfg.log_dir, files))
}

/// `POST /api/v1/maintenance/logs`: deletes rotated log files — by default those
/// already compressed and those past `logs.deleteAfter`; with `olderThanDays`, every
/// rotated file that old; with `files`, only those names among them — and answers
/// with the files and bytes removed. Files still written to are never taken.
pub async fn logs(
    State(bot): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LogCleanupResponse>, ApiError> {
    let req: LogCleanupRequest = parse_body(&body)?;
    let out = blocking(&bot, move |b| {
        let (_, files) = candidates(b, &req)?;
        let mut done = Vec::with_capacity(files.len());
        for f in files {
            if !req.dry_run {
                match std::fs::remove_file(&f.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(ApiError::internal(format!("cannot delete {}: {e}", f.name)));
                    }
                }
            }
            done.push(LogFile {
                name: f.name,
                bytes: f.bytes,
                sha256: None,
            });
        }
        Ok(LogCleanupResponse {
            bytes: done.iter().map(|f| f.bytes).sum(),
            files: done,
            dry_run: req.dry_run,
        })
    })
    .await?;
    info!(
        files = out.files.len(),
        bytes = out.bytes,
        dry_run = out.dry_run,
        "log cleanup"
    );
    Ok(Json(out))
}

/// `POST /api/v1/maintenance/logs/archive`: streams a tar of the files the same
/// request to `/api/v1/maintenance/logs` would delete (`MANIFEST.json` first); deletes
/// nothing. Headers give the file count and the sha256 of the body.
pub async fn logs_archive(
    State(bot): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: LogCleanupRequest = parse_body(&body)?;
    let (path, manifest, written) = blocking(&bot, move |b| {
        let (_, files) = candidates(b, &req)?;
        let path = work_file(b.store.path(), "logs", "tar")?;
        match crate::maintenance::write_log_archive(&files, &path) {
            Ok((m, w)) => Ok((path, m, w)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(ApiError::internal(e.to_string()))
            }
        }
    })
    .await?;
    info!(
        files = manifest.files.len(),
        bytes = written.bytes,
        "log archive streamed"
    );
    let mut resp = stream_file(&path, "application/x-tar")?;
    set(&mut resp, HEADER_ARCHIVE_ROWS, manifest.files.len());
    set(&mut resp, HEADER_ARCHIVE_SHA256, written.sha256);
    Ok(resp)
}
