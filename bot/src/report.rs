//! The performance report (`GET /api/v1/report?period=weekly`): the runbook's
//! `generate_report.py`, computed from the trade history in the bot's own database.
//!
//! Why in the bot: the history is here, and only here it is complete (the operator sees
//! figures at poll times, not every trade). The document, the periods and the text are
//! the contract's ([`iq720_contract::report`]), so the operator stores exactly what the
//! bot computed. [`compute`] is pure: the database reads are in [`gather`], so the
//! arithmetic is tested without a database.

use iq720_contract::report::{PairFigures, PerformanceReport, ReportPeriod, TradeRef};
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{StoreError, rfc3339};

/// A trade closed inside the period, as the report needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedTrade {
    /// Trade id.
    pub id: i64,
    /// Pair.
    pub pair: String,
    /// Entry time (ms since epoch).
    pub open_ms: i64,
    /// Exit time (ms since epoch).
    pub close_ms: i64,
    /// Profit in the stake currency, net of both fees.
    pub pnl: f64,
    /// Profit ratio.
    pub ratio: f64,
    /// Entry plus exit fee.
    pub fees: f64,
    /// Exit reason (`unknown` when none was recorded).
    pub exit_reason: String,
}

/// What the report needs besides the trades.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The bot's name.
    pub bot: Option<String>,
    /// The period.
    pub period: ReportPeriod,
    /// End of the period (ms since epoch, exclusive).
    pub to_ms: i64,
    /// Stake currency.
    pub stake_currency: String,
    /// Equity at the start of the period.
    pub equity_start: f64,
    /// Equity at its end.
    pub equity_end: f64,
    /// Positions open at its end.
    pub open_positions: u64,
}

impl Frame {
    /// Start of the period (ms since epoch, inclusive).
    pub fn from_ms(&self) -> i64 {
        self.to_ms - self.period.length_ms()
    }
}

/// The report over `trades` (closed inside the frame's period, in any order).
pub fn compute(frame: &Frame, trades: &[ClosedTrade]) -> PerformanceReport {
    let mut ordered: Vec<&ClosedTrade> = trades.iter().collect();
    ordered.sort_by_key(|t| (t.close_ms, t.id));
    let count = ordered.len() as u64;
    let wins = ordered.iter().filter(|t| t.pnl > 0.0).count() as u64;
    let pnl = sum(ordered.iter().map(|t| t.pnl));
    let gross_profit = sum(ordered.iter().map(|t| t.pnl).filter(|p| *p > 0.0));
    let gross_loss = sum(ordered.iter().map(|t| t.pnl).filter(|p| *p <= 0.0));
    let has_loss = ordered.iter().any(|t| t.pnl < 0.0);
    let per_trade = |v: f64| if count > 0 { v / count as f64 } else { 0.0 };
    let trade_ref = |t: &&ClosedTrade| TradeRef {
        id: t.id,
        pair: t.pair.clone(),
        pnl: t.pnl,
        ratio: t.ratio,
    };
    // Realised equity curve: the start plus each trade in the order it closed.
    let (mut equity, mut peak) = (frame.equity_start, frame.equity_start);
    let (mut max_drawdown, mut max_drawdown_percent) = (0.0_f64, 0.0_f64);
    for t in &ordered {
        equity += t.pnl;
        peak = peak.max(equity);
        let fall = peak - equity;
        if fall > max_drawdown {
            max_drawdown = fall;
            max_drawdown_percent = if peak > 0.0 { fall / peak * 100.0 } else { 0.0 };
        }
    }
    let mut report = PerformanceReport {
        bot: frame.bot.clone(),
        period: frame.period,
        from: rfc3339(frame.from_ms()),
        to: rfc3339(frame.to_ms),
        stake_currency: frame.stake_currency.clone(),
        trades: count,
        wins,
        losses: count - wins,
        win_rate: per_trade(wins as f64),
        pnl,
        gross_profit,
        gross_loss,
        profit_factor: has_loss.then(|| gross_profit / gross_loss.abs()),
        fees: sum(ordered.iter().map(|t| t.fees)),
        average_pnl: per_trade(pnl),
        average_holding_seconds: per_trade(sum(ordered
            .iter()
            .map(|t| (t.close_ms - t.open_ms) as f64 / 1000.0))),
        best_trade: ordered
            .iter()
            .max_by(|a, b| a.pnl.total_cmp(&b.pnl))
            .map(trade_ref),
        worst_trade: ordered
            .iter()
            .min_by(|a, b| a.pnl.total_cmp(&b.pnl))
            .map(trade_ref),
        equity_start: frame.equity_start,
        equity_end: frame.equity_end,
        max_drawdown,
        max_drawdown_percent,
        open_positions: frame.open_positions,
        pairs: Default::default(),
        exit_reasons: Default::default(),
    };
    for t in &ordered {
        let f: &mut PairFigures = report.pairs.entry(t.pair.clone()).or_default();
        f.trades += 1;
        f.wins += u64::from(t.pnl > 0.0);
        f.pnl += t.pnl;
        *report
            .exit_reasons
            .entry(t.exit_reason.clone())
            .or_default() += 1;
    }
    report
}

