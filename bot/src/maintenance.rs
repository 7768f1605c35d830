//! Archives written before maintenance deletes anything: the trade history a prune
//! removes (gzip'd JSON lines) and the rotated log files a cleanup removes (a tar).
//!
//! Why archive first and delete by the archive's own description: the operator streams
//! the archive to S3, downloads it again and checks it, and only then asks for the
//! deletion — naming exactly what the archive holds (the prune cutoff, the highest
//! trade id and the row count; the log file names). Rows or files that appear in
//! between are not in the selection and stay. The readers here are what the operator
//! verifies a downloaded archive with, so writer and checker cannot drift apart.
//!
//! Trade-history archive: one JSON value per line, `{"table", "row"}` as the prune
//! answers them, and last a `{"manifest": {...}}` line
//! ([`iq720_contract::maintenance::PruneArchiveManifest`]); being last, the manifest
//! also proves the archive is complete. Log archive: a tar whose first entry is
//! `MANIFEST.json` (names, sizes, sha256 of the files that follow).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use iq720_contract::maintenance::{
    LOG_ARCHIVE_FORMAT, LOG_ARCHIVE_MANIFEST, LogArchiveManifest, LogFile, PRUNE_ARCHIVE_FORMAT,
    PruneArchiveManifest,
};
use sha2::{Digest, Sha256};

use crate::digest::{HashingWriter, hex, sha256_file};
use crate::logging::CleanupCandidate;
use crate::store::{Store, StoreError};

/// Why an archive could not be written or does not check out.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing a file failed.
    #[error("archive I/O: {0}")]
    Io(#[from] io::Error),
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A line or the manifest is not what the format says.
    #[error("invalid archive: {0}")]
    Invalid(String),
}

/// A written archive file: its sha256 and size.
pub use crate::digest::Written;

/// Writes the rows a prune at `cutoff_ms` would delete to `out` (gzip'd JSON lines,
/// manifest last) and returns the manifest. Nothing is deleted.
pub fn write_prune_archive(
    store: &Store,
    cutoff_ms: i64,
    out: &Path,
) -> Result<(PruneArchiveManifest, Written), ArchiveError> {
    let file = File::create(out)?;
    let mut gz = GzEncoder::new(
        HashingWriter::new(io::BufWriter::new(file)),
        Compression::default(),
    );
    let (sel, counts) = store.export_prunable(cutoff_ms, &mut |v| {
        serde_json::to_writer(&mut gz, &v)?;
        gz.write_all(b"\n")
    })?;
    let manifest = PruneArchiveManifest {
        format: PRUNE_ARCHIVE_FORMAT.to_string(),
        cutoff_ms: sel.cutoff_ms,
        max_trade_id: sel.max_trade_id.unwrap_or(0),
        trades: counts.trades,
        orders: counts.orders,
        equity_snapshots: counts.equity_snapshots,
        created_ms: jiff::Timestamp::now().as_millisecond(),
    };
    serde_json::to_writer(&mut gz, &serde_json::json!({ "manifest": manifest }))
        .map_err(io::Error::from)?;
    gz.write_all(b"\n")?;
    let (buffered, written) = gz.finish()?.finish()?;
    let file = buffered
        .into_inner()
        .map_err(|e| ArchiveError::Io(e.into_error()))?;
    file.sync_all()?;
    Ok((manifest, written))
}

/// What a trade-history archive holds, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneArchiveContent {
    /// The manifest (last line).
    pub manifest: PruneArchiveManifest,
    /// Ids of the trades in the archive, in order.
    pub trade_ids: Vec<i64>,
}

/// Reads a trade-history archive and checks it: every line is JSON, the manifest is
/// the last line, and the rows per table match it.
pub fn read_prune_archive(reader: impl Read) -> Result<PruneArchiveContent, ArchiveError> {
    let lines = BufReader::new(GzDecoder::new(reader)).lines();
    let mut manifest: Option<PruneArchiveManifest> = None;
    let (mut trades, mut orders, mut equity) = (0u64, 0u64, 0u64);
    let mut trade_ids = Vec::new();
    for (i, line) in lines.enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        if manifest.is_some() {
            return Err(ArchiveError::Invalid(format!(
                "line {} follows the manifest",
                i + 1
            )));
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| ArchiveError::Invalid(format!("line {}: {e}", i + 1)))?;
        if let Some(m) = v.get("manifest") {
            manifest = Some(
                serde_json::from_value(m.clone())
                    .map_err(|e| ArchiveError::Invalid(format!("manifest: {e}")))?,
            );
            continue;
        }
        match v["table"].as_str() {
            Some("trades") => {
                trades += 1;
                let id = v["row"]["id"].as_i64().ok_or_else(|| {
                    ArchiveError::Invalid(format!("line {}: trade without id", i + 1))
                })?;
                trade_ids.push(id);
            }
            Some("orders") => orders += 1,
            Some("equity_snapshots") => equity += 1,
            other => {
                return Err(ArchiveError::Invalid(format!(
                    "line {}: unknown table {other:?}",
                    i + 1
                )));
            }
        }
    }
    let manifest = manifest.ok_or_else(|| {
        ArchiveError::Invalid("no manifest line: the archive is truncated".into())
    })?;
    if manifest.format != PRUNE_ARCHIVE_FORMAT {
        return Err(ArchiveError::Invalid(format!(
            "format {} is not {PRUNE_ARCHIVE_FORMAT}",
            manifest.format
        )));
    }
    if (manifest.trades, manifest.orders, manifest.equity_snapshots) != (trades, orders, equity) {
        return Err(ArchiveError::Invalid(format!(
            "the manifest lists {}/{}/{} trades/orders/snapshots but the archive holds {trades}/{orders}/{equity}",
            manifest.trades, manifest.orders, manifest.equity_snapshots
        )));
    }
    if trade_ids.iter().any(|id| *id > manifest.max_trade_id) {
        return Err(ArchiveError::Invalid(
            "a trade id exceeds the manifest's maxTradeId".into(),
        ));
    }
    Ok(PruneArchiveContent {
        manifest,
        trade_ids,
    })
}

