//! Incremental (O(1) per update) technical indicators: EMA, RSI, MACD, Bollinger bands.

/// Exponential moving average seeded with the simple average of the first `period` values.
#[derive(Debug, Clone)]
pub struct Ema {
    period: usize,
    alpha: f64,
    count: usize,
    sum: f64,
    value: f64,
}

impl Ema {
    /// New EMA over `period` values (period ≥ 1).
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Ema {
            period,
            alpha: 2.0 / (period as f64 + 1.0),
            count: 0,
            sum: 0.0,
            value: 0.0,
        }
    }

    /// Feed a value; returns the EMA once warmed up.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.count < self.period {
            self.count += 1;
            self.sum += x;
            if self.count == self.period {
                self.value = self.sum / self.period as f64;
                return Some(self.value);
            }
            return None;
        }
        self.value += self.alpha * (x - self.value);
        Some(self.value)
    }
}

/// Wilder's relative strength index.
#[derive(Debug, Clone)]
pub struct Rsi {
    period: usize,
    prev: Option<f64>,
    count: usize,
    avg_gain: f64,
    avg_loss: f64,
}

impl Rsi {
    /// New RSI over `period` changes.
    pub fn new(period: usize) -> Self {
        Rsi {
            period: period.max(1),
            prev: None,
            count: 0,
            avg_gain: 0.0,
            avg_loss: 0.0,
        }
    }

    /// Feed a price; returns RSI in [0, 100] once `period` changes were seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let prev = self.prev.replace(x)?;
        let change = x - prev;
        let (gain, loss) = if change > 0.0 {
            (change, 0.0)
        } else {
            (0.0, -change)
        };
        let n = self.period as f64;
        if self.count < self.period {
            self.count += 1;
            self.avg_gain += gain / n;
            self.avg_loss += loss / n;
            if self.count < self.period {
                return None;
            }
        } else {
            self.avg_gain = (self.avg_gain * (n - 1.0) + gain) / n;
            self.avg_loss = (self.avg_loss * (n - 1.0) + loss) / n;
        }
        Some(if self.avg_loss == 0.0 {
            if self.avg_gain == 0.0 { 50.0 } else { 100.0 }
        } else {
            100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss)
        })
    }
}

/// MACD output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdValue {
    /// Fast EMA minus slow EMA.
    pub macd: f64,
    /// EMA of `macd`.
    pub signal: f64,
    /// `macd - signal`.
    pub histogram: f64,
}

/// Moving average convergence/divergence.
#[derive(Debug, Clone)]
pub struct Macd {
    fast: Ema,
    slow: Ema,
    signal: Ema,
}

impl Macd {
    /// New MACD(fast, slow, signal).
    pub fn new(fast: usize, slow: usize, signal: usize) -> Self {
        Macd {
            fast: Ema::new(fast),
            slow: Ema::new(slow),
            signal: Ema::new(signal),
        }
    }

    /// Feed a price.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<MacdValue> {
        let f = self.fast.update(x);
        let s = self.slow.update(x)?;
        let macd = f? - s;
        let signal = self.signal.update(macd)?;
        Some(MacdValue {
            macd,
            signal,
            histogram: macd - signal,
        })
    }
}

/// Bollinger bands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    /// Lower band.
    pub lower: f64,
    /// Simple moving average.
    pub middle: f64,
    /// Upper band.
    pub upper: f64,
}

/// Rolling-window Bollinger bands (population standard deviation).
#[derive(Debug, Clone)]
pub struct Bollinger {
    k: f64,
    buf: Vec<f64>,
    idx: usize,
    filled: bool,
    sum: f64,
    sumsq: f64,
    since_resum: usize,
}

impl Bollinger {
    /// New bands over `period` values, `k` standard deviations wide.
    pub fn new(period: usize, k: f64) -> Self {
        Bollinger {
            k,
            buf: vec![0.0; period.max(1)],
            idx: 0,
            filled: false,
            sum: 0.0,
            sumsq: 0.0,
            since_resum: 0,
        }
    }

