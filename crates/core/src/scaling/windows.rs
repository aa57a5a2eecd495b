//! Warm windows ("provisioned concurrency"): scheduled minimums of workers, so that a pipeline is
//! warm during business hours and at zero otherwise. Pure: which windows are active at an instant,
//! the minimum they call for, and when the answer may next change.
//!
//! A window is a cron `schedule` (five fields: minute hour day-of-month month day-of-week, the
//! syntax of Kubernetes CronJobs, parsed by the `croner` crate) read in an IANA `timeZone` (the
//! tz database bundled by `chrono-tz`), and a `duration`: each start of the schedule opens the
//! window for that much elapsed time. Starts are found on the wall clock of the zone, so
//! "0 8 * * 1-5" in Europe/Paris is 08:00 Paris time on both sides of a daylight-saving change;
//! the duration is elapsed time, so an 8h window that spans a change ends 8 real hours later.
//!
//! Schedule plus duration rather than KEDA's cron scaler's `start`/`end` pair: one expression
//! cannot disagree with itself, whereas a start and an end schedule can be written so that the
//! end never follows the start (or two starts come before one end), and the active state at an
//! instant would then depend on how far back one looks.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Longest window: a week, like every other duration of the spec.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// One parsed warm window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmWindow {
    cron: Cron,
    zone: Tz,
    length: TimeDelta,
    /// Workers kept running while the window is open.
    pub min_replicas: i32,
}

/// Why a window cannot be used; the message names what is wrong in the user's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error(
        "schedule {schedule:?} is not a cron expression of five fields (minute hour day-of-month month day-of-week): {reason}"
    )]
    Schedule { schedule: String, reason: String },
    #[error("schedule {0:?} never matches a real date")]
    Never(String),
    #[error("timeZone {0:?} is not an IANA time zone name such as Europe/Paris or UTC")]
    TimeZone(String),
    #[error("duration must be longer than 0s and at most 168h")]
    Duration,
    #[error("minReplicas must not be negative")]
    MinReplicas,
}

/// Parses a cron expression of exactly five fields (no seconds, no year), as Kubernetes
/// CronJobs take them; `@hourly`-style nicknames are accepted too.
pub fn parse_schedule(schedule: &str) -> Result<Cron, WindowError> {
    let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
    parser.parse(schedule).map_err(|e| WindowError::Schedule { schedule: schedule.to_owned(), reason: e.to_string() })
}

/// Parses an IANA time zone name (case as in the tz database, e.g. `Europe/Paris`, `UTC`).
pub fn parse_time_zone(name: &str) -> Result<Tz, WindowError> {
    name.parse::<Tz>().map_err(|_| WindowError::TimeZone(name.to_owned()))
}

impl WarmWindow {
    /// Checks and parses one window. `now` is only used to check that the schedule ever starts
    /// (a pattern such as "0 0 30 2 *" never does).
    pub fn parse(
        schedule: &str,
        time_zone: &str,
        length: Duration,
        min_replicas: i32,
        now: DateTime<Utc>,
    ) -> Result<Self, WindowError> {
        let cron = parse_schedule(schedule)?;
        let zone = parse_time_zone(time_zone)?;
        if length.is_zero() || length > MAX_WINDOW {
            return Err(WindowError::Duration);
        }
        let length = TimeDelta::from_std(length).map_err(|_| WindowError::Duration)?;
        if min_replicas < 0 {
            return Err(WindowError::MinReplicas);
        }
        let window = Self { cron, zone, length, min_replicas };
        if window.next_start(now).is_none() {
            return Err(WindowError::Never(schedule.to_owned()));
        }
        Ok(window)
    }

    /// The first start strictly after `at`.
    fn next_start(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The last start at or before `at`.
    fn last_start(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.zone);
        self.cron.find_previous_occurrence(&local, true).ok().map(|t| t.with_timezone(&Utc))
    }

