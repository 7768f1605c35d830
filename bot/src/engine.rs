//! The trading core: tick → strategy → risk → paper broker, with no I/O.
//!
//! The engine mutates in-memory state and reports what happened as [`EngineEvent`]s; the
//! runner persists them. Trade and order ids are assigned here (continuing from the
//! highest id in the database) so a crash between decision and write can never produce
//! two open trades for one pair: the database has a unique index on open trades per pair
//! and on restart the open positions are re-read from it.
//!
//! Open trades on pairs that are no longer configured (the bot restarted with a smaller
//! pair list) are kept as *orphans*: no market data reaches them, so they are not traded,
//! but they count as open positions, hold their stake out of the cash, and the emergency
//! close-all closes them too (at their entry price, the only price known for them). An
//! emergency stop must never report flat while the database still holds an open trade.

use crate::broker::PaperBroker;
use crate::config::{Config, RiskConfig, StrategyKind, StrategyParams};
use crate::risk::{Denied, RiskManager};
use crate::strategy::{PairStrategy, Signal};

/// Why a position was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Fixed stop-loss hit.
    StopLoss,
    /// Trailing stop-loss hit.
    TrailingStopLoss,
    /// Strategy exit signal.
    ExitSignal,
    /// Emergency close-all.
    EmergencyCloseAll,
    /// Emergency close-all of a position on a pair that is no longer configured.
    EmergencyOrphan,
}

impl ExitReason {
    /// Stable name stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExitReason::StopLoss => "stop_loss",
            ExitReason::TrailingStopLoss => "trailing_stop_loss",
            ExitReason::ExitSignal => "exit_signal",
            ExitReason::EmergencyCloseAll => "emergency_close_all",
            ExitReason::EmergencyOrphan => "emergency_orphan",
        }
    }
}

/// An open long position.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// Trade id (primary key in `trades`).
    pub trade_id: i64,
    /// Index into the configured pairs.
    pub pair_idx: usize,
    /// Base amount held.
    pub amount: f64,
    /// Quote amount paid (excluding fee).
    pub stake: f64,
    /// Entry price after slippage.
    pub open_rate: f64,
    /// Entry time, ms since the epoch.
    pub open_ms: i64,
    /// Entry fee.
    pub fee_open: f64,
    /// Highest price seen since entry (trailing stop reference).
    pub max_rate: f64,
}

/// An open trade, restored from the database, on a pair that is no longer configured.
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanPosition {
    /// The pair, as stored.
    pub pair: String,
    /// The position (`pair_idx` is assigned by [`Engine::new`]).
    pub position: Position,
}

/// A position that was just closed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedTrade {
    /// The position as it was.
    pub position: Position,
    /// Exit price after slippage.
    pub close_rate: f64,
    /// Exit time, ms since the epoch.
    pub close_ms: i64,
    /// Exit fee.
    pub fee_close: f64,
    /// Profit in the quote currency after both fees.
    pub profit_abs: f64,
    /// `profit_abs / stake`.
    pub profit_ratio: f64,
    /// Why it closed.
    pub reason: ExitReason,
}

/// Something the runner must persist.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A position was opened (buy order `order_id` filled).
    Opened {
        /// The new position.
        position: Position,
        /// Id of the filled buy order.
        order_id: i64,
    },
    /// A position was closed (sell order `order_id` filled).
    Closed {
        /// The closed trade.
        trade: ClosedTrade,
        /// Id of the filled sell order.
        order_id: i64,
    },
    /// New entries are halted.
    Halted {
        /// Why.
        reason: String,
    },
}

/// What the engine did with one tick (for latency accounting and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    Hold,
    /// Opened a position.
    Entered,
    /// Closed a position.
    Exited,
    /// Wanted to enter but paused.
    BlockedPaused,
    /// Wanted to enter but halted.
    BlockedHalted,
    /// Wanted to enter but the risk manager refused.
    BlockedRisk,
}

