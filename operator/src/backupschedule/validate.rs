//! What the CRD schema cannot check: cron syntax, the time zone and `maxAge`.
//!
//! Why here and not in CEL: CEL has no cron parser and no tz database. A spec that
//! fails these checks is reported in the InvalidSpec condition and the controller
//! waits for the next spec change (no requeue, so no hot loop).

use std::time::Duration;

use iq720_crds::BackupScheduleSpec;

use super::schedule::Schedule;

/// A spec that passed validation, parsed.
#[derive(Debug, Clone)]
pub struct Valid {
    /// The schedule.
    pub schedule: Schedule,
    /// `retention.maxAge`, parsed.
    pub max_age: Option<Duration>,
}

/// Parses a duration such as `30s`, `15m`, `1h30m` or `7d` (the CRD's pattern).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            let secs = match rest.bytes().next()? {
                b's' => 1,
                b'm' => 60,
                b'h' => 3600,
                b'd' => 86_400,
                _ => return None,
            };
            (Duration::from_secs(secs), 1)
        };
        total = total.checked_add(unit.checked_mul(u32::try_from(n).ok()?)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

/// Checks the spec; `Err` lists every problem, each a sentence a user can act on.
pub fn validate(spec: &BackupScheduleSpec) -> Result<Valid, Vec<String>> {
    let mut problems = Vec::new();
    let schedule = match Schedule::parse(&spec.schedule, &spec.time_zone) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let max_age = match spec.retention.max_age.as_deref() {
        None => None,
        Some(text) => match parse_duration(text) {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                problems.push(format!(
                    "retention.maxAge `{text}` is not a positive duration such as 30d"
                ));
                None
            }
        },
    };
    match schedule {
        Some(schedule) if problems.is_empty() => Ok(Valid { schedule, max_age }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(schedule: &str, zone: &str) -> BackupScheduleSpec {
        serde_json::from_value(serde_json::json!({
            "schedule": schedule, "timeZone": zone,
            "destination": {"bucket": "b", "credentialsSecretRef": {"name": "s"}}
        }))
        .unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("7"), None);
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("3w"), None);
    }

    #[test]
    fn every_problem_is_listed() {
        assert!(validate(&spec("0 3 * * *", "Europe/Berlin")).is_ok());
        let mut s = spec("0 0 3 * * *", "Nowhere/City");
        s.retention.max_age = Some("0d".into());
        let problems = validate(&s).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("5 fields"), "{problems:?}");
        assert!(problems[1].contains("maxAge"), "{problems:?}");
        let zone = validate(&spec("0 3 * * *", "Nowhere/City")).unwrap_err();
        assert!(zone[0].contains("IANA"), "{zone:?}");
    }
}