    /// When the window opened and when it closes, if it is open at `now` (open from a start,
    /// inclusive, for its duration, exclusive).
    pub fn open_at(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let start = self.last_start(now)?;
        let end = start + self.length;
        (end > now).then_some((start, end))
    }
}

/// The open window that sets the minimum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenWindow {
    /// Its position in `spec.scaling.schedules`.
    pub index: usize,
    pub min_replicas: i32,
    /// The start that opened it.
    pub since: DateTime<Utc>,
    /// When it closes unless another start of a window comes first.
    pub until: DateTime<Utc>,
}

/// What the windows say at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowState {
    /// The open window with the highest minimum (the first of equals); `None` when none is open.
    pub open: Option<OpenWindow>,
    /// The highest minimum of the open windows, 0 when none is open.
    pub min_replicas: i32,
    /// The next instant at which a window opens or closes: the state must be looked at again
    /// then. `None` when no window will ever change.
    pub next_change: Option<DateTime<Utc>>,
}

/// Which windows are open at `now`, the minimum they call for and when that may next change.
pub fn evaluate<'a>(windows: impl IntoIterator<Item = &'a WarmWindow>, now: DateTime<Utc>) -> WindowState {
    let mut open: Option<OpenWindow> = None;
    let mut next_change: Option<DateTime<Utc>> = None;
    let mut earlier = |at: DateTime<Utc>| {
        next_change = Some(next_change.map_or(at, |n| n.min(at)));
    };
    for (index, window) in windows.into_iter().enumerate() {
        if let Some((since, until)) = window.open_at(now) {
            earlier(until);
            if open.as_ref().is_none_or(|o| window.min_replicas > o.min_replicas) {
                open = Some(OpenWindow { index, min_replicas: window.min_replicas, since, until });
            }
        }
        if let Some(start) = window.next_start(now) {
            earlier(start);
        }
    }
    let min_replicas = open.as_ref().map_or(0, |o| o.min_replicas);
    WindowState { open, min_replicas, next_change }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a test instant").with_timezone(&Utc)
    }

    fn window(schedule: &str, zone: &str, hours: u64, min: i32) -> WarmWindow {
        WarmWindow::parse(schedule, zone, Duration::from_secs(hours * 3600), min, at("2026-01-01T00:00:00Z"))
            .expect("a valid window")
    }

    #[test]
    fn business_hours_in_paris_open_at_eight_local_time_in_winter_and_summer() {
        let w = [window("0 8 * * 1-5", "Europe/Paris", 8, 2)];
        // Monday 2026-01-05, winter (UTC+1): 08:00 Paris is 07:00 UTC.
        let s = evaluate(&w, at("2026-01-05T06:59:59Z"));
        assert_eq!(s.min_replicas, 0);
        assert_eq!(s.next_change, Some(at("2026-01-05T07:00:00Z")));
        let s = evaluate(&w, at("2026-01-05T07:00:00Z"));
        assert_eq!(s.min_replicas, 2);
        assert_eq!(
            s.open,
            Some(OpenWindow {
                index: 0,
                min_replicas: 2,
                since: at("2026-01-05T07:00:00Z"),
                until: at("2026-01-05T15:00:00Z")
            })
        );
        assert_eq!(s.next_change, Some(at("2026-01-05T15:00:00Z")));
        assert_eq!(evaluate(&w, at("2026-01-05T15:00:00Z")).min_replicas, 0, "the end is exclusive");
        // Monday 2026-07-06, summer (UTC+2): 08:00 Paris is 06:00 UTC.
        assert_eq!(evaluate(&w, at("2026-07-06T06:00:00Z")).min_replicas, 2);
        assert_eq!(evaluate(&w, at("2026-07-06T05:59:00Z")).min_replicas, 0);
    }

    #[test]
    fn the_weekend_has_no_window_and_friday_evening_points_to_monday() {
        let w = [window("0 8 * * 1-5", "Europe/Paris", 8, 2)];
        let s = evaluate(&w, at("2026-01-09T18:00:00Z")); // Friday evening
        assert_eq!(s.open, None);
        assert_eq!(s.next_change, Some(at("2026-01-12T07:00:00Z")));
    }

    #[test]
    fn the_duration_is_elapsed_time_across_a_daylight_saving_change() {
        // 2026-03-29 02:00 Paris jumps to 03:00. A window from 00:00 local (23:00 UTC the day
        // before) for 4h closes at 03:00 UTC, which is 05:00 local.
        let w = [window("0 0 * * *", "Europe/Paris", 4, 1)];
        let s = evaluate(&w, at("2026-03-29T02:30:00Z"));
        assert_eq!(s.open.map(|o| o.until), Some(at("2026-03-29T03:00:00Z")));
    }

    #[test]
    fn overlapping_windows_take_the_highest_minimum_and_change_at_the_first_boundary() {
        let w = [window("0 8 * * *", "UTC", 10, 1), window("0 12 * * *", "UTC", 2, 3)];
        let s = evaluate(&w, at("2026-01-05T13:00:00Z"));
        assert_eq!(s.min_replicas, 3);
        assert_eq!(s.open.map(|o| o.index), Some(1));
        assert_eq!(s.next_change, Some(at("2026-01-05T14:00:00Z")));
        let s = evaluate(&w, at("2026-01-05T14:00:00Z"));
        assert_eq!(s.min_replicas, 1);
        assert_eq!(s.next_change, Some(at("2026-01-05T18:00:00Z")));
    }

    #[test]
    fn a_schedule_that_starts_again_before_it_ends_stays_open() {
        // Every minute for two minutes: always open, and each start is a boundary to look at.
        let w = [WarmWindow::parse("* * * * *", "UTC", Duration::from_secs(120), 1, at("2026-01-01T00:00:00Z"))
            .expect("valid")];
        let s = evaluate(&w, at("2026-01-05T10:00:30Z"));
        assert_eq!(s.min_replicas, 1);
        assert_eq!(s.next_change, Some(at("2026-01-05T10:01:00Z")));
    }

    #[test]
    fn invalid_windows_say_what_is_wrong() {
        let now = at("2026-01-01T00:00:00Z");
        let hour = Duration::from_secs(3600);
        let err = |s: &str, z: &str, d: Duration, m: i32| WarmWindow::parse(s, z, d, m, now).expect_err("invalid");
        assert!(matches!(err("0 8 * *", "UTC", hour, 1), WindowError::Schedule { .. }));
        assert!(matches!(err("0 0 8 * * *", "UTC", hour, 1), WindowError::Schedule { .. }), "no seconds field");
        assert!(matches!(err("0 25 * * *", "UTC", hour, 1), WindowError::Schedule { .. }));
        assert!(matches!(err("every day", "UTC", hour, 1), WindowError::Schedule { .. }));
        assert_eq!(err("0 0 30 2 *", "UTC", hour, 1), WindowError::Never("0 0 30 2 *".into()));
        assert_eq!(err("0 8 * * *", "Europe/Pariss", hour, 1), WindowError::TimeZone("Europe/Pariss".into()));
        assert_eq!(err("0 8 * * *", "UTC", Duration::ZERO, 1), WindowError::Duration);
        assert_eq!(err("0 8 * * *", "UTC", MAX_WINDOW + Duration::from_secs(1), 1), WindowError::Duration);
        assert_eq!(err("0 8 * * *", "UTC", hour, -1), WindowError::MinReplicas);
        let message = err("0 8 * * *", "Europe/Pariss", hour, 1).to_string();
        assert!(message.contains("IANA time zone"), "{message}");
    }

    #[test]
    fn no_windows_say_nothing() {
        let s = evaluate(&[], at("2026-01-05T10:00:00Z"));
        assert_eq!(s, WindowState { open: None, min_replicas: 0, next_change: None });
    }
}
