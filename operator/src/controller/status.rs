//! The status step: conditions and counts derived from what was observed, never from intent.

use k8s_openapi::api::apps::v1::Deployment;

use std::time::Duration;

use crate::api::conditions::{ACTIVE, DEGRADED, Desired, READY, SOURCE_REACHABLE};
use crate::api::{DataPipelineStatus, Usage};
use crate::store::StoreError;
use zeroflow_core::backlog::Counts;

/// What the controller learned about the worker Deployment in this reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerObservation {
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The Deployment controller has seen the latest Deployment spec.
    pub rollout_observed: bool,
}

impl WorkerObservation {
    pub fn from_deployment(deployment: &Deployment) -> Self {
        let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let status = deployment.status.clone().unwrap_or_default();
        let generation = deployment.metadata.generation.unwrap_or(0);
        Self {
            desired,
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            rollout_observed: status.observed_generation.unwrap_or(0) >= generation,
        }
    }
}

/// How the reconcile went, as far as status is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied(WorkerObservation),
    InvalidSpec(String),
    ApplyFailed(String),
}

/// Conditions for an outcome. Ready means the workers run the current spec at the wanted
/// scale; a pipeline idle at zero replicas is Ready and not Active. An unreachable source
/// degrades the pipeline without making its workers un-Ready.
pub fn conditions(outcome: &Outcome, source: Option<&Result<(), StoreError>>) -> Vec<Desired> {
    let mut conditions = outcome_conditions(outcome);
    match source {
        Some(Ok(())) => {
            conditions.push(Desired::new(SOURCE_REACHABLE, true, "Listed", "the source bucket can be listed"))
        }
        Some(Err(e)) => {
            conditions.push(Desired::new(SOURCE_REACHABLE, false, e.reason(), e.to_string()));
            if let Some(degraded) = conditions.iter_mut().find(|c| c.type_ == DEGRADED && !c.status) {
                *degraded = Desired::new(DEGRADED, true, e.reason(), format!("source: {e}"));
            }
        }
        None => {}
    }
    conditions
}

fn outcome_conditions(outcome: &Outcome) -> Vec<Desired> {
    match outcome {
        Outcome::Applied(w) => {
            let rolled_out = w.rollout_observed && w.updated >= w.desired && w.replicas == w.desired;
            let ready = if !rolled_out {
                Desired::new(
                    READY,
                    false,
                    "RollingOut",
                    format!("{}/{} workers run the current spec", w.updated, w.desired),
                )
            } else if w.ready < w.desired {
                Desired::new(READY, false, "WorkersStarting", format!("{}/{} workers ready", w.ready, w.desired))
            } else if w.desired == 0 {
                Desired::new(READY, true, "Idle", "scaled to zero; workers start when objects arrive")
            } else {
                Desired::new(READY, true, "WorkersReady", format!("{} workers ready", w.ready))
            };
            let active = if w.desired > 0 || w.replicas > 0 {
                Desired::new(ACTIVE, true, "Processing", format!("{} workers wanted", w.desired))
            } else {
                Desired::new(ACTIVE, false, "ScaledToZero", "no workers are running")
            };
            vec![ready, active, Desired::new(DEGRADED, false, "AsExpected", "")]
        }
        Outcome::InvalidSpec(message) => vec![
            Desired::new(READY, false, "InvalidSpec", message.clone()),
            Desired::new(DEGRADED, true, "InvalidSpec", message.clone()),
        ],
        Outcome::ApplyFailed(message) => vec![
            Desired::new(READY, false, "ApplyFailed", message.clone()),
            Desired::new(DEGRADED, true, "ApplyFailed", message.clone()),
        ],
    }
}

/// What the event path measured since status was last written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub counts: Counts,
    /// Accrued by the scaler; `None` before it tracks the pipeline.
    pub usage: Option<Usage>,
    pub last_cold_start: Option<Duration>,
}

/// Copies the progress into a status. Usage is rounded to milliseconds, so status is not
/// rewritten for noise.
pub fn with_progress(mut status: DataPipelineStatus, progress: &Progress) -> DataPipelineStatus {
    let counts = &progress.counts;
    status.pending = i64::try_from(counts.pending).unwrap_or(i64::MAX);
    status.in_flight = i64::try_from(counts.in_flight).unwrap_or(i64::MAX);
    status.succeeded = i64::try_from(counts.succeeded).unwrap_or(i64::MAX);
    status.failed = i64::try_from(counts.failed).unwrap_or(i64::MAX);
    if let Some(usage) = &progress.usage {
        status.usage = Usage {
            replica_seconds: round_ms(usage.replica_seconds),
            cpu_core_seconds: round_ms(usage.cpu_core_seconds),
        };
    }
    if let Some(cold) = progress.last_cold_start {
        status.last_cold_start_seconds = Some(round_ms(cold.as_secs_f64()));
    }
    status
}

