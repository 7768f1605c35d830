//! Test and chaos switches of the process: the version the bot reports and an
//! injected fault.
//!
//! Why: rollouts are tested on the local cluster with real bot processes, where one
//! binary stands in for every image tag. `--report-version` (env
//! `IQ720_REPORT_VERSION`) makes it report another release on `/api/v1/status`, in
//! `iq720_bot_build_info` and in its start log, so that a "good 0.2.0" can be told
//! from the running 0.1.0; `--fault unhealthy` (env `IQ720_FAULT`) makes `/readyz`
//! answer 503 for good, so the pod never becomes Ready: a broken release that fails
//! the operator's health gate; `--schema-ahead` (env `IQ720_SCHEMA_AHEAD`) makes the
//! bot migrate its database one schema version further than this release (a release
//! that migrates forward, which the previous one cannot open: the case a rollback
//! must restore the pre-update backup for). None is meant for production; all are off
//! unless set, and the trading engine itself is never changed by them.

use std::sync::OnceLock;

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// `/readyz` always answers 503 (the pod never becomes Ready).
    Unhealthy,
}

static VERSION: OnceLock<String> = OnceLock::new();
static FAULT: OnceLock<Fault> = OnceLock::new();
static SCHEMA_AHEAD: OnceLock<bool> = OnceLock::new();

/// Sets `--schema-ahead` once, at start (later calls are ignored).
pub fn set_schema_ahead(ahead: bool) {
    let _ = SCHEMA_AHEAD.set(ahead);
}

/// Whether this process migrates one schema version ahead of its release.
pub fn schema_ahead() -> bool {
    SCHEMA_AHEAD.get().copied().unwrap_or(false)
}

/// Sets the switches once, at start (later calls are ignored).
pub fn set(version: Option<String>, fault: Option<Fault>) {
    if let Some(v) = version {
        let _ = VERSION.set(v);
    }
    if let Some(f) = fault {
        let _ = FAULT.set(f);
    }
}

/// The version the bot reports: `--report-version`, else the crate's version.
pub fn version() -> &'static str {
    VERSION
        .get()
        .map_or(env!("CARGO_PKG_VERSION"), String::as_str)
}

/// The injected fault, if any.
pub fn fault() -> Option<Fault> {
    FAULT.get().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_the_crate_version_and_no_fault() {
        // The switches are process-global; unit tests never set them.
        assert_eq!(version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(fault(), None);
    }
}
