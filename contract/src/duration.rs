//! Durations as people write them: one or more `<number><unit>` groups with the units
//! `ms`, `s`, `m`, `h` and `d`, e.g. `250ms`, `30s`, `15m`, `1h30m`, `7d`.
//!
//! Why here: the operator parses the durations of a spec (and its own flags), and the
//! bot parses the same strings from its configuration. One parser means a duration the
//! operator accepts is one the bot accepts, with the same value. Leading and trailing
//! whitespace is ignored; the total must fit in `u64` milliseconds.
//!
//! Log retention acts on whole days, because the bot rotates its log files daily:
//! [`retention_days`] rounds **up** (a retention of `36h` acts on files at least 2
//! days old). Both sides compare retentions with this one rule.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// Milliseconds in a day.
const DAY_MS: u64 = 86_400_000;

/// Why a duration string was refused. Every variant carries the whole text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but whitespace.
    #[error("empty duration (use e.g. 30s, 15m, 1h30m or 7d)")]
    Empty,
    /// A group does not start with a number (e.g. `h`, `-1s`).
    #[error("duration `{0}` must be whole numbers with units (e.g. 30s, 1h30m, 7d)")]
    MissingNumber(String),
    /// A number without a unit (e.g. `7`, `1h30`).
    #[error("duration `{0}` has no unit (use ms, s, m, h or d)")]
    MissingUnit(String),
    /// A unit other than ms, s, m, h or d.
    #[error("duration `{text}` has unknown unit `{unit}` (use ms, s, m, h or d)")]
    UnknownUnit {
        /// The whole duration text.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// The total does not fit in `u64` milliseconds.
    #[error("duration `{0}` is too large")]
    TooLarge(String),
}

/// Parses a duration (see the module documentation for the grammar).
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let text = s.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError::MissingNumber(text.to_string()));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::TooLarge(text.to_string()))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => DAY_MS,
            "" => return Err(DurationError::MissingUnit(text.to_string())),
            _ => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_string(),
                    unit: unit.to_string(),
                });
            }
        };
        total_ms = n
            .checked_mul(factor)
            .and_then(|v| v.checked_add(total_ms))
            .ok_or_else(|| DurationError::TooLarge(text.to_string()))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in the largest unit that divides it exactly (`5400s` → `90m`,
/// `1500ms` → `1500ms`, zero → `0s`). [`parse`] reads the result back to the same value.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    for (unit, size) in [
        ("d", u128::from(DAY_MS)),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The whole days a log retention acts on: rounded up (`12h` → 1, `36h` → 2, `7d` → 7).
pub fn retention_days(d: Duration) -> u64 {
    let days = d.as_millis().div_ceil(u128::from(DAY_MS));
    u64::try_from(days).unwrap_or(u64::MAX)
}

/// A duration that serialises as a human string (`"7d"`) and deserialises with
/// [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Build from seconds.
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    /// Build from days.
    pub const fn days(d: u64) -> Self {
        HumanDuration(Duration::from_secs(d * 86_400))
    }
    /// Parse a duration string (see [`parse`]).
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        parse(s).map(HumanDuration)
    }
    /// Whole days as log retention counts them, rounded up (see [`retention_days`]).
    pub fn days_ceil(&self) -> u64 {
        retention_days(self.0)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HumanDuration::parse(s)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sequences() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s500ms"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse(" 5s "), Ok(Duration::from_secs(5)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("h"), Err(DurationError::MissingNumber("h".into())));
        assert_eq!(
            parse("-1s"),
            Err(DurationError::MissingNumber("-1s".into()))
        );
        assert_eq!(parse("7"), Err(DurationError::MissingUnit("7".into())));
        assert_eq!(
            parse("1h30"),
            Err(DurationError::MissingUnit("1h30".into()))
        );
        assert!(matches!(
            parse("1w"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("7 days"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("1mss"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("99999999999999999999d"),
            Err(DurationError::TooLarge(_))
        ));
        assert!(matches!(
            parse("213503982334d213503982334d"),
            Err(DurationError::TooLarge(_))
        ));
    }

    #[test]
    fn formats_in_the_largest_exact_unit_and_reads_back() {
        for (d, text) in [
            (Duration::from_secs(5400), "90m"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(120), "2m"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d));
        }
    }

    #[test]
    fn retention_rounds_up_to_whole_days() {
        assert_eq!(retention_days(Duration::ZERO), 0);
        assert_eq!(retention_days(parse("1s").unwrap()), 1);
        assert_eq!(retention_days(parse("12h").unwrap()), 1);
        assert_eq!(retention_days(parse("1d").unwrap()), 1);
        assert_eq!(retention_days(parse("36h").unwrap()), 2);
        assert_eq!(retention_days(parse("1d12h").unwrap()), 2);
        assert_eq!(retention_days(parse("1d1ms").unwrap()), 2);
        assert_eq!(retention_days(parse("7d").unwrap()), 7);
    }

    #[test]
    fn serde_uses_the_human_form() {
        let d: HumanDuration = serde_json::from_str("\"168h\"").unwrap();
        assert_eq!(d, HumanDuration::days(7));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"7d\"");
        assert!(serde_json::from_str::<HumanDuration>("\"5 parsecs\"").is_err());
    }
}
