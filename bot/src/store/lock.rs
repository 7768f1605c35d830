//! The exclusive fence on a data directory.
//!
//! Two bot processes trading from one database would each believe they own the open
//! positions (and could close the same trade twice or open two per pair in memory).
//! StatefulSet ordering does not prevent that when a pod is force-deleted or a node is
//! partitioned, so the bot takes an OS advisory lock (`flock(LOCK_EX | LOCK_NB)`) on
//! `trades.db.lock` in the data directory before it opens the database, and holds it for
//! the life of the process. A second process on the same directory fails at once with an
//! error naming the lock file and the holder recorded in it.
//!
//! Why a separate lock file and not SQLite's `locking_mode=EXCLUSIVE`: in WAL mode an
//! exclusive-mode connection keeps the database lock, so the API's read connections,
//! `iq720-bot backup` and any inspection with the `sqlite3` shell would be locked out
//! too. The file lock fences only writers that go through [`super::Store::open`]. The
//! kernel releases it when the process dies (also on SIGKILL), so a crash never leaves a
//! stale lock behind. It protects processes that share one kernel's view of the file
//! (one node, or NFS with working locks); across nodes the volume's `ReadWriteOncePod`
//! access mode is the fence.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Lock file name inside the data directory.
pub const LOCK_FILE: &str = "trades.db.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "data directory {} is in use by another bot process: the exclusive lock {} is held by {holder}; refusing to trade from the same database",
        .dir.display(),
        .path.display()
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as recorded in the lock file.
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot take the exclusive lock {}: {source}", .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
}

/// An exclusive lock on a data directory, released when dropped (or when the process
/// exits, however it exits).
#[derive(Debug)]
pub struct DataDirLock {
    // Never read: holding the open file holds the lock.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Take the lock on `data_dir/trades.db.lock` without waiting, and record this
    /// process as the holder.
    pub fn acquire(data_dir: &Path) -> Result<Self, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // No truncate on open: the current holder's record must survive a failed attempt.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let recorded = std::fs::read_to_string(&path).unwrap_or_default();
                let recorded = recorded.trim();
                return Err(LockError::Held {
                    dir: data_dir.to_path_buf(),
                    path,
                    holder: if recorded.is_empty() {
                        "another process (no holder recorded yet)".to_string()
                    } else {
                        recorded.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        (&file).write_all(holder_record().as_bytes()).map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `pid <pid> on host <host> since <time>`: what a refused second process reports.
fn holder_record() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    format!(
        "pid {} on host {host} since {}\n",
        std::process::id(),
        jiff::Timestamp::now()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_the_file_and_holder_and_drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join(LOCK_FILE));
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(msg.contains(LOCK_FILE), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // a failed attempt leaves the holder record intact
        let record = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(record.starts_with(&format!("pid {} ", std::process::id())));
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
