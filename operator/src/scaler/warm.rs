//! Warm windows in the scaler: which `spec.scaling.schedules` entry is open (decided by
//! [`zeroflow_core::scaling::windows`]), what status shows of it, and the Event on opening and
//! closing. The minimum an open window calls for is applied by the scaler's decision like
//! `minReplicas`; the scaler looks at the windows at every tick (once a second), so a window
//! takes effect within a second of its boundary.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use zeroflow_core::scaling::windows::{OpenWindow, WarmWindow, WindowState, evaluate};

/// One `spec.scaling.schedules` entry, parsed, with its text for status and Events.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub schedule: String,
    pub time_zone: String,
    pub window: WarmWindow,
}

/// What the pipeline's schedules say at `now`.
pub fn state(schedules: &[Schedule], now: DateTime<Utc>) -> WindowState {
    evaluate(schedules.iter().map(|s| &s.window), now)
}

/// Whether the open window changed in a way users are told about: a window opened, closed, or
/// another entry took over. A window that stays open through a new start of its own schedule is
/// no change.
pub fn changed(before: Option<&OpenWindow>, after: Option<&OpenWindow>) -> bool {
    before.map(|w| w.index) != after.map(|w| w.index)
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `status.activeSchedule`: the open window, or `null` (which removes the field) when none is.
pub fn status_fields(schedules: &[Schedule], open: Option<&OpenWindow>) -> Value {
    let active = open.and_then(|w| {
        let s = schedules.get(w.index)?;
        Some(json!({
            "index": w.index,
            "schedule": s.schedule,
            "timeZone": s.time_zone,
            "minReplicas": w.min_replicas,
            "since": time(w.since),
            "until": time(w.until),
        }))
    });
    json!({ "activeSchedule": active })
}

/// The Event for a change: its reason and note.
pub fn event(
    schedules: &[Schedule],
    before: Option<&OpenWindow>,
    after: Option<&OpenWindow>,
) -> (&'static str, String) {
    let describe = |w: &OpenWindow| {
        schedules.get(w.index).map_or_else(
            || format!("schedules[{}]", w.index),
            |s| format!("schedules[{}] ({:?} {})", w.index, s.schedule, s.time_zone),
        )
    };
    match (before, after) {
        (_, Some(w)) => (
            "WarmWindowOpened",
            format!("warm window {} open until {}: at least {} workers", describe(w), time(w.until), w.min_replicas),
        ),
        (Some(w), None) => ("WarmWindowClosed", format!("warm window {} closed", describe(w))),
        (None, None) => ("WarmWindowClosed", "no warm window open".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a test instant").with_timezone(&Utc)
    }

    fn paris_business_hours() -> Vec<Schedule> {
        let window = WarmWindow::parse(
            "0 8 * * 1-5",
            "Europe/Paris",
            Duration::from_secs(8 * 3600),
            2,
            at("2026-01-01T00:00:00Z"),
        )
        .expect("valid");
        vec![Schedule { schedule: "0 8 * * 1-5".into(), time_zone: "Europe/Paris".into(), window }]
    }

    #[test]
    fn status_shows_the_open_window_and_null_when_none_is() {
        let schedules = paris_business_hours();
        let open = state(&schedules, at("2026-01-05T09:00:00Z")).open;
        assert_eq!(
            status_fields(&schedules, open.as_ref()),
            json!({"activeSchedule": {"index": 0, "schedule": "0 8 * * 1-5", "timeZone": "Europe/Paris",
                "minReplicas": 2, "since": "2026-01-05T07:00:00Z", "until": "2026-01-05T15:00:00Z"}})
        );
        assert_eq!(status_fields(&schedules, None), json!({"activeSchedule": null}));
    }

    #[test]
    fn opening_and_closing_are_changes_a_new_start_of_the_same_window_is_not() {
        let schedules = paris_business_hours();
        let open = state(&schedules, at("2026-01-05T09:00:00Z")).open;
        assert!(changed(None, open.as_ref()));
        assert!(changed(open.as_ref(), None));
        let later = state(&schedules, at("2026-01-05T10:00:00Z")).open;
        assert!(!changed(open.as_ref(), later.as_ref()));
        let (reason, note) = event(&schedules, None, open.as_ref());
        assert_eq!(reason, "WarmWindowOpened");
        assert_eq!(
            note,
            "warm window schedules[0] (\"0 8 * * 1-5\" Europe/Paris) open until 2026-01-05T15:00:00Z: at least 2 workers"
        );
        assert_eq!(event(&schedules, open.as_ref(), None).0, "WarmWindowClosed");
    }
}