/// State restored from the database at start.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Open positions on configured pairs.
    pub positions: Vec<Position>,
    /// Open positions on pairs that are no longer configured.
    pub orphans: Vec<OrphanPosition>,
    /// Sum of profit over closed trades.
    pub realized_pnl: f64,
    /// Highest trade id in use.
    pub max_trade_id: i64,
    /// Highest order id in use.
    pub max_order_id: i64,
    /// Persisted halt reason.
    pub halted: Option<String>,
    /// Persisted pause flag.
    pub paused: bool,
    /// Persisted peak equity.
    pub peak_equity: Option<f64>,
    /// Persisted (UTC day number, equity at the start of that day).
    pub day_start: Option<(i64, f64)>,
}

/// The engine.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Configured pairs (indices `0..n_pairs`), then the pairs of orphans.
    pair_names: Vec<String>,
    n_pairs: usize,
    strategy_name: String,
    strategies: Vec<PairStrategy>,
    positions: Vec<Option<Position>>,
    /// Open positions on configured pairs (what the risk manager limits).
    managed_open: usize,
    /// Open positions on pairs no longer configured; `pair_idx` ≥ `n_pairs`.
    orphans: Vec<Position>,
    last_price: Vec<f64>,
    starting_balance: f64,
    cash: f64,
    realized_pnl: f64,
    risk: RiskManager,
    broker: PaperBroker,
    paused: bool,
    halted: Option<String>,
    next_trade_id: i64,
    next_order_id: i64,
}

impl Engine {
    /// Build from a validated config and restored state.
    ///
    /// Positions for pairs no longer configured become orphans: not traded, counted in
    /// [`Engine::open_count`] and closed by [`Engine::close_all`].
    pub fn new(
        cfg: &Config,
        kind: StrategyKind,
        params: StrategyParams,
        restored: Restored,
        now_ms: i64,
    ) -> Self {
        let n = cfg.pairs.len();
        let mut positions: Vec<Option<Position>> = vec![None; n];
        let mut last_price = vec![f64::NAN; n];
        let mut committed = 0.0;
        for p in restored.positions {
            committed += p.stake + p.fee_open;
            let idx = p.pair_idx;
            if idx < n {
                last_price[idx] = p.open_rate;
                positions[idx] = Some(p);
            }
        }
        let mut pair_names = cfg.pairs.clone();
        let mut orphans = Vec::with_capacity(restored.orphans.len());
        for o in restored.orphans {
            committed += o.position.stake + o.position.fee_open;
            let mut p = o.position;
            p.pair_idx = pair_names.len();
            pair_names.push(o.pair);
            orphans.push(p);
        }
        let cash = cfg.starting_balance + restored.realized_pnl - committed;
        let managed_open = positions.iter().filter(|p| p.is_some()).count();
        let mut e = Engine {
            pair_names,
            n_pairs: n,
            strategy_name: cfg.strategy.name.clone(),
            strategies: vec![PairStrategy::new(kind, params); n],
            positions,
            managed_open,
            orphans,
            last_price,
            starting_balance: cfg.starting_balance,
            cash,
            realized_pnl: restored.realized_pnl,
            risk: RiskManager::new(cfg.risk, 0.0, now_ms),
            broker: PaperBroker::new(&cfg.broker),
            paused: cfg.paused || restored.paused,
            halted: restored.halted,
            next_trade_id: restored.max_trade_id + 1,
            next_order_id: restored.max_order_id + 1,
        };
        let eq = e.equity();
        e.risk = RiskManager::new(cfg.risk, eq, now_ms);
        if let Some(peak) = restored.peak_equity {
            e.risk.peak_equity = peak.max(eq);
        }
        if let Some((day, start)) = restored.day_start
            && day == e.risk.day
        {
            e.risk.day_start_equity = start;
        }
        e
    }

