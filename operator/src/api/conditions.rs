//! Status conditions, following the Kubernetes API conventions: one entry per `type`, and
//! `lastTransitionTime` moves only when `status` changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{Schema, json_schema};

pub const READY: &str = "Ready";
pub const SOURCE_REACHABLE: &str = "SourceReachable";
pub const ACTIVE: &str = "Active";
pub const DEGRADED: &str = "Degraded";
pub const PAUSED: &str = "Paused";
/// True when the operator copies the runner with an init container although the pipeline
/// would otherwise get an image volume (the apiserver drops them, or a worker could not start
/// with one); its reason and message say why.
pub const RUNNER_FALLBACK: &str = "RunnerFallback";

/// A condition as the operator wants it, before timestamps and generation are filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self { type_, status, reason: reason.to_owned(), message: message.into() }
    }
}

fn status_word(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Merges `desired` into `current`: conditions keep their `lastTransitionTime` unless their
/// status flips; reason, message and observedGeneration always follow the latest observation.
/// Conditions of other types (written by someone else) are kept as they are.
pub fn merge(current: &[Condition], desired: &[Desired], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let mut merged: Vec<Condition> =
        current.iter().filter(|c| !desired.iter().any(|d| d.type_ == c.type_)).cloned().collect();
    for d in desired {
        let status = status_word(d.status);
        let last_transition_time = match current.iter().find(|c| c.type_ == d.type_) {
            Some(old) if old.status == status => old.last_transition_time.clone(),
            _ => now.clone(),
        };
        merged.push(Condition {
            type_: d.type_.to_owned(),
            status: status.to_owned(),
            reason: d.reason.clone(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    merged.sort_by(|a, b| a.type_.cmp(&b.type_));
    merged
}

/// Finds a condition's status by type: `Some(true)` for `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> Option<bool> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.status == "True")
}

/// Schema for `status.conditions`: a list-map keyed by `type`, so server-side apply merges
/// conditions by type instead of replacing the whole list.
pub fn conditions_schema(_: &mut schemars::SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "description": "Type of the condition: Ready, SourceReachable, Active, Paused or Degraded."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "Status of the condition."},
                "reason": {"type": "string", "description": "One CamelCase word for why the condition is in its status."},
                "message": {"type": "string", "description": "Details for a person."},
                "observedGeneration": {"type": "integer", "format": "int64", "description": "The generation the condition was set for."},
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(&[], &[Desired::new(READY, false, "Creating", "creating")], Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));

        let same = merge(&first, &[Desired::new(READY, false, "Waiting", "still waiting")], Some(2), &at(200));
        assert_eq!(same[0].last_transition_time, at(100), "same status keeps its transition time");
        assert_eq!(same[0].reason, "Waiting");
        assert_eq!(same[0].observed_generation, Some(2));

        let flipped = merge(&same, &[Desired::new(READY, true, "Reconciled", "ok")], Some(2), &at(300));
        assert_eq!(flipped[0].last_transition_time, at(300));
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn foreign_conditions_are_kept_and_order_is_stable() {
        let foreign = Condition {
            type_: "Custom".into(),
            status: "True".into(),
            reason: "Other".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: at(1),
        };
        let merged = merge(
            std::slice::from_ref(&foreign),
            &[Desired::new(READY, true, "R", ""), Desired::new(ACTIVE, false, "Idle", "")],
            None,
            &at(5),
        );
        let types: Vec<_> = merged.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Active", "Custom", "Ready"]);
        assert!(merged.contains(&foreign));
        assert_eq!(is_true(&merged, READY), Some(true));
        assert_eq!(is_true(&merged, ACTIVE), Some(false));
        assert_eq!(is_true(&merged, DEGRADED), None);
    }
}
