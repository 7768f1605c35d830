//! The IQ-720 trading bot: a paper-trading engine (simulated or replayed market data with
//! failover, RSI/MACD/Bollinger strategies, risk manager, paper broker), SQLite history,
//! backups, and an HTTP control API for the IQ-720 operator.

pub mod api;
pub mod backup;
pub mod broker;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod digest;
pub mod engine;
pub mod feed;
pub mod indicators;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod report;
pub mod restore_s3;
pub mod risk;
pub mod runner;
pub mod s3_client;
pub mod server;
pub mod store;
pub mod strategy;
