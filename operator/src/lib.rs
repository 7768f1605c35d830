//! The IQ-720 operator: reconciles `TradingBot` resources into StatefulSets of the
//! trading bot, talks to each bot over its authenticated HTTP API, and reports what it
//! sees in the resource status.
//!
//! Layout: [`shared`] (context, apply, conditions, metrics, health, leader election)
//! knows no controller; [`botlink`] reaches a running bot; each controller is a
//! folder whose reconcile is an explicit pipeline, one module per step (see
//! [`tradingbot::pipeline`]).

pub mod backupschedule;
pub mod botlink;
pub mod cli;
pub mod maintenancewindow;
pub mod manager;
pub mod shared;
pub mod tradingbot;

/// Field manager used for every server-side apply of the operator.
pub const FIELD_MANAGER: &str = "iq720-operator";
