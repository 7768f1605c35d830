//! Status of MaintenanceWindows and the one place that writes it: whole, only when it
//! changed, with server-side apply under [`super::STATUS_MANAGER`].
//!
//! What is derived here from other objects: `selectedBots` (the namespace's
//! TradingBots the selector matches) and `deferredOperations`: an `upgrade` for each of
//! those bots whose `MaintenancePending` condition is True (the TradingBot controller
//! decides and reports that deferral), and a `keyRotation` for each whose API token
//! rotation is due — scheduled (`status.apiKeys.nextRotation` has passed) or asked for
//! (a `trading.iq720.io/rotate-keys` value not yet acted on) — and not started while
//! the gate, over all the namespace's windows, does not let it run now. The key
//! rotation's deferral is derived here from the bot's status and annotation, not
//! reported by the TradingBot controller, so this status shows it without that
//! controller writing anything more.

use std::collections::BTreeMap;

use iq720_crds::maintenance_window::{DeferredOperation, WindowPeriod};
use iq720_crds::{MaintenanceWindow, MaintenanceWindowStatus, TradingBot};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::Result;
use super::{CONTROLLER, STATUS_MANAGER};
use crate::shared::conditions::{find, set_condition};
use crate::shared::context::Context;
use crate::shared::gate::MAINTENANCE_PENDING;
use crate::shared::gate::{Gate, Operation, selects};
use crate::shared::window::Period;
use iq720_crds::trading_bot::ROTATE_KEYS_ANNOTATION;
use std::sync::Arc;

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

/// Whether the bot's API token rotation is due now and not started: scheduled and
/// past `nextRotation`, or asked for by an annotation value not yet acted on. Returns
/// since when it waits (`nextRotation` for a scheduled one, else `None`: unknown).
pub fn rotation_due(bot: &TradingBot, now: Timestamp) -> Option<Option<Timestamp>> {
    let keys = bot.status.as_ref().and_then(|s| s.api_keys.as_ref());
    if keys.is_some_and(|k| k.rotation.is_some()) {
        return None;
    }
    let next = keys
        .and_then(|k| k.next_rotation.as_ref())
        .and_then(|t| Timestamp::from_second(t.0.as_second()).ok());
    if let Some(at) = next
        && at <= now
    {
        return Some(Some(at));
    }
    let asked = bot
        .annotations()
        .get(ROTATE_KEYS_ANNOTATION)
        .filter(|v| !v.trim().is_empty())?;
    let last = keys.and_then(|k| k.last_rotation_request.as_deref());
    (last != Some(asked.as_str())).then_some(None)
}

/// The next instant after `now` at which a scheduled rotation of one of `bots` falls
/// due (the reconcile requeues then, so `deferredOperations` lists it on time).
pub fn next_rotation_due(bots: &[&TradingBot], now: Timestamp) -> Option<Timestamp> {
    bots.iter()
        .filter_map(|b| {
            let t = b
                .status
                .as_ref()?
                .api_keys
                .as_ref()?
                .next_rotation
                .as_ref()?;
            Timestamp::from_second(t.0.as_second()).ok()
        })
        .filter(|t| *t > now)
        .min()
}

