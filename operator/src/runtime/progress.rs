//! The progress publisher: every couple of seconds, each pipeline's counts, usage, last cold
//! start and last event go to its metrics and, when they changed, to its status (through the
//! status writer); newly failed objects are announced with one `ObjectsFailed` Event. A task of
//! its own, outside the reconcile, so a busy pipeline causes no reconciles.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use crate::events::EventRecorder;
use serde_json::{Value, json};
use zeroflow_core::backlog::Counts;
use zeroflow_core::scaling::usage::Usage;

use super::{Pipeline, Pipelines};
use crate::api::{DataPipeline, DataPipelineStatus, RecentFailure};
use crate::controller::status::failed_note;
use crate::status_writer::{Concern, StatusWriter};

/// How often progress is looked at (writes happen only for what changed).
const PERIOD: Duration = Duration::from_secs(2);
/// Replica-seconds of new usage worth a status write on their own while workers run; status
/// would otherwise change every few seconds for every running pipeline.
const USAGE_WRITE_STEP: f64 = 60.0;

/// What has been published of a pipeline's progress; owned by this module.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Totals status showed when this replica took the pipeline up; the backlog counts from 0.
    base_succeeded: u64,
    base_failed: u64,
    /// Backlog failures already announced with an Event.
    announced_failed: u64,
    last_event: Option<SystemTime>,
}

impl Published {
    pub fn new(status: &DataPipelineStatus) -> Self {
        Self {
            base_succeeded: u64::try_from(status.succeeded).unwrap_or(0),
            base_failed: u64::try_from(status.failed).unwrap_or(0),
            announced_failed: 0,
            last_event: status.last_event_time.as_ref().map(|t| SystemTime::from(t.0)),
        }
    }

    /// A storage event brought new work.
    pub fn event_admitted(&mut self, at: SystemTime) {
        self.last_event = Some(at);
    }

    /// Whether a storage event brought work since the pipeline was taken up (or before, as
    /// status showed).
    pub fn last_event_seen(&self) -> bool {
        self.last_event.is_some()
    }

    /// Failures that only the ledger knew were re-driven: they no longer count.
    pub fn failures_redriven(&mut self, count: u64) {
        self.base_failed = self.base_failed.saturating_sub(count);
    }
}

/// One pipeline's progress, read under its lock.
struct Snapshot {
    counts: Counts,
    succeeded: u64,
    failed: u64,
    oldest_pending_seconds: f64,
    usage: Usage,
    replicas: i32,
    written_usage: Option<Usage>,
    last_cold_start: Option<Duration>,
    last_event: Option<SystemTime>,
    newly_failed: u64,
    last_failure: Option<(String, String)>,
    recent_failures: Vec<RecentFailure>,
    paused: bool,
}

fn snapshot(pipelines: &Pipelines, pipeline: &Pipeline) -> Snapshot {
    let now = pipelines.now();
    let mut state = pipeline.lock();
    let counts = state.backlog.counts();
    let published = &mut state.progress;
    let newly_failed = counts.failed.saturating_sub(published.announced_failed);
    published.announced_failed = counts.failed;
    let (succeeded, failed) = (published.base_succeeded + counts.succeeded, published.base_failed + counts.failed);
    let last_event = published.last_event;
    Snapshot {
        counts,
        succeeded,
        failed,
        oldest_pending_seconds: state.backlog.oldest_pending_age(now).map_or(0.0, |ms| ms as f64 / 1000.0),
        usage: state.scale.usage().clone(),
        replicas: state.scale.replicas().unwrap_or(0),
        written_usage: state.status.get::<Usage>(Concern::Progress, "usage"),
        last_cold_start: state.cold_start.last(),
        last_event,
        newly_failed: if newly_failed > 0 { newly_failed } else { 0 },
        last_failure: state.backlog.last_failure().cloned(),
        recent_failures: state.failures.entries().cloned().collect(),
        paused: state.settings.paused.is_some(),
    }
}

/// Publishes every pipeline's progress until the process stops.
pub async fn run(pipelines: Arc<Pipelines>, writer: StatusWriter, recorder: EventRecorder) {
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for pipeline in pipelines.all() {
            let s = snapshot(&pipelines, &pipeline);
            let key = &pipeline.key;
            let labels = [key.namespace.as_str(), key.name.as_str()];
            let metrics = pipelines.metrics();
            metrics.pending.with_label_values(&labels).set(i64::try_from(s.counts.pending).unwrap_or(i64::MAX));
            metrics.in_flight.with_label_values(&labels).set(i64::try_from(s.counts.in_flight).unwrap_or(i64::MAX));
            metrics.oldest_pending_age.with_label_values(&labels).set(s.oldest_pending_seconds);
            metrics.paused.with_label_values(&labels).set(i64::from(s.paused));
            if s.newly_failed > 0 {
                let note = failed_note(s.newly_failed, &key.name, s.last_failure.as_ref());
                announce(&recorder, key, &note).await;
            }
            writer.apply(key, Concern::Progress, fields(&s));
        }
    }
}

/// The progress fields of status. Usage goes in steps (see [`usage_due`]).
fn fields(s: &Snapshot) -> Value {
    let mut fields = json!({
        "pending": s.counts.pending,
        "inFlight": s.counts.in_flight,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "recentFailures": s.recent_failures,
    });
    let usage = rounded(&s.usage);
    if usage_due(s.written_usage.as_ref(), &usage, s.replicas) {
        fields["usage"] = json!(usage);
    }
    if let Some(cold) = s.last_cold_start {
        fields["lastColdStartSeconds"] = json!(round_ms(cold.as_secs_f64()));
    }
    if let Some(at) = s.last_event {
        fields["lastEventTime"] = json!(Time(k8s_openapi::jiff::Timestamp::try_from(at).unwrap_or_default()));
    }
    fields
}

