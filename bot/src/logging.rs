//! Logging: JSON to stdout plus `trading.log`, `errors.log`, `performance.log` and
//! `security.log` in the log directory, rotated daily, gzip-compressed after
//! `logs.compressAfter` days and deleted after `logs.deleteAfter` days.
//!
//! Events reach the files by tracing target: `trading`, `performance` and `security`;
//! `errors.log` receives every WARN and ERROR event.

use flate2::Compression;
use flate2::write::GzEncoder;
use jiff::civil::Date;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Layer, Registry};

/// The log files written in the log directory.
pub const LOG_FILES: &[&str] = &[
    "trading.log",
    "errors.log",
    "performance.log",
    "security.log",
];

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The directory or a file could not be created.
    #[error("cannot open log file {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// I/O error.
        source: io::Error,
    },
    /// The filter string is invalid.
    #[error("invalid log filter `{0}`")]
    Filter(String),
    /// A global subscriber was already installed.
    #[error("logging already initialised")]
    AlreadySet,
}

/// A source of "today" (UTC), injectable for tests.
pub type Clock = Arc<dyn Fn() -> Date + Send + Sync>;

/// Today's UTC date from the system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .date()
    })
}

struct Current {
    file: File,
    date: Date,
}

/// A log file that rotates to `<name>.<YYYY-MM-DD>` when the UTC day changes.
pub struct DailyFile {
    dir: PathBuf,
    name: String,
    clock: Clock,
    current: Mutex<Option<Current>>,
}

impl DailyFile {
    /// Open (or create) `dir/name`; a file left over from an earlier day is rotated first.
    pub fn open(dir: &Path, name: &str, clock: Clock) -> Result<Arc<Self>, LogError> {
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let df = DailyFile {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            clock,
            current: Mutex::new(None),
        };
        let path = df.dir.join(&df.name);
        let today = (df.clock)();
        // A file from a previous day keeps the day it was last written.
        if let Ok(meta) = std::fs::metadata(&path)
            && let Some(date) = meta
                .modified()
                .ok()
                .and_then(|m| jiff::Timestamp::try_from(m).ok())
        {
            let date = date.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
            if date < today {
                df.rotate_file(date);
            }
        }
        let file = df
            .open_current()
            .map_err(|source| LogError::Io { path, source })?;
        if let Ok(mut cur) = df.current.lock() {
            *cur = Some(Current { file, date: today });
        }
        Ok(Arc::new(df))
    }

    fn open_current(&self) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(&self.name))
    }

    fn rotate_file(&self, date: Date) {
        let from = self.dir.join(&self.name);
        let base = format!("{}.{}", self.name, date);
        let mut candidate = base.clone();
        let mut n = 0;
        while self.dir.join(&candidate).exists()
            || self.dir.join(format!("{candidate}.gz")).exists()
        {
            n += 1;
            if n > 1000 {
                return;
            }
            candidate = format!("{base}.{n}");
        }
        let to = self.dir.join(candidate);
        let _ = std::fs::rename(from, to);
    }

    fn write_line(&self, buf: &[u8]) -> io::Result<()> {
        let mut guard = self
            .current
            .lock()
            .map_err(|_| io::Error::other("log file lock poisoned"))?;
        let today = (self.clock)();
        let needs_rotation = guard.as_ref().is_none_or(|c| c.date != today);
        if needs_rotation {
            if let Some(c) = guard.take() {
                drop(c.file);
                self.rotate_file(c.date);
            }
            *guard = Some(Current {
                file: self.open_current()?,
                date: today,
            });
        }
        match guard.as_mut() {
            Some(c) => c.file.write_all(buf),
            None => Ok(()),
        }
    }
}

/// `io::Write` handle for one event.
pub struct DailyWriter(Arc<DailyFile>);

impl Write for DailyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `MakeWriter` for a [`DailyFile`].
#[derive(Clone)]
pub struct DailyMakeWriter(pub Arc<DailyFile>);

impl<'a> MakeWriter<'a> for DailyMakeWriter {
    type Writer = DailyWriter;
    fn make_writer(&'a self) -> Self::Writer {
        DailyWriter(self.0.clone())
    }
}

/// What a retention pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Files compressed (original names).
    pub compressed: Vec<PathBuf>,
    /// Files deleted.
    pub deleted: Vec<PathBuf>,
}

