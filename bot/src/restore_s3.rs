//! Restores and restore drills straight from S3: the object is downloaded (streamed
//! to a file, sha256 computed on the way), compared with the sha256 in its metadata
//! (and with the one the operator recorded, when given), checked with
//! [`crate::backup::verify_archive`] and restored with [`crate::backup::restore`].
//!
//! Why in the bot: the operator's bootstrap restore runs as an init container of the
//! bot's own pod (same image, same data volume), and a restore drill runs the same
//! code in a throwaway pod, so what is drilled is exactly what a disaster recovery
//! would run. Credentials come only from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, set from a Secret with `secretKeyRef`), never from flags,
//! and are never printed.
//!
//! Both commands print one JSON line (the last line of their output) that the operator
//! reads from the container log: [`RestoreReport`] or [`DrillReport`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::backup::{self, BackupError, Manifest};
use crate::store::DB_FILE;

/// Object metadata key of the archive's sha256, as the operator writes it.
pub const META_SHA256: &str = "iq720-sha256";
/// Environment variable holding the S3 access key id.
pub const ENV_ACCESS_KEY: &str = "AWS_ACCESS_KEY_ID";
/// Environment variable holding the S3 secret access key.
pub const ENV_SECRET_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// Errors of a restore or drill from S3. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum S3RestoreError {
    /// Credentials missing from the environment.
    #[error("S3 credentials: environment variable {0} is not set")]
    Credentials(&'static str),
    /// An S3 call failed.
    #[error("S3 {operation}: {message}")]
    Api {
        /// The S3 operation.
        operation: &'static str,
        /// What S3 (or the connection) said.
        message: String,
    },
    /// The downloaded object does not match the expected checksum.
    #[error("checksum mismatch: {0}")]
    Checksum(String),
    /// Archive verification or restore failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// Local file I/O failed.
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
    /// The async runtime could not be built.
    #[error("runtime: {0}")]
    Runtime(String),
}

/// Where the backup object is (no credentials: those come from the environment).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct S3Source {
    /// Object key of the backup archive in the bucket.
    #[arg(long = "s3-key")]
    pub key: Option<String>,
    /// Bucket of the backup.
    #[arg(long = "s3-bucket")]
    pub bucket: Option<String>,
    /// Endpoint URL of an S3-compatible service (MinIO); unset means AWS S3.
    #[arg(long = "s3-endpoint")]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[arg(long = "s3-region", default_value = "us-east-1")]
    pub region: String,
    /// Address the bucket as `endpoint/bucket` (MinIO).
    #[arg(long = "s3-path-style")]
    pub path_style: bool,
    /// Expected sha256 of the object (hex), as recorded when it was uploaded; checked
    /// in addition to the sha256 in the object's metadata.
    #[arg(long = "s3-sha256")]
    pub sha256: Option<String>,
}

/// What `restore --s3-key` did; printed as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// `restored` or `skipped`.
    pub result: String,
    /// The object key.
    pub key: String,
    /// Why nothing was restored (only for `skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// sha256 of the restored object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size of the object in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Manifest of the restored archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// Wall time of the command in milliseconds (download, verification, swap).
    pub duration_ms: u64,
}

/// What `restore-drill` found; printed as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    /// `succeeded` or `failed`.
    pub result: String,
    /// The object key.
    pub key: String,
    /// Why the drill failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Rows per table of the restored database.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub row_counts: BTreeMap<String, i64>,
    /// Size of the object in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

fn runtime() -> Result<tokio::runtime::Runtime, S3RestoreError> {
    // aws-sdk-s3 and kube can each enable a different rustls provider in one build;
    // installing one explicitly keeps HTTPS endpoints working either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| S3RestoreError::Runtime(e.to_string()))
}

fn client(src: &S3Source) -> Result<aws_sdk_s3::Client, S3RestoreError> {
    let access =
        std::env::var(ENV_ACCESS_KEY).map_err(|_| S3RestoreError::Credentials(ENV_ACCESS_KEY))?;
    let secret =
        std::env::var(ENV_SECRET_KEY).map_err(|_| S3RestoreError::Credentials(ENV_SECRET_KEY))?;
    let creds = Credentials::new(access, secret, None, None, "iq720-bot-restore");
    let mut conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(crate::s3_client::http_client())
        .region(Region::new(src.region.clone()))
        .credentials_provider(creds)
        .force_path_style(src.path_style);
    if let Some(endpoint) = &src.endpoint {
        conf = conf.endpoint_url(endpoint);
    }
    Ok(aws_sdk_s3::Client::from_conf(conf.build()))
}

fn api_error<E>(operation: &'static str, e: &aws_sdk_s3::error::SdkError<E>) -> S3RestoreError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let message = match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    };
    S3RestoreError::Api { operation, message }
}

