//! Cost attribution: replica-seconds and CPU-core-seconds a pipeline's workers were given. Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Resources the workers of a pipeline consumed since it was created.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Worker replicas the scaler asked for, integrated over time, in seconds.
    #[serde(default)]
    pub replica_seconds: f64,
    /// The same, weighted by the CPU cores each worker pod requests (`transform.resources`
    /// requests, or limits when only limits are set), in core-seconds.
    #[serde(default)]
    pub cpu_core_seconds: f64,
}

/// Adds `elapsed` of `replicas` workers, each requesting `cpu_cores`, to `usage`; returns the
/// replica-seconds and core-seconds added.
pub fn accrue(usage: &mut Usage, replicas: i32, cpu_cores: f64, elapsed: Duration) -> (f64, f64) {
    let replica_seconds = f64::from(replicas.max(0)) * elapsed.as_secs_f64();
    let core_seconds = replica_seconds * cpu_cores.max(0.0);
    usage.replica_seconds += replica_seconds;
    usage.cpu_core_seconds += core_seconds;
    (replica_seconds, core_seconds)
}

/// A CPU quantity in cores: `250m`, `0.5`, `2`; `None` for anything else.
pub fn parse_cpu(quantity: &str) -> Option<f64> {
    let quantity = quantity.trim();
    let (number, scale) = match quantity.strip_suffix('m') {
        Some(milli) => (milli, 0.001),
        None => (quantity, 1.0),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_parse_to_cores() {
        assert_eq!(parse_cpu("250m"), Some(0.25));
        assert_eq!(parse_cpu("2"), Some(2.0));
        assert_eq!(parse_cpu("0.5"), Some(0.5));
        assert_eq!(parse_cpu("-1"), None);
        assert_eq!(parse_cpu("1Gi"), None);
        assert_eq!(parse_cpu("NaN"), None);
    }

    #[test]
    fn usage_grows_with_replicas_time_and_cpu() {
        let mut usage = Usage::default();
        assert_eq!(accrue(&mut usage, 3, 0.5, Duration::from_secs(10)), (30.0, 15.0));
        accrue(&mut usage, 0, 0.5, Duration::from_secs(100));
        accrue(&mut usage, 1, 0.0, Duration::from_secs(2));
        assert_eq!(usage, Usage { replica_seconds: 32.0, cpu_core_seconds: 15.0 });
    }
}
