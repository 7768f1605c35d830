//! The contract between the IQ-720 operator and the IQ-720 bot.
//!
//! Why a crate of its own: the operator validates a `TradingBot` spec, renders it into
//! the bot's configuration and later talks to the running bot over its API. When the
//! two sides keep separate copies of the rules, they drift: the operator accepted
//! `maxPositions: 1000` while the bot refused anything above 100, rounded log retention
//! down while the bot rounded up, and never checked strategy parameter ranges. Every
//! such value made `PATCH /api/v1/config` fail on each poll and the next restart
//! crash-loop. Here each rule exists once, and both crates use it, so a value passes
//! the operator's validation exactly when the bot accepts it.
//!
//! - [`duration`]: the duration grammar (`30s`, `15m`, `1h30m`, `7d`, `250ms`) and the
//!   whole-day rule of log retention;
//! - [`strategy`]: strategy names, parameter names, their ranges and cross rules;
//! - [`risk`]: the bounds of the risk limits;
//! - [`config`]: the bot configuration document (what the operator renders into the
//!   ConfigMap and the bot parses) and its validation;
//! - [`api`]: the request and response bodies of the bot API the operator uses;
//! - [`report`]: the performance report: periods, the request annotation, the document
//!   and its text.

pub mod api;
pub mod config;
pub mod duration;
pub mod maintenance;
pub mod problem;
pub mod report;
pub mod risk;
pub mod strategy;

pub use api::CLOSE_ALL_HALT_REASON;
pub use config::{Config, ConfigError, Problem};
pub use duration::{DurationError, HumanDuration};
