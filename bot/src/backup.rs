//! Backup archives: a consistent SQLite snapshot (online backup API) packed as
//! `tar.gz` with a manifest, plus verification and restore.
//!
//! Archive layout: `manifest.json` first, then `trades.db`. The manifest records the bot
//! version, schema version, creation time and the size and sha256 of every other part.
//!
//! A restore takes the data directory's exclusive lock ([`DataDirLock`], the one a
//! running bot holds for its whole life) before it writes anything, so `restore --force`
//! can never swap the database out from under a live bot: it fails naming the holder.

use crate::digest::{self, HashingWriter, Written, hex};
use crate::store::DB_FILE;
use crate::store::lock::{DataDirLock, LOCK_FILE, LockError};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Manifest `format` value.
pub const FORMAT: &str = "iq720-bot-backup/v1";
/// Manifest file name inside the archive.
pub const MANIFEST: &str = "manifest.json";
/// Largest part accepted when reading an archive (guards against decompression bombs).
const MAX_PART: u64 = 16 * 1024 * 1024 * 1024;

/// Backup errors.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// File system problem.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// I/O error.
        source: io::Error,
    },
    /// SQLite problem.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The archive is not a valid backup.
    #[error("invalid backup: {0}")]
    Invalid(String),
    /// Restore target not empty.
    #[error("data directory {0} is not empty; pass --force to overwrite it")]
    NotEmpty(PathBuf),
    /// The data directory is locked (a bot runs on it) or the lock cannot be taken.
    #[error("cannot restore: {0}")]
    Locked(#[from] LockError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// One archived part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Name inside the archive.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
}

/// The archive manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Version of the bot that wrote it.
    pub bot_version: String,
    /// Database schema version (`PRAGMA user_version`).
    pub schema_version: i64,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Parts other than the manifest.
    pub files: Vec<FileEntry>,
}

/// sha256 and size of a file.
pub fn sha256_file(path: &Path) -> Result<(String, u64), BackupError> {
    let w = digest::sha256_file(path).map_err(io_err(format!("read {}", path.display())))?;
    Ok((w.sha256, w.bytes))
}

