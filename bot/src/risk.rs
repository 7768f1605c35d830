//! Risk manager: position limits, sizing, stop-loss, daily loss limit and max drawdown.

use crate::config::{RiskConfig, StopLossKind};

/// Stakes below this (in the stake currency) are not worth a trade.
pub const MIN_STAKE: f64 = 1.0;

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Denied {
    /// `maxPositions` open already.
    MaxPositions,
    /// Computed stake below [`MIN_STAKE`] (no cash or tiny equity).
    StakeTooSmall,
}

/// Risk state: limits plus the peak and start-of-day equity the breach rules need.
#[derive(Debug, Clone)]
pub struct RiskManager {
    /// Current limits (hot-reloadable).
    pub limits: RiskConfig,
    /// Highest equity seen (drawdown reference).
    pub peak_equity: f64,
    /// Equity at the start of the current UTC day.
    pub day_start_equity: f64,
    /// Current UTC day number (days since the epoch).
    pub day: i64,
}

/// Day number (since the Unix epoch, UTC) of a millisecond timestamp.
pub fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(86_400_000)
}

impl RiskManager {
    /// Start with the given equity as peak and day start.
    pub fn new(limits: RiskConfig, equity: f64, ts_ms: i64) -> Self {
        RiskManager {
            limits,
            peak_equity: equity,
            day_start_equity: equity,
            day: day_of(ts_ms),
        }
    }

    /// Stake for a new position, or why there must be none.
    ///
    /// The stake risks `positionRiskPercent` of equity at the stop distance, capped by
    /// `maxPositionSize` and by the free cash (keeping room for the fee).
    pub fn entry_stake(
        &self,
        open_positions: usize,
        equity: f64,
        cash: f64,
        fee_rate: f64,
    ) -> Result<f64, Denied> {
        if open_positions >= self.limits.max_positions as usize {
            return Err(Denied::MaxPositions);
        }
        let by_risk = equity * self.limits.position_risk_percent / self.limits.stop_loss.percent;
        let stake = by_risk
            .min(self.limits.max_position_size)
            .min(cash / (1.0 + fee_rate));
        if stake.is_nan() || stake < MIN_STAKE {
            return Err(Denied::StakeTooSmall);
        }
        Ok(stake)
    }

    /// Stop price for a position given its entry and the highest price since entry.
    #[inline]
    pub fn stop_price(&self, open_rate: f64, max_rate: f64) -> f64 {
        let base = match self.limits.stop_loss.kind {
            StopLossKind::Fixed => open_rate,
            StopLossKind::Trailing => max_rate.max(open_rate),
        };
        base * (1.0 - self.limits.stop_loss.percent / 100.0)
    }

    /// Update peak / day-start bookkeeping and report a breach (the halt reason), if any.
    #[inline]
    pub fn check_breach(&mut self, equity: f64, ts_ms: i64) -> Option<String> {
        let day = day_of(ts_ms);
        if day != self.day {
            self.day = day;
            self.day_start_equity = equity;
        }
        if equity > self.peak_equity {
            self.peak_equity = equity;
        }
        let dd = if self.peak_equity > 0.0 {
            (self.peak_equity - equity) / self.peak_equity * 100.0
        } else {
            0.0
        };
        if dd >= self.limits.max_drawdown_percent {
            return Some(format!(
                "max drawdown breached: equity {equity:.2} is {dd:.2}% below peak {:.2} (limit {}%)",
                self.peak_equity, self.limits.max_drawdown_percent
            ));
        }
        let daily = if self.day_start_equity > 0.0 {
            (self.day_start_equity - equity) / self.day_start_equity * 100.0
        } else {
            0.0
        };
        if daily >= self.limits.daily_loss_limit_percent {
            return Some(format!(
                "daily loss limit breached: equity {equity:.2} is {daily:.2}% below today's start {:.2} (limit {}%)",
                self.day_start_equity, self.limits.daily_loss_limit_percent
            ));
        }
        None
    }

    /// Forget the old references (used on resume after an acknowledged breach).
    pub fn reset_references(&mut self, equity: f64, ts_ms: i64) {
        self.peak_equity = equity;
        self.day_start_equity = equity;
        self.day = day_of(ts_ms);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::StopLossConfig;

    fn rm(kind: StopLossKind) -> RiskManager {
        let limits = RiskConfig {
            max_positions: 2,
            max_position_size: 500.0,
            position_risk_percent: 1.0,
            max_drawdown_percent: 10.0,
            daily_loss_limit_percent: 5.0,
            stop_loss: StopLossConfig { kind, percent: 2.0 },
        };
        RiskManager::new(limits, 10_000.0, 0)
    }

    #[test]
    fn sizing_uses_risk_then_caps() {
        let mut r = rm(StopLossKind::Fixed);
        // 1% of 10k = 100 risked at 2% stop -> 5000, capped at 500
        assert_eq!(r.entry_stake(0, 10_000.0, 10_000.0, 0.0), Ok(500.0));
        r.limits.max_position_size = 1e9;
        assert_eq!(r.entry_stake(0, 10_000.0, 10_000.0, 0.0), Ok(5000.0));
        // cash caps too
        assert_eq!(r.entry_stake(0, 10_000.0, 300.0, 0.0), Ok(300.0));
        assert_eq!(
            r.entry_stake(0, 10_000.0, 0.5, 0.0),
            Err(Denied::StakeTooSmall)
        );
    }

    #[test]
    fn max_positions_enforced() {
        let r = rm(StopLossKind::Fixed);
        assert!(r.entry_stake(1, 10_000.0, 10_000.0, 0.001).is_ok());
        assert_eq!(
            r.entry_stake(2, 10_000.0, 10_000.0, 0.001),
            Err(Denied::MaxPositions)
        );
    }

    #[test]
    fn fixed_and_trailing_stops() {
        let f = rm(StopLossKind::Fixed);
        assert!((f.stop_price(100.0, 120.0) - 98.0).abs() < 1e-9);
        let t = rm(StopLossKind::Trailing);
        assert!((t.stop_price(100.0, 120.0) - 117.6).abs() < 1e-9);
        assert!((t.stop_price(100.0, 90.0) - 98.0).abs() < 1e-9);
    }

    #[test]
    fn drawdown_breach_names_the_rule() {
        let mut r = rm(StopLossKind::Fixed);
        r.limits.daily_loss_limit_percent = 50.0;
        assert_eq!(r.check_breach(12_000.0, 1000), None);
        assert_eq!(r.check_breach(11_000.0, 2000), None);
        let why = r.check_breach(10_700.0, 3000).unwrap();
        assert!(why.contains("max drawdown"), "{why}");
    }

    #[test]
    fn daily_loss_resets_next_day() {
        let mut r = rm(StopLossKind::Fixed);
        let why = r.check_breach(9_400.0, 1000).unwrap();
        assert!(why.contains("daily loss"), "{why}");
        // next UTC day: the day starts at the current equity again
        r.limits.max_drawdown_percent = 90.0;
        assert_eq!(r.check_breach(9_400.0, 86_400_000 + 5), None);
        assert!(r.check_breach(8_900.0, 86_400_000 + 6).is_some());
    }
}
