//! Bounds of the risk limits.
//!
//! Why here: the operator once allowed `maxPositions` up to 1000 while the bot allowed
//! 100, so a spec of 500 was accepted and then refused by every hot reload. Each bound
//! is defined once; [`crate::config::RiskConfig::problems`] applies them for both sides.

/// Smallest `risk.maxPositions`.
pub const MAX_POSITIONS_MIN: u32 = 1;
/// Largest `risk.maxPositions`.
pub const MAX_POSITIONS_MAX: u32 = 100;

/// Whether `v` is a percentage in (0, 100], the range of `positionRiskPercent`,
/// `maxDrawdownPercent` and `dailyLossLimitPercent`.
pub fn is_percent(v: f64) -> bool {
    v.is_finite() && v > 0.0 && v <= 100.0
}

/// Whether `v` is a stop-loss distance in (0, 100): a stop at 100 % would never fire.
pub fn is_stop_loss_percent(v: f64) -> bool {
    v.is_finite() && v > 0.0 && v < 100.0
}

/// Whether `v` is a finite number above zero (`maxPositionSize`, `startingBalance`,
/// `startPrice`).
pub fn is_positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges() {
        assert!(is_percent(100.0) && is_percent(f64::MIN_POSITIVE));
        assert!(!is_percent(0.0) && !is_percent(100.000_001) && !is_percent(f64::NAN));
        assert!(is_stop_loss_percent(99.99) && !is_stop_loss_percent(100.0));
        assert!(!is_stop_loss_percent(0.0));
        assert!(is_positive(0.01) && !is_positive(0.0) && !is_positive(f64::INFINITY));
    }
}