/// Writes `files` (rotated logs) to a tar at `out`, `MANIFEST.json` first, and returns
/// the manifest. Nothing is deleted.
pub fn write_log_archive(
    files: &[CleanupCandidate],
    out: &Path,
) -> Result<(LogArchiveManifest, Written), ArchiveError> {
    let mut listed = Vec::with_capacity(files.len());
    for f in files {
        listed.push(LogFile {
            name: f.name.clone(),
            bytes: std::fs::metadata(&f.path)?.len(),
            sha256: Some(sha256_file(&f.path)?.sha256),
        });
    }
    let manifest = LogArchiveManifest {
        format: LOG_ARCHIVE_FORMAT.to_string(),
        files: listed,
        created_ms: jiff::Timestamp::now().as_millisecond(),
    };
    let file = File::create(out)?;
    let mut tar = tar::Builder::new(HashingWriter::new(io::BufWriter::new(file)));
    let body = serde_json::to_vec_pretty(&manifest).map_err(io::Error::from)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(u64::try_from(manifest.created_ms / 1000).unwrap_or(0));
    header.set_cksum();
    tar.append_data(&mut header, LOG_ARCHIVE_MANIFEST, body.as_slice())?;
    for f in files {
        tar.append_path_with_name(&f.path, &f.name)?;
    }
    let (buffered, written) = tar.into_inner()?.finish()?;
    let file = buffered
        .into_inner()
        .map_err(|e| ArchiveError::Io(e.into_error()))?;
    file.sync_all()?;
    Ok((manifest, written))
}

