//! Decide step: which path a reconcile takes and the status bookkeeping that follows
//! from the spec alone. Pure functions, tested without a cluster.
//!
//! The effective emergency stop is `spec.emergencyStop` OR the fleet kill switch of
//! the bot's namespace (see [`super::fleet`]); both take the same path, and the status
//! and Events say which one asked.

use iq720_crds::{TradingBot, TradingBotStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::status::{condition, is_true};

/// The Namespace label of the fleet kill switch (value `true`). Defined with the
/// decision that reads its outcome; the namespace watch in `fleet` uses it too.
pub const FLEET_LABEL: &str = "trading.iq720.io/emergency-stop";

/// What asked for an emergency stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopTrigger {
    /// `spec.emergencyStop: true`.
    Spec,
    /// The fleet kill switch: the namespace is labelled
    /// `trading.iq720.io/emergency-stop=true`.
    Namespace,
    /// Both.
    Both,
}

impl StopTrigger {
    /// Reason of the `Ready` condition while the bot is stopped: `FleetEmergencyStop`
    /// when the namespace's switch is (one of) the cause(s).
    pub fn ready_reason(self) -> &'static str {
        match self {
            StopTrigger::Spec => "EmergencyStopped",
            StopTrigger::Namespace | StopTrigger::Both => "FleetEmergencyStop",
        }
    }

    /// Who asked, for condition messages and Events.
    pub fn describe(self, namespace: &str) -> String {
        let label = FLEET_LABEL;
        match self {
            StopTrigger::Spec => "spec.emergencyStop is true".to_string(),
            StopTrigger::Namespace => {
                format!("fleet emergency stop: namespace {namespace} is labelled {label}=true")
            }
            StopTrigger::Both => format!(
                "spec.emergencyStop is true and namespace {namespace} is labelled {label}=true (fleet emergency stop)"
            ),
        }
    }
}

/// The fleet kill switch of the bot's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetSwitch {
    /// The namespace is labelled `trading.iq720.io/emergency-stop=true`.
    On,
    /// It is not.
    Off,
    /// The namespace cannot be read now.
    Unknown,
}

impl From<bool> for FleetSwitch {
    fn from(on: bool) -> Self {
        if on {
            FleetSwitch::On
        } else {
            FleetSwitch::Off
        }
    }
}

/// The effective emergency stop: `spec.emergencyStop` OR the namespace's switch
/// (`None`: no stop is wanted; an unknown switch counts as off here, see [`plan`]).
pub fn stop_trigger(spec: bool, fleet: FleetSwitch) -> Option<StopTrigger> {
    match (spec, fleet == FleetSwitch::On) {
        (true, true) => Some(StopTrigger::Both),
        (true, false) => Some(StopTrigger::Spec),
        (false, true) => Some(StopTrigger::Namespace),
        (false, false) => None,
    }
}

/// The path a reconcile takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// `spec.emergencyStop` or the namespace's fleet switch: close everything and scale
    /// to zero, whatever else the spec says (problems are only reported).
    EmergencyStop(StopTrigger),
    /// The namespace's fleet switch cannot be read and no stop is in force: change
    /// nothing (neither scale up nor resume a bot that may have to stay stopped) and
    /// retry.
    FleetUnknown,
    /// The spec has problems: report them, keep the running bot as it is, keep pause
    /// working, wait for a spec change.
    Invalid,
    /// Apply the owned objects and converse with the bot.
    Run,
}

/// Whether [`plan`] takes the emergency-stop path, told from `spec.emergencyStop`
/// (`spec`) and whether the status has a stop in force (`in_force`) alone: what a
/// reconcile decides from its packed bot before it waits for a routine permit.
pub fn plans_stop(spec: bool, in_force: bool, fleet: FleetSwitch) -> bool {
    stop_trigger(spec, fleet).is_some() || (fleet == FleetSwitch::Unknown && in_force)
}

