//! Deterministic random-walk simulator with volatility regimes.

use crate::config::SourceConfig;

/// SplitMix64: tiny, fast, good enough for simulation, and deterministic.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Approximately standard normal (Irwin–Hall with four uniforms, rescaled).
    #[inline]
    pub fn next_normal(&mut self) -> f64 {
        let s = self.next_f64() + self.next_f64() + self.next_f64() + self.next_f64();
        (s - 2.0) * 1.732_050_807_568_877_2
    }
}

#[derive(Debug, Clone)]
struct PairState {
    rng: SplitMix64,
    log_price: f64,
    volatile: bool,
}

/// Per-pair random walk: calm and volatile regimes (3× sigma) switching at random, with a
/// weak pull back towards the start price so long runs stay in a sane range.
#[derive(Debug, Clone)]
pub struct Simulator {
    pairs: Vec<PairState>,
    sigma: f64,
    log_start: f64,
}

/// Chance per tick of switching regime.
const REGIME_SWITCH: f64 = 0.002;
/// Mean reversion strength per tick.
const REVERSION: f64 = 0.0005;

impl Simulator {
    /// New simulator for `n_pairs` pairs.
    pub fn new(cfg: &SourceConfig, n_pairs: usize) -> Self {
        let log_start = cfg.start_price.ln();
        let pairs = (0..n_pairs as u64)
            .map(|i| PairState {
                rng: SplitMix64::new(
                    cfg.seed ^ (i.wrapping_add(1)).wrapping_mul(0xD1B5_4A32_D192_ED03),
                ),
                log_price: log_start,
                volatile: false,
            })
            .collect();
        Simulator {
            pairs,
            sigma: cfg.volatility,
            log_start,
        }
    }

    /// Next price for a pair (always produces one).
    #[inline]
    pub fn next_price(&mut self, pair_idx: usize) -> Option<f64> {
        let sigma = self.sigma;
        let log_start = self.log_start;
        let st = self.pairs.get_mut(pair_idx)?;
        if st.rng.next_f64() < REGIME_SWITCH {
            st.volatile = !st.volatile;
        }
        let s = if st.volatile { sigma * 3.0 } else { sigma };
        st.log_price += s * st.rng.next_normal() - REVERSION * (st.log_price - log_start);
        Some(st.log_price.exp())
    }
}

impl super::MarketDataSource for Simulator {
    #[inline]
    fn poll(&mut self, pair_idx: usize) -> Option<f64> {
        self.next_price(pair_idx)
    }
    fn kind(&self) -> &'static str {
        "simulator"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_prices_different_seed_different() {
        let a: Vec<f64> = {
            let mut s = Simulator::new(&SourceConfig::simulator(42), 2);
            (0..100).map(|i| s.next_price(i % 2).unwrap()).collect()
        };
        let b: Vec<f64> = {
            let mut s = Simulator::new(&SourceConfig::simulator(42), 2);
            (0..100).map(|i| s.next_price(i % 2).unwrap()).collect()
        };
        let c: Vec<f64> = {
            let mut s = Simulator::new(&SourceConfig::simulator(43), 2);
            (0..100).map(|i| s.next_price(i % 2).unwrap()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|p| p.is_finite() && *p > 0.0));
    }

    #[test]
    fn stays_in_a_sane_range() {
        let mut s = Simulator::new(&SourceConfig::simulator(7), 1);
        for _ in 0..1_000_000 {
            let p = s.next_price(0).unwrap();
            assert!(p > 10.0 && p < 1000.0, "{p}");
        }
        assert!(s.next_price(5).is_none());
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = SplitMix64::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.next_normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
    }
}
