//! Infrastructure every controller uses: the reconcile context, server-side apply with
//! an ownership check, conditions, metrics, the health server, leader election, and
//! the maintenance-window gate the TradingBot controller asks before disruptive work.
//!
//! Why a separate layer: three controllers (TradingBot, BackupSchedule,
//! MaintenanceWindow) share these pieces, and none of them may depend on another
//! controller's internals. Nothing in here imports a controller module; adding a
//! controller means adding a folder beside this one.

pub mod apply;
pub mod cache;
pub mod cached_bot;
pub mod cached_pod;
pub mod compact;
pub mod conditions;
pub mod context;
pub mod gate;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod quantity;
pub mod recorder;
pub mod s3;
pub mod schedule;
pub mod status;
pub mod window;
pub mod window_nudges;
