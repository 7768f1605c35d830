//! Market data: the source trait, the built-in simulator, CSV replay and failover.

pub mod csv_replay;
pub mod failover;
pub mod simulator;

use crate::config::SourceConfig;

/// Errors creating a source.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The CSV file could not be read.
    #[error("cannot read market data file {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// A CSV line is malformed.
    #[error("market data file {path} line {line}: {message}")]
    Format {
        /// File path.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Unknown source kind.
    #[error("unknown market data source kind `{0}`")]
    UnknownKind(String),
    /// `marketData.use` names a source that is not configured.
    #[error("marketData.use: {0}")]
    Pin(String),
}

/// A source of prices, polled once per engine tick for every pair.
pub trait MarketDataSource: Send {
    /// Next price for `pair_idx`, or `None` when the source has nothing (stalled, gap,
    /// end of data).
    fn poll(&mut self, pair_idx: usize) -> Option<f64>;
    /// Kind name (`simulator`, `csv`).
    fn kind(&self) -> &'static str;
}

/// Build a source from its config for the given pairs.
pub fn build_source(
    cfg: &SourceConfig,
    pairs: &[String],
) -> Result<Box<dyn MarketDataSource>, FeedError> {
    match cfg.kind.as_str() {
        "simulator" => Ok(Box::new(simulator::Simulator::new(cfg, pairs.len()))),
        "csv" => Ok(Box::new(csv_replay::CsvReplay::open(cfg, pairs)?)),
        other => Err(FeedError::UnknownKind(other.to_string())),
    }
}