    /// Feed a price; returns the bands once the window is full.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<Bands> {
        let n = self.buf.len();
        let old = std::mem::replace(&mut self.buf[self.idx], x);
        self.sum += x - old;
        self.sumsq += x * x - old * old;
        self.idx += 1;
        if self.idx == n {
            self.idx = 0;
            self.filled = true;
        }
        self.since_resum += 1;
        if self.since_resum >= 4096 {
            // Re-sum now and then so floating-point drift cannot accumulate.
            self.since_resum = 0;
            self.sum = self.buf.iter().sum();
            self.sumsq = self.buf.iter().map(|v| v * v).sum();
        }
        if !self.filled {
            return None;
        }
        let nf = n as f64;
        let mean = self.sum / nf;
        let var = (self.sumsq / nf - mean * mean).max(0.0);
        let sd = var.sqrt();
        Some(Bands {
            lower: mean - self.k * sd,
            middle: mean,
            upper: mean + self.k * sd,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn ema_seeds_with_sma_then_smooths() {
        let mut e = Ema::new(3);
        assert_eq!(e.update(1.0), None);
        assert_eq!(e.update(2.0), None);
        assert!(close(e.update(3.0).unwrap(), 2.0));
        // alpha = 0.5: 2 + 0.5 * (6 - 2) = 4
        assert!(close(e.update(6.0).unwrap(), 4.0));
    }

    #[test]
    fn rsi_matches_hand_computation() {
        let mut r = Rsi::new(2);
        assert_eq!(r.update(1.0), None);
        assert_eq!(r.update(2.0), None);
        // changes +1, -1: avg gain 0.5, avg loss 0.5 -> 50
        assert!(close(r.update(1.0).unwrap(), 50.0));
        // +1: gain (0.5+1)/2 = 0.75, loss 0.25 -> RS 3 -> 75
        assert!(close(r.update(2.0).unwrap(), 75.0));
    }

    #[test]
    fn rsi_extremes() {
        let mut up = Rsi::new(5);
        let mut down = Rsi::new(5);
        let mut last_up = None;
        let mut last_down = None;
        for i in 0..20 {
            last_up = up.update(i as f64);
            last_down = down.update(-(i as f64));
        }
        assert!(close(last_up.unwrap(), 100.0));
        assert!(close(last_down.unwrap(), 0.0));
    }

    #[test]
    fn macd_of_constant_is_zero_and_of_uptrend_positive() {
        let mut m = Macd::new(3, 6, 3);
        let mut v = None;
        for _ in 0..50 {
            v = m.update(10.0);
        }
        let v = v.unwrap();
        assert!(close(v.macd, 0.0) && close(v.histogram, 0.0));
        let mut m = Macd::new(3, 6, 3);
        let mut v = None;
        for i in 0..50 {
            v = m.update(i as f64);
        }
        assert!(v.unwrap().macd > 0.0);
    }

    #[test]
    fn bollinger_known_values() {
        let mut b = Bollinger::new(5, 2.0);
        for x in [1.0, 2.0, 3.0, 4.0] {
            assert_eq!(b.update(x), None);
        }
        let bands = b.update(5.0).unwrap();
        // mean 3, population variance 2
        assert!(close(bands.middle, 3.0));
        assert!(close(bands.upper, 3.0 + 2.0 * 2f64.sqrt()));
        // window slides: 2..6 -> mean 4
        let bands = b.update(6.0).unwrap();
        assert!(close(bands.middle, 4.0));
        assert!(close(bands.lower, 4.0 - 2.0 * 2f64.sqrt()));
    }

    #[test]
    fn bollinger_stays_accurate_over_long_runs() {
        let mut b = Bollinger::new(20, 2.0);
        let mut last = None;
        for i in 0..100_000u32 {
            last = b.update(1000.0 + (i % 7) as f64 * 0.1);
        }
        let window: Vec<f64> = (100_000u32 - 20..100_000)
            .map(|i| 1000.0 + (i % 7) as f64 * 0.1)
            .collect();
        let mean = window.iter().sum::<f64>() / 20.0;
        assert!((last.unwrap().middle - mean).abs() < 1e-6);
    }
}
