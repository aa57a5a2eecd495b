//! The scale-down stabilization window: the highest replica count wanted within the last
//! window, below which a scale-down does not go (the Kubernetes HPA's rule: "the highest
//! recommendation within the window", Kubernetes documentation, "Horizontal Pod Autoscaling",
//! stabilization window).
//!
//! The scaler records what the work wanted once per tick (every second), for every pipeline.
//! A plain list of those samples holds `window / tick` entries per pipeline (300 with the HPA's
//! default of five minutes) and is walked whole on every tick. [`RecentMax`] keeps only the
//! samples that can still be the maximum: a sample is dropped as soon as a later one at least
//! as large arrives, since the later one stays in the window longer. The samples left decrease
//! from the oldest to the newest, the oldest is the maximum, and while the wanted count is
//! steady (an idle pipeline wants 0, tick after tick) there is one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The maximum of the values recorded within a trailing window of time.
///
/// Holds (time recorded, value) pairs with strictly decreasing values, oldest first.
#[derive(Debug, Clone, Default)]
pub struct RecentMax {
    samples: VecDeque<(Instant, i32)>,
}

impl RecentMax {
    /// Records `value` as wanted at `at`; `at` must not be earlier than the previous record's.
    pub fn record(&mut self, at: Instant, value: i32) {
        while self.samples.back().is_some_and(|(_, v)| *v <= value) {
            self.samples.pop_back();
        }
        self.samples.push_back((at, value));
    }

    /// Forgets the values recorded more than `window` before `now`.
    pub fn expire(&mut self, now: Instant, window: Duration) {
        while self.samples.front().is_some_and(|(at, _)| now.duration_since(*at) > window) {
            self.samples.pop_front();
        }
    }

    /// The largest value still held; `None` when every record has expired (or none was made).
    pub fn max(&self) -> Option<i32> {
        self.samples.front().map(|(_, v)| *v)
    }

    /// How many samples are held (at most one per distinct value in the window).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_steady_count_is_one_sample_whatever_the_window() {
        let start = Instant::now();
        let mut recent = RecentMax::default();
        for tick in 0..300 {
            let now = start + Duration::from_secs(tick);
            recent.expire(now, Duration::from_secs(300));
            recent.record(now, 0);
        }
        assert_eq!((recent.len(), recent.max()), (1, Some(0)));
    }

    #[test]
    fn a_peak_holds_for_the_window_then_the_next_highest_takes_over() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let window = Duration::from_secs(10);
        let mut recent = RecentMax::default();
        recent.record(at(0), 5);
        recent.record(at(1), 3);
        recent.record(at(2), 1);
        recent.expire(at(10), window);
        assert_eq!(recent.max(), Some(5));
        recent.expire(at(11), window);
        assert_eq!(recent.max(), Some(3));
        recent.expire(at(13), window);
        assert_eq!(recent.max(), None);
    }

    proptest! {
        /// Against the definition: the maximum of every value recorded within the window.
        #[test]
        fn equals_the_maximum_of_all_samples_in_the_window(
            steps in proptest::collection::vec((0u64..4, 0i32..6), 1..200),
            window_secs in 0u64..20,
        ) {
            let start = Instant::now();
            let window = Duration::from_secs(window_secs);
            let mut recent = RecentMax::default();
            let mut all: Vec<(Instant, i32)> = Vec::new();
            let mut now = start;
            for (advance, value) in steps {
                now += Duration::from_secs(advance);
                recent.expire(now, window);
                let expected = all.iter().filter(|(at, _)| now.duration_since(*at) <= window).map(|(_, v)| *v).max();
                prop_assert_eq!(recent.max(), expected);
                recent.record(now, value);
                all.push((now, value));
            }
        }
    }
}