/// Replica-seconds of new usage worth a status write on their own while workers run; status
/// would otherwise change every few seconds for every running pipeline.
const USAGE_WRITE_STEP: f64 = 60.0;

/// Whether accrued usage should be written to a status that shows `written`: after every
/// [`USAGE_WRITE_STEP`], and the final figure once the workers are at zero.
pub fn usage_due(written: &Usage, accrued: &Usage, replicas: i32) -> bool {
    let grown = accrued.replica_seconds - written.replica_seconds;
    grown >= USAGE_WRITE_STEP || (replicas == 0 && round_ms(accrued.replica_seconds) != written.replica_seconds)
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The same progress as a merge patch of status.
pub fn progress_patch(progress: &Progress) -> serde_json::Value {
    let status = with_progress(DataPipelineStatus::default(), progress);
    let mut patch = serde_json::json!({
        "pending": status.pending,
        "inFlight": status.in_flight,
        "succeeded": status.succeeded,
        "failed": status.failed,
    });
    if progress.usage.is_some() {
        patch["usage"] = serde_json::json!(status.usage);
    }
    if let Some(seconds) = status.last_cold_start_seconds {
        patch["lastColdStartSeconds"] = serde_json::json!(seconds);
    }
    patch
}

/// The note of an `ObjectsFailed` Event: how many failed, the latest one's key and error (the
/// end of its stderr, which holds the cause), and how to re-drive.
pub fn failed_note(newly_failed: u64, pipeline: &str, last: Option<&(String, String)>) -> String {
    // Event notes are limited to 1 KiB; keys and errors are cut (in bytes, at character
    // boundaries) to leave room for the rest.
    const KEY_BYTES: usize = 120;
    const ERROR_BYTES: usize = 500;
    let mut note = format!("{newly_failed} object(s) failed every attempt");
    if let Some((key, error)) = last {
        let key = &key[..floor_char_boundary(key, KEY_BYTES)];
        let mut start = error.len().saturating_sub(ERROR_BYTES);
        while !error.is_char_boundary(start) {
            start += 1;
        }
        note.push_str(&format!("; latest {key:?}: {}", error[start..].trim()));
    }
    note.push_str(&format!(
        ". All errors are in the ledger. Re-drive with: kubectl annotate dp {pipeline} {}=\"$(date +%s)\" --overwrite",
        crate::api::REDRIVE_ANNOTATION
    ));
    note
}

/// The largest index at most `max` that is a character boundary of `text`.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Copies the worker counts into a status.
pub fn with_workers(mut status: DataPipelineStatus, worker_name: &str, w: &WorkerObservation) -> DataPipelineStatus {
    status.worker_deployment = Some(worker_name.to_owned());
    status.replicas = w.replicas;
    status.ready_replicas = w.ready;
    status.desired_replicas = w.desired;
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(desired: i32, replicas: i32, ready: i32) -> Outcome {
        Outcome::Applied(WorkerObservation { desired, replicas, ready, updated: replicas, rollout_observed: true })
    }

    fn find<'a>(conds: &'a [Desired], t: &str) -> &'a Desired {
        conds.iter().find(|c| c.type_ == t).expect("condition present")
    }

    #[test]
    fn idle_at_zero_is_ready_and_not_active() {
        let c = conditions(&observed(0, 0, 0), None);
        assert!(find(&c, READY).status);
        assert_eq!(find(&c, READY).reason, "Idle");
        assert!(!find(&c, ACTIVE).status);
        assert!(!find(&c, DEGRADED).status);
    }

    #[test]
    fn scaling_up_is_active_but_not_yet_ready() {
        let c = conditions(
            &Outcome::Applied(WorkerObservation {
                desired: 3,
                replicas: 3,
                ready: 1,
                updated: 3,
                rollout_observed: true,
            }),
            None,
        );
        assert!(!find(&c, READY).status);
        assert_eq!(find(&c, READY).reason, "WorkersStarting");
        assert!(find(&c, ACTIVE).status);
    }

    #[test]
    fn an_unobserved_rollout_is_not_ready() {
        let c = conditions(
            &Outcome::Applied(WorkerObservation {
                desired: 0,
                replicas: 0,
                ready: 0,
                updated: 0,
                rollout_observed: false,
            }),
            None,
        );
        assert_eq!(find(&c, READY).reason, "RollingOut");
    }

    #[test]
    fn all_ready_workers_are_ready() {
        let c = conditions(&observed(2, 2, 2), None);
        assert!(find(&c, READY).status);
        assert_eq!(find(&c, READY).reason, "WorkersReady");
    }

    #[test]
    fn invalid_spec_degrades_without_claiming_activity() {
        let c = conditions(&Outcome::InvalidSpec("spec.x: bad".into()), None);
        assert!(!find(&c, READY).status);
        assert!(find(&c, DEGRADED).status);
        assert_eq!(find(&c, DEGRADED).message, "spec.x: bad");
        assert!(c.iter().all(|d| d.type_ != ACTIVE));
    }

    #[test]
    fn source_reachability_is_reported_and_degrades_only_when_failing() {
        let ok = conditions(&observed(0, 0, 0), Some(&Ok(())));
        assert!(find(&ok, SOURCE_REACHABLE).status);
        assert!(!find(&ok, DEGRADED).status);

        let missing = Err(StoreError::BucketNotFound("raw".into()));
        let c = conditions(&observed(0, 0, 0), Some(&missing));
        assert!(!find(&c, SOURCE_REACHABLE).status);
        assert_eq!(find(&c, SOURCE_REACHABLE).reason, "BucketNotFound");
        assert!(find(&c, DEGRADED).status);
        assert_eq!(find(&c, DEGRADED).message, "source: bucket \"raw\" does not exist");
        assert!(find(&c, READY).status, "idle workers are still ready");
    }

    #[test]
    fn progress_reaches_status_and_its_patch() {
        let progress = Progress {
            counts: Counts { pending: 2, in_flight: 1, succeeded: 7, failed: 1 },
            usage: Some(Usage { replica_seconds: 12.345_67, cpu_core_seconds: 6.000_1 }),
            last_cold_start: Some(Duration::from_millis(1250)),
        };
        let status = with_progress(DataPipelineStatus::default(), &progress);
        assert_eq!((status.pending, status.in_flight, status.succeeded, status.failed), (2, 1, 7, 1));
        assert_eq!(status.usage, Usage { replica_seconds: 12.346, cpu_core_seconds: 6.0 });
        assert_eq!(status.last_cold_start_seconds, Some(1.25));
        let patch = progress_patch(&progress);
        assert_eq!(patch["usage"]["replicaSeconds"], serde_json::json!(12.346));
        assert_eq!(patch["lastColdStartSeconds"], serde_json::json!(1.25));
        let bare = progress_patch(&Progress::default());
        assert!(bare.get("usage").is_none() && bare.get("lastColdStartSeconds").is_none(), "{bare}");
    }

    #[test]
    fn usage_is_written_in_steps_while_workers_run_and_finally_at_zero() {
        let written = Usage { replica_seconds: 100.0, cpu_core_seconds: 50.0 };
        let accrued = |replica_seconds| Usage { replica_seconds, cpu_core_seconds: 0.0 };
        assert!(!usage_due(&written, &accrued(130.0), 2));
        assert!(usage_due(&written, &accrued(160.0), 2));
        assert!(usage_due(&written, &accrued(100.5), 0), "the last figure lands once at zero");
        assert!(!usage_due(&written, &accrued(100.0), 0));
    }

    #[test]
    fn failed_events_show_the_latest_error_tail_within_bounds() {
        let error = format!("{}\nValueError: bad row 3", "x".repeat(2000));
        let note = failed_note(2, "invoices", Some(&("in/a.csv".into(), error)));
        assert!(note.starts_with("2 object(s) failed every attempt; latest \"in/a.csv\": "), "{note}");
        assert!(note.contains("ValueError: bad row 3"), "the end of stderr is kept: {note}");
        assert!(note.contains("kubectl annotate dp invoices zeroflow.dev/redrive="), "{note}");
        assert!(note.len() < 1024, "Event notes are limited to 1 KiB: {}", note.len());
        assert!(!failed_note(1, "p", None).contains("latest"));
        // Multi-byte text is cut at character boundaries and still fits with the hint.
        let wide = failed_note(1, "p", Some(&("ü".repeat(300), "日本".repeat(400))));
        assert!(wide.len() < 1000 && wide.ends_with("--overwrite"), "{}", wide.len());
    }
}