/// Streams the object into `path` and checks its sha256 against the object's
/// metadata and `expected`. Returns the sha256 and size.
async fn download_checked(
    src: &S3Source,
    key: &str,
    path: &Path,
) -> Result<(String, u64), S3RestoreError> {
    let bucket = src.bucket.as_deref().unwrap_or_default();
    let mut out = client(src)?
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| api_error("GetObject", &e))?;
    let meta_sha = out
        .metadata()
        .and_then(|m| m.get(META_SHA256))
        .map(|s| s.to_string());
    let mut file = tokio::fs::File::create(path).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = out.body.next().await {
        let chunk = chunk.map_err(|e| S3RestoreError::Api {
            operation: "GetObject",
            message: format!("download broke: {e}"),
        })?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    let sha = crate::digest::hex(&hasher.finalize());
    match &meta_sha {
        Some(m) if *m != sha => {
            return Err(S3RestoreError::Checksum(format!(
                "the object's metadata says sha256 {m}, its content is {sha}"
            )));
        }
        None => {
            return Err(S3RestoreError::Checksum(format!(
                "the object has no {META_SHA256} metadata; it is not a complete backup"
            )));
        }
        Some(_) => {}
    }
    if let Some(want) = &src.sha256
        && *want != sha
    {
        return Err(S3RestoreError::Checksum(format!(
            "expected sha256 {want}, the object's content is {sha}"
        )));
    }
    Ok((sha, size))
}

fn key_of(src: &S3Source) -> String {
    src.key.clone().unwrap_or_default()
}

/// Bootstrap restore: when `data_dir` holds no database, download the object, check
/// it and restore it; when it does, leave it alone and report `skipped` (a restore
/// never overwrites an existing database). `force` overwrites (manual use only).
pub fn restore_from_s3(
    src: &S3Source,
    data_dir: &Path,
    force: bool,
) -> Result<RestoreReport, S3RestoreError> {
    let started = Instant::now();
    let key = key_of(src);
    std::fs::create_dir_all(data_dir)?;
    if !force && backup::dir_has_data(data_dir)? {
        return Ok(RestoreReport {
            result: "skipped".into(),
            key,
            reason: Some(format!(
                "data directory {} already holds data; a restore never overwrites an existing database",
                data_dir.display()
            )),
            sha256: None,
            size_bytes: None,
            manifest: None,
            duration_ms: elapsed_ms(started),
        });
    }
    // A dotfile: it does not count as data if this process dies mid-download, so a
    // retry of the init container still sees an empty volume.
    let download = data_dir.join(format!(".restore-download-{}.tar.gz", std::process::id()));
    let result = (|| -> Result<(String, u64, Manifest), S3RestoreError> {
        let (sha, size) = runtime()?.block_on(download_checked(src, &key, &download))?;
        let manifest = backup::restore(&download, data_dir, force)?;
        Ok((sha, size, manifest))
    })();
    let _ = std::fs::remove_file(&download);
    let (sha, size, manifest) = result?;
    Ok(RestoreReport {
        result: "restored".into(),
        key,
        reason: None,
        sha256: Some(sha),
        size_bytes: Some(size),
        manifest: Some(manifest),
        duration_ms: elapsed_ms(started),
    })
}

/// Rollback restore: when the database in `data_dir` has a schema newer than this
/// release opens (the release being rolled back from migrated it forward), replace it
/// with the backup; otherwise leave it alone and report `skipped`. Runs at every start
/// of a rolled-back pod and is a no-op once the schema is one this release supports,
/// so trades made after the rollback are never lost to a second restore.
pub fn replace_if_schema_too_new(
    src: &S3Source,
    data_dir: &Path,
) -> Result<RestoreReport, S3RestoreError> {
    let started = Instant::now();
    let db = data_dir.join(crate::store::DB_FILE);
    let supported = crate::store::migrations::supported();
    let found = if db.exists() {
        let conn = rusqlite::Connection::open(&db).map_err(|e| {
            S3RestoreError::Backup(BackupError::Invalid(format!(
                "cannot open {}: {e}",
                db.display()
            )))
        })?;
        crate::store::migrations::current_version(&conn).map_err(|e| {
            S3RestoreError::Backup(BackupError::Invalid(format!(
                "cannot read the schema version of {}: {e}",
                db.display()
            )))
        })?
    } else {
        0
    };
    if found <= supported {
        let why = if db.exists() {
            format!("the database schema ({found}) is one this release supports ({supported})")
        } else {
            "there is no database to replace".to_string()
        };
        return Ok(RestoreReport {
            result: "skipped".into(),
            key: key_of(src),
            reason: Some(why),
            sha256: None,
            size_bytes: None,
            manifest: None,
            duration_ms: elapsed_ms(started),
        });
    }
    let mut report = restore_from_s3(src, data_dir, true)?;
    report.reason = Some(format!(
        "the database schema ({found}) is newer than this release supports ({supported}): replaced by the backup"
    ));
    report.duration_ms = elapsed_ms(started);
    Ok(report)
}

