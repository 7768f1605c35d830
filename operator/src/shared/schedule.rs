//! A 5-field cron expression read in an IANA time zone: the next slot after an
//! instant. Shared by every controller that runs on a schedule (backups, maintenance
//! windows).
//!
//! Why here and pure: daylight-saving transitions are where schedulers go wrong (a
//! 02:30 job skipped on the spring-forward day, or run twice on the fall-back day).
//! Slots are found by croner on wall-clock time in the zone (jiff, with the tz
//! database bundled into the binary so a distroless image needs no
//! `/usr/share/zoneinfo`): a time in a spring-forward gap runs once right after the
//! gap, a time repeated by a fall-back runs once, at its first occurrence. The
//! DST cases are tested in `backupschedule::schedule`.

use std::cmp::Ordering;

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{CivilDate, CivilDateTime, CivilTime, Cron, CronDateTime, Resolution, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ZonedDateTime};

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// The expression has six (or seven) fields: seconds or years are not accepted.
    #[error(
        "schedule `{0}` has {1} fields; use 5 fields (minute hour day-of-month month day-of-week), seconds are not supported (for example `0 3 * * *`)"
    )]
    FieldCount(String, usize),
    /// croner refused the expression.
    #[error("schedule `{expr}` is not a valid cron expression: {message}")]
    Cron {
        /// The expression.
        expr: String,
        /// croner's explanation.
        message: String,
    },
    /// The time zone is not in the tz database.
    #[error("timeZone `{0}` is not an IANA time zone such as `Europe/Berlin` or `UTC`")]
    Zone(String),
}

/// A parsed schedule: cron expression plus time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

impl Schedule {
    /// Parses a 5-field cron expression and an IANA zone name.
    pub fn parse(expr: &str, zone: &str) -> Result<Self, ScheduleError> {
        let fields = expr.split_whitespace().count();
        if fields != 5 && !expr.trim().starts_with('@') {
            return Err(ScheduleError::FieldCount(expr.to_string(), fields));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_string(),
                message: e.to_string(),
            })?;
        let tz = TimeZone::get(zone).map_err(|_| ScheduleError::Zone(zone.to_string()))?;
        Ok(Self { cron, tz })
    }

    /// The first slot strictly after `after`, or `None` if the expression never
    /// matches again (for example 30 February).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = Wall(after.to_zoned_datetime(self.tz.clone()));
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|w| w.0.timestamp())
    }
}

/// A zoned time croner can search over. croner ships an implementation for jiff 0.2;
/// the workspace uses jiff 1, so this wrapper does the same for it.
#[derive(Debug, Clone)]
struct Wall(ZonedDateTime);

fn to_civil(dt: jiff::civil::DateTime) -> CivilDateTime {
    CivilDateTime::new(
        CivilDate::from_parts_unchecked(
            i32::from(dt.year()),
            dt.month().unsigned_abs().into(),
            dt.day().unsigned_abs().into(),
        ),
        CivilTime::from_parts_unchecked(
            dt.hour().unsigned_abs().into(),
            dt.minute().unsigned_abs().into(),
            dt.second().unsigned_abs().into(),
        ),
    )
}

fn to_jiff(c: CivilDateTime) -> Result<jiff::civil::DateTime, CronError> {
    let small = |v: u32| i8::try_from(v).map_err(|_| CronError::InvalidDate);
    let year = i16::try_from(c.year()).map_err(|_| CronError::InvalidDate)?;
    jiff::civil::DateTime::new(
        year,
        small(c.month())?,
        small(c.day())?,
        small(c.hour())?,
        small(c.minute())?,
        small(c.second())?,
        0,
    )
    .map_err(|_| CronError::InvalidDate)
}

impl CronDateTime for Wall {
    fn to_civil(&self) -> CivilDateTime {
        to_civil(self.0.datetime())
    }

    fn civil_weekday(&self) -> Weekday {
        Weekday::from_days_from_sunday(
            u32::try_from(self.0.weekday().to_sunday_zero_offset()).unwrap_or(0),
        )
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let ambiguous = self
            .0
            .time_zone()
            .to_ambiguous_zoned_datetime(to_jiff(civil)?);
        Ok(match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { .. } => Resolution::Single(Wall(
                ambiguous
                    .unambiguous()
                    .map_err(|_| CronError::InvalidTime)?,
            )),
            AmbiguousOffset::Fold { .. } => {
                let earlier = ambiguous
                    .clone()
                    .earlier()
                    .map_err(|_| CronError::InvalidTime)?;
                let later = ambiguous.later().map_err(|_| CronError::InvalidTime)?;
                Resolution::Ambiguous(Wall(earlier), Wall(later))
            }
            AmbiguousOffset::Gap { .. } => Resolution::Gap,
        })
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0
            .checked_add(SignedDuration::from_secs(seconds))
            .ok()
            .map(Wall)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.timestamp().cmp(&other.0.timestamp())
    }
}
