//! The validate step: everything the apiserver's schema and CEL rules cannot check, turned into
//! typed values once, so later steps never re-parse strings.

use std::time::Duration;

use crate::api::{DataPipelineSpec, parse_duration};

/// A spec the controller can act on, with its durations parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    pub timeout: Duration,
    pub resync_interval: Duration,
    pub idle_timeout: Duration,
    pub scale_down_stabilization: Duration,
    pub lease_duration: Duration,
    pub retry_backoff: Duration,
}

/// Why a spec cannot be acted on; shown to the user in the `Ready` condition and an Event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct InvalidSpec {
    pub field: &'static str,
    pub reason: String,
}

const MIN_LEASE: Duration = Duration::from_secs(5);
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

fn duration(field: &'static str, value: &str) -> Result<Duration, InvalidSpec> {
    let parsed = parse_duration(value).map_err(|e| InvalidSpec { field, reason: e.to_string() })?;
    if parsed > MAX_DURATION {
        return Err(InvalidSpec { field, reason: format!("{value} is longer than the maximum of 168h") });
    }
    Ok(parsed)
}

pub fn validate(spec: &DataPipelineSpec) -> Result<ValidSpec, InvalidSpec> {
    let valid = ValidSpec {
        timeout: duration("spec.transform.timeout", &spec.transform.timeout)?,
        resync_interval: duration("spec.source.resyncInterval", &spec.source.resync_interval)?,
        idle_timeout: duration("spec.scaling.idleTimeout", &spec.scaling.idle_timeout)?,
        scale_down_stabilization: duration(
            "spec.scaling.scaleDownStabilization",
            &spec.scaling.scale_down_stabilization,
        )?,
        lease_duration: duration("spec.delivery.leaseDuration", &spec.delivery.lease_duration)?,
        retry_backoff: duration("spec.delivery.retryBackoff", &spec.delivery.retry_backoff)?,
    };
    if valid.timeout.is_zero() {
        return Err(InvalidSpec { field: "spec.transform.timeout", reason: "must be longer than 0s".into() });
    }
    if valid.lease_duration < MIN_LEASE {
        return Err(InvalidSpec { field: "spec.delivery.leaseDuration", reason: "must be at least 5s".into() });
    }
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
