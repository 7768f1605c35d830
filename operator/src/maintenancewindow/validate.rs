//! What the CRD schema cannot check: the cron expression, the time zone, the duration
//! against the period of the schedule, and the bot selector.
//!
//! Why here and not in CEL: CEL has no cron parser and no tz database. Cron and zone
//! parsing is shared ([`crate::shared::schedule`]) with the BackupSchedule controller,
//! reused so both kinds accept exactly the same schedules; durations are parsed by
//! [`iq720_contract::duration`] like every other duration of a spec. A spec that fails
//! is reported in the InvalidSpec condition and the controller waits for the next spec
//! change (no requeue, so no hot loop).

use iq720_crds::MaintenanceWindowSpec;
use jiff::Timestamp;
use kube::core::Selector;

use crate::shared::schedule::{Schedule, ScheduleError};
use crate::shared::window::WindowSchedule;

/// Checks the spec at `now`; `Err` lists every problem, each a sentence a user can act
/// on.
pub fn validate(
    spec: &MaintenanceWindowSpec,
    now: Timestamp,
) -> Result<WindowSchedule, Vec<String>> {
    let mut problems = Vec::new();
    let schedule = match Schedule::parse(&spec.schedule, &spec.time_zone) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(e.to_string());
            // The expression is parsed first; report a bad zone too.
            if !matches!(e, ScheduleError::Zone(_))
                && jiff::tz::TimeZone::get(&spec.time_zone).is_err()
            {
                problems.push(ScheduleError::Zone(spec.time_zone.clone()).to_string());
            }
            None
        }
    };
    let duration = match iq720_contract::duration::parse(&spec.duration) {
        Ok(d) if d.is_zero() => {
            problems.push("duration must be longer than zero".to_string());
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    if let Err(e) = Selector::try_from(spec.bot_selector.clone()) {
        problems.push(format!("botSelector: {e}"));
    }
    let (Some(schedule), Some(duration)) = (schedule, duration) else {
        return Err(problems);
    };
    let window = WindowSchedule::new(schedule, duration);
    if let Some(gap) = window.longer_than_period(now) {
        problems.push(format!(
            "duration {} is longer than the shortest time between two starts of schedule `{}` ({}); a window must close before the next one opens",
            spec.duration,
            spec.schedule,
            iq720_contract::duration::format(gap.unsigned_abs()),
        ));
    }
    if problems.is_empty() {
        Ok(window)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(schedule: &str, zone: &str, duration: &str) -> MaintenanceWindowSpec {
        serde_json::from_value(serde_json::json!({
            "schedule": schedule, "timeZone": zone, "duration": duration
        }))
        .unwrap()
    }

    #[test]
    fn good_and_bad_specs() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(validate(&spec("0 2 * * 0", "Europe/Berlin", "2h"), now).is_ok());
        let p = validate(&spec("0 0 2 * * 0", "Nowhere/City", "2x"), now).unwrap_err();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("5 fields"), "{p:?}");
        assert!(p[1].contains("IANA"), "{p:?}");
        assert!(p[2].contains("unknown unit"), "{p:?}");
        let long = validate(&spec("0 * * * *", "UTC", "2h"), now).unwrap_err();
        assert!(long[0].contains("longer than the shortest"), "{long:?}");
    }
}