    /// Configured pairs.
    pub fn pairs(&self) -> &[String] {
        &self.pair_names[..self.n_pairs]
    }
    /// Every pair a position may refer to: the configured pairs, then the orphans' pairs
    /// (index with [`Position::pair_idx`]; pass this to the store and reports).
    pub fn pair_names(&self) -> &[String] {
        &self.pair_names
    }
    /// Name of the pair at `pair_idx` (`?` if out of range).
    pub fn pair_name(&self, pair_idx: usize) -> &str {
        self.pair_names
            .get(pair_idx)
            .map(String::as_str)
            .unwrap_or("?")
    }
    /// Strategy name (as configured).
    pub fn strategy_name(&self) -> &str {
        &self.strategy_name
    }
    /// Free cash.
    pub fn cash(&self) -> f64 {
        self.cash
    }
    /// Starting balance.
    pub fn starting_balance(&self) -> f64 {
        self.starting_balance
    }
    /// Realised profit over closed trades.
    pub fn realized_pnl(&self) -> f64 {
        self.realized_pnl
    }
    /// Open positions on configured pairs.
    pub fn positions(&self) -> impl Iterator<Item = &Position> {
        self.positions.iter().flatten()
    }
    /// Open positions on pairs that are no longer configured.
    pub fn orphans(&self) -> &[Position] {
        &self.orphans
    }
    /// Number of open positions, orphans included.
    pub fn open_count(&self) -> usize {
        self.managed_open + self.orphans.len()
    }
    /// Number of open positions on pairs that are no longer configured.
    pub fn orphan_count(&self) -> usize {
        self.orphans.len()
    }
    /// Last price seen for a pair (NaN before the first tick).
    pub fn last_price(&self, pair_idx: usize) -> f64 {
        self.last_price.get(pair_idx).copied().unwrap_or(f64::NAN)
    }
    /// Paused flag.
    pub fn paused(&self) -> bool {
        self.paused
    }
    /// Halt reason, if halted.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }
    /// Risk state.
    pub fn risk(&self) -> &RiskManager {
        &self.risk
    }
    /// Highest trade id handed out so far.
    pub fn last_trade_id(&self) -> i64 {
        self.next_trade_id - 1
    }

    /// Cash plus open positions marked at the last price (orphans at their entry price).
    #[inline]
    pub fn equity(&self) -> f64 {
        let mut eq = self.cash;
        for p in self.positions.iter().flatten() {
            let px = self.last_price[p.pair_idx];
            eq += p.amount * if px.is_nan() { p.open_rate } else { px };
        }
        for p in &self.orphans {
            eq += p.amount * p.open_rate;
        }
        eq
    }

    /// Set or clear the pause flag.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Halt new entries (idempotent); returns the event if the state changed.
    pub fn halt(&mut self, reason: &str) -> Option<EngineEvent> {
        if self.halted.is_some() {
            return None;
        }
        self.halted = Some(reason.to_string());
        Some(EngineEvent::Halted {
            reason: reason.to_string(),
        })
    }

    /// Clear halt and pause; the drawdown and daily references restart from now.
    pub fn resume(&mut self, now_ms: i64) {
        self.halted = None;
        self.paused = false;
        let eq = self.equity();
        self.risk.reset_references(eq, now_ms);
    }

    /// Replace the risk limits.
    pub fn set_risk(&mut self, limits: RiskConfig) {
        self.risk.limits = limits;
    }

    /// Replace the strategy (indicators restart their warm-up).
    pub fn set_strategy(&mut self, name: &str, kind: StrategyKind, params: StrategyParams) {
        self.strategy_name = name.to_string();
        self.strategies = vec![PairStrategy::new(kind, params); self.n_pairs];
    }

    /// Check drawdown / daily loss; halts and emits an event on a new breach.
    pub fn check_risk(&mut self, now_ms: i64, out: &mut Vec<EngineEvent>) {
        let eq = self.equity();
        if let Some(reason) = self.risk.check_breach(eq, now_ms)
            && let Some(ev) = self.halt(&reason)
        {
            out.push(ev);
        }
    }