/// A sum that starts at +0.0: `Iterator::sum` of no floats is -0.0, which a report
/// would show as "-0.00".
fn sum(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |a, b| a + b)
}

/// Trades closed in `[from_ms, to_ms)`.
pub fn closed_between(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ClosedTrade>, StoreError> {
    let mut st = conn.prepare(
        "SELECT id, pair, open_date, close_date, COALESCE(close_profit_abs, 0), COALESCE(close_profit, 0),
                fee_open + COALESCE(fee_close, 0), COALESCE(exit_reason, 'unknown')
         FROM trades WHERE is_open = 0 AND close_date >= ?1 AND close_date < ?2",
    )?;
    let rows = st.query_map(params![from_ms, to_ms], |r| {
        Ok(ClosedTrade {
            id: r.get(0)?,
            pair: r.get(1)?,
            open_ms: r.get(2)?,
            close_ms: r.get(3)?,
            pnl: r.get(4)?,
            ratio: r.get(5)?,
            fees: r.get(6)?,
            exit_reason: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Positions open at `at_ms`: entered before it and closed at or after it (or not yet).
pub fn open_at(conn: &Connection, at_ms: i64) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM trades WHERE open_date < ?1 AND (is_open = 1 OR close_date >= ?1)",
        [at_ms],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Equity of the newest snapshot at or before `at_ms`.
pub fn equity_at(conn: &Connection, at_ms: i64) -> Result<Option<f64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT equity FROM equity_snapshots WHERE ts <= ?1 ORDER BY ts DESC LIMIT 1",
            [at_ms],
            |r| r.get(0),
        )
        .optional()?)
}

/// What the running engine knows, for a period that ends now.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// The bot's name.
    pub bot: Option<String>,
    /// Stake currency.
    pub stake_currency: String,
    /// Starting balance (equity before any trade).
    pub starting_balance: f64,
    /// Equity now.
    pub equity: f64,
    /// Open positions now.
    pub open_positions: u64,
    /// Now (ms since epoch).
    pub now_ms: i64,
}

/// The report of `period` ending at `end_ms` (now when `None`), read from the database.
pub fn gather(
    conn: &Connection,
    period: ReportPeriod,
    end_ms: Option<i64>,
    live: &Live,
) -> Result<PerformanceReport, StoreError> {
    let to_ms = end_ms.unwrap_or(live.now_ms).min(live.now_ms);
    let ends_now = to_ms == live.now_ms;
    let from_ms = to_ms - period.length_ms();
    let equity_start = equity_at(conn, from_ms)?.unwrap_or(live.starting_balance);
    let equity_end = if ends_now {
        live.equity
    } else {
        equity_at(conn, to_ms)?.unwrap_or(equity_start)
    };
    let open_positions = if ends_now {
        live.open_positions
    } else {
        open_at(conn, to_ms)?
    };
    let frame = Frame {
        bot: live.bot.clone(),
        period,
        to_ms,
        stake_currency: live.stake_currency.clone(),
        equity_start,
        equity_end,
        open_positions,
    };
    Ok(compute(&frame, &closed_between(conn, from_ms, to_ms)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::Store;

    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_765_000_000_000;

    fn trade(id: i64, pair: &str, close_ms: i64, pnl: f64, reason: &str) -> ClosedTrade {
        ClosedTrade {
            id,
            pair: pair.into(),
            open_ms: close_ms - 600_000,
            close_ms,
            pnl,
            ratio: pnl / 100.0,
            fees: 0.2,
            exit_reason: reason.into(),
        }
    }

    fn frame() -> Frame {
        Frame {
            bot: Some("ns/b".into()),
            period: ReportPeriod::Weekly,
            to_ms: NOW,
            stake_currency: "USDT".into(),
            equity_start: 1000.0,
            equity_end: 1010.0,
            open_positions: 2,
        }
    }

    #[test]
    fn figures_of_mixed_trades() {
        let trades = [
            trade(3, "ETH/USDT", NOW - 3 * DAY, -30.0, "stop_loss"),
            trade(1, "BTC/USDT", NOW - 5 * DAY, 50.0, "exit_signal"),
            trade(4, "BTC/USDT", NOW - 2 * DAY, 0.0, "exit_signal"),
            trade(2, "BTC/USDT", NOW - 4 * DAY, 10.0, "roi"),
        ];
        let r = compute(&frame(), &trades);
        assert_eq!((r.trades, r.wins, r.losses), (4, 2, 2));
        assert_eq!(r.win_rate, 0.5);
        assert_eq!(r.pnl, 30.0);
        assert_eq!((r.gross_profit, r.gross_loss), (60.0, -30.0));
        assert_eq!(r.profit_factor, Some(2.0));
        assert!((r.fees - 0.8).abs() < 1e-9, "{}", r.fees);
        assert_eq!(r.average_pnl, 7.5);
        assert_eq!(r.average_holding_seconds, 600.0);
        assert_eq!(r.best_trade.as_ref().map(|t| t.id), Some(1));
        assert_eq!(r.worst_trade.as_ref().map(|t| t.id), Some(3));
        // curve: 1000 → 1050 (#1) → 1060 (#2) → 1030 (#3) → 1030 (#4): fall 30 from 1060
        assert_eq!(r.max_drawdown, 30.0);
        assert!((r.max_drawdown_percent - 30.0 / 1060.0 * 100.0).abs() < 1e-9);
        assert_eq!(
            r.pairs["BTC/USDT"],
            PairFigures {
                trades: 3,
                wins: 2,
                pnl: 60.0
            }
        );
        assert_eq!(
            r.pairs["ETH/USDT"],
            PairFigures {
                trades: 1,
                wins: 0,
                pnl: -30.0
            }
        );
        assert_eq!(r.exit_reasons["exit_signal"], 2);
        assert_eq!((r.exit_reasons["roi"], r.exit_reasons["stop_loss"]), (1, 1));
        assert_eq!(r.from, rfc3339(NOW - 7 * DAY));
        assert_eq!(r.to, rfc3339(NOW));
        assert_eq!(
            (r.equity_start, r.equity_end, r.open_positions),
            (1000.0, 1010.0, 2)
        );
    }

    #[test]
    fn no_trades_is_all_zero_and_a_break_even_trade_is_no_loss_for_the_profit_factor() {
        let r = compute(&frame(), &[]);
        assert_eq!(
            (r.trades, r.win_rate, r.pnl, r.average_pnl),
            (0, 0.0, 0.0, 0.0)
        );
        assert_eq!((r.max_drawdown, r.profit_factor), (0.0, None));
        assert!(r.best_trade.is_none() && r.pairs.is_empty());
        assert!(r.pnl.is_sign_positive() && r.gross_profit.is_sign_positive());
        let r = compute(&frame(), &[trade(1, "A/B", NOW - DAY, 0.0, "roi")]);
        assert_eq!((r.wins, r.losses, r.profit_factor), (0, 1, None));
        // only losses: no profit, and it is +0, not -0 ("-0.00" in the text)
        let r = compute(&frame(), &[trade(1, "A/B", NOW - DAY, -1.0, "roi")]);
        assert_eq!(r.profit_factor, Some(0.0));
        assert!(r.profit_factor.is_some_and(f64::is_sign_positive));
        assert!(
            r.render_text().contains("profit factor 0.00"),
            "{}",
            r.render_text()
        );
    }

    #[test]
    fn gather_reads_only_the_period_and_the_equity_before_it() {
        let dir = std::env::temp_dir().join(format!("iq720-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        {
            let c = store.writer().unwrap();
            let insert = |id: i64, open: i64, close: Option<i64>, pnl: f64| {
                c.execute(
                    "INSERT INTO trades (id, pair, is_open, amount, stake_amount, open_rate, open_date, fee_open,
                       close_rate, close_date, fee_close, close_profit, close_profit_abs, exit_reason, strategy)
                     VALUES (?1, 'BTC/USDT', ?2, 1, 100, 100, ?3, 0.1, 101, ?4, 0.1, ?5 / 100.0, ?5, 'roi', 'rsi')",
                    params![id, close.is_none() as i64, open, close, pnl],
                )
                .unwrap();
            };
            insert(1, NOW - 40 * DAY, Some(NOW - 39 * DAY), 5.0); // outside both
            insert(2, NOW - 10 * DAY, Some(NOW - 9 * DAY), 7.0); // monthly only
            insert(3, NOW - 2 * DAY, Some(NOW - DAY - 1), -3.0); // weekly, monthly
            insert(4, NOW - 3_600_000, Some(NOW - 1000), 4.0); // daily, weekly, monthly
            insert(5, NOW - 3_600_000, None, 0.0); // open
            insert(6, NOW - 8 * DAY, Some(NOW - 2 * DAY), 1.0); // opened before the week
            c.execute(
                "INSERT INTO equity_snapshots (ts, equity, cash, open_positions) VALUES (?1, 990.0, 990.0, 0), (?2, 1012.0, 1012.0, 0)",
                params![NOW - 20 * DAY, NOW - 3 * DAY],
            )
            .unwrap();
        }
        let conn = store.reader().unwrap();
        let live = Live {
            bot: None,
            stake_currency: "USDT".into(),
            starting_balance: 1000.0,
            equity: 1020.0,
            open_positions: 1,
            now_ms: NOW,
        };
        let ids = |r: &PerformanceReport| (r.trades, r.pnl);
        let daily = gather(&conn, ReportPeriod::Daily, None, &live).unwrap();
        assert_eq!(ids(&daily), (1, 4.0));
        assert_eq!(daily.equity_start, 1012.0, "snapshot 3 days ago");
        assert_eq!((daily.equity_end, daily.open_positions), (1020.0, 1));
        let weekly = gather(&conn, ReportPeriod::Weekly, None, &live).unwrap();
        assert_eq!(ids(&weekly), (3, 2.0));
        assert_eq!(weekly.equity_start, 990.0, "snapshot 20 days ago");
        let monthly = gather(&conn, ReportPeriod::Monthly, None, &live).unwrap();
        assert_eq!(ids(&monthly), (4, 9.0));
        assert_eq!(
            monthly.equity_start, 1000.0,
            "no snapshot that old: the starting balance"
        );
        // a week that ended two days ago: #2 closed at its very start (in), #6 closed
        // exactly at its end (out, and open then), #3 and #4 after it
        let past = gather(&conn, ReportPeriod::Weekly, Some(NOW - 2 * DAY), &live).unwrap();
        assert_eq!(ids(&past), (1, 7.0));
        assert_eq!(past.open_positions, 1, "#6 was open at the end");
        assert_eq!(past.equity_end, 1012.0);
        drop(conn);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