/// Copy a live database to `dest` with SQLite's online backup API. The copy is done in
/// one step, i.e. inside one read transaction, so it is a consistent snapshot while the
/// writer keeps committing (WAL).
pub fn snapshot_db(src_db: &Path, dest: &Path) -> Result<i64, BackupError> {
    let src = Connection::open(src_db)?;
    src.busy_timeout(Duration::from_secs(5))?;
    let mut dst = Connection::open(dest)?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        let mut attempts = 0;
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                _ => {
                    attempts += 1;
                    if attempts > 500 {
                        return Err(BackupError::Invalid(
                            "source database stayed busy for 5s".into(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    // A standalone file: no WAL to carry around.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    let v: i64 = dst.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(v)
}

/// Snapshot `src_db` and write the archive to `out`; `work_dir` holds the temporary copy.
pub fn create_archive(
    src_db: &Path,
    out: &Path,
    work_dir: &Path,
) -> Result<(Manifest, Written), BackupError> {
    std::fs::create_dir_all(work_dir).map_err(io_err(format!("create {}", work_dir.display())))?;
    let tmp_db = work_dir.join(format!(
        ".backup-{}-{}.db",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    let result = (|| {
        let schema_version = snapshot_db(src_db, &tmp_db)?;
        let (sha256, size) = sha256_file(&tmp_db)?;
        let manifest = Manifest {
            format: FORMAT.into(),
            bot_version: env!("CARGO_PKG_VERSION").into(),
            schema_version,
            created_at: jiff::Timestamp::now().to_string(),
            files: vec![FileEntry {
                name: DB_FILE.into(),
                size,
                sha256,
            }],
        };
        let file = File::create(out).map_err(io_err(format!("create {}", out.display())))?;
        // Hashed as it is written: the archive's sha256 is announced with the stream.
        let mut tar = tar::Builder::new(GzEncoder::new(
            HashingWriter::new(io::BufWriter::new(file)),
            Compression::fast(),
        ));
        let mjson = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BackupError::Invalid(e.to_string()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(mjson.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(jiff::Timestamp::now().as_second().max(0) as u64);
        header.set_cksum();
        tar.append_data(&mut header, MANIFEST, mjson.as_slice())
            .map_err(io_err("write manifest"))?;
        tar.append_path_with_name(&tmp_db, DB_FILE)
            .map_err(io_err("write database"))?;
        let gz = tar.into_inner().map_err(io_err("finish archive"))?;
        let (buffered, written) = gz
            .finish()
            .and_then(HashingWriter::finish)
            .map_err(io_err("finish archive"))?;
        let file = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io_err("finish archive"))?;
        file.sync_all().map_err(io_err("sync archive"))?;
        Ok((manifest, written))
    })();
    let _ = std::fs::remove_file(&tmp_db);
    result
}

/// Unpack `archive` into `work_dir` and check manifest, checksums, `PRAGMA
/// integrity_check` and schema version. Returns the manifest and the extracted DB path.
pub fn verify_archive(archive: &Path, work_dir: &Path) -> Result<(Manifest, PathBuf), BackupError> {
    std::fs::create_dir_all(work_dir).map_err(io_err(format!("create {}", work_dir.display())))?;
    let file = File::open(archive).map_err(io_err(format!("open {}", archive.display())))?;
    let mut tar = tar::Archive::new(GzDecoder::new(file));
    let mut manifest: Option<Manifest> = None;
    let mut parts: Vec<(String, String, u64)> = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| BackupError::Invalid(format!("not a tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| BackupError::Invalid(format!("corrupt archive: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| BackupError::Invalid(format!("bad entry name: {e}")))?
            .to_string_lossy()
            .to_string();
        if name.contains('/') || name.contains("..") || name.starts_with('.') || name.is_empty() {
            return Err(BackupError::Invalid(format!("unexpected entry `{name}`")));
        }
        if entry.size() > MAX_PART {
            return Err(BackupError::Invalid(format!("entry `{name}` is too large")));
        }
        if name == MANIFEST {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| BackupError::Invalid(format!("cannot read manifest: {e}")))?;
            manifest = Some(
                serde_json::from_str(&text)
                    .map_err(|e| BackupError::Invalid(format!("bad manifest: {e}")))?,
            );
            continue;
        }
        let dest = work_dir.join(&name);
        let mut out = File::create(&dest).map_err(io_err(format!("create {}", dest.display())))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| BackupError::Invalid(format!("corrupt entry `{name}`: {e}")))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(io_err(format!("write {}", dest.display())))?;
        }
        out.sync_all()
            .map_err(io_err(format!("sync {}", dest.display())))?;
        parts.push((name, hex(&h.finalize()), size));
    }
    let manifest = manifest.ok_or_else(|| BackupError::Invalid("manifest.json missing".into()))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Invalid(format!(
            "unknown format `{}`",
            manifest.format
        )));
    }
    for f in &manifest.files {
        let Some((_, sha, size)) = parts.iter().find(|(n, _, _)| *n == f.name) else {
            return Err(BackupError::Invalid(format!(
                "part `{}` listed in the manifest is missing",
                f.name
            )));
        };
        if *sha != f.sha256 || *size != f.size {
            return Err(BackupError::Invalid(format!(
                "checksum mismatch for `{}`: manifest {} ({} bytes), archive {} ({} bytes)",
                f.name, f.sha256, f.size, sha, size
            )));
        }
    }
    if let Some((extra, _, _)) = parts
        .iter()
        .find(|(n, _, _)| !manifest.files.iter().any(|f| f.name == *n))
    {
        return Err(BackupError::Invalid(format!(
            "part `{extra}` is not listed in the manifest"
        )));
    }
    let db = work_dir.join(DB_FILE);
    if !manifest.files.iter().any(|f| f.name == DB_FILE) {
        return Err(BackupError::Invalid(format!("{DB_FILE} missing")));
    }
    {
        let conn = Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| BackupError::Invalid(format!("integrity check failed: {e}")))?;
        if check != "ok" {
            return Err(BackupError::Invalid(format!(
                "integrity check failed: {check}"
            )));
        }
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if v != manifest.schema_version {
            return Err(BackupError::Invalid(format!(
                "schema version {v} does not match the manifest ({})",
                manifest.schema_version
            )));
        }
        let supported = crate::store::migrations::supported();
        if v > supported {
            return Err(BackupError::Invalid(format!(
                "schema version {v} is newer than this bot supports ({supported})"
            )));
        }
    }
    Ok((manifest, db))
}

/// Whether a data directory holds anything (dotfiles, `lost+found` and the lock file do
/// not count).
pub fn dir_has_data(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.starts_with('.') && name != "lost+found" && name != LOCK_FILE {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(BackupError::Io {
            context: format!("read {}", dir.display()),
            source: e,
        }),
    }
}

/// Verify `archive` and swap its database into `data_dir`. Holds the data directory's
/// exclusive lock throughout, so it fails with [`BackupError::Locked`] while a bot runs
/// on the directory (and no bot can start on it meanwhile).
pub fn restore(archive: &Path, data_dir: &Path, force: bool) -> Result<Manifest, BackupError> {
    std::fs::create_dir_all(data_dir).map_err(io_err(format!("create {}", data_dir.display())))?;
    // Lock first, then look: no bot can start between the check and the swap.
    let _lock = DataDirLock::acquire(data_dir)?;
    if !force && dir_has_data(data_dir)? {
        return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
    }
    let work = data_dir.join(format!(".restore-{}", std::process::id()));
    let result = (|| {
        let (manifest, db) = verify_archive(archive, &work)?;
        let staged = data_dir.join(format!("{DB_FILE}.restoring"));
        std::fs::copy(&db, &staged).map_err(io_err("stage database"))?;
        File::open(&staged)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync database"))?;
        for suffix in ["-wal", "-shm"] {
            let p = data_dir.join(format!("{DB_FILE}{suffix}"));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("remove {}", p.display()))(e)),
            }
        }
        std::fs::rename(&staged, data_dir.join(DB_FILE)).map_err(io_err("swap database in"))?;
        if let Ok(d) = File::open(data_dir) {
            let _ = d.sync_all();
        }
        Ok(manifest)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::engine::{EngineEvent, Position};
    use crate::store::Store;
    use crate::store::migrations::SCHEMA_VERSION;

    fn seeded(dir: &Path) -> Store {
        let s = Store::open(dir).unwrap();
        let p = Position {
            trade_id: 1,
            pair_idx: 0,
            amount: 2.0,
            stake: 200.0,
            open_rate: 100.0,
            open_ms: 5,
            fee_open: 0.2,
            max_rate: 100.0,
        };
        s.persist(
            &[EngineEvent::Opened {
                position: p,
                order_id: 1,
            }],
            &["A/B".to_string()],
            "rsi",
        )
        .unwrap();
        s
    }

    #[test]
    fn round_trip_and_refuse_non_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let store = seeded(&src);
        let archive = tmp.path().join("b.tar.gz");
        let (m, written) = create_archive(store.path(), &archive, tmp.path()).unwrap();
        assert_eq!(
            digest::sha256_file(&archive).unwrap(),
            written,
            "the announced sha256 is the archive's"
        );
        assert_eq!(m.schema_version, SCHEMA_VERSION);
        let (vm, _) = verify_archive(&archive, &tmp.path().join("v")).unwrap();
        assert_eq!(vm, m);
        let dst = tmp.path().join("dst");
        restore(&archive, &dst, false).unwrap();
        let restored = Store::open(&dst).unwrap();
        assert_eq!(
            Store::all_trades(&restored.reader().unwrap()).unwrap(),
            Store::all_trades(&store.reader().unwrap()).unwrap()
        );
        drop(restored); // a store holds the lock, which restore needs
        assert!(matches!(
            restore(&archive, &dst, false),
            Err(BackupError::NotEmpty(_))
        ));
        restore(&archive, &dst, true).unwrap();
    }

    #[test]
    fn restore_refuses_a_data_dir_a_bot_holds_even_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        let src = seeded(&tmp.path().join("src"));
        let archive = tmp.path().join("b.tar.gz");
        create_archive(src.path(), &archive, tmp.path()).unwrap();
        // A "live bot" on dst: its store holds the lock; its database has no trades.
        let dst = tmp.path().join("dst");
        let live = Store::open(&dst).unwrap();
        let before = std::fs::read(dst.join(DB_FILE)).unwrap();
        for force in [true, false] {
            let e = restore(&archive, &dst, force).unwrap_err();
            assert!(
                matches!(e, BackupError::Locked(LockError::Held { .. })),
                "{e}"
            );
            let msg = e.to_string();
            assert!(msg.contains(LOCK_FILE) && msg.contains("pid"), "{msg}");
        }
        assert_eq!(std::fs::read(dst.join(DB_FILE)).unwrap(), before);
        assert!(
            Store::all_trades(&live.reader().unwrap())
                .unwrap()
                .is_empty()
        );
        assert!(!dst.join(format!("{DB_FILE}.restoring")).exists());
        // Once the bot is gone the same restore goes through.
        drop(live);
        restore(&archive, &dst, true).unwrap();
        let restored = Store::open(&dst).unwrap();
        assert_eq!(
            Store::all_trades(&restored.reader().unwrap())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn detects_tampering() {
        let tmp = tempfile::tempdir().unwrap();
        let store = seeded(&tmp.path().join("src"));
        let archive = tmp.path().join("b.tar.gz");
        create_archive(store.path(), &archive, tmp.path()).unwrap();
        // rewrite the archive with a modified database but the old manifest
        let work = tmp.path().join("w");
        let (m, db) = verify_archive(&archive, &work).unwrap();
        {
            let c = Connection::open(&db).unwrap();
            c.execute("UPDATE trades SET amount = 999", []).unwrap();
        }
        let bad = tmp.path().join("bad.tar.gz");
        let mut tar = tar::Builder::new(GzEncoder::new(
            File::create(&bad).unwrap(),
            Compression::fast(),
        ));
        let mjson = serde_json::to_vec(&m).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(mjson.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, MANIFEST, mjson.as_slice()).unwrap();
        tar.append_path_with_name(&db, DB_FILE).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        let e = verify_archive(&bad, &tmp.path().join("v2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        // garbage is rejected too
        std::fs::write(tmp.path().join("junk.tar.gz"), b"not an archive").unwrap();
        assert!(verify_archive(&tmp.path().join("junk.tar.gz"), &tmp.path().join("v3")).is_err());
    }
}
