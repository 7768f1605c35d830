//! Pure window arithmetic: is a window open at an instant, when does the open period
//! end, when does the next one start.
//!
//! Why pure: the hard cases — a window crossing midnight, a start that falls into a
//! daylight-saving gap or is repeated by a fall-back — must be pinned down by unit tests
//! at exact instants, without a cluster. Starts come from the same cron + zone parsing
//! as the BackupSchedule controller (the shared [`crate::shared::schedule::Schedule`]): a
//! start inside a spring-forward gap opens once right after the gap, a start repeated by
//! a fall-back opens once, at its first occurrence. `duration` is elapsed time, not wall
//! time: a 2h window that opens at 01:00 on a fall-back night closes two real hours
//! later (02:00 on the second pass of the clock). A window may cross midnight because
//! only its start is matched by the cron expression.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::shared::schedule::Schedule;

/// Slack added to a boundary requeue so the reconcile lands just after the boundary.
const BOUNDARY_SLACK: Duration = Duration::from_millis(200);

/// Delay from `now` until `at` plus slack (zero when `at` has passed).
pub fn until(now: Timestamp, at: Timestamp) -> Duration {
    let d = at.duration_since(now);
    Duration::try_from(d).unwrap_or(Duration::ZERO) + BOUNDARY_SLACK
}

/// Most starts walked while merging back-to-back occurrences or checking the period.
const WALK_LIMIT: usize = 2_000;

/// An open period `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Instant the period opened.
    pub start: Timestamp,
    /// Instant it closes (exclusive).
    pub end: Timestamp,
}

impl Period {
    /// Whether `t` lies inside `[start, end)`.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// A recurring window: cron starts in a zone, each open for `duration`.
#[derive(Debug, Clone)]
pub struct WindowSchedule {
    schedule: Schedule,
    duration: SignedDuration,
}

impl WindowSchedule {
    /// A window from a parsed schedule and its duration.
    pub fn new(schedule: Schedule, duration: Duration) -> Self {
        Self {
            schedule,
            duration: SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX),
        }
    }

    fn end_of(&self, start: Timestamp) -> Timestamp {
        start
            .checked_add(self.duration)
            .unwrap_or(jiff::Timestamp::MAX)
    }

    /// The open period containing `t`, if any: `start` is the current occurrence's
    /// start; occurrences that touch (a duration equal to the gap between starts) are
    /// merged into `end`.
    pub fn open_at(&self, t: Timestamp) -> Option<Period> {
        // The first start in (t - duration, t] opened a period that is still open.
        let from = t.checked_sub(self.duration).ok()?;
        let mut start = self.schedule.next_after(from)?;
        if start > t {
            return None;
        }
        // The latest start <= t is the current occurrence (tasks run once per
        // occurrence) and gives the furthest end; then merge later starts that begin
        // before the period ends.
        for _ in 0..WALK_LIMIT {
            match self.schedule.next_after(start) {
                Some(n) if n <= t => start = n,
                _ => break,
            }
        }
        let mut end = self.end_of(start);
        let mut cursor = start;
        for _ in 0..WALK_LIMIT {
            match self.schedule.next_after(cursor) {
                Some(n) if n <= end => {
                    end = end.max(self.end_of(n));
                    cursor = n;
                }
                _ => break,
            }
        }
        Some(Period { start, end })
    }

    /// The first start strictly after `t` (None: the expression never matches again).
    pub fn next_start(&self, t: Timestamp) -> Option<Timestamp> {
        self.schedule.next_after(t)
    }

    /// The next instant after `t` at which the window opens or closes.
    pub fn next_boundary(&self, t: Timestamp) -> Option<Timestamp> {
        match self.open_at(t) {
            Some(p) => Some(p.end),
            None => self.next_start(t),
        }
    }

    /// The shortest gap between consecutive starts among the next starts after `t`
    /// (at most a year ahead, at most [`WALK_LIMIT`] starts), with the start it
    /// follows; `None` when fewer than two starts exist.
    pub fn shortest_gap(&self, t: Timestamp) -> Option<(SignedDuration, Timestamp)> {
        let horizon = t.checked_add(SignedDuration::from_hours(24 * 366)).ok()?;
        let mut prev = self.schedule.next_after(t)?;
        let mut best: Option<(SignedDuration, Timestamp)> = None;
        for _ in 0..WALK_LIMIT {
            let Some(n) = self.schedule.next_after(prev) else {
                break;
            };
            let gap = n.duration_since(prev);
            if best.is_none_or(|(b, _)| gap < b) {
                best = Some((gap, prev));
            }
            if n > horizon {
                break;
            }
            prev = n;
        }
        best
    }

