//! Status of MaintenanceWindows and the one place that writes it: whole, only when it
//! changed, with server-side apply under [`super::STATUS_MANAGER`].
//!
//! What is derived here from other objects: `selectedBots` (the namespace's
//! TradingBots the selector matches) and `deferredOperations` (those bots whose
//! `MaintenancePending` condition is True — the TradingBot controller decides and
//! reports the deferral; this status only collects it for the window's readers).

use std::collections::BTreeMap;

use iq720_crds::maintenance_window::{DeferredOperation, WindowPeriod};
use iq720_crds::{MaintenanceWindow, MaintenanceWindowStatus, TradingBot};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::Result;
use super::gate::MAINTENANCE_PENDING;
use super::gate::{Operation, selects};
use super::window::Period;
use super::{CONTROLLER, STATUS_MANAGER};
use crate::shared::conditions::{find, set_condition};
use crate::shared::context::Context;

/// Condition types of this controller.
pub mod condition {
    /// The window is valid and scheduled.
    pub const READY: &str = "Ready";
    /// The spec has a problem the CRD schema cannot catch.
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

/// Reports an invalid spec. Returns whether the InvalidSpec message is new (an Event
/// is due).
pub fn invalid(
    st: &mut MaintenanceWindowStatus,
    problems: &[String],
    generation: Option<i64>,
) -> bool {
    let new = crate::shared::conditions::report_invalid(
        &mut st.conditions,
        problems,
        "the spec is invalid and the window never opens; see the InvalidSpec condition",
        generation,
    );
    st.active = false;
    st.current_window = None;
    st.next_window = None;
    new
}

/// Reports a valid spec and the window's state at `now`.
pub fn valid(
    st: &mut MaintenanceWindowStatus,
    open: Option<Period>,
    next: Option<Timestamp>,
    generation: Option<i64>,
) {
    set_condition(
        &mut st.conditions,
        condition::INVALID_SPEC,
        false,
        "Valid",
        "the spec is valid",
        generation,
    );
    let (reason, message) = match (open, next) {
        (Some(p), _) => ("Open", format!("the window is open until {}", p.end)),
        (None, Some(n)) => ("Scheduled", format!("the window opens next at {n}")),
        (None, None) => (
            "NeverOpens",
            "the schedule never matches again; the window never opens".to_string(),
        ),
    };
    set_condition(
        &mut st.conditions,
        condition::READY,
        true,
        reason,
        &message,
        generation,
    );
    st.active = open.is_some();
    st.current_window = open.map(|p| WindowPeriod {
        start: time(p.start),
        end: time(p.end),
    });
    st.next_window = next.map(time);
}

/// A jiff timestamp as a Kubernetes time.
pub fn time(t: Timestamp) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or_default())
}

/// `selectedBots` and `deferredOperations` from the namespace's bots.
pub fn bots(st: &mut MaintenanceWindowStatus, mw: &MaintenanceWindow, bots: &[&TradingBot]) {
    let empty = BTreeMap::new();
    let mut selected: Vec<&TradingBot> = bots
        .iter()
        .copied()
        .filter(|b| selects(&mw.spec, b.metadata.labels.as_ref().unwrap_or(&empty)))
        .collect();
    selected.sort_by_key(|b| b.name_any());
    st.selected_bots = selected.iter().map(|b| b.name_any()).collect();
    st.deferred_operations = selected
        .iter()
        .filter_map(|b| {
            let c = find(&b.status.as_ref()?.conditions, MAINTENANCE_PENDING)?;
            (c.status == "True").then(|| DeferredOperation {
                bot: b.name_any(),
                operation: Operation::Upgrade.name().to_string(),
                since: c.last_transition_time.clone(),
            })
        })
        .collect();
}

/// Writes the status when it differs from the stored one. Returns whether it wrote.
pub async fn write(
    ctx: &Context,
    mw: &MaintenanceWindow,
    new: &MaintenanceWindowStatus,
) -> Result<bool> {
    if mw.status.as_ref() == Some(new) {
        return Ok(false);
    }
    let api: Api<MaintenanceWindow> =
        Api::namespaced(ctx.client.clone(), &mw.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": MaintenanceWindow::api_version(&()),
        "kind": MaintenanceWindow::kind(&()),
        "status": new,
    });
    api.patch_status(
        &mw.name_any(),
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics
        .status_writes
        .with_label_values(&[CONTROLLER])
        .inc();
    Ok(true)
}
