//! Verification of a stored backup: download the object again, compare its sha256
//! with the one recorded at upload, then run the bot's own archive check (manifest,
//! per-part checksums, SQLite `PRAGMA integrity_check`, schema version) on it.
//!
//! Why the bot's code: `iq720_bot::backup::verify_archive` is what `iq720-bot
//! verify-backup` and `iq720-bot restore` run, so a backup the operator calls verified
//! is one the bot will restore. It is reused as a library, not rewritten. It needs the
//! archive as a file and unpacks the database to check it, so verification uses a
//! private scratch directory that is removed afterwards (the upload itself never
//! touches disk).

use std::path::Path;

use tokio::time::{Instant, timeout_at};

use super::error::BackupError;
use crate::shared::s3::{S3Target, download_to_file};

/// Downloads `key` and checks it against `expected_sha256` and the bot's archive
/// rules, finishing by `deadline`.
pub async fn verify_object(
    s3: &S3Target,
    key: &str,
    expected_sha256: &str,
    work_root: &Path,
    deadline: Instant,
) -> Result<(), BackupError> {
    tokio::fs::create_dir_all(work_root).await?;
    let dir = tempfile::Builder::new()
        .prefix("iq720-verify-")
        .tempdir_in(work_root)?;
    let archive = dir.path().join("backup.tar.gz");
    let (sha, meta_sha) = timeout_at(deadline, download_to_file(s3, key, &archive))
        .await
        .map_err(|_| BackupError::Deadline(std::time::Duration::ZERO))??;
    if sha != expected_sha256 {
        return Err(BackupError::Verify(format!(
            "the stored object's sha256 is {sha}, the upload's was {expected_sha256}"
        )));
    }
    if let Some(meta) = meta_sha
        && meta != expected_sha256
    {
        return Err(BackupError::Verify(format!(
            "the object's metadata says sha256 {meta}, the upload's was {expected_sha256}"
        )));
    }
    let extract = dir.path().join("extract");
    let checked = tokio::task::spawn_blocking(move || {
        iq720_bot::backup::verify_archive(&archive, &extract).map(|_| ())
    });
    timeout_at(deadline, checked)
        .await
        .map_err(|_| BackupError::Deadline(std::time::Duration::ZERO))?
        .map_err(|e| BackupError::Verify(format!("verification task failed: {e}")))?
        .map_err(|e| BackupError::Verify(e.to_string()))?;
    drop(dir);
    Ok(())
}
