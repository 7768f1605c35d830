//! API types of the IQ-720 trading-bot operator, group `trading.iq720.io`, version
//! `v1alpha1`: [`TradingBot`], [`BackupSchedule`] and [`MaintenanceWindow`].
//!
//! Every field carries a doc comment; it becomes the `kubectl explain` text of the
//! generated CustomResourceDefinition. Validation that CEL can express lives in the
//! schema (`x-kubernetes-validations`), so `kubectl apply` rejects bad specs.

pub mod backup_schedule;
pub mod common;
pub mod generate;
pub mod maintenance_window;
pub mod trading_bot;

pub use backup_schedule::{BackupSchedule, BackupScheduleSpec, BackupScheduleStatus};
pub use maintenance_window::{MaintenanceWindow, MaintenanceWindowSpec, MaintenanceWindowStatus};
pub use trading_bot::{TradingBot, TradingBotSpec, TradingBotStatus};

/// API group of every resource in this crate.
pub const GROUP: &str = "trading.iq720.io";
/// API version of every resource in this crate.
pub const VERSION: &str = "v1alpha1";