/// Chooses the path. Emergency stop comes before validation; `spec.emergencyStop`
/// never depends on the namespace being readable. With the switch unknown, a stop in
/// force is kept (fail safe) and nothing else happens.
pub fn plan(bot: &TradingBot, fleet: FleetSwitch, problems: &[String]) -> Plan {
    if let Some(trigger) = stop_trigger(bot.spec.emergency_stop, fleet) {
        Plan::EmergencyStop(trigger)
    } else if fleet == FleetSwitch::Unknown {
        if bot
            .status
            .as_ref()
            .is_some_and(TradingBotStatus::stop_in_force)
        {
            Plan::EmergencyStop(StopTrigger::Namespace)
        } else {
            Plan::FleetUnknown
        }
    } else if !problems.is_empty() {
        Plan::Invalid
    } else {
        Plan::Run
    }
}

/// Whether an `InvalidSpec` Warning Event is due: the spec just became invalid, or a
/// new generation is still invalid. Repeated reconciles of the same spec stay quiet.
pub fn invalid_event_due(stored: Option<&TradingBotStatus>, generation: Option<i64>) -> bool {
    match stored {
        None => true,
        Some(st) => {
            !is_true(&st.conditions, condition::INVALID_SPEC)
                || st.observed_generation != generation
        }
    }
}

/// The flag is off: a completed stop record is marked cleared (kept until the bot is
/// resumed, so a new stop starts a new record). Returns whether the bot is recovering.
pub fn mark_cleared(st: &mut TradingBotStatus, now: Time) -> bool {
    match st.emergency_stop.as_mut() {
        Some(e) => {
            if e.cleared_at.is_none() {
                e.cleared_at = Some(now);
            }
            true
        }
        None => false,
    }
}

