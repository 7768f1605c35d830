//! Pure schedule arithmetic of backups: whether a run is due (missed slots folded),
//! retry backoff and per-bot jitter, on top of [`crate::shared::schedule`].
//!
//! Why pure: daylight-saving transitions are where schedulers go wrong (a 02:30 job
//! skipped on the spring-forward day, or run twice on the fall-back day). Keeping the
//! arithmetic free of I/O lets unit tests pin those days down exactly. Slots are
//! found by croner on wall-clock time in the zone (jiff, with the tz database bundled
//! into the binary so a distroless image needs no `/usr/share/zoneinfo`): a time in a
//! spring-forward gap runs once right after the gap, a time repeated by a fall-back
//! runs once, at its first occurrence.

use std::time::Duration;

use jiff::Timestamp;

pub use crate::shared::schedule::{Schedule, ScheduleError};

/// What a reconcile should do about the scheduled slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// The newest slot in `(anchor, now]`, when one has passed: a run is due for it
    /// (older missed slots are folded into this one run).
    pub due: Option<Timestamp>,
    /// The first slot after `now`.
    pub next: Option<Timestamp>,
}

/// Slots relative to `anchor` (the last scheduled slot run, or the creation time).
/// At most `limit` missed slots are walked; past that the newest walked one is due.
pub fn slots(schedule: &Schedule, anchor: Timestamp, now: Timestamp) -> Slots {
    const LIMIT: usize = 100_000;
    let mut due = None;
    let mut cursor = anchor;
    for _ in 0..LIMIT {
        match schedule.next_after(cursor) {
            Some(t) if t <= now => {
                due = Some(t);
                cursor = t;
            }
            next => return Slots { due, next },
        }
    }
    Slots {
        due,
        next: schedule.next_after(now),
    }
}

/// Delay before retrying a failed run: 30 s doubled per failure, at most 10 min.
pub fn retry_backoff(consecutive_failures: i32) -> Duration {
    let n = u32::try_from(consecutive_failures.clamp(1, 16) - 1).unwrap_or(0);
    Duration::from_secs(30u64.saturating_mul(1u64 << n).min(600))
}

/// Deterministic delay in `[0, max_seconds)` for one bot (FNV-1a of
/// `namespace/name`): the same bot always starts at the same offset of a slot.
pub fn jitter(namespace: &str, name: &str, max_seconds: i32) -> Duration {
    let Ok(max) = u64::try_from(max_seconds) else {
        return Duration::ZERO;
    };
    if max == 0 {
        return Duration::ZERO;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([b'/']).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Duration::from_secs(h % max)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Every slot in `[from, to)`.
    fn all(s: &Schedule, from: &str, to: &str) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = ts(from);
        while let Some(n) = s.next_after(t) {
            if n >= ts(to) {
                break;
            }
            out.push(n);
            t = n;
        }
        out
    }

    #[test]
    fn daily_at_0230_runs_once_on_the_spring_forward_day() {
        // Europe/Berlin, 2026-03-29: 02:00 CET -> 03:00 CEST, 02:30 does not exist.
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let got = all(&s, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z");
        assert_eq!(
            got,
            vec![
                ts("2026-03-28T01:30:00Z"), // 02:30 CET
                ts("2026-03-29T01:00:00Z"), // the gap: once, at 03:00 CEST
                ts("2026-03-30T00:30:00Z"), // 02:30 CEST
            ]
        );
    }

    #[test]
    fn daily_at_0230_runs_once_on_the_fall_back_day() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST -> 02:00 CET, 02:30 happens twice.
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let got = all(&s, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z");
        assert_eq!(
            got,
            vec![
                ts("2026-10-24T00:30:00Z"), // 02:30 CEST
                ts("2026-10-25T00:30:00Z"), // first 02:30 (CEST) only
                ts("2026-10-26T01:30:00Z"), // 02:30 CET
            ]
        );
    }

    #[test]
    fn the_zone_moves_the_slot() {
        let s = Schedule::parse("0 3 * * *", "America/New_York").unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-10T00:00:00Z")),
            Some(ts("2026-01-10T08:00:00Z"))
        );
        let utc = Schedule::parse("0 3 * * *", "UTC").unwrap();
        assert_eq!(
            utc.next_after(ts("2026-01-10T03:00:00Z")),
            Some(ts("2026-01-11T03:00:00Z"))
        );
    }

    #[test]
    fn six_fields_bad_expressions_and_unknown_zones_are_refused() {
        let e = Schedule::parse("0 0 3 * * *", "UTC").unwrap_err();
        assert!(matches!(e, ScheduleError::FieldCount(_, 6)));
        assert!(e.to_string().contains("seconds are not supported"), "{e}");
        assert!(matches!(
            Schedule::parse("a b c d e", "UTC"),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedule::parse("61 3 * * *", "UTC"),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedule::parse("not a cron", "UTC"),
            Err(ScheduleError::FieldCount(_, 3))
        ));
        assert_eq!(
            Schedule::parse("0 3 * * *", "Mars/Olympus").unwrap_err(),
            ScheduleError::Zone("Mars/Olympus".into())
        );
    }

    #[test]
    fn missed_slots_fold_into_one_due_run() {
        let s = Schedule::parse("*/10 * * * *", "UTC").unwrap();
        let r = slots(&s, ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:35:00Z"));
        assert_eq!(r.due, Some(ts("2026-01-01T00:30:00Z")));
        assert_eq!(r.next, Some(ts("2026-01-01T00:40:00Z")));
        let none = slots(&s, ts("2026-01-01T00:30:00Z"), ts("2026-01-01T00:35:00Z"));
        assert_eq!(none.due, None);
        assert_eq!(none.next, Some(ts("2026-01-01T00:40:00Z")));
        // exactly at the slot it is due
        let at = slots(&s, ts("2026-01-01T00:30:00Z"), ts("2026-01-01T00:40:00Z"));
        assert_eq!(at.due, Some(ts("2026-01-01T00:40:00Z")));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(retry_backoff(1), Duration::from_secs(30));
        assert_eq!(retry_backoff(2), Duration::from_secs(60));
        assert_eq!(retry_backoff(5), Duration::from_secs(480));
        assert_eq!(retry_backoff(6), Duration::from_secs(600));
        assert_eq!(retry_backoff(1000), Duration::from_secs(600));
    }

    #[test]
    fn jitter_is_deterministic_bounded_and_spread() {
        assert_eq!(jitter("ns", "a", 0), Duration::ZERO);
        assert_eq!(jitter("ns", "a", 300), jitter("ns", "a", 300));
        let offsets: std::collections::BTreeSet<_> = (0..50)
            .map(|i| jitter("ns", &format!("bot-{i}"), 300))
            .collect();
        assert!(offsets.iter().all(|d| *d < Duration::from_secs(300)));
        assert!(offsets.len() > 30, "{offsets:?}");
    }
}
