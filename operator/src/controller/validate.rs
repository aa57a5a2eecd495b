//! The validate step: everything the apiserver's schema and CEL rules cannot check, turned into
//! typed values once, so later steps never re-parse strings.

use std::time::Duration;

use zeroflow_contract::duration::{DurationError, parse_bounded, parse_lease_duration, parse_timeout};

use crate::api::DataPipelineSpec;
use crate::scaler::warm::Schedule;
use zeroflow_core::scaling::windows::WarmWindow;

/// A spec the controller can act on, with its durations parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    pub timeout: Duration,
    pub resync_interval: Duration,
    pub idle_timeout: Duration,
    pub scale_down_stabilization: Duration,
    pub lease_duration: Duration,
    pub retry_backoff: Duration,
    /// `spec.scaling.schedules`, parsed.
    pub schedules: Vec<Schedule>,
}

/// Why a spec cannot be acted on; shown to the user in the `Ready` condition and an Event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct InvalidSpec {
    pub field: &'static str,
    pub reason: String,
}

/// Parses a duration field with the bounds the runtime honours (the CRD's CEL rules are built
/// from the same constants, [`zeroflow_contract::duration`]).
fn duration(
    field: &'static str,
    value: &str,
    parse: fn(&str) -> Result<Duration, DurationError>,
) -> Result<Duration, InvalidSpec> {
    parse(value).map_err(|e| InvalidSpec { field, reason: e.to_string() })
}

/// Parses the warm windows: what the CRD's patterns let through but a parser refuses (a minute
/// of 61, a time zone the tz database does not know, a schedule that never starts).
fn schedules(spec: &DataPipelineSpec) -> Result<Vec<Schedule>, InvalidSpec> {
    let now = chrono::Utc::now();
    spec.scaling
        .schedules
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let invalid = |reason: String| InvalidSpec {
                field: "spec.scaling.schedules",
                reason: format!("entry {i}: {reason}"),
            };
            let length = parse_bounded(&w.duration).map_err(|e| invalid(format!("duration: {e}")))?;
            let window = WarmWindow::parse(&w.schedule, &w.time_zone, length, w.min_replicas, now)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(Schedule { schedule: w.schedule.clone(), time_zone: w.time_zone.clone(), window })
        })
        .collect()
}

pub fn validate(spec: &DataPipelineSpec) -> Result<ValidSpec, InvalidSpec> {
    let valid = ValidSpec {
        timeout: duration("spec.transform.timeout", &spec.transform.timeout, parse_timeout)?,
        resync_interval: duration("spec.source.resyncInterval", &spec.source.resync_interval, parse_bounded)?,
        idle_timeout: duration("spec.scaling.idleTimeout", &spec.scaling.idle_timeout, parse_bounded)?,
        scale_down_stabilization: duration(
            "spec.scaling.scaleDownStabilization",
            &spec.scaling.scale_down_stabilization,
            parse_bounded,
        )?,
        lease_duration: duration("spec.delivery.leaseDuration", &spec.delivery.lease_duration, parse_lease_duration)?,
        retry_backoff: duration("spec.delivery.retryBackoff", &spec.delivery.retry_backoff, parse_bounded)?,
        schedules: schedules(spec)?,
    };
    if spec.scaling.min_replicas > spec.scaling.max_replicas {
        return Err(InvalidSpec {
            field: "spec.scaling",
            reason: "minReplicas must be less than or equal to maxReplicas".into(),
        });
    }
    Ok(valid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::minimal_spec;

    #[test]
    fn minimal_spec_is_valid_with_documented_defaults() {
        let valid = validate(&minimal_spec()).expect("minimal spec is valid");
        assert_eq!(valid.timeout, Duration::from_secs(600));
        assert_eq!(valid.idle_timeout, Duration::from_secs(60));
        assert_eq!(valid.lease_duration, Duration::from_secs(120));
    }

    #[test]
    fn names_the_offending_field() {
        let mut spec = minimal_spec();
        spec.scaling.idle_timeout = "soon".into();
        let err = validate(&spec).unwrap_err();
        assert_eq!(err.field, "spec.scaling.idleTimeout");
        assert!(err.to_string().starts_with("spec.scaling.idleTimeout: invalid duration \"soon\""), "{err}");
    }

    #[test]
    fn refuses_what_cel_cannot_express() {
        let mut spec = minimal_spec();
        spec.transform.timeout = "0s".into();
        assert_eq!(validate(&spec).unwrap_err().field, "spec.transform.timeout");

        let mut spec = minimal_spec();
        spec.delivery.lease_duration = "1s".into();
        assert_eq!(validate(&spec).unwrap_err().field, "spec.delivery.leaseDuration");

        let mut spec = minimal_spec();
        spec.source.resync_interval = "1000h".into();
        assert_eq!(validate(&spec).unwrap_err().field, "spec.source.resyncInterval");

        let mut spec = minimal_spec();
        spec.scaling.min_replicas = 5;
        spec.scaling.max_replicas = 2;
        assert_eq!(validate(&spec).unwrap_err().field, "spec.scaling");
    }
}
