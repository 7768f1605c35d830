//! Paper broker: immediate market fills with fees and adverse slippage.

use crate::config::BrokerConfig;

/// A simulated fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fill {
    /// Execution price after slippage.
    pub rate: f64,
    /// Base-currency amount.
    pub amount: f64,
    /// Quote-currency notional (`rate × amount`).
    pub notional: f64,
    /// Fee paid in the quote currency.
    pub fee: f64,
}

/// Simulated broker.
#[derive(Debug, Clone, Copy)]
pub struct PaperBroker {
    /// Fee as a fraction of notional.
    pub fee_rate: f64,
    /// Slippage as a fraction of price (always against us).
    pub slippage_rate: f64,
}

impl PaperBroker {
    /// From config percentages.
    pub fn new(cfg: &BrokerConfig) -> Self {
        PaperBroker {
            fee_rate: cfg.fee_percent / 100.0,
            slippage_rate: cfg.slippage_percent / 100.0,
        }
    }

    /// Buy for `stake` quote currency at market `price`.
    #[inline]
    pub fn buy(&self, price: f64, stake: f64) -> Fill {
        let rate = price * (1.0 + self.slippage_rate);
        Fill {
            rate,
            amount: stake / rate,
            notional: stake,
            fee: stake * self.fee_rate,
        }
    }

    /// Sell `amount` base currency at market `price`.
    #[inline]
    pub fn sell(&self, price: f64, amount: f64) -> Fill {
        let rate = price * (1.0 - self.slippage_rate);
        let notional = rate * amount;
        Fill {
            rate,
            amount,
            notional,
            fee: notional * self.fee_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_same_price_loses_fees_and_slippage() {
        let b = PaperBroker::new(&BrokerConfig {
            fee_percent: 0.1,
            slippage_percent: 0.05,
        });
        let buy = b.buy(100.0, 1000.0);
        assert!((buy.rate - 100.05).abs() < 1e-9);
        assert!((buy.fee - 1.0).abs() < 1e-9);
        let sell = b.sell(100.0, buy.amount);
        assert!((sell.rate - 99.95).abs() < 1e-9);
        let profit = sell.notional - sell.fee - buy.notional - buy.fee;
        // lose ~0.1% slippage + 0.2% fees
        assert!(profit < -2.9 && profit > -3.1, "{profit}");
    }

    #[test]
    fn zero_costs_are_neutral() {
        let b = PaperBroker::new(&BrokerConfig {
            fee_percent: 0.0,
            slippage_percent: 0.0,
        });
        let buy = b.buy(50.0, 100.0);
        let sell = b.sell(50.0, buy.amount);
        assert!((sell.notional - 100.0).abs() < 1e-9);
        assert_eq!(sell.fee, 0.0);
    }
}
