//! SQLite persistence (WAL mode): trades, orders, equity snapshots and bot state.
//!
//! One process owns a data directory: [`Store::open`] takes the exclusive
//! [`lock::DataDirLock`] first, so a second bot on the same directory fails before it can
//! trade. All writes go through one writer connection with `synchronous=FULL`, so a
//! committed halt, pause or close-all result (and every trade) survives a power loss;
//! API reads use separate connections, which WAL lets run beside the writer.

pub mod lock;
pub mod migrations;

use crate::engine::{EngineEvent, OrphanPosition, Position, Restored};
use lock::{DataDirLock, LockError};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Database file name inside the data directory.
pub const DB_FILE: &str = "trades.db";

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Filesystem failed.
    #[error("cannot prepare data directory {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The database was written by a newer bot.
    #[error("database schema version {found} is newer than this bot supports ({supported})")]
    TooNew {
        /// Version found.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A lock was poisoned by a panicking thread.
    #[error("database lock poisoned")]
    Poisoned,
    /// Another process owns the data directory (or the lock could not be taken).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A prune found a different number of rows than the caller archived; nothing
    /// was deleted.
    #[error("prune refused: {found} row(s) match the selection but {expected} were archived")]
    PruneMismatch {
        /// Rows the caller archived.
        expected: u64,
        /// Rows the selection matches now.
        found: u64,
    },
}

/// `PRAGMA synchronous` of the writer connection: `FULL` (2) syncs the WAL on every
/// commit, so a committed write cannot be rolled back by a power loss. (`NORMAL`, the
/// usual WAL choice, may lose the last commits.) The bot commits only on trades, flag
/// changes and snapshots, so the extra fsync costs nothing measurable.
pub const WRITER_SYNCHRONOUS: &str = "FULL";

/// Open a connection with the pragmas every connection needs (readers keep
/// `synchronous=NORMAL`: they never commit anything that matters).
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// One trade as the API returns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TradeRow {
    /// Trade id.
    pub id: i64,
    /// Pair.
    pub pair: String,
    /// Always `long` for now.
    pub side: String,
    /// Still open.
    pub is_open: bool,
    /// Base amount.
    pub amount: f64,
    /// Quote stake.
    pub stake_amount: f64,
    /// Entry price.
    pub open_rate: f64,
    /// Entry time (RFC 3339).
    pub open_date: String,
    /// Entry time (ms since epoch).
    pub open_timestamp: i64,
    /// Entry fee.
    pub fee_open: f64,
    /// Exit price.
    pub close_rate: Option<f64>,
    /// Exit time (RFC 3339).
    pub close_date: Option<String>,
    /// Exit time (ms since epoch).
    pub close_timestamp: Option<i64>,
    /// Exit fee.
    pub fee_close: Option<f64>,
    /// Profit ratio.
    pub close_profit: Option<f64>,
    /// Profit in the stake currency.
    pub close_profit_abs: Option<f64>,
    /// Exit reason.
    pub exit_reason: Option<String>,
    /// Strategy name.
    pub strategy: String,
}

/// Win/loss figures over a period.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeriodStats {
    /// Closed trades.
    pub trades: i64,
    /// Closed with profit > 0.
    pub wins: i64,
    /// Closed with profit ≤ 0.
    pub losses: i64,
    /// wins / trades (0 when no trades).
    pub win_rate: f64,
    /// Sum of profit in the stake currency.
    pub pnl: f64,
}

/// Format ms since epoch as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

fn trade_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TradeRow> {
    let open_ts: i64 = r.get("open_date")?;
    let close_ts: Option<i64> = r.get("close_date")?;
    Ok(TradeRow {
        id: r.get("id")?,
        pair: r.get("pair")?,
        side: r.get("side")?,
        is_open: r.get::<_, i64>("is_open")? != 0,
        amount: r.get("amount")?,
        stake_amount: r.get("stake_amount")?,
        open_rate: r.get("open_rate")?,
        open_date: rfc3339(open_ts),
        open_timestamp: open_ts,
        fee_open: r.get("fee_open")?,
        close_rate: r.get("close_rate")?,
        close_date: close_ts.map(rfc3339),
        close_timestamp: close_ts,
        fee_close: r.get("fee_close")?,
        close_profit: r.get("close_profit")?,
        close_profit_abs: r.get("close_profit_abs")?,
        exit_reason: r.get("exit_reason")?,
        strategy: r.get("strategy")?,
    })
}