/// Reads a log archive and checks it: the manifest comes first and every file it
/// lists follows with that size and sha256, and nothing else.
pub fn read_log_archive(reader: impl Read) -> Result<LogArchiveManifest, ArchiveError> {
    let mut ar = tar::Archive::new(reader);
    let mut manifest: Option<LogArchiveManifest> = None;
    let mut seen = 0usize;
    for entry in ar.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().to_string();
        let Some(m) = manifest.as_ref() else {
            if name != LOG_ARCHIVE_MANIFEST {
                return Err(ArchiveError::Invalid(format!(
                    "the first entry is {name}, not {LOG_ARCHIVE_MANIFEST}"
                )));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            let m: LogArchiveManifest = serde_json::from_slice(&text)
                .map_err(|e| ArchiveError::Invalid(format!("manifest: {e}")))?;
            if m.format != LOG_ARCHIVE_FORMAT {
                return Err(ArchiveError::Invalid(format!(
                    "format {} is not {LOG_ARCHIVE_FORMAT}",
                    m.format
                )));
            }
            manifest = Some(m);
            continue;
        };
        let Some(listed) = m.files.get(seen) else {
            return Err(ArchiveError::Invalid(format!(
                "{name} is not in the manifest"
            )));
        };
        if listed.name != name {
            return Err(ArchiveError::Invalid(format!(
                "entry {name} where the manifest lists {}",
                listed.name
            )));
        }
        let mut h = Sha256::new();
        let n = io::copy(&mut entry, &mut h)?;
        if n != listed.bytes || listed.sha256.as_deref() != Some(hex(&h.finalize()).as_str()) {
            return Err(ArchiveError::Invalid(format!(
                "{name} differs from the manifest (size or sha256)"
            )));
        }
        seen += 1;
    }
    let manifest =
        manifest.ok_or_else(|| ArchiveError::Invalid("empty archive: no manifest".into()))?;
    if seen != manifest.files.len() {
        return Err(ArchiveError::Invalid(format!(
            "the manifest lists {} file(s) but the archive holds {seen}",
            manifest.files.len()
        )));
    }
    Ok(manifest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::engine::{ClosedTrade, EngineEvent, ExitReason, Position};

    fn pos(id: i64, pair_idx: usize, open_ms: i64) -> Position {
        Position {
            trade_id: id,
            pair_idx,
            amount: 1.0,
            stake: 100.0,
            open_rate: 100.0,
            open_ms,
            fee_open: 0.1,
            max_rate: 100.0,
        }
    }

    /// Trade `id` on pair `pair_idx`, opened and closed at `close_ms`.
    fn trade(s: &Store, id: i64, pair_idx: usize, close_ms: i64) {
        let pairs = vec!["A/B".to_string(), "C/D".to_string()];
        s.persist(
            &[EngineEvent::Opened {
                position: pos(id, pair_idx, close_ms - 10),
                order_id: id * 10,
            }],
            &pairs,
            "rsi",
        )
        .unwrap();
        s.persist(
            &[EngineEvent::Closed {
                trade: ClosedTrade {
                    position: pos(id, pair_idx, close_ms - 10),
                    close_rate: 101.0,
                    close_ms,
                    fee_close: 0.1,
                    profit_abs: 0.8,
                    profit_ratio: 0.008,
                    reason: ExitReason::ExitSignal,
                },
                order_id: id * 10 + 1,
            }],
            &pairs,
            "rsi",
        )
        .unwrap();
    }

    #[test]
    fn the_archive_names_exactly_the_rows_the_prune_then_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        trade(&s, 1, 0, 1_000);
        trade(&s, 2, 1, 2_000);
        trade(&s, 3, 0, 9_000); // after the cutoff
        let out = dir.path().join("a.jsonl.gz");
        let (m, w) = write_prune_archive(&s, 5_000, &out).unwrap();
        assert_eq!((m.trades, m.orders, m.max_trade_id), (2, 4, 2));
        assert_eq!(m.rows(), 6);
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(w.bytes, bytes.len() as u64);
        assert_eq!(w.sha256, hex(&Sha256::digest(&bytes)));
        let content = read_prune_archive(bytes.as_slice()).unwrap();
        assert_eq!(content.manifest, m);
        assert_eq!(content.trade_ids, vec![1, 2]);

        // A trade closed before the cutoff but with a higher id than the archive's
        // (it did not exist when the archive was taken): not in the selection.
        trade(&s, 4, 1, 3_000);
        let sel = crate::store::PruneSelection {
            cutoff_ms: m.cutoff_ms,
            max_trade_id: Some(m.max_trade_id),
        };
        // A wrong expected count deletes nothing.
        let err = s
            .prune_selected(&sel, Some(m.rows() + 1), false)
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::PruneMismatch {
                expected: 7,
                found: 6
            }
        ));
        assert_eq!(Store::all_trades(&s.reader().unwrap()).unwrap().len(), 4);
        // The archive's selection deletes exactly the archived rows.
        let pruned = s.prune_selected(&sel, Some(m.rows()), false).unwrap();
        assert_eq!(pruned.len() as u64, m.rows());
        let left: Vec<i64> = Store::all_trades(&s.reader().unwrap())
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(left, vec![3, 4]);
    }

    #[test]
    fn truncated_or_altered_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        trade(&s, 1, 0, 1_000);
        let out = dir.path().join("a.jsonl.gz");
        write_prune_archive(&s, 5_000, &out).unwrap();
        let mut text = String::new();
        GzDecoder::new(File::open(&out).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let gz = |t: &str| {
            let mut e = GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(t.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        let lines: Vec<&str> = text.lines().collect();
        // without its manifest (truncated)
        let cut = lines[..lines.len() - 1].join("\n");
        let e = read_prune_archive(gz(&cut).as_slice()).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        // a row missing
        let mut fewer: Vec<&str> = lines.clone();
        fewer.remove(0);
        let e = read_prune_archive(gz(&fewer.join("\n")).as_slice()).unwrap_err();
        assert!(e.to_string().contains("manifest lists"), "{e}");
        // a broken gzip stream
        assert!(read_prune_archive(&b"not gzip"[..]).is_err());
    }

    #[test]
    fn log_archive_round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(logs.join("trading.log.2026-11-01.gz"), b"one").unwrap();
        std::fs::write(logs.join("errors.log.2026-11-02.gz"), b"two!").unwrap();
        let files = crate::logging::cleanup_candidates(
            &logs,
            jiff::civil::date(2026, 11, 24),
            None,
            30,
            None,
        )
        .unwrap();
        let out = dir.path().join("logs.tar");
        let (m, w) = write_log_archive(&files, &out).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[0].name, "errors.log.2026-11-02.gz");
        assert_eq!(m.files[0].bytes, 4);
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(w.sha256, hex(&Sha256::digest(&bytes)));
        assert_eq!(read_log_archive(bytes.as_slice()).unwrap(), m);
        // a changed byte in a file's content is caught by its sha256
        let at = bytes.windows(3).position(|x| x == b"one").unwrap();
        let mut bad = bytes.clone();
        bad[at] = b'X';
        let e = read_log_archive(bad.as_slice()).unwrap_err();
        assert!(e.to_string().contains("differs"), "{e}");
    }
}
