//! Replays prices from a CSV file: `timestamp,pair,price` (header optional).

use super::FeedError;
use crate::config::SourceConfig;

/// CSV replay source: each poll returns the next row of that pair.
#[derive(Debug, Clone)]
pub struct CsvReplay {
    series: Vec<Vec<f64>>,
    cursor: Vec<usize>,
    loop_replay: bool,
}

impl CsvReplay {
    /// Load the file named by `cfg.path`.
    pub fn open(cfg: &SourceConfig, pairs: &[String]) -> Result<Self, FeedError> {
        let path = cfg.path.clone().unwrap_or_default();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| FeedError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown, pairs, cfg.loop_replay)
    }

    /// Parse CSV text.
    pub fn parse(
        text: &str,
        path: &str,
        pairs: &[String],
        loop_replay: bool,
    ) -> Result<Self, FeedError> {
        let mut series = vec![Vec::new(); pairs.len()];
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            let err = |message: String| FeedError::Format {
                path: path.to_string(),
                line: i + 1,
                message,
            };
            if cols.len() < 3 {
                return Err(err("expected timestamp,pair,price".into()));
            }
            let price: f64 = match cols[2].parse() {
                Ok(p) => p,
                Err(_) if i == 0 => continue, // header
                Err(_) => return Err(err(format!("price `{}` is not a number", cols[2]))),
            };
            if !(price.is_finite() && price > 0.0) {
                return Err(err(format!("price `{}` must be positive", cols[2])));
            }
            if let Some(idx) = pairs.iter().position(|p| p == cols[1]) {
                series[idx].push(price);
            }
        }
        Ok(CsvReplay {
            cursor: vec![0; series.len()],
            series,
            loop_replay,
        })
    }
}

impl super::MarketDataSource for CsvReplay {
    fn poll(&mut self, pair_idx: usize) -> Option<f64> {
        let s = self.series.get(pair_idx)?;
        if s.is_empty() {
            return None;
        }
        let c = self.cursor.get_mut(pair_idx)?;
        if *c >= s.len() {
            if !self.loop_replay {
                return None;
            }
            *c = 0;
        }
        let p = s[*c];
        *c += 1;
        Some(p)
    }
    fn kind(&self) -> &'static str {
        "csv"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::MarketDataSource;
    use super::*;

    #[test]
    fn replays_per_pair_and_loops() {
        let pairs = vec!["A/B".to_string(), "C/D".to_string()];
        let text = "timestamp,pair,price\n1,A/B,10\n1,C/D,20\n2,A/B,11\n3,X/Y,5\n";
        let mut r = CsvReplay::parse(text, "t.csv", &pairs, true).unwrap();
        assert_eq!(r.poll(0), Some(10.0));
        assert_eq!(r.poll(0), Some(11.0));
        assert_eq!(r.poll(0), Some(10.0));
        assert_eq!(r.poll(1), Some(20.0));
        let mut r = CsvReplay::parse(text, "t.csv", &pairs, false).unwrap();
        r.poll(1);
        assert_eq!(r.poll(1), None);
    }

    #[test]
    fn bad_rows_are_reported_with_line() {
        let pairs = vec!["A/B".to_string()];
        let e = CsvReplay::parse("1,A/B,10\n2,A/B,abc\n", "t.csv", &pairs, true).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
