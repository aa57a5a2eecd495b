//! Cost attribution: replica-seconds and CPU-core-seconds a pipeline's workers were given. Pure.

use std::time::Duration;

use k8s_openapi::api::core::v1::PodSpec;

use crate::api::Usage;

/// Adds `elapsed` of `replicas` workers, each requesting `cpu_cores`, to `usage`; returns the
/// replica-seconds and core-seconds added.
pub fn accrue(usage: &mut Usage, replicas: i32, cpu_cores: f64, elapsed: Duration) -> (f64, f64) {
    let replica_seconds = f64::from(replicas.max(0)) * elapsed.as_secs_f64();
    let core_seconds = replica_seconds * cpu_cores.max(0.0);
    usage.replica_seconds += replica_seconds;
    usage.cpu_core_seconds += core_seconds;
    (replica_seconds, core_seconds)
}

/// CPU cores one worker pod requests: the sum over its containers of `requests.cpu`, or of
/// `limits.cpu` where only a limit is set (Kubernetes then requests the limit). Init containers
/// run before the worker starts and are not counted.
pub fn cpu_request_cores(pod: &PodSpec) -> f64 {
    pod.containers
        .iter()
        .filter_map(|c| {
            let resources = c.resources.as_ref()?;
            let quantity = resources
                .requests
                .as_ref()
                .and_then(|r| r.get("cpu"))
                .or_else(|| resources.limits.as_ref().and_then(|l| l.get("cpu")))?;
            parse_cpu(&quantity.0)
        })
        .sum()
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
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn container(requests: Option<&str>, limits: Option<&str>) -> Container {
        let cpu = |v: Option<&str>| v.map(|v| BTreeMap::from([("cpu".to_owned(), Quantity(v.to_owned()))]));
        Container {
            resources: Some(ResourceRequirements {
                requests: cpu(requests),
                limits: cpu(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

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
    fn a_pod_requests_the_sum_of_its_containers() {
        let pod = PodSpec {
            containers: vec![container(Some("500m"), Some("2")), container(None, Some("1")), container(None, None)],
            init_containers: Some(vec![container(Some("4"), None)]),
            ..Default::default()
        };
        assert!((cpu_request_cores(&pod) - 1.5).abs() < 1e-9);
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