/// Date of a rotated file: `<base>.log.<YYYY-MM-DD>[.<n>][.gz]`, and whether it is
/// compressed; `None` for any other name (current log files, temporary files).
pub fn rotated_date(name: &str) -> Option<(Date, bool)> {
    let (stem, gz) = match name.strip_suffix(".gz") {
        Some(s) => (s, true),
        None => (name, false),
    };
    let idx = stem.find(".log.")?;
    let rest = &stem[idx + 5..];
    let date_part = rest.get(..10)?;
    let tail = &rest[10..];
    if !(tail.is_empty()
        || tail
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())))
    {
        return None;
    }
    let date: Date = date_part.parse().ok()?;
    Some((date, gz))
}

/// Compress rotated logs at least `compress_after_days` old and delete those at least
/// `delete_after_days` old, relative to `today`. Current (unrotated) files are never touched.
pub fn apply_retention(
    dir: &Path,
    today: Date,
    compress_after_days: i64,
    delete_after_days: i64,
) -> io::Result<RetentionReport> {
    let mut report = RetentionReport::default();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((date, gz)) = rotated_date(name) else {
            continue;
        };
        let age = match today.since(date) {
            Ok(span) => span.get_days() as i64,
            Err(_) => continue,
        };
        if age >= delete_after_days {
            std::fs::remove_file(&path)?;
            report.deleted.push(path);
        } else if !gz && age >= compress_after_days {
            gzip_file(&path)?;
            report.compressed.push(path);
        }
    }
    Ok(report)
}

/// A rotated log file that a maintenance-window cleanup may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupCandidate {
    /// File name in the log directory.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
}