/// Restore drill: download and check the object, restore it into a fresh directory
/// under `work_dir` (the same restore a bootstrap runs), open the restored database,
/// run `PRAGMA integrity_check` and count the rows of every table. Never fails: a
/// failure is a report with `result: failed`.
pub fn drill(src: &S3Source, work_dir: &Path) -> DrillReport {
    let started = Instant::now();
    let key = key_of(src);
    let dir: PathBuf = work_dir.join(format!("drill-{}", std::process::id()));
    let result = (|| -> Result<(u64, BTreeMap<String, i64>), S3RestoreError> {
        std::fs::create_dir_all(&dir)?;
        let download = dir.join("backup.tar.gz");
        let (_, size) = runtime()?.block_on(download_checked(src, &key, &download))?;
        let data = dir.join("data");
        backup::restore(&download, &data, false)?;
        Ok((size, row_counts(&data.join(DB_FILE))?))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok((size, row_counts)) => DrillReport {
            result: "succeeded".into(),
            key,
            error: None,
            row_counts,
            size_bytes: Some(size),
            duration_ms: elapsed_ms(started),
        },
        Err(e) => DrillReport {
            result: "failed".into(),
            key,
            error: Some(e.to_string()),
            row_counts: BTreeMap::new(),
            size_bytes: None,
            duration_ms: elapsed_ms(started),
        },
    }
}

/// Opens a restored database read-only, checks its integrity and counts the rows of
/// every table.
pub fn row_counts(db: &Path) -> Result<BTreeMap<String, i64>, BackupError> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(BackupError::Invalid(format!(
            "integrity check failed: {check}"
        )));
    }
    let mut st = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let tables = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut counts = BTreeMap::new();
    for t in tables {
        let quoted = t.replace('"', "\"\"");
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM \"{quoted}\""), [], |r| {
            r.get(0)
        })?;
        counts.insert(t, n);
    }
    Ok(counts)
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_with_data_is_skipped_without_touching_s3() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(DB_FILE), b"existing").unwrap();
        // No credentials, no endpoint: a download would fail, so `skipped` proves
        // nothing was fetched, and the database is untouched.
        let src = S3Source {
            key: Some("p/ns/bot/x.tar.gz".into()),
            bucket: Some("b".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            path_style: true,
            sha256: None,
        };
        let r = restore_from_s3(&src, tmp.path(), false).unwrap();
        assert_eq!(r.result, "skipped");
        assert!(r.reason.unwrap().contains("never overwrites"));
        assert_eq!(
            std::fs::read(tmp.path().join(DB_FILE)).unwrap(),
            b"existing"
        );
    }

    #[test]
    fn row_counts_lists_every_table() {
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(tmp.path()).unwrap();
        let counts = row_counts(store.path()).unwrap();
        assert_eq!(counts.get("trades"), Some(&0));
        assert!(counts.contains_key("orders"), "{counts:?}");
    }

    fn unreachable_source() -> S3Source {
        S3Source {
            key: Some("p/ns/bot/x.tar.gz".into()),
            bucket: Some("b".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            path_style: true,
            sha256: None,
        }
    }

    #[test]
    fn a_rollback_restore_leaves_a_supported_schema_and_an_empty_volume_alone() {
        // S3 is unreachable: `skipped` proves nothing was fetched.
        let empty = tempfile::tempdir().unwrap();
        let r = replace_if_schema_too_new(&unreachable_source(), empty.path()).unwrap();
        assert_eq!(r.result, "skipped");
        assert!(r.reason.unwrap().contains("no database"));
        let tmp = tempfile::tempdir().unwrap();
        drop(crate::store::Store::open(tmp.path()).unwrap());
        let r = replace_if_schema_too_new(&unreachable_source(), tmp.path()).unwrap();
        assert_eq!(r.result, "skipped");
        assert!(r.reason.unwrap().contains("supports"));
    }

    #[test]
    fn a_schema_newer_than_this_release_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        drop(crate::store::Store::open(tmp.path()).unwrap());
        let conn = rusqlite::Connection::open(tmp.path().join(DB_FILE)).unwrap();
        let newer = crate::store::migrations::supported() + 1;
        conn.pragma_update(None, "user_version", newer).unwrap();
        drop(conn);
        // The replacement is attempted: with S3 unreachable it fails (and says so)
        // instead of leaving a database this release cannot open.
        let err = replace_if_schema_too_new(&unreachable_source(), tmp.path()).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}