/// Whether accrued usage should be written over `written`: after every [`USAGE_WRITE_STEP`]
/// replica-seconds, and the final figure once the workers are at zero.
pub fn usage_due(written: Option<&Usage>, accrued: &Usage, replicas: i32) -> bool {
    let Some(written) = written else { return accrued.replica_seconds > 0.0 };
    let grown = accrued.replica_seconds - written.replica_seconds;
    grown >= USAGE_WRITE_STEP || (replicas == 0 && accrued.replica_seconds != written.replica_seconds)
}

/// Rounded to milliseconds, so status is not rewritten for noise.
fn rounded(usage: &Usage) -> Usage {
    Usage { replica_seconds: round_ms(usage.replica_seconds), cpu_core_seconds: round_ms(usage.cpu_core_seconds) }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

async fn announce(recorder: &EventRecorder, key: &zeroflow_core::PipelineKey, note: &str) {
    let reference = ObjectReference {
        api_version: Some(DataPipeline::api_version(&()).into()),
        kind: Some(DataPipeline::kind(&()).into()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "ObjectsFailed".into(),
        note: Some(note.to_owned()),
        action: "Process".into(),
        secondary: None,
    };
    match recorder.publish(&event, &reference).await {
        Ok(()) => tracing::info!(%key, note, "event"),
        Err(e) => tracing::warn!(%key, error = %e, "failed to publish Event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_on_from_what_status_showed() {
        let status = DataPipelineStatus { succeeded: 40, failed: 2, ..DataPipelineStatus::default() };
        let mut published = Published::new(&status);
        let counts = Counts { succeeded: 3, failed: 1, ..Counts::default() };
        assert_eq!((published.base_succeeded + counts.succeeded, published.base_failed + counts.failed), (43, 3));
        published.failures_redriven(5);
        assert_eq!(published.base_failed, 0, "never below zero");
    }

    #[test]
    fn usage_is_written_in_steps_while_workers_run_and_finally_at_zero() {
        let written = Usage { replica_seconds: 100.0, cpu_core_seconds: 50.0 };
        let accrued = |replica_seconds| Usage { replica_seconds, cpu_core_seconds: 0.0 };
        assert!(!usage_due(Some(&written), &accrued(130.0), 2));
        assert!(usage_due(Some(&written), &accrued(160.0), 2));
        assert!(usage_due(Some(&written), &accrued(100.5), 0), "the last figure lands once at zero");
        assert!(!usage_due(Some(&written), &accrued(100.0), 0));
        assert!(!usage_due(None, &accrued(0.0), 0), "nothing to say yet");
        assert!(usage_due(None, &accrued(1.0), 1));
    }

    #[test]
    fn progress_fields_carry_times_and_rounded_usage() {
        let s = Snapshot {
            counts: Counts { pending: 2, in_flight: 1, ..Counts::default() },
            succeeded: 7,
            failed: 1,
            oldest_pending_seconds: 0.0,
            usage: Usage { replica_seconds: 12.345_67, cpu_core_seconds: 6.000_1 },
            replicas: 0,
            written_usage: None,
            last_cold_start: Some(Duration::from_millis(1250)),
            last_event: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            newly_failed: 0,
            last_failure: None,
            recent_failures: Vec::new(),
            paused: false,
        };
        let f = fields(&s);
        assert_eq!(
            (f["pending"].as_u64(), f["inFlight"].as_u64(), f["succeeded"].as_u64()),
            (Some(2), Some(1), Some(7))
        );
        assert_eq!(f["usage"]["replicaSeconds"], json!(12.346));
        assert_eq!(f["lastColdStartSeconds"], json!(1.25));
        assert_eq!(f["lastEventTime"], json!("2027-01-15T08:00:00Z"));
        assert_eq!(f["recentFailures"], json!([]));
    }

    /// The status writer keeps only the fields a concern owns: a progress field it does not
    /// list would be dropped without a word (status.recentFailures once was).
    #[test]
    fn every_progress_field_is_owned_by_the_progress_concern() {
        let failure = crate::api::RecentFailure {
            key: "bad/1.csv".into(),
            etag: Some("e1".into()),
            version_id: None,
            attempts: 2,
            exit_code: Some(3),
            message: "cannot parse".into(),
            failed_at: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        let s = Snapshot {
            counts: Counts::default(),
            succeeded: 0,
            failed: 1,
            oldest_pending_seconds: 0.0,
            usage: Usage { replica_seconds: 1.0, cpu_core_seconds: 1.0 },
            replicas: 0,
            written_usage: None,
            last_cold_start: Some(Duration::from_millis(1)),
            last_event: Some(SystemTime::UNIX_EPOCH),
            newly_failed: 0,
            last_failure: None,
            recent_failures: vec![failure],
            paused: false,
        };
        let Value::Object(f) = fields(&s) else { panic!("fields are an object") };
        let owned = crate::status_writer::Concern::Progress.fields();
        for key in f.keys() {
            assert!(owned.contains(&key.as_str()), "status.{key} is published but not owned by Progress");
        }
        assert_eq!(f["recentFailures"][0]["key"], json!("bad/1.csv"));
    }
}