/// `selectedBots` and `deferredOperations` from the namespace's bots and windows
/// (`all`, this one included) at `now`. A deferral listed before keeps its `since`.
pub fn bots(
    st: &mut MaintenanceWindowStatus,
    mw: &MaintenanceWindow,
    bots: &[&TradingBot],
    all: &[Arc<MaintenanceWindow>],
    now: Timestamp,
) {
    let empty = BTreeMap::new();
    let mut selected: Vec<&TradingBot> = bots
        .iter()
        .copied()
        .filter(|b| selects(&mw.spec, b.metadata.labels.as_ref().unwrap_or(&empty)))
        .collect();
    selected.sort_by_key(|b| b.name_any());
    st.selected_bots = selected.iter().map(|b| b.name_any()).collect();
    let previous = std::mem::take(&mut st.deferred_operations);
    let since_before = |bot: &str, op: &str| {
        previous
            .iter()
            .find(|d| d.bot == bot && d.operation == op)
            .map(|d| d.since.clone())
    };
    let mut deferred = Vec::new();
    for b in &selected {
        let name = b.name_any();
        if let Some(c) = b
            .status
            .as_ref()
            .and_then(|s| find(&s.conditions, MAINTENANCE_PENDING))
            .filter(|c| c.status == "True")
        {
            deferred.push(DeferredOperation {
                bot: name.clone(),
                operation: Operation::Upgrade.name().to_string(),
                since: c.last_transition_time.clone(),
            });
        }
        if let Some(since) = rotation_due(b, now) {
            let gate = Gate::for_bot(b.metadata.labels.as_ref().unwrap_or(&empty), all);
            if !gate.verdict(Operation::KeyRotation, now).may_run() {
                let op = Operation::KeyRotation.name();
                deferred.push(DeferredOperation {
                    bot: name.clone(),
                    operation: op.to_string(),
                    since: since_before(&name, op).unwrap_or_else(|| time(since.unwrap_or(now))),
                });
            }
        }
    }
    st.deferred_operations = deferred;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn bot(status: serde_json::Value, annotation: Option<&str>) -> TradingBot {
        let mut b: TradingBot = serde_json::from_value(json!({
            "apiVersion": "trading.iq720.io/v1alpha1", "kind": "TradingBot",
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {"version": "0.1.0", "pairs": ["BTC/USDT"], "strategy": {"name": "rsi"}},
            "status": status,
        }))
        .unwrap();
        if let Some(a) = annotation {
            b.metadata.annotations = Some(BTreeMap::from([(
                ROTATE_KEYS_ANNOTATION.to_string(),
                a.to_string(),
            )]));
        }
        b
    }

    fn window(schedule: &str) -> Arc<MaintenanceWindow> {
        let mut w = MaintenanceWindow::new(
            "w",
            serde_json::from_value(json!({"schedule": schedule, "duration": "1h"})).unwrap(),
        );
        w.metadata.namespace = Some("ns".into());
        Arc::new(w)
    }

    #[test]
    fn a_due_key_rotation_of_a_gated_bot_is_listed_as_deferred() {
        // 2026-01-01 12:00 UTC; the window opens daily at 02:00.
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let closed = [window("0 2 * * *")];
        let due = bot(
            json!({"apiKeys": {"nextRotation": "2026-01-01T06:00:00Z"}}),
            None,
        );
        let not_due = bot(
            json!({"apiKeys": {"nextRotation": "2026-01-02T06:00:00Z"}}),
            None,
        );
        let asked = bot(
            json!({"apiKeys": {"nextRotation": "2026-03-01T00:00:00Z", "lastRotationRequest": "1"}}),
            Some("2"),
        );
        let handled = bot(
            json!({"apiKeys": {"nextRotation": "2026-03-01T00:00:00Z", "lastRotationRequest": "2"}}),
            Some("2"),
        );
        let started = bot(
            json!({"apiKeys": {"nextRotation": "2026-01-01T06:00:00Z",
                    "rotation": {"newKey": "token-1", "startedAt": "2026-01-01T11:00:00Z"}}}),
            None,
        );
        assert_eq!(
            rotation_due(&due, now),
            Some(Some("2026-01-01T06:00:00Z".parse().unwrap()))
        );
        assert_eq!(rotation_due(&not_due, now), None);
        assert_eq!(rotation_due(&asked, now), Some(None));
        assert_eq!(rotation_due(&handled, now), None);
        assert_eq!(rotation_due(&started, now), None);
        assert_eq!(
            next_rotation_due(&[&due, &not_due], now),
            Some("2026-01-02T06:00:00Z".parse().unwrap())
        );

        let mut st = MaintenanceWindowStatus::default();
        bots(&mut st, &closed[0], &[&due], &closed, now);
        assert_eq!(st.deferred_operations.len(), 1);
        assert_eq!(st.deferred_operations[0].operation, "keyRotation");
        assert_eq!(
            st.deferred_operations[0].since.0.as_second(),
            "2026-01-01T06:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_second()
        );
        // An on-demand request keeps the `since` it was first listed with.
        let later: Timestamp = "2026-01-01T13:00:00Z".parse().unwrap();
        bots(&mut st, &closed[0], &[&asked], &closed, now);
        let first = st.deferred_operations[0].since.clone();
        bots(&mut st, &closed[0], &[&asked], &closed, later);
        assert_eq!(st.deferred_operations[0].since, first);
        // An open window allowing keyRotation: nothing waits.
        let open = [window("0 12 * * *")];
        bots(&mut st, &open[0], &[&due], &open, now);
        assert!(st.deferred_operations.is_empty());
    }
}
