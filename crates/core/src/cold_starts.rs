//! Cold starts: from the first object that finds a pipeline at zero workers to the first lease a
//! worker takes for it. The scaler opens one when it scales a pipeline up from zero; the work
//! API closes it on the next lease. Pure: callers pass the clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::PipelineKey;

#[derive(Debug, Default)]
pub struct ColdStarts {
    open: HashMap<PipelineKey, Instant>,
    last: HashMap<PipelineKey, Duration>,
}

impl ColdStarts {
    /// A pipeline at zero workers got work at `since`. An open cold start keeps its earlier time.
    pub fn begin(&mut self, pipeline: &PipelineKey, since: Instant) {
        self.open.entry(pipeline.clone()).or_insert(since);
    }

    /// Back to zero without any lease (no worker ever came): nothing to measure.
    pub fn cancel(&mut self, pipeline: &PipelineKey) {
        self.open.remove(pipeline);
    }

    /// A worker took a lease: closes an open cold start and returns how long it took.
    pub fn leased(&mut self, pipeline: &PipelineKey, now: Instant) -> Option<Duration> {
        let since = self.open.remove(pipeline)?;
        let took = now.saturating_duration_since(since);
        self.last.insert(pipeline.clone(), took);
        Some(took)
    }

    /// The last completed cold start, for status.
    pub fn last(&self, pipeline: &PipelineKey) -> Option<Duration> {
        self.last.get(pipeline).copied()
    }

    pub fn forget(&mut self, pipeline: &PipelineKey) {
        self.open.remove(pipeline);
        self.last.remove(pipeline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_start_runs_from_the_first_object_to_the_first_lease() {
        let p = PipelineKey::new("ns", "p");
        let t0 = Instant::now();
        let mut cold = ColdStarts::default();
        assert_eq!(cold.leased(&p, t0), None, "a warm pipeline's lease is no cold start");
        cold.begin(&p, t0);
        cold.begin(&p, t0 + Duration::from_millis(300));
        assert_eq!(cold.leased(&p, t0 + Duration::from_millis(900)), Some(Duration::from_millis(900)));
        assert_eq!(cold.leased(&p, t0 + Duration::from_secs(2)), None, "only the first lease counts");
        assert_eq!(cold.last(&p), Some(Duration::from_millis(900)));
        cold.begin(&p, t0);
        cold.cancel(&p);
        assert_eq!(cold.leased(&p, t0 + Duration::from_secs(3)), None);
        cold.forget(&p);
        assert_eq!(cold.last(&p), None);
    }
}
