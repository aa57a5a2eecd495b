//! The status step: conditions and counts derived from what was observed, never from intent.

use k8s_openapi::api::apps::v1::Deployment;

use super::observe::Trouble;
use crate::api::conditions::{ACTIVE, DEGRADED, Desired, PAUSED, READY, SOURCE_REACHABLE};
use crate::store::StoreError;

/// What the controller learned about the worker Deployment in this reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerObservation {
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The Deployment controller has seen the latest Deployment spec.
    pub rollout_observed: bool,
    /// Why workers that should run cannot ([`super::observe::trouble`]), or why the pipeline is
    /// stopped (a cycle): not Ready, and Degraded, with the cluster's own words.
    pub trouble: Option<Trouble>,
    /// The replicas held while paused; `None` when the pipeline is not paused.
    pub paused: Option<i32>,
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
            trouble: None,
            paused: None,
        }
    }
}

/// How the reconcile went, as far as conditions are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconciled {
    Applied(WorkerObservation),
    InvalidSpec(String),
    ApplyFailed(String),
}

/// Conditions for an outcome. Ready means the workers run the current spec at the wanted
/// scale; a pipeline idle at zero replicas is Ready and not Active. An unreachable source
/// degrades the pipeline without making its workers un-Ready.
pub fn conditions(outcome: &Reconciled, source: Option<&Result<(), StoreError>>) -> Vec<Desired> {
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

fn outcome_conditions(outcome: &Reconciled) -> Vec<Desired> {
    match outcome {
        Reconciled::Applied(w) => {
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
            let paused = match w.paused {
                Some(held) => Desired::new(
                    PAUSED,
                    true,
                    "PausedByAnnotation",
                    format!(
                        "zeroflow.dev/paused: objects are admitted and wait; nothing is leased; {held} workers held"
                    ),
                ),
                None => Desired::new(PAUSED, false, "NotPaused", ""),
            };
            match &w.trouble {
                Some(t) => vec![
                    Desired::new(READY, false, &t.reason, t.message.clone()),
                    active,
                    paused,
                    Desired::new(DEGRADED, true, &t.reason, t.message.clone()),
                ],
                None => vec![ready, active, paused, Desired::new(DEGRADED, false, "AsExpected", "")],
            }
        }
        Reconciled::InvalidSpec(message) => vec![
            Desired::new(READY, false, "InvalidSpec", message.clone()),
            Desired::new(DEGRADED, true, "InvalidSpec", message.clone()),
        ],
        Reconciled::ApplyFailed(message) => vec![
            Desired::new(READY, false, "ApplyFailed", message.clone()),
            Desired::new(DEGRADED, true, "ApplyFailed", message.clone()),
        ],
    }
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
        ". See status.recentFailures; all errors are in the ledger. Re-drive with: kubectl annotate dp {pipeline} {}=\"$(date +%s)\" --overwrite",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(desired: i32, replicas: i32, ready: i32) -> Reconciled {
        Reconciled::Applied(WorkerObservation {
            desired,
            replicas,
            ready,
            updated: replicas,
            rollout_observed: true,
            trouble: None,
            paused: None,
        })
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
            &Reconciled::Applied(WorkerObservation {
                desired: 3,
                replicas: 3,
                ready: 1,
                updated: 3,
                rollout_observed: true,
                trouble: None,
                paused: None,
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
            &Reconciled::Applied(WorkerObservation {
                desired: 0,
                replicas: 0,
                ready: 0,
                updated: 0,
                rollout_observed: false,
                trouble: None,
                paused: None,
            }),
            None,
        );
        assert_eq!(find(&c, READY).reason, "RollingOut");
    }

    #[test]
    fn a_paused_pipeline_says_so_and_how_many_workers_it_holds() {
        let c = conditions(&observed(0, 0, 0), None);
        assert_eq!((find(&c, PAUSED).status, find(&c, PAUSED).reason.as_str()), (false, "NotPaused"));
        let w = WorkerObservation {
            paused: Some(1),
            desired: 1,
            replicas: 1,
            ready: 1,
            updated: 1,
            rollout_observed: true,
            ..Default::default()
        };
        let c = conditions(&Reconciled::Applied(w), None);
        assert_eq!((find(&c, PAUSED).status, find(&c, PAUSED).reason.as_str()), (true, "PausedByAnnotation"));
        assert!(find(&c, PAUSED).message.contains("1 workers held"), "{}", find(&c, PAUSED).message);
        assert!(find(&c, READY).status, "held workers are ready workers");
    }

    #[test]
    fn all_ready_workers_are_ready() {
        let c = conditions(&observed(2, 2, 2), None);
        assert!(find(&c, READY).status);
        assert_eq!(find(&c, READY).reason, "WorkersReady");
    }

    #[test]
    fn workers_that_cannot_run_degrade_with_the_cluster_s_reason() {
        let trouble = Trouble { reason: "ImagePullBackOff".into(), message: "pod p: Back-off pulling image".into() };
        let w = WorkerObservation {
            desired: 1,
            replicas: 1,
            rollout_observed: true,
            trouble: Some(trouble),
            ..Default::default()
        };
        let c = conditions(&Reconciled::Applied(w), Some(&Ok(())));
        assert_eq!((find(&c, READY).status, find(&c, READY).reason.as_str()), (false, "ImagePullBackOff"));
        assert_eq!(
            (find(&c, DEGRADED).status, find(&c, DEGRADED).message.as_str()),
            (true, "pod p: Back-off pulling image")
        );
        assert!(find(&c, ACTIVE).status, "it wants workers");
        assert!(find(&c, SOURCE_REACHABLE).status);
    }

    #[test]
    fn invalid_spec_degrades_without_claiming_activity() {
        let c = conditions(&Reconciled::InvalidSpec("spec.x: bad".into()), None);
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
