//! The gate: may a disruptive operation run on a bot now, and if not, when?
//!
//! Shared because the TradingBot controller asks it (before it rolls the pod, rotates
//! keys or pauses for a window) and the MaintenanceWindow controller reports with it,
//! and neither controller may import the other. Pure except [`windows_in`], which reads the namespace's MaintenanceWindows from
//! the MaintenanceWindow controller's reflector store (or lists them before that store
//! has its first full list — an empty store must never read as "no windows", or a change
//! would roll ungated).
//!
//! Rules:
//! - a bot that no window selects: every operation runs at once;
//! - a bot selected by one or more windows: an operation runs only while at least one of
//!   those windows is open **and** that open window's `allow` flag for the operation is
//!   set. Conflicting flags therefore combine with OR over the *open* windows: one open
//!   window that allows upgrades is enough, a closed window that allows them does not
//!   help, and an open window that forbids them does not block another open window
//!   that allows them. Open times are the union of the windows' open periods;
//! - a window whose spec is invalid (bad cron or zone) still selects its bots but never
//!   opens: a typo must not silently let upgrades through at any time (the window's
//!   InvalidSpec condition and the bot's MaintenancePending message name it);
//! - `pauseTrading`: the bot is paused while any open window selecting it says so.

use std::collections::BTreeMap;
use std::sync::Arc;

use iq720_crds::maintenance_window::AllowSpec;
use iq720_crds::{MaintenanceWindow, MaintenanceWindowSpec};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::window::WindowSchedule;
use crate::shared::context::Context;
use crate::shared::schedule::Schedule;

pub use super::conditions::MAINTENANCE_PENDING;

/// A disruptive operation that windows gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A change that restarts the bot pod (version, image, resources, restart-only
    /// configuration): `allow.upgrades`.
    Upgrade,
    /// API token rotation: `allow.keyRotation`.
    KeyRotation,
    /// Database vacuum and pruning: `allow.databaseMaintenance`.
    DatabaseMaintenance,
    /// Log compression and deletion: `allow.logCleanup`.
    LogCleanup,
}

impl Operation {
    /// Name used in conditions, status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Upgrade => "upgrade",
            Operation::KeyRotation => "keyRotation",
            Operation::DatabaseMaintenance => "databaseMaintenance",
            Operation::LogCleanup => "logCleanup",
        }
    }

    /// Whether a window's `allow` permits this operation.
    pub fn allowed_by(self, allow: &AllowSpec) -> bool {
        match self {
            Operation::Upgrade => allow.upgrades,
            Operation::KeyRotation => allow.key_rotation,
            Operation::DatabaseMaintenance => allow.database_maintenance,
            Operation::LogCleanup => allow.log_cleanup,
        }
    }
}

/// Whether a window's selector selects a bot with these labels (an empty selector
/// selects every bot of the namespace; a selector that cannot be parsed selects every
/// bot too, so that an invalid window gates rather than lets through).
pub fn selects(spec: &MaintenanceWindowSpec, labels: &BTreeMap<String, String>) -> bool {
    match Selector::try_from(spec.bot_selector.clone()) {
        Ok(sel) => sel.matches(labels),
        Err(_) => true,
    }
}

/// One window selecting the bot; `schedule` is `None` when its spec is invalid.
#[derive(Debug, Clone)]
struct Selecting {
    name: String,
    spec: MaintenanceWindowSpec,
    schedule: Option<WindowSchedule>,
}

/// Parses a window's schedule for gating (no period check; see [`super::validate`]).
pub fn schedule_of(spec: &MaintenanceWindowSpec) -> Option<WindowSchedule> {
    let schedule = Schedule::parse(&spec.schedule, &spec.time_zone).ok()?;
    let duration = iq720_contract::duration::parse(&spec.duration).ok()?;
    (!duration.is_zero()).then(|| WindowSchedule::new(schedule, duration))
}

/// What the gate says about one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No window selects the bot: run at once.
    Ungated,
    /// An open window selecting the bot allows it.
    Open {
        /// The window.
        window: String,
        /// When that window closes.
        until: Timestamp,
    },
    /// Wait for a window.
    Wait {
        /// The windows selecting the bot.
        windows: Vec<String>,
        /// When the next window allowing the operation opens (None: never — no
        /// selecting window allows it or every one is invalid).
        next: Option<Timestamp>,
        /// Selecting windows whose spec is invalid.
        invalid: Vec<String>,
    },
}

