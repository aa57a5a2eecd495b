//! A pipeline's cold start: from the first object that finds it at zero workers to the first
//! lease a worker takes for it. The scaler opens one when it scales up from zero; the work API
//! closes it on the next lease. Pure: callers pass the clock.

use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone)]
pub struct ColdStart {
    open: Option<Instant>,
    last: Option<Duration>,
}

impl ColdStart {
    /// Work arrived at `since` for a pipeline at zero workers. An open cold start keeps its
    /// earlier time.
    pub fn begin(&mut self, since: Instant) {
        self.open.get_or_insert(since);
    }

    /// Back to zero without any lease (no worker ever came): nothing to measure.
    pub fn cancel(&mut self) {
        self.open = None;
    }

    /// A worker took a lease: closes an open cold start and returns how long it took.
    pub fn leased(&mut self, now: Instant) -> Option<Duration> {
        let since = self.open.take()?;
        let took = now.saturating_duration_since(since);
        self.last = Some(took);
        Some(took)
    }

    /// The last completed cold start, for status.
    pub fn last(&self) -> Option<Duration> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_start_runs_from_the_first_object_to_the_first_lease() {
        let t0 = Instant::now();
        let mut cold = ColdStart::default();
        assert_eq!(cold.leased(t0), None, "a warm pipeline's lease is no cold start");
        cold.begin(t0);
        cold.begin(t0 + Duration::from_millis(300));
        assert_eq!(cold.leased(t0 + Duration::from_millis(900)), Some(Duration::from_millis(900)));
        assert_eq!(cold.leased(t0 + Duration::from_secs(2)), None, "only the first lease counts");
        assert_eq!(cold.last(), Some(Duration::from_millis(900)));
        cold.begin(t0);
        cold.cancel();
        assert_eq!(cold.leased(t0 + Duration::from_secs(3)), None);
    }
}
