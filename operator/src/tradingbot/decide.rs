//! Decide step: which path a reconcile takes and the status bookkeeping that follows
//! from the spec alone. Pure functions, tested without a cluster.

use iq720_crds::{TradingBot, TradingBotStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::status::{condition, is_true};

/// The path a reconcile takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// `spec.emergencyStop`: close everything and scale to zero, whatever else the spec
    /// says (problems are only reported).
    EmergencyStop,
    /// The spec has problems: report them, keep the running bot as it is, keep pause
    /// working, wait for a spec change.
    Invalid,
    /// Apply the owned objects and converse with the bot.
    Run,
}

/// Chooses the path. Emergency stop comes before validation.
pub fn plan(bot: &TradingBot, problems: &[String]) -> Plan {
    if bot.spec.emergency_stop {
        Plan::EmergencyStop
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
    fn emergency_stop_runs_before_validation() {
        let problems = vec!["spec.strategy.params.rsiPeriodd is not a known parameter".into()];
        assert_eq!(
            plan(&bot(json!({"emergencyStop": true})), &problems),
            Plan::EmergencyStop
        );
        assert_eq!(plan(&bot(json!({})), &problems), Plan::Invalid);
        assert_eq!(plan(&bot(json!({})), &[]), Plan::Run);
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