    /// Process one market tick.
    #[inline]
    pub fn on_tick(
        &mut self,
        pair_idx: usize,
        price: f64,
        ts_ms: i64,
        out: &mut Vec<EngineEvent>,
    ) -> Decision {
        if pair_idx >= self.n_pairs || !(price.is_finite() && price > 0.0) {
            return Decision::Hold;
        }
        self.last_price[pair_idx] = price;
        let signal = self.strategies[pair_idx].on_price(price);
        if let Some(pos) = self.positions[pair_idx].as_mut() {
            if price > pos.max_rate {
                pos.max_rate = price;
            }
            let stop = self.risk.stop_price(pos.open_rate, pos.max_rate);
            let reason = if price <= stop {
                Some(
                    if pos.max_rate > pos.open_rate
                        && self.risk.limits.stop_loss.kind == crate::config::StopLossKind::Trailing
                    {
                        ExitReason::TrailingStopLoss
                    } else {
                        ExitReason::StopLoss
                    },
                )
            } else if signal == Signal::Exit {
                Some(ExitReason::ExitSignal)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.close(pair_idx, price, ts_ms, reason, out);
                self.check_risk(ts_ms, out);
                return Decision::Exited;
            }
            return Decision::Hold;
        }
        if signal != Signal::Enter {
            return Decision::Hold;
        }
        if self.halted.is_some() {
            return Decision::BlockedHalted;
        }
        if self.paused {
            return Decision::BlockedPaused;
        }
        self.check_risk(ts_ms, out);
        if self.halted.is_some() {
            return Decision::BlockedHalted;
        }
        let equity = self.equity();
        let stake =
            match self
                .risk
                .entry_stake(self.managed_open, equity, self.cash, self.broker.fee_rate)
            {
                Ok(s) => s,
                Err(Denied::MaxPositions | Denied::StakeTooSmall) => return Decision::BlockedRisk,
            };
        let fill = self.broker.buy(price, stake);
        let position = Position {
            trade_id: self.next_trade_id,
            pair_idx,
            amount: fill.amount,
            stake: fill.notional,
            open_rate: fill.rate,
            open_ms: ts_ms,
            fee_open: fill.fee,
            max_rate: price,
        };
        self.next_trade_id += 1;
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        self.cash -= fill.notional + fill.fee;
        self.managed_open += 1;
        self.positions[pair_idx] = Some(position.clone());
        out.push(EngineEvent::Opened { position, order_id });
        Decision::Entered
    }

    fn close(
        &mut self,
        pair_idx: usize,
        price: f64,
        ts_ms: i64,
        reason: ExitReason,
        out: &mut Vec<EngineEvent>,
    ) {
        let Some(position) = self.positions[pair_idx].take() else {
            return;
        };
        self.managed_open -= 1;
        self.settle(position, price, ts_ms, reason, out);
    }

    /// Sell a position that is no longer held at `price` and report it.
    fn settle(
        &mut self,
        position: Position,
        price: f64,
        ts_ms: i64,
        reason: ExitReason,
        out: &mut Vec<EngineEvent>,
    ) {
        let fill = self.broker.sell(price, position.amount);
        let profit_abs = fill.notional - fill.fee - position.stake - position.fee_open;
        self.cash += fill.notional - fill.fee;
        self.realized_pnl += profit_abs;
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        let profit_ratio = if position.stake > 0.0 {
            profit_abs / position.stake
        } else {
            0.0
        };
        out.push(EngineEvent::Closed {
            trade: ClosedTrade {
                position,
                close_rate: fill.rate,
                close_ms: ts_ms,
                fee_close: fill.fee,
                profit_abs,
                profit_ratio,
                reason,
            },
            order_id,
        });
    }

