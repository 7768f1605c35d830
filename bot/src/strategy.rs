//! Entry/exit signals from the RSI / MACD / Bollinger family.

use crate::config::{StrategyKind, StrategyParams};
use crate::indicators::{Bollinger, Macd, Rsi};

/// What the strategy wants for one pair after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Open a long position if flat.
    Enter,
    /// Close the position if one is open.
    Exit,
    /// Nothing to do (also while indicators warm up).
    Hold,
}

/// Per-pair strategy state.
#[derive(Debug, Clone)]
pub struct PairStrategy {
    kind: StrategyKind,
    params: StrategyParams,
    rsi: Rsi,
    macd: Macd,
    bb: Bollinger,
    prev_hist: Option<f64>,
}

impl PairStrategy {
    /// Fresh state (indicators must warm up again).
    pub fn new(kind: StrategyKind, params: StrategyParams) -> Self {
        PairStrategy {
            kind,
            params,
            rsi: Rsi::new(params.rsi_period),
            macd: Macd::new(params.macd_fast, params.macd_slow, params.macd_signal),
            bb: Bollinger::new(params.bb_period, params.bb_std_dev),
            prev_hist: None,
        }
    }

    /// Feed a price and get a signal.
    #[inline]
    pub fn on_price(&mut self, price: f64) -> Signal {
        let p = &self.params;
        let rsi = self.rsi.update(price);
        let macd = self.macd.update(price);
        let bands = self.bb.update(price);
        let hist = macd.map(|m| m.histogram);
        let prev_hist = std::mem::replace(&mut self.prev_hist, hist);
        let (Some(rsi), Some(hist), Some(bands)) = (rsi, hist, bands) else {
            return Signal::Hold;
        };
        let prev_hist = prev_hist.unwrap_or(hist);
        let rsi_buy = rsi < p.rsi_buy;
        let rsi_sell = rsi > p.rsi_sell;
        let macd_up = prev_hist <= 0.0 && hist > 0.0;
        let macd_down = prev_hist >= 0.0 && hist < 0.0;
        let bb_buy = price < bands.lower;
        let bb_sell = price > bands.middle;
        let (enter, exit) = match self.kind {
            StrategyKind::Rsi => (rsi_buy, rsi_sell),
            StrategyKind::Macd => (macd_up, macd_down),
            StrategyKind::Bollinger => (bb_buy, bb_sell),
            StrategyKind::RsiMacdBollinger => {
                let rising = hist > prev_hist;
                let votes = rsi_buy as usize + bb_buy as usize + rising as usize;
                (
                    votes >= p.min_confirmations,
                    rsi_sell || price > bands.upper || macd_down,
                )
            }
        };
        if enter {
            Signal::Enter
        } else if exit {
            Signal::Exit
        } else {
            Signal::Hold
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> StrategyParams {
        StrategyParams {
            rsi_period: 3,
            bb_period: 5,
            macd_fast: 2,
            macd_slow: 4,
            macd_signal: 2,
            ..StrategyParams::default()
        }
    }

    #[test]
    fn holds_while_warming_up() {
        let mut s = PairStrategy::new(StrategyKind::Rsi, params());
        assert_eq!(s.on_price(10.0), Signal::Hold);
        assert_eq!(s.on_price(11.0), Signal::Hold);
    }

    #[test]
    fn rsi_enters_on_selloff_and_exits_on_rally() {
        let mut s = PairStrategy::new(StrategyKind::Rsi, params());
        let mut seen_enter = false;
        for i in 0..20 {
            if s.on_price(100.0 - i as f64) == Signal::Enter {
                seen_enter = true;
            }
        }
        assert!(seen_enter);
        let mut seen_exit = false;
        for i in 0..20 {
            if s.on_price(80.0 + 2.0 * i as f64) == Signal::Exit {
                seen_exit = true;
            }
        }
        assert!(seen_exit);
    }

    #[test]
    fn bollinger_enters_below_lower_band() {
        let mut s = PairStrategy::new(
            StrategyKind::Bollinger,
            StrategyParams {
                bb_period: 20,
                ..params()
            },
        );
        for _ in 0..10 {
            s.on_price(100.0 + 0.1);
            s.on_price(100.0 - 0.1);
        }
        assert_eq!(s.on_price(90.0), Signal::Enter);
    }
}
