//! Standard `metav1.Condition` bookkeeping shared by every controller's status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition a gated resource carries while a disruptive change waits for one of its
/// windows (True: the message says what waits and when the window opens). Set by the
/// controllers the gate ([`super::gate`]) holds back; read by the windows (and by the
/// bot fingerprint windows are nudged on), hence here, with no dependency.
pub const MAINTENANCE_PENDING: &str = "MaintenancePending";

/// Sets a condition, keeping `lastTransitionTime` when its status does not change.
/// Conditions stay sorted by type so that an unchanged status compares equal.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status_str = if status { "True" } else { "False" };
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status_str)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status_str.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: transition,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Reports spec problems the schema cannot catch: `InvalidSpec` True with the problems,
/// `Ready` False with `not_ready` as its message. Returns whether the problems are new
/// (a Warning Event is due; repeated reconciles of one bad spec stay quiet).
pub fn report_invalid(
    conditions: &mut Vec<Condition>,
    problems: &[String],
    not_ready: &str,
    generation: Option<i64>,
) -> bool {
    let message = problems.join("; ");
    let new =
        find(conditions, "InvalidSpec").is_none_or(|c| c.status != "True" || c.message != message);
    set_condition(
        conditions,
        "InvalidSpec",
        true,
        "InvalidSpec",
        &message,
        generation,
    );
    set_condition(
        conditions,
        "Ready",
        false,
        "InvalidSpec",
        not_ready,
        generation,
    );
    new
}

/// Removes a condition type (a condition that no longer applies).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Whether a condition is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_when_status_is_unchanged() {
        let mut c = Vec::new();
        set_condition(&mut c, "Ready", true, "A", "a", Some(1));
        let first = c[0].last_transition_time.clone();
        set_condition(&mut c, "Ready", true, "B", "b", Some(2));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, first);
        assert_eq!(c[0].reason, "B");
        remove_condition(&mut c, "Ready");
        assert!(c.is_empty());
    }
}