/// The database.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    // Declared last: dropped after the writer connection is closed.
    lock: DataDirLock,
}

impl Store {
    /// Take the data directory's exclusive lock, then open (creating the directory and
    /// schema as needed) `data_dir/trades.db`. Fails with [`StoreError::Lock`] at once
    /// when another process holds the directory.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let lock = DataDirLock::acquire(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let mut conn = open_connection(&path)?;
        conn.pragma_update(None, "synchronous", WRITER_SYNCHRONOUS)?;
        migrations::migrate(&mut conn)?;
        Ok(Store {
            path,
            writer: Mutex::new(conn),
            lock,
        })
    }

    /// Path of the data directory's lock file (held while this store is open).
    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer connection.
    pub fn writer(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.writer.lock().map_err(|_| StoreError::Poisoned)
    }

    /// A fresh read connection (WAL lets readers run beside the writer).
    pub fn reader(&self) -> Result<Connection, StoreError> {
        open_connection(&self.path)
    }

    /// Schema version.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(migrations::current_version(&*self.writer()?)?)
    }

    /// Load what the engine needs to resume. Open trades on pairs that are not in
    /// `pairs` come back in [`Restored::orphans`].
    pub fn load(&self, pairs: &[String]) -> Result<Restored, StoreError> {
        let conn = self.writer()?;
        let mut restored = Restored::default();
        {
            let mut st = conn.prepare(
                "SELECT id, pair, amount, stake_amount, open_rate, open_date, fee_open, max_rate FROM trades WHERE is_open = 1",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, f64>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, f64>(6)?,
                    r.get::<_, Option<f64>>(7)?,
                ))
            })?;
            for row in rows {
                let (id, pair, amount, stake, open_rate, open_ms, fee_open, max_rate) = row?;
                let configured = pairs.iter().position(|p| *p == pair);
                let position = Position {
                    trade_id: id,
                    pair_idx: configured.unwrap_or(usize::MAX),
                    amount,
                    stake,
                    open_rate,
                    open_ms,
                    fee_open,
                    max_rate: max_rate.unwrap_or(open_rate),
                };
                match configured {
                    Some(_) => restored.positions.push(position),
                    None => restored.orphans.push(OrphanPosition { pair, position }),
                }
            }
        }
        restored.realized_pnl = conn.query_row(
            "SELECT COALESCE(SUM(close_profit_abs), 0) FROM trades WHERE is_open = 0",
            [],
            |r| r.get(0),
        )?;
        restored.max_trade_id =
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM trades", [], |r| r.get(0))?;
        restored.max_order_id =
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM orders", [], |r| r.get(0))?;
        let get = |k: &str| -> rusqlite::Result<Option<String>> {
            conn.query_row("SELECT value FROM bot_state WHERE key = ?1", [k], |r| {
                r.get(0)
            })
            .optional()
        };
        restored.halted = get("halted_reason")?;
        restored.paused = get("paused")?.as_deref() == Some("1");
        restored.peak_equity = get("peak_equity")?.and_then(|v| v.parse().ok());
        restored.day_start = get("day_start")?.and_then(|v| {
            let (d, e) = v.split_once(':')?;
            Some((d.parse().ok()?, e.parse().ok()?))
        });
        Ok(restored)
    }

    /// Persist engine events in one transaction.
    pub fn persist(
        &self,
        events: &[EngineEvent],
        pairs: &[String],
        strategy: &str,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer()?;
        let tx = conn.transaction()?;
        for ev in events {
            match ev {
                EngineEvent::Opened {
                    position: p,
                    order_id,
                } => {
                    let pair = pairs.get(p.pair_idx).map(String::as_str).unwrap_or("?");
                    tx.execute(
                        "INSERT INTO trades (id, pair, side, is_open, amount, stake_amount, open_rate, open_date, fee_open, strategy, max_rate)
                         VALUES (?1, ?2, 'long', 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        params![p.trade_id, pair, p.amount, p.stake, p.open_rate, p.open_ms, p.fee_open, strategy, p.max_rate],
                    )?;
                    tx.execute(
                        "INSERT INTO orders (id, trade_id, pair, side, status, amount, price, filled, fee, created_at, updated_at)
                         VALUES (?1, ?2, ?3, 'buy', 'filled', ?4, ?5, ?4, ?6, ?7, ?7)",
                        params![order_id, p.trade_id, pair, p.amount, p.open_rate, p.fee_open, p.open_ms],
                    )?;
                }
                EngineEvent::Closed { trade: t, order_id } => {
                    let p = &t.position;
                    let pair = pairs.get(p.pair_idx).map(String::as_str).unwrap_or("?");
                    tx.execute(
                        "UPDATE trades SET is_open = 0, close_rate = ?2, close_date = ?3, fee_close = ?4, close_profit = ?5,
                         close_profit_abs = ?6, exit_reason = ?7, max_rate = ?8 WHERE id = ?1",
                        params![
                            p.trade_id,
                            t.close_rate,
                            t.close_ms,
                            t.fee_close,
                            t.profit_ratio,
                            t.profit_abs,
                            t.reason.as_str(),
                            p.max_rate
                        ],
                    )?;
                    tx.execute(
                        "INSERT INTO orders (id, trade_id, pair, side, status, amount, price, filled, fee, created_at, updated_at)
                         VALUES (?1, ?2, ?3, 'sell', 'filled', ?4, ?5, ?4, ?6, ?7, ?7)",
                        params![order_id, p.trade_id, pair, p.amount, t.close_rate, t.fee_close, t.close_ms],
                    )?;
                }
                EngineEvent::Halted { reason } => {
                    tx.execute(
                        "INSERT INTO bot_state (key, value) VALUES ('halted_reason', ?1)
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        [reason],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Persist the halt/pause flags (on resume, pause, and resume after breach).
    pub fn save_flags(&self, halted: Option<&str>, paused: bool) -> Result<(), StoreError> {
        let mut conn = self.writer()?;
        let tx = conn.transaction()?;
        match halted {
            Some(r) => tx.execute(
                "INSERT INTO bot_state (key, value) VALUES ('halted_reason', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [r],
            )?,
            None => tx.execute("DELETE FROM bot_state WHERE key = 'halted_reason'", [])?,
        };
        tx.execute(
            "INSERT INTO bot_state (key, value) VALUES ('paused', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [if paused { "1" } else { "0" }],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Write an equity snapshot and the peak equity.
    pub fn snapshot(
        &self,
        ts_ms: i64,
        equity: f64,
        cash: f64,
        open: usize,
        risk: &crate::risk::RiskManager,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO equity_snapshots (ts, equity, cash, open_positions) VALUES (?1, ?2, ?3, ?4)",
            params![ts_ms, equity, cash, open as i64],
        )?;
        tx.execute(
            "INSERT INTO bot_state (key, value) VALUES ('peak_equity', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [risk.peak_equity.to_string()],
        )?;
        tx.execute(
            "INSERT INTO bot_state (key, value) VALUES ('day_start', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [format!("{}:{}", risk.day, risk.day_start_equity)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Mark every open order canceled; returns how many.
    pub fn cancel_open_orders(&self, ts_ms: i64) -> Result<usize, StoreError> {
        let conn = self.writer()?;
        Ok(conn.execute(
            "UPDATE orders SET status = 'canceled', updated_at = ?1 WHERE status = 'open'",
            [ts_ms],
        )?)
    }

    /// Prove the database accepts writes (used by /readyz).
    pub fn probe_write(&self, ts_ms: i64) -> Result<(), StoreError> {
        let conn = self.writer()?;
        conn.execute(
            "INSERT INTO bot_state (key, value) VALUES ('ready_probe', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [ts_ms.to_string()],
        )?;
        Ok(())
    }

    /// Trades opened or closed at/after `since_ms`, newest first.
    pub fn trades(
        &self,
        since_ms: i64,
        limit: i64,
        open_only: bool,
    ) -> Result<Vec<TradeRow>, StoreError> {
        let conn = self.reader()?;
        let mut st = conn.prepare(
            "SELECT * FROM trades WHERE (open_date >= ?1 OR close_date >= ?1) AND (?3 = 0 OR is_open = 1)
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![since_ms, limit, open_only as i64], trade_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every trade in id order (used by tests and backup checks).
    pub fn all_trades(conn: &Connection) -> Result<Vec<TradeRow>, StoreError> {
        let mut st = conn.prepare("SELECT * FROM trades ORDER BY id")?;
        let rows = st.query_map([], trade_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Closed-trade statistics since `since_ms`.
    pub fn stats_since(&self, conn: &Connection, since_ms: i64) -> Result<PeriodStats, StoreError> {
        let (trades, wins, pnl): (i64, i64, f64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(close_profit_abs > 0), 0), COALESCE(SUM(close_profit_abs), 0)
             FROM trades WHERE is_open = 0 AND close_date >= ?1",
            [since_ms],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(PeriodStats {
            trades,
            wins,
            losses: trades - wins,
            win_rate: if trades > 0 {
                wins as f64 / trades as f64
            } else {
                0.0
            },
            pnl,
        })
    }

    /// `VACUUM` and a WAL checkpoint; returns (bytes before, bytes after).
    pub fn vacuum(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.writer()?;
        let size = || std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let before = size();
        conn.execute_batch("VACUUM;")?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok((before, size()))
    }

    /// Delete closed trades (with their orders) closed before `cutoff_ms` and equity
    /// snapshots older than it; returns the rows as JSON. With `dry_run` nothing is deleted.
    pub fn prune(
        &self,
        cutoff_ms: i64,
        dry_run: bool,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        self.prune_selected(&PruneSelection::before(cutoff_ms), None, dry_run)
    }

    /// Delete exactly the rows of `sel` (closed trades closed before the cutoff with an
    /// id up to `max_trade_id`, their orders, and equity snapshots before the cutoff);
    /// returns them as JSON lines. With `expected_rows` set, a different number of rows
    /// fails with [`StoreError::PruneMismatch`] and deletes nothing: the caller
    /// archived that many rows and must not lose any it did not archive.
    pub fn prune_selected(
        &self,
        sel: &PruneSelection,
        expected_rows: Option<u64>,
        dry_run: bool,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut conn = self.writer()?;
        let tx = conn.transaction()?;
        let mut out = Vec::new();
        select_prunable(&tx, sel, &mut |v| {
            out.push(v);
            Ok(())
        })?;
        if let Some(expected) = expected_rows
            && expected != out.len() as u64
        {
            return Err(StoreError::PruneMismatch {
                expected,
                found: out.len() as u64,
            });
        }
        if !dry_run {
            let max_id = sel.max_trade_id.unwrap_or(i64::MAX);
            tx.execute(
                "DELETE FROM orders WHERE trade_id IN (SELECT id FROM trades WHERE is_open = 0 AND close_date < ?1 AND id <= ?2)",
                params![sel.cutoff_ms, max_id],
            )?;
            tx.execute(
                "DELETE FROM trades WHERE is_open = 0 AND close_date < ?1 AND id <= ?2",
                params![sel.cutoff_ms, max_id],
            )?;
            tx.execute(
                "DELETE FROM equity_snapshots WHERE ts < ?1",
                [sel.cutoff_ms],
            )?;
            tx.commit()?;
        }
        Ok(out)
    }

    /// Writes the rows a prune at `cutoff_ms` would delete to `sink`, one JSON value per
    /// row (`{"table", "row"}`), from one consistent read snapshot, and returns the
    /// selection that names exactly those rows (the cutoff and the highest trade id
    /// written) with the number of rows per table. Nothing is deleted.
    pub fn export_prunable(
        &self,
        cutoff_ms: i64,
        sink: &mut dyn FnMut(serde_json::Value) -> std::io::Result<()>,
    ) -> Result<(PruneSelection, PruneCounts), StoreError> {
        let mut conn = self.reader()?;
        // One read transaction: the max id and the rows come from the same snapshot.
        let tx = conn.transaction()?;
        let max_trade_id: i64 = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM trades WHERE is_open = 0 AND close_date < ?1",
            [cutoff_ms],
            |r| r.get(0),
        )?;
        let sel = PruneSelection {
            cutoff_ms,
            max_trade_id: Some(max_trade_id),
        };
        let mut counts = PruneCounts::default();
        let mut io_error = None;
        select_prunable(&tx, &sel, &mut |v| {
            match v["table"].as_str() {
                Some("trades") => counts.trades += 1,
                Some("orders") => counts.orders += 1,
                _ => counts.equity_snapshots += 1,
            }
            if io_error.is_none()
                && let Err(e) = sink(v)
            {
                io_error = Some(e);
            }
            Ok(())
        })?;
        if let Some(source) = io_error {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source,
            });
        }
        Ok((sel, counts))
    }
}

/// The rows a prune deletes: closed trades closed before `cutoff_ms` (and, when set,
/// with an id up to `max_trade_id`), their orders, and equity snapshots before
/// `cutoff_ms`. A selection taken at archive time names a fixed set: a trade closing
/// later closes after the cutoff, and snapshots are only ever added at the present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneSelection {
    /// Rows strictly before this instant (ms since the epoch).
    pub cutoff_ms: i64,
    /// Highest trade id included (`None`: no limit).
    pub max_trade_id: Option<i64>,
}

impl PruneSelection {
    /// Everything before `cutoff_ms`.
    pub fn before(cutoff_ms: i64) -> Self {
        Self {
            cutoff_ms,
            max_trade_id: None,
        }
    }
}

/// Rows per table of a prune selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Closed trades.
    pub trades: u64,
    /// Their orders.
    pub orders: u64,
    /// Equity snapshots.
    pub equity_snapshots: u64,
}

impl PruneCounts {
    /// All rows.
    pub fn total(&self) -> u64 {
        self.trades + self.orders + self.equity_snapshots
    }
}

/// Feeds the rows of `sel` to `f` (trades, then orders, then equity snapshots, each in
/// key order) as `{"table": ..., "row": ...}`.
fn select_prunable(
    conn: &Connection,
    sel: &PruneSelection,
    f: &mut dyn FnMut(serde_json::Value) -> rusqlite::Result<()>,
) -> Result<(), StoreError> {
    let max_id = sel.max_trade_id.unwrap_or(i64::MAX);
    let mut st = conn.prepare(
        "SELECT * FROM trades WHERE is_open = 0 AND close_date < ?1 AND id <= ?2 ORDER BY id",
    )?;
    for t in st.query_map(params![sel.cutoff_ms, max_id], trade_from_row)? {
        f(serde_json::json!({"table": "trades", "row": t?}))?;
    }
    let mut st = conn.prepare(
        "SELECT id, trade_id, pair, side, order_type, status, amount, price, filled, fee, created_at, updated_at FROM orders
         WHERE trade_id IN (SELECT id FROM trades WHERE is_open = 0 AND close_date < ?1 AND id <= ?2) ORDER BY id",
    )?;
    let rows = st.query_map(params![sel.cutoff_ms, max_id], |r| {
        Ok(serde_json::json!({"table": "orders", "row": {
            "id": r.get::<_, i64>(0)?, "tradeId": r.get::<_, i64>(1)?, "pair": r.get::<_, String>(2)?,
            "side": r.get::<_, String>(3)?, "orderType": r.get::<_, String>(4)?, "status": r.get::<_, String>(5)?,
            "amount": r.get::<_, f64>(6)?, "price": r.get::<_, f64>(7)?, "filled": r.get::<_, f64>(8)?,
            "fee": r.get::<_, f64>(9)?, "createdAt": r.get::<_, i64>(10)?, "updatedAt": r.get::<_, i64>(11)?,
        }}))
    })?;
    for o in rows {
        f(o?)?;
    }
    let mut st = conn.prepare(
        "SELECT ts, equity, cash, open_positions FROM equity_snapshots WHERE ts < ?1 ORDER BY ts",
    )?;
    let rows = st.query_map([sel.cutoff_ms], |r| {
        Ok(serde_json::json!({"table": "equity_snapshots", "row": {
            "ts": r.get::<_, i64>(0)?, "equity": r.get::<_, f64>(1)?, "cash": r.get::<_, f64>(2)?,
            "openPositions": r.get::<_, i64>(3)?,
        }}))
    })?;
    for e in rows {
        f(e?)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::engine::{ClosedTrade, ExitReason};

    fn pos(id: i64, pair_idx: usize) -> Position {
        Position {
            trade_id: id,
            pair_idx,
            amount: 1.0,
            stake: 100.0,
            open_rate: 100.0,
            open_ms: 1000,
            fee_open: 0.1,
            max_rate: 100.0,
        }
    }

    #[test]
    fn persist_load_and_unique_open_trade_per_pair() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = vec!["A/B".to_string(), "C/D".to_string()];
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), migrations::SCHEMA_VERSION);
        s.persist(
            &[EngineEvent::Opened {
                position: pos(1, 0),
                order_id: 1,
            }],
            &pairs,
            "rsi",
        )
        .unwrap();
        // a second open trade for the same pair is rejected by the unique index
        assert!(
            s.persist(
                &[EngineEvent::Opened {
                    position: pos(2, 0),
                    order_id: 2
                }],
                &pairs,
                "rsi"
            )
            .is_err()
        );
        let closed = ClosedTrade {
            position: pos(1, 0),
            close_rate: 110.0,
            close_ms: 2000,
            fee_close: 0.1,
            profit_abs: 9.8,
            profit_ratio: 0.098,
            reason: ExitReason::ExitSignal,
        };
        s.persist(
            &[
                EngineEvent::Closed {
                    trade: closed,
                    order_id: 2,
                },
                EngineEvent::Opened {
                    position: pos(2, 1),
                    order_id: 3,
                },
                EngineEvent::Halted {
                    reason: "why".into(),
                },
            ],
            &pairs,
            "rsi",
        )
        .unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let r = s.load(&pairs).unwrap();
        assert!(r.orphans.is_empty());
        assert_eq!(r.positions.len(), 1);
        assert_eq!(r.positions[0].pair_idx, 1);
        assert!((r.realized_pnl - 9.8).abs() < 1e-9);
        assert_eq!((r.max_trade_id, r.max_order_id), (2, 3));
        assert_eq!(r.halted.as_deref(), Some("why"));
        let stats = s.stats_since(&s.reader().unwrap(), 0).unwrap();
        assert_eq!((stats.trades, stats.wins, stats.losses), (1, 1, 0));
        // pairs no longer configured come back as orphans
        let orphans = s.load(&["A/B".to_string()]).unwrap().orphans;
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].pair, "C/D");
        assert_eq!(orphans[0].position.trade_id, 2);
        // prune: dry run keeps, real run deletes closed trade 1 and its orders
        assert_eq!(s.prune(5000, true).unwrap().len(), 3);
        assert_eq!(s.prune(5000, false).unwrap().len(), 3);
        assert!(s.prune(5000, false).unwrap().is_empty());
        assert_eq!(Store::all_trades(&s.reader().unwrap()).unwrap().len(), 1);
        s.save_flags(None, true).unwrap();
        let r = s.load(&pairs).unwrap();
        assert!(r.halted.is_none() && r.paused);
    }

    fn synchronous(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn writer_commits_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // 2 = FULL (0 OFF, 1 NORMAL, 3 EXTRA)
        assert_eq!(synchronous(&s.writer().unwrap()), 2);
        // the halt flag and close-all results are written through the writer
        s.save_flags(Some("emergency"), false).unwrap();
        assert_eq!(synchronous(&s.writer().unwrap()), 2);
        assert_eq!(s.cancel_open_orders(1).unwrap(), 0);
        assert_eq!(synchronous(&s.writer().unwrap()), 2);
        let mode: String = s
            .writer()
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // readers stay NORMAL and can read beside the writer
        let reader = s.reader().unwrap();
        assert_eq!(synchronous(&reader), 1);
        assert_eq!(s.load(&[]).unwrap().halted.as_deref(), Some("emergency"));
    }

    #[test]
    fn a_second_store_on_the_same_dir_fails_naming_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let err = match Store::open(dir.path()) {
            Ok(_) => panic!("a second store opened the same data dir"),
            Err(e) => e,
        };
        assert!(
            matches!(err, StoreError::Lock(LockError::Held { .. })),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(lock::LOCK_FILE), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // readers of the first store are not fenced out
        assert!(first.trades(0, 10, false).unwrap().is_empty());
        assert_eq!(first.lock_path(), dir.path().join(lock::LOCK_FILE));
        drop(first);
        Store::open(dir.path()).unwrap();
    }
}
