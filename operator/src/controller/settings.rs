//! Part of the build step: what a spec means for the pipeline's runtime (its route, backlog,
//! scaling and resync settings). Pure.

use std::time::{Duration, SystemTime};

use kube::ResourceExt;
use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::BacklogConfig;
use zeroflow_core::resync::SourceFilter;
use zeroflow_core::routing::{Location, Route, RouteError};

use super::build::{cpu_request_cores, worker_name};
use super::validate::{InvalidSpec, ValidSpec};
use crate::api::DataPipeline;
use crate::runtime::Settings;
use crate::scaler::ScaleSpec;

/// Longest backoff between attempts, whatever the base and attempt count.
const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;

pub fn pipeline_key(pipeline: &DataPipeline) -> PipelineKey {
    PipelineKey::new(pipeline.namespace().unwrap_or_default(), pipeline.name_any())
}

/// Where the pipeline's ledger lives in the sink bucket.
pub fn ledger_prefix(pipeline: &DataPipeline) -> String {
    pipeline.spec.delivery.ledger_prefix.clone().unwrap_or_else(|| {
        format!(".zeroflow/ledger/{}/{}/", pipeline.namespace().unwrap_or_default(), pipeline.name_any())
    })
}

/// The bucket outputs and the ledger go to.
pub fn sink_bucket(pipeline: &DataPipeline) -> &str {
    pipeline.spec.sink.bucket.as_deref().unwrap_or(&pipeline.spec.source.bucket)
}

/// The gateway route of a pipeline: its source filter minus its own outputs and ledger.
pub fn route(pipeline: &DataPipeline) -> Result<Route, RouteError> {
    let source = &pipeline.spec.source;
    let ledger = ledger_prefix(pipeline);
    Route::for_pipeline(
        &pipeline_key(pipeline),
        Location { bucket: &source.bucket, prefix: source.prefix.as_deref().unwrap_or_default() },
        source.suffix.as_deref(),
        Location { bucket: sink_bucket(pipeline), prefix: &pipeline.spec.sink.prefix },
        Location { bucket: sink_bucket(pipeline), prefix: &ledger },
    )
}

pub fn backlog_config(pipeline: &DataPipeline, spec: &ValidSpec) -> BacklogConfig {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    BacklogConfig {
        max_attempts: u32::try_from(pipeline.spec.delivery.max_attempts.max(1)).unwrap_or(1),
        lease_duration_ms: millis(spec.lease_duration),
        backoff_base_ms: millis(spec.retry_backoff),
        backoff_max_ms: MAX_BACKOFF_MS.max(millis(spec.retry_backoff)),
        ..BacklogConfig::default()
    }
}

/// Everything the runtime needs from a valid spec; `cpu_per_replica` comes from the built pod
/// template. Fails only on a route that would consume its own outputs.
pub fn settings(pipeline: &DataPipeline, spec: &ValidSpec) -> Result<Settings, InvalidSpec> {
    let route = route(pipeline).map_err(|e| InvalidSpec { field: "spec.sink", reason: e.to_string() })?;
    let scaling = &pipeline.spec.scaling;
    let source = &pipeline.spec.source;
    let created = pipeline.metadata.creation_timestamp.as_ref().map(|t| SystemTime::from(t.0));
    Ok(Settings {
        source_filter: SourceFilter {
            bucket: source.bucket.clone(),
            prefix: source.prefix.clone().unwrap_or_default(),
            suffix: source.suffix.clone(),
            exclude: route.exclude_prefixes.clone(),
        },
        route,
        backlog: backlog_config(pipeline, spec),
        scale: ScaleSpec {
            deployment: worker_name(pipeline),
            min_replicas: scaling.min_replicas,
            max_replicas: scaling.max_replicas,
            target_per_replica: scaling.target_per_replica,
            concurrency_per_replica: scaling.concurrency_per_replica,
            idle_timeout: spec.idle_timeout,
            stabilization: spec.scale_down_stabilization,
            lease_duration: spec.lease_duration,
            cpu_per_replica: 0.0,
            schedules: spec.schedules.clone(),
        },
        resync_interval: spec.resync_interval,
        // backfill: false means only objects written after the pipeline was created are work.
        backfill_cutoff: if source.backfill { None } else { created },
        sink_prefix: pipeline.spec.sink.prefix.clone(),
        sink_bucket: sink_bucket(pipeline).to_owned(),
        ledger_prefix: ledger_prefix(pipeline),
        created,
        paused: super::pause::paused(pipeline)?,
    })
}

/// The CPU each worker requests, from the Deployment as built.
pub fn with_cpu(mut settings: Settings, deployment: &k8s_openapi::api::apps::v1::Deployment) -> Settings {
    settings.scale.cpu_per_replica =
        deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).map_or(0.0, cpu_request_cores);
    settings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{minimal_spec, pipeline};
    use crate::controller::validate::validate;

    #[test]
    fn a_pipeline_never_routes_its_own_outputs_or_ledger() {
        let p = pipeline(minimal_spec());
        let route = route(&p).expect("route");
        assert!(route.matches("raw-invoices", "incoming/a.csv"));
        assert!(!route.matches("raw-invoices", "zeroflow-output/incoming/a.csv/a.json"));
        assert!(!route.matches("raw-invoices", ".zeroflow/ledger/finance/invoices/x"));
        assert!(!route.matches("other-bucket", "a.csv"));
    }

    #[test]
    fn sink_in_another_bucket_excludes_nothing_from_the_source() {
        let mut spec = minimal_spec();
        spec.sink.bucket = Some("curated".into());
        spec.source.prefix = Some("in/".into());
        spec.source.suffix = Some(".csv".into());
        let route = route(&pipeline(spec)).expect("route");
        assert!(route.matches("raw-invoices", "in/zeroflow-output/a.csv"));
        assert!(!route.matches("raw-invoices", "in/a.json"));
        assert!(!route.matches("raw-invoices", "out/a.csv"));
    }

    #[test]
    fn an_empty_ledger_prefix_in_the_source_bucket_is_refused() {
        let mut spec = minimal_spec();
        spec.delivery.ledger_prefix = Some(String::new());
        let p = pipeline(spec);
        assert!(route(&p).is_err());
        let error = settings(&p, &validate(&p.spec).expect("valid")).expect_err("refused");
        assert_eq!(error.field, "spec.sink");
    }

    #[test]
    fn runtime_settings_follow_the_spec() {
        let mut spec = minimal_spec();
        spec.delivery.max_attempts = 5;
        spec.delivery.lease_duration = "30s".into();
        spec.delivery.retry_backoff = "2s".into();
        spec.scaling.concurrency_per_replica = 3;
        spec.source.prefix = Some("in/".into());
        spec.source.backfill = false;
        let mut p = pipeline(spec);
        p.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let s = settings(&p, &validate(&p.spec).expect("valid")).expect("settings");
        assert_eq!(
            (s.backlog.max_attempts, s.backlog.lease_duration_ms, s.backlog.backoff_base_ms),
            (5, 30_000, 2_000)
        );
        assert_eq!((s.scale.deployment.as_str(), s.scale.concurrency_per_replica), ("invoices-worker", 3));
        assert_eq!(s.scale.lease_duration, Duration::from_secs(30));
        assert_eq!(s.source_filter.prefix, "in/");
        assert_eq!(s.source_filter.exclude, s.route.exclude_prefixes);
        assert_eq!(s.backfill_cutoff, Some(SystemTime::UNIX_EPOCH));
    }
}
