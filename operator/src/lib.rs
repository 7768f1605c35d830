//! The IQ-720 operator: reconciles `TradingBot` resources into StatefulSets of the
//! trading bot, talks to each bot over its authenticated HTTP API, and reports what it
//! sees in the resource status.
//!
//! Reconcile is an explicit pipeline (see [`tradingbot`]): validate → build (pure,
//! one module per owned object under [`tradingbot::build`]) → apply with server-side
//! apply → talk to the bot → write status only when it changed.

pub mod cli;
pub mod context;
pub mod duration;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod server;
pub mod tradingbot;

/// Field manager used for every server-side apply of the operator.
pub const FIELD_MANAGER: &str = "iq720-operator";