impl Verdict {
    /// Whether the operation may run now.
    pub fn may_run(&self) -> bool {
        !matches!(self, Verdict::Wait { .. })
    }

    /// One sentence for a condition message: why it waits and until when.
    pub fn waiting_for(&self) -> String {
        match self {
            Verdict::Ungated => "no maintenance window selects the bot".into(),
            Verdict::Open { window, until } => {
                format!("maintenance window {window} is open until {until}")
            }
            Verdict::Wait {
                windows,
                next,
                invalid,
            } => {
                let mut s = format!("waiting for maintenance window {}", windows.join(", "));
                match next {
                    Some(t) => s.push_str(&format!("; next opening {t}")),
                    None => s.push_str("; no selecting window allows it, so it never opens"),
                }
                if !invalid.is_empty() {
                    s.push_str(&format!(
                        " (window {} has an invalid spec and never opens)",
                        invalid.join(", ")
                    ));
                }
                s
            }
        }
    }
}

/// The windows that select one bot, parsed once per reconcile.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    windows: Vec<Selecting>,
}

impl Gate {
    /// The windows among `all` (one namespace's) that select a bot with `labels`.
    pub fn for_bot(labels: &BTreeMap<String, String>, all: &[Arc<MaintenanceWindow>]) -> Self {
        let mut windows: Vec<Selecting> = all
            .iter()
            .filter(|w| w.metadata.deletion_timestamp.is_none() && selects(&w.spec, labels))
            .map(|w| Selecting {
                name: w.name_any(),
                spec: w.spec.clone(),
                schedule: schedule_of(&w.spec),
            })
            .collect();
        windows.sort_by(|a, b| a.name.cmp(&b.name));
        Self { windows }
    }

    /// Whether any window selects the bot.
    pub fn selected(&self) -> bool {
        !self.windows.is_empty()
    }

    /// The verdict for `op` at `now`.
    pub fn verdict(&self, op: Operation, now: Timestamp) -> Verdict {
        if self.windows.is_empty() {
            return Verdict::Ungated;
        }
        let mut next: Option<Timestamp> = None;
        for w in &self.windows {
            let Some(s) = &w.schedule else { continue };
            if !op.allowed_by(&w.spec.allow) {
                continue;
            }
            if let Some(p) = s.open_at(now) {
                return Verdict::Open {
                    window: w.name.clone(),
                    until: p.end,
                };
            }
            if let Some(n) = s.next_start(now) {
                next = Some(next.map_or(n, |m| m.min(n)));
            }
        }
        Verdict::Wait {
            windows: self.windows.iter().map(|w| w.name.clone()).collect(),
            next,
            invalid: self
                .windows
                .iter()
                .filter(|w| w.schedule.is_none())
                .map(|w| w.name.clone())
                .collect(),
        }
    }

    /// The open window with `pauseTrading` that pauses the bot now, if any.
    pub fn pausing_window(&self, now: Timestamp) -> Option<&str> {
        self.windows
            .iter()
            .filter(|w| w.spec.pause_trading)
            .find(|w| {
                w.schedule
                    .as_ref()
                    .is_some_and(|s| s.open_at(now).is_some())
            })
            .map(|w| w.name.as_str())
    }

    /// The next instant after `now` at which any selecting window opens or closes.
    pub fn next_boundary(&self, now: Timestamp) -> Option<Timestamp> {
        self.windows
            .iter()
            .filter_map(|w| w.schedule.as_ref()?.next_boundary(now))
            .min()
    }
}