    /// Whether `duration` is longer than the shortest gap between starts (each window
    /// would still be open when the next one starts: never closed, so never a window).
    pub fn longer_than_period(&self, t: Timestamp) -> Option<SignedDuration> {
        match self.shortest_gap(t) {
            Some((gap, _)) if self.duration > gap => Some(gap),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn window(expr: &str, zone: &str, secs: u64) -> WindowSchedule {
        WindowSchedule::new(
            Schedule::parse(expr, zone).unwrap(),
            Duration::from_secs(secs),
        )
    }

    #[test]
    fn a_23h_window_of_two_hours_crosses_midnight() {
        // Fridays at 23:00 UTC for 2h: open on Saturday 00:30, although Saturday does
        // not match the day-of-week field.
        let w = window("0 23 * * 5", "UTC", 7200);
        let p = w.open_at(ts("2026-01-03T00:30:00Z")).unwrap(); // a Saturday
        assert_eq!(p.start, ts("2026-01-02T23:00:00Z"));
        assert_eq!(p.end, ts("2026-01-03T01:00:00Z"));
        assert!(w.open_at(ts("2026-01-02T22:59:59Z")).is_none());
        assert!(
            w.open_at(ts("2026-01-02T23:00:00Z")).is_some(),
            "opens at its start"
        );
        assert!(
            w.open_at(ts("2026-01-03T01:00:00Z")).is_none(),
            "closed at its end"
        );
        assert_eq!(
            w.next_boundary(ts("2026-01-03T00:30:00Z")),
            Some(ts("2026-01-03T01:00:00Z"))
        );
        assert_eq!(
            w.next_boundary(ts("2026-01-03T01:00:00Z")),
            Some(ts("2026-01-09T23:00:00Z"))
        );
    }

    #[test]
    fn a_0230_window_on_the_spring_forward_day_opens_once_after_the_gap() {
        // Europe/Berlin, 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist.
        let w = window("30 2 * * *", "Europe/Berlin", 3600);
        assert_eq!(
            w.next_start(ts("2026-03-28T12:00:00Z")),
            Some(ts("2026-03-29T01:00:00Z")) // 03:00 CEST
        );
        let p = w.open_at(ts("2026-03-29T01:30:00Z")).unwrap();
        assert_eq!(p.start, ts("2026-03-29T01:00:00Z"));
        assert_eq!(p.end, ts("2026-03-29T02:00:00Z")); // one real hour
        assert!(w.open_at(ts("2026-03-29T00:59:59Z")).is_none());
        assert!(w.open_at(ts("2026-03-29T02:00:00Z")).is_none());
        // the next day is back at 02:30 CEST
        assert_eq!(
            w.next_start(ts("2026-03-29T02:00:00Z")),
            Some(ts("2026-03-30T00:30:00Z"))
        );
    }

    #[test]
    fn a_0230_window_on_the_fall_back_day_opens_once() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
        let w = window("30 2 * * *", "Europe/Berlin", 1800);
        let first = w.open_at(ts("2026-10-25T00:45:00Z")).unwrap();
        assert_eq!(first.start, ts("2026-10-25T00:30:00Z")); // 02:30 CEST
        assert_eq!(first.end, ts("2026-10-25T01:00:00Z"));
        // the second 02:30 (CET, 01:30Z) opens nothing
        assert!(w.open_at(ts("2026-10-25T01:45:00Z")).is_none());
        assert_eq!(
            w.next_start(ts("2026-10-25T00:30:00Z")),
            Some(ts("2026-10-26T01:30:00Z"))
        );
    }

    #[test]
    fn the_duration_is_elapsed_time_across_a_fall_back() {
        // 01:00 CEST + 3h elapsed = 03:00 CET wall time (the clock repeated 02:00-03:00).
        let w = window("0 1 * * *", "Europe/Berlin", 3 * 3600);
        let p = w.open_at(ts("2026-10-24T23:30:00Z")).unwrap();
        assert_eq!(p.start, ts("2026-10-24T23:00:00Z"));
        assert_eq!(p.end, ts("2026-10-25T02:00:00Z")); // 03:00 CET
    }

    #[test]
    fn back_to_back_occurrences_merge_into_one_period() {
        let w = window("*/10 * * * *", "UTC", 600);
        let p = w.open_at(ts("2026-01-01T00:15:00Z")).unwrap();
        assert_eq!(p.start, ts("2026-01-01T00:10:00Z"));
        assert!(p.end > ts("2026-01-01T05:00:00Z"), "{p:?}");
    }

    #[test]
    fn every_minute_for_thirty_seconds() {
        let w = window("* * * * *", "UTC", 30);
        assert!(w.open_at(ts("2026-01-01T00:00:10Z")).is_some());
        assert!(w.open_at(ts("2026-01-01T00:00:40Z")).is_none());
        assert_eq!(
            w.next_boundary(ts("2026-01-01T00:00:40Z")),
            Some(ts("2026-01-01T00:01:00Z"))
        );
    }

    #[test]
    fn windows_longer_than_their_period_are_found() {
        let t = ts("2026-01-01T00:00:00Z");
        assert!(
            window("0 2 * * *", "UTC", 25 * 3600)
                .longer_than_period(t)
                .is_some()
        );
        assert!(
            window("0 2 * * *", "UTC", 24 * 3600)
                .longer_than_period(t)
                .is_none()
        );
        assert!(
            window("0 2 * * 0", "UTC", 2 * 3600)
                .longer_than_period(t)
                .is_none()
        );
        // Berlin daily 02:30 with 23h45m: the spring-forward day's start is 03:00 CEST,
        // 23h30m after 02:30 CET the day before, so it is refused.
        assert!(
            window("30 2 * * *", "Europe/Berlin", 23 * 3600 + 2700)
                .longer_than_period(t)
                .is_some()
        );
    }
}