/// The rotated files of `dir` a cleanup takes at `today`, sorted by name: with
/// `older_than_days`, every rotated file at least that old (compressed or not);
/// without it, the rotated files already compressed and those at least
/// `delete_after_days` old. With `only`, just those names among them. Current files
/// (`trading.log`, ...) and anything not named like a rotated log are never taken.
pub fn cleanup_candidates(
    dir: &Path,
    today: Date,
    older_than_days: Option<i64>,
    delete_after_days: i64,
    only: Option<&[String]>,
) -> io::Result<Vec<CleanupCandidate>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some((date, gz)) = rotated_date(&name) else {
            continue;
        };
        if only.is_some_and(|o| !o.iter().any(|n| n == &name)) {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let age = match today.since(date) {
            Ok(span) => i64::from(span.get_days()),
            Err(_) => continue,
        };
        let taken = match older_than_days {
            Some(days) => age >= days,
            None => gz || age >= delete_after_days,
        };
        if taken {
            out.push(CleanupCandidate {
                name,
                path: entry.path(),
                bytes: meta.len(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn gzip_file(path: &Path) -> io::Result<()> {
    let mut gz_name = path.as_os_str().to_owned();
    gz_name.push(".gz");
    let gz_path = PathBuf::from(gz_name);
    let mut tmp_name = gz_path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut input = File::open(path)?;
        let out = File::create(&tmp)?;
        let mut enc = GzEncoder::new(out, Compression::default());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.sync_all()?;
    }
    std::fs::rename(&tmp, &gz_path)?;
    std::fs::remove_file(path)
}

fn is_target(meta: &Metadata<'_>, target: &str) -> bool {
    meta.target() == target
}

/// Install the global subscriber. Without a log dir only stdout is used.
pub fn init(level: &str, log_dir: Option<&Path>, clock: Clock) -> Result<(), LogError> {
    let filter = EnvFilter::try_new(level).map_err(|_| LogError::Filter(level.to_string()))?;
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(io::stdout)
            .with_filter(filter)
            .boxed(),
    ];
    if let Some(dir) = log_dir {
        let file = |name: &str| DailyFile::open(dir, name, clock.clone()).map(DailyMakeWriter);
        let targets: [(&str, Option<&'static str>); 4] = [
            ("trading.log", Some("trading")),
            ("performance.log", Some("performance")),
            ("security.log", Some("security")),
            ("errors.log", None),
        ];
        for (name, target) in targets {
            let writer = file(name)?;
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(writer);
            let boxed = match target {
                Some(t) => layer
                    .with_filter(filter_fn(move |m: &Metadata<'_>| {
                        is_target(m, t) && *m.level() <= Level::INFO
                    }))
                    .boxed(),
                None => layer
                    .with_filter(filter_fn(|m: &Metadata<'_>| *m.level() <= Level::WARN))
                    .boxed(),
            };
            layers.push(boxed);
        }
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| LogError::AlreadySet)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[test]
    fn parses_rotated_names_only() {
        assert_eq!(
            rotated_date("trading.log.2026-11-20"),
            Some((date(2026, 11, 20), false))
        );
        assert_eq!(
            rotated_date("trading.log.2026-11-20.gz"),
            Some((date(2026, 11, 20), true))
        );
        assert_eq!(
            rotated_date("trading.log.2026-11-20.2"),
            Some((date(2026, 11, 20), false))
        );
        assert_eq!(rotated_date("trading.log"), None);
        assert_eq!(rotated_date("trading.log.2026-11-20.gz.tmp"), None);
        assert_eq!(rotated_date("notes.txt"), None);
    }

    #[test]
    fn retention_compresses_then_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let today = date(2026, 11, 24);
        for (name, content) in [
            ("trading.log", "current"),
            ("trading.log.2026-11-23", "yesterday"),
            ("trading.log.2026-11-17", "seven days"),
            ("errors.log.2026-11-10", "fourteen days"),
            ("security.log.2026-10-25.gz", "thirty days"),
            ("security.log.2026-10-26.gz", "twenty-nine days"),
            ("other.txt", "not a log"),
        ] {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let r = apply_retention(dir.path(), today, 7, 30).unwrap();
        let names = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&r.compressed),
            vec!["errors.log.2026-11-10", "trading.log.2026-11-17"]
        );
        assert_eq!(names(&r.deleted), vec!["security.log.2026-10-25.gz"]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "errors.log.2026-11-10.gz",
                "other.txt",
                "security.log.2026-10-26.gz",
                "trading.log",
                "trading.log.2026-11-17.gz",
                "trading.log.2026-11-23"
            ]
        );
        // compressed content decompresses to the original
        let gz = File::open(dir.path().join("trading.log.2026-11-17.gz")).unwrap();
        let mut s = String::new();
        io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut s).unwrap();
        assert_eq!(s, "seven days");
        // idempotent
        assert_eq!(
            apply_retention(dir.path(), today, 7, 30).unwrap(),
            RetentionReport::default()
        );
        // thirty days later everything rotated is gone
        let r = apply_retention(dir.path(), date(2026, 12, 24), 7, 30).unwrap();
        assert_eq!(r.deleted.len(), 4);
    }

    #[test]
    fn cleanup_takes_compressed_and_expired_rotated_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let today = date(2026, 11, 24);
        for name in [
            "trading.log",
            "errors.log",
            "trading.log.2026-11-23",
            "trading.log.2026-11-10.gz",
            "security.log.2026-10-01",
            "errors.log.2026-11-20.1.gz",
            "trading.log.2026-11-10.gz.tmp",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let names = |v: Vec<CleanupCandidate>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();
        // default: compressed files and those past deleteAfter (30 days)
        assert_eq!(
            names(cleanup_candidates(dir.path(), today, None, 30, None).unwrap()),
            vec![
                "errors.log.2026-11-20.1.gz",
                "security.log.2026-10-01",
                "trading.log.2026-11-10.gz"
            ]
        );
        // olderThanDays: any rotated file that old, compressed or not
        assert_eq!(
            names(cleanup_candidates(dir.path(), today, Some(1), 30, None).unwrap()),
            vec![
                "errors.log.2026-11-20.1.gz",
                "security.log.2026-10-01",
                "trading.log.2026-11-10.gz",
                "trading.log.2026-11-23"
            ]
        );
        // only: an archive's list, and never a current file even when named
        let only = vec![
            "trading.log".to_string(),
            "trading.log.2026-11-10.gz".to_string(),
        ];
        let c = cleanup_candidates(dir.path(), today, None, 30, Some(&only)).unwrap();
        assert_eq!(names(c.clone()), vec!["trading.log.2026-11-10.gz"]);
        assert_eq!(c[0].bytes, "trading.log.2026-11-10.gz".len() as u64);
        // a missing directory has nothing to clean
        assert!(
            cleanup_candidates(&dir.path().join("none"), today, None, 30, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn daily_file_rotates_when_the_clock_moves() {
        let dir = tempfile::tempdir().unwrap();
        let day = Arc::new(AtomicI64::new(0));
        let d2 = day.clone();
        let clock: Clock = Arc::new(move || {
            date(2026, 11, 20)
                .checked_add(jiff::Span::new().days(d2.load(Ordering::SeqCst)))
                .unwrap()
        });
        let f = DailyFile::open(dir.path(), "trading.log", clock).unwrap();
        let mut w = DailyWriter(f.clone());
        w.write_all(b"one\n").unwrap();
        day.store(1, Ordering::SeqCst);
        w.write_all(b"two\n").unwrap();
        day.store(2, Ordering::SeqCst);
        w.write_all(b"three\n").unwrap();
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("trading.log.2026-11-20"), "one\n");
        assert_eq!(read("trading.log.2026-11-21"), "two\n");
        assert_eq!(read("trading.log"), "three\n");
    }
}