/// The MaintenanceWindows of a namespace: from the controller's store once it has its
/// first full list, else from the apiserver.
pub async fn windows_in(
    ctx: &Context,
    namespace: &str,
) -> Result<Vec<Arc<MaintenanceWindow>>, kube::Error> {
    super::cache::in_namespace(ctx.windows.store(), &ctx.client, namespace).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn mw(name: &str, spec: serde_json::Value) -> Arc<MaintenanceWindow> {
        let mut w = MaintenanceWindow::new(name, serde_json::from_value(spec).unwrap());
        w.metadata.namespace = Some("ns".into());
        Arc::new(w)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_bot_no_window_selects_is_never_gated() {
        let all = [mw(
            "w",
            json!({"schedule": "0 2 * * 0", "duration": "1h",
                   "botSelector": {"matchLabels": {"tier": "prod"}}}),
        )];
        let g = Gate::for_bot(&labels(&[("tier", "dev")]), &all);
        assert!(!g.selected());
        assert_eq!(
            g.verdict(Operation::Upgrade, ts("2026-01-01T12:00:00Z")),
            Verdict::Ungated
        );
    }

    #[test]
    fn selected_bots_wait_until_an_allowing_window_opens() {
        // 2026-01-04 is a Sunday.
        let all = [mw(
            "sunday",
            json!({"schedule": "0 2 * * 0", "duration": "1h"}),
        )];
        let g = Gate::for_bot(&labels(&[]), &all);
        let v = g.verdict(Operation::Upgrade, ts("2026-01-01T12:00:00Z"));
        assert!(!v.may_run());
        assert!(
            matches!(&v, Verdict::Wait { next: Some(t), .. } if *t == ts("2026-01-04T02:00:00Z"))
        );
        assert!(
            v.waiting_for().contains("2026-01-04T02:00:00Z"),
            "{}",
            v.waiting_for()
        );
        let open = g.verdict(Operation::Upgrade, ts("2026-01-04T02:30:00Z"));
        assert_eq!(
            open,
            Verdict::Open {
                window: "sunday".into(),
                until: ts("2026-01-04T03:00:00Z")
            }
        );
        assert_eq!(
            g.next_boundary(ts("2026-01-04T02:30:00Z")),
            Some(ts("2026-01-04T03:00:00Z"))
        );
    }

    #[test]
    fn conflicting_flags_combine_with_or_over_open_windows() {
        let all = [
            // open daily 00:00-06:00, upgrades forbidden, pauses trading
            mw(
                "night",
                json!({"schedule": "0 0 * * *", "duration": "6h", "pauseTrading": true,
                       "allow": {"upgrades": false, "keyRotation": true,
                                 "databaseMaintenance": true, "logCleanup": true}}),
            ),
            // open daily 03:00-04:00, upgrades allowed
            mw("three", json!({"schedule": "0 3 * * *", "duration": "1h"})),
        ];
        let g = Gate::for_bot(&labels(&[]), &all);
        // 01:00: only "night" is open and it forbids upgrades; next opening is "three".
        let v = g.verdict(Operation::Upgrade, ts("2026-01-01T01:00:00Z"));
        assert!(
            matches!(&v, Verdict::Wait { next: Some(t), .. } if *t == ts("2026-01-01T03:00:00Z"))
        );
        assert!(
            g.verdict(Operation::KeyRotation, ts("2026-01-01T01:00:00Z"))
                .may_run()
        );
        // 03:30: "three" allows it, "night" forbidding it does not block.
        assert!(
            g.verdict(Operation::Upgrade, ts("2026-01-01T03:30:00Z"))
                .may_run()
        );
        assert_eq!(g.pausing_window(ts("2026-01-01T03:30:00Z")), Some("night"));
        assert_eq!(g.pausing_window(ts("2026-01-01T07:00:00Z")), None);
        // closing of "three" and "night" are both boundaries
        assert_eq!(
            g.next_boundary(ts("2026-01-01T03:30:00Z")),
            Some(ts("2026-01-01T04:00:00Z"))
        );
    }

    #[test]
    fn an_invalid_window_gates_and_never_opens() {
        let all = [mw("typo", json!({"schedule": "0 2 * *", "duration": "1h"}))];
        let g = Gate::for_bot(&labels(&[]), &all);
        let v = g.verdict(Operation::Upgrade, ts("2026-01-01T02:30:00Z"));
        assert!(matches!(&v, Verdict::Wait { next: None, invalid, .. } if invalid == &["typo"]));
        assert!(
            v.waiting_for().contains("invalid spec"),
            "{}",
            v.waiting_for()
        );
    }
}