    /// Emergency: halt, then close every position at the last known price, orphans
    /// included (at their entry price: no market data reaches their pairs).
    pub fn close_all(&mut self, reason: &str, ts_ms: i64, out: &mut Vec<EngineEvent>) {
        if let Some(ev) = self.halt(reason) {
            out.push(ev);
        }
        for i in 0..self.positions.len() {
            if let Some(p) = &self.positions[i] {
                let px = self.last_price[i];
                let px = if px.is_finite() && px > 0.0 {
                    px
                } else {
                    p.open_rate
                };
                self.close(i, px, ts_ms, ExitReason::EmergencyCloseAll, out);
            }
        }
        for p in std::mem::take(&mut self.orphans) {
            let px = p.open_rate;
            self.settle(p, px, ts_ms, ExitReason::EmergencyOrphan, out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_yaml(
            "pairs: [A/B, C/D]\nstrategy: {name: rsi, params: {rsiPeriod: 2, bbPeriod: 2, macdFast: 2, macdSlow: 3, macdSignal: 2}}\nbroker: {feePercent: 0, slippagePercent: 0}\nrisk: {maxPositions: 1, maxPositionSize: 100}",
        )
        .unwrap()
    }

    fn engine(c: &Config, restored: Restored) -> Engine {
        let (k, p) = c.strategy.resolve().unwrap();
        Engine::new(c, k, p, restored, 0)
    }

    /// Drive a pair down until the RSI strategy enters.
    fn enter(e: &mut Engine, pair: usize, out: &mut Vec<EngineEvent>) {
        for i in 0..20 {
            if e.on_tick(pair, 100.0 - i as f64 * 0.1, i, out) == Decision::Entered {
                return;
            }
        }
        panic!("no entry");
    }

    #[test]
    fn enters_and_respects_max_positions() {
        let c = cfg();
        let mut e = engine(&c, Restored::default());
        let mut out = vec![];
        enter(&mut e, 0, &mut out);
        assert_eq!(e.open_count(), 1);
        assert!(
            matches!(out[0], EngineEvent::Opened { ref position, .. } if position.trade_id == 1)
        );
        let mut blocked = false;
        for i in 0..20 {
            if e.on_tick(1, 100.0 - i as f64 * 0.1, i, &mut out) == Decision::BlockedRisk {
                blocked = true;
            }
        }
        assert!(blocked);
        assert_eq!(e.open_count(), 1);
        // cash + position value == starting balance with zero costs
        assert!((e.equity() - c.starting_balance).abs() < 1.0);
    }

    #[test]
    fn stop_loss_closes() {
        let c = cfg();
        let mut e = engine(&c, Restored::default());
        let mut out = vec![];
        enter(&mut e, 0, &mut out);
        out.clear();
        let open = e.positions().next().unwrap().open_rate;
        assert_eq!(e.on_tick(0, open * 0.97, 100, &mut out), Decision::Exited);
        let EngineEvent::Closed { trade, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(trade.reason, ExitReason::StopLoss);
        assert!(trade.profit_abs < 0.0);
        assert_eq!(e.open_count(), 0);
    }

    #[test]
    fn paused_and_halted_block_entries() {
        let c = cfg();
        let mut e = engine(&c, Restored::default());
        e.set_paused(true);
        let mut out = vec![];
        let ds: Vec<_> = (0..20)
            .map(|i| e.on_tick(0, 100.0 - i as f64 * 0.1, i, &mut out))
            .collect();
        assert!(ds.contains(&Decision::BlockedPaused));
        assert!(!ds.contains(&Decision::Entered));
        e.resume(0);
        assert!(e.halt("test").is_some());
        assert!(e.halt("again").is_none());
        let ds: Vec<_> = (0..20)
            .map(|i| e.on_tick(0, 90.0 - i as f64 * 0.1, i, &mut out))
            .collect();
        assert!(ds.contains(&Decision::BlockedHalted));
        assert_eq!(e.halted(), Some("test"));
    }

    #[test]
    fn close_all_flattens_and_halts() {
        let c = cfg();
        let mut e = engine(&c, Restored::default());
        let mut out = vec![];
        enter(&mut e, 0, &mut out);
        out.clear();
        e.close_all("emergency", 50, &mut out);
        assert_eq!(e.open_count(), 0);
        assert_eq!(e.halted(), Some("emergency"));
        assert!(matches!(out[0], EngineEvent::Halted { .. }));
        assert!(
            matches!(&out[1], EngineEvent::Closed { trade, .. } if trade.reason == ExitReason::EmergencyCloseAll)
        );
        out.clear();
        e.close_all("emergency", 60, &mut out);
        assert!(
            out.is_empty(),
            "second call is a no-op when flat and halted"
        );
    }

    #[test]
    fn restored_positions_and_ids_continue() {
        let c = cfg();
        let pos = Position {
            trade_id: 7,
            pair_idx: 1,
            amount: 1.0,
            stake: 100.0,
            open_rate: 100.0,
            open_ms: 0,
            fee_open: 0.0,
            max_rate: 100.0,
        };
        let e = engine(
            &c,
            Restored {
                positions: vec![pos],
                realized_pnl: 5.0,
                max_trade_id: 7,
                max_order_id: 9,
                ..Restored::default()
            },
        );
        assert_eq!(e.open_count(), 1);
        assert!((e.cash() - (10_000.0 + 5.0 - 100.0)).abs() < 1e-9);
        assert_eq!(e.last_trade_id(), 7);
    }

    #[test]
    fn orphans_count_hold_cash_and_are_closed_by_close_all() {
        let c = cfg(); // pairs A/B, C/D
        let pos = |id, open_rate| Position {
            trade_id: id,
            pair_idx: usize::MAX,
            amount: 2.0,
            stake: 2.0 * open_rate,
            open_rate,
            open_ms: 0,
            fee_open: 0.0,
            max_rate: open_rate,
        };
        let mut e = engine(
            &c,
            Restored {
                orphans: vec![
                    OrphanPosition {
                        pair: "X/Y".into(),
                        position: pos(3, 50.0),
                    },
                    OrphanPosition {
                        pair: "Z/Y".into(),
                        position: pos(4, 10.0),
                    },
                ],
                max_trade_id: 4,
                max_order_id: 4,
                ..Restored::default()
            },
        );
        assert_eq!((e.open_count(), e.orphan_count()), (2, 2));
        assert_eq!(e.positions().count(), 0, "orphans are not traded");
        assert_eq!(e.pairs().len(), 2);
        assert_eq!(e.pair_name(e.orphans()[0].pair_idx), "X/Y");
        assert!((e.cash() - (10_000.0 - 120.0)).abs() < 1e-9);
        assert!((e.equity() - 10_000.0).abs() < 1e-9);
        // orphans do not take a slot of maxPositions (1): a configured pair still enters
        let mut out = vec![];
        enter(&mut e, 0, &mut out);
        assert_eq!(e.open_count(), 3);
        out.clear();
        e.close_all("emergency", 100, &mut out);
        assert_eq!((e.open_count(), e.orphan_count()), (0, 0));
        let closed: Vec<(i64, &str, ExitReason, f64)> = out
            .iter()
            .filter_map(|ev| match ev {
                EngineEvent::Closed { trade, .. } => Some((
                    trade.position.trade_id,
                    e.pair_name(trade.position.pair_idx),
                    trade.reason,
                    trade.close_rate,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(closed.len(), 3, "{out:?}");
        assert_eq!(closed[0].2, ExitReason::EmergencyCloseAll);
        assert_eq!(
            &closed[1..],
            &[
                (3, "X/Y", ExitReason::EmergencyOrphan, 50.0),
                (4, "Z/Y", ExitReason::EmergencyOrphan, 10.0)
            ]
        );
        assert_eq!(ExitReason::EmergencyOrphan.as_str(), "emergency_orphan");
        // zero costs: closing the orphans at entry leaves the balance where it was
        assert!((e.realized_pnl() - (e.equity() - 10_000.0)).abs() < 1e-9);
        out.clear();
        e.close_all("emergency", 200, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn restored_day_start_keeps_the_daily_loss_limit_across_restarts() {
        let c = cfg();
        let restored = Restored {
            day_start: Some((0, 11_000.0)),
            ..Restored::default()
        };
        let mut e = engine(&c, restored);
        let mut out = vec![];
        e.check_risk(1000, &mut out);
        assert!(
            e.halted().unwrap().contains("daily loss"),
            "{:?}",
            e.halted()
        );
        // a day_start from an earlier day is ignored
        let restored = Restored {
            day_start: Some((-1, 11_000.0)),
            ..Restored::default()
        };
        let mut e = engine(&c, restored);
        e.check_risk(1000, &mut out);
        assert!(e.halted().is_none());
    }
}