/// The bot is back and not halted after a cleared stop (it never ran, so there was no
/// close-all halt to lift; or its halt is gone): the stop record is done and removed.
/// Returns whether it was there.
pub fn finish_recovery(st: &mut TradingBotStatus, generation: Option<i64>) -> bool {
    if st
        .emergency_stop
        .as_ref()
        .is_none_or(|e| e.cleared_at.is_none())
    {
        return false;
    }
    st.emergency_stop = None;
    super::status::set_condition(
        &mut st.conditions,
        condition::EMERGENCY_STOPPED,
        false,
        "Recovered",
        "no emergency stop; the bot is back and trading",
        generation,
    );
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tradingbot::status::set_condition;
    use serde_json::json;

    fn bot(extra: serde_json::Value) -> TradingBot {
        let mut spec = json!({"version": "1.0.0", "pairs": ["BTC/USDT"]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        TradingBot::new("b", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn plans_stop_agrees_with_the_plan() {
        for spec in [false, true] {
            for in_force in [false, true] {
                for fleet in [FleetSwitch::On, FleetSwitch::Off, FleetSwitch::Unknown] {
                    let mut b = bot(json!({"emergencyStop": spec}));
                    if in_force {
                        b.status = Some(TradingBotStatus {
                            emergency_stop: Some(iq720_crds::trading_bot::EmergencyStopStatus {
                                requested_at: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        });
                    }
                    assert_eq!(
                        plans_stop(spec, in_force, fleet),
                        matches!(plan(&b, fleet, &[]), Plan::EmergencyStop(_)),
                        "spec {spec}, in force {in_force}, {fleet:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn emergency_stop_runs_before_validation() {
        let problems = vec!["spec.strategy.params.rsiPeriodd is not a known parameter".into()];
        assert_eq!(
            plan(
                &bot(json!({"emergencyStop": true})),
                FleetSwitch::Off,
                &problems
            ),
            Plan::EmergencyStop(StopTrigger::Spec)
        );
        assert_eq!(
            plan(&bot(json!({})), FleetSwitch::On, &problems),
            Plan::EmergencyStop(StopTrigger::Namespace)
        );
        assert_eq!(
            plan(&bot(json!({})), FleetSwitch::Off, &problems),
            Plan::Invalid
        );
        assert_eq!(plan(&bot(json!({})), FleetSwitch::Off, &[]), Plan::Run);
    }

    #[test]
    fn effective_emergency_is_spec_or_namespace() {
        assert_eq!(stop_trigger(false, FleetSwitch::Off), None);
        assert_eq!(stop_trigger(false, FleetSwitch::Unknown), None);
        assert_eq!(
            stop_trigger(true, FleetSwitch::Off),
            Some(StopTrigger::Spec)
        );
        assert_eq!(
            stop_trigger(true, FleetSwitch::Unknown),
            Some(StopTrigger::Spec)
        );
        assert_eq!(
            stop_trigger(false, FleetSwitch::On),
            Some(StopTrigger::Namespace)
        );
        assert_eq!(stop_trigger(true, FleetSwitch::On), Some(StopTrigger::Both));
        assert_eq!(StopTrigger::Spec.ready_reason(), "EmergencyStopped");
        assert_eq!(StopTrigger::Namespace.ready_reason(), "FleetEmergencyStop");
        assert_eq!(StopTrigger::Both.ready_reason(), "FleetEmergencyStop");
        assert!(
            StopTrigger::Namespace
                .describe("trading")
                .contains("namespace trading is labelled trading.iq720.io/emergency-stop=true")
        );
        // Removing the label is a recovery, exactly like spec.emergencyStop: false.
        let mut stopped = bot(json!({}));
        stopped.status = Some(TradingBotStatus {
            emergency_stop: Some(iq720_crds::trading_bot::EmergencyStopStatus {
                requested_at: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            }),
            ..TradingBotStatus::default()
        });
        assert_eq!(plan(&stopped, FleetSwitch::Off, &[]), Plan::Run);
    }

    #[test]
    fn an_unknown_switch_keeps_a_stop_and_changes_nothing_else() {
        // Spec stop: never waits for the namespace.
        assert_eq!(
            plan(
                &bot(json!({"emergencyStop": true})),
                FleetSwitch::Unknown,
                &[]
            ),
            Plan::EmergencyStop(StopTrigger::Spec)
        );
        // No stop in force: neither run (scale up, resume) nor stop.
        assert_eq!(
            plan(&bot(json!({})), FleetSwitch::Unknown, &[]),
            Plan::FleetUnknown
        );
        // A stop in force (e.g. by the namespace, operator restarted and the namespace
        // cannot be read): kept.
        let mut stopped = bot(json!({}));
        stopped.status = Some(TradingBotStatus {
            emergency_stop: Some(iq720_crds::trading_bot::EmergencyStopStatus {
                requested_at: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            }),
            ..TradingBotStatus::default()
        });
        assert_eq!(
            plan(&stopped, FleetSwitch::Unknown, &[]),
            Plan::EmergencyStop(StopTrigger::Namespace)
        );
        // A cleared stop is no longer in force.
        if let Some(e) = stopped
            .status
            .as_mut()
            .and_then(|s| s.emergency_stop.as_mut())
        {
            e.cleared_at = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        }
        assert_eq!(
            plan(&stopped, FleetSwitch::Unknown, &[]),
            Plan::FleetUnknown
        );
    }

    #[test]
    fn invalid_event_only_on_change() {
        let mut st = TradingBotStatus {
            observed_generation: Some(2),
            ..TradingBotStatus::default()
        };
        assert!(invalid_event_due(Some(&st), Some(2)));
        set_condition(
            &mut st.conditions,
            condition::INVALID_SPEC,
            true,
            "x",
            "y",
            Some(2),
        );
        assert!(!invalid_event_due(Some(&st), Some(2)));
        assert!(invalid_event_due(Some(&st), Some(3)));
    }

    #[test]
    fn a_cleared_stop_of_a_bot_that_never_halted_is_finished() {
        let mut st = TradingBotStatus::default();
        assert!(!finish_recovery(&mut st, Some(1)));
        st.emergency_stop = Some(Default::default());
        assert!(!finish_recovery(&mut st, Some(1)), "not cleared yet");
        mark_cleared(&mut st, Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(finish_recovery(&mut st, Some(1)));
        assert!(st.emergency_stop.is_none());
        assert!(!is_true(&st.conditions, condition::EMERGENCY_STOPPED));
    }

    #[test]
    fn clearing_keeps_the_record_until_resumed() {
        let mut st = TradingBotStatus::default();
        assert!(!mark_cleared(
            &mut st,
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        ));
        st.emergency_stop = Some(Default::default());
        assert!(mark_cleared(
            &mut st,
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        ));
        assert!(st.emergency_stop.unwrap().cleared_at.is_some());
    }
}
