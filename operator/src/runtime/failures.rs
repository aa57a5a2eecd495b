//! The latest objects that failed for good, as `status.recentFailures` shows them: bounded,
//! newest first, one entry per key. The work API adds to it when it records a failure; a
//! re-drive takes out what it puts back to work. The ledger keeps every failure; this is the
//! part a user reads with `kubectl`.

use std::collections::VecDeque;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use zeroflow_core::ledger::Marker;

use crate::api::RecentFailure;

/// Most entries kept (the CRD's `maxItems` for `status.recentFailures`).
pub const CAPACITY: usize = 20;
/// Longest message kept, in bytes: the end of the stderr tail, where the cause usually is.
pub const MESSAGE_BYTES: usize = 512;

/// The list, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentFailures {
    entries: VecDeque<RecentFailure>,
}

impl RecentFailures {
    /// Starts from what status showed, so a new leader keeps the list.
    pub fn seeded(shown: &[RecentFailure]) -> Self {
        Self { entries: shown.iter().take(CAPACITY).cloned().collect() }
    }

    /// Adds the failure a marker records; an older entry for the same key goes.
    pub fn push(&mut self, marker: &Marker) {
        let failure = from_marker(marker);
        self.entries.retain(|f| f.key != failure.key);
        self.entries.push_front(failure);
        self.entries.truncate(CAPACITY);
    }

    /// Takes out the entries whose key starts with `prefix` (all of them for `""`); returns how many.
    pub fn remove_prefix(&mut self, prefix: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|f| !f.key.starts_with(prefix));
        before - self.entries.len()
    }

    pub fn entries(&self) -> impl Iterator<Item = &RecentFailure> {
        self.entries.iter()
    }
}

fn from_marker(marker: &Marker) -> RecentFailure {
    let (exit_code, message) = match &marker.error {
        Some(e) => (e.exit_code, tail(&e.stderr_tail, MESSAGE_BYTES).to_owned()),
        None => (None, String::new()),
    };
    RecentFailure {
        key: marker.source.key.clone(),
        etag: marker.source.etag.clone(),
        version_id: marker.source.version_id.clone(),
        attempts: marker.attempts,
        exit_code,
        message,
        failed_at: Time(
            k8s_openapi::jiff::Timestamp::from_millisecond(marker.finished_at.timestamp_millis()).unwrap_or_default(),
        ),
    }
}

/// The last `max` bytes of `text`, starting at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use zeroflow_core::backlog::{ObjectId, WorkItem};

    use super::*;

    fn failed(key: &str, stderr: &str) -> Marker {
        let item = WorkItem {
            object: ObjectId { bucket: "raw".into(), key: key.into() },
            etag: Some("e1".into()),
            version_id: None,
            size: None,
            sequencer: None,
        };
        Marker::failed(&item, 3, Some(2), stderr.into(), DateTime::<Utc>::UNIX_EPOCH)
    }

    #[test]
    fn newest_first_one_per_key_and_bounded() {
        let mut recent = RecentFailures::default();
        for i in 0..25 {
            recent.push(&failed(&format!("in/{i}.csv"), "boom"));
        }
        recent.push(&failed("in/24.csv", "boom again"));
        let keys: Vec<&str> = recent.entries().map(|f| f.key.as_str()).collect();
        assert_eq!(keys.len(), CAPACITY);
        assert_eq!(keys[0], "in/24.csv");
        assert_eq!(keys[1], "in/23.csv");
        assert_eq!(keys.iter().filter(|k| **k == "in/24.csv").count(), 1);
        let newest = recent.entries().next().expect("an entry");
        assert_eq!((newest.attempts, newest.exit_code, newest.message.as_str()), (3, Some(2), "boom again"));
        assert_eq!(newest.etag.as_deref(), Some("e1"));
    }

    #[test]
    fn messages_keep_the_end_of_stderr_on_a_character_boundary() {
        let mut recent = RecentFailures::default();
        let stderr = format!("{}ü the cause", "x".repeat(600));
        recent.push(&failed("a", &stderr));
        let message = &recent.entries().next().expect("an entry").message;
        assert!(message.len() <= MESSAGE_BYTES && message.ends_with("ü the cause"), "{message}");
        assert_eq!(tail("ééé", 3), "é", "never splits a character");
    }

    #[test]
    fn a_redrive_takes_out_what_it_covers() {
        let mut recent = RecentFailures::default();
        for key in ["bad/1.csv", "bad/2.csv", "other/3.csv"] {
            recent.push(&failed(key, ""));
        }
        assert_eq!(recent.remove_prefix("bad/1"), 1);
        let keys: Vec<&str> = recent.entries().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["other/3.csv", "bad/2.csv"]);
        assert_eq!(recent.remove_prefix(""), 2);
        assert_eq!(RecentFailures::seeded(&[]), recent);
    }
}
