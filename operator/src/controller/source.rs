//! The store a pipeline reads and writes: credentials from its Secret (or the operator's default
//! store), one listing of the source to tell whether it is reachable, and the clients the work
//! API, resync and the ledger use, handed to the pipeline's runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::Context;
use super::settings::{ledger_prefix, sink_bucket};
use crate::api::{DataPipeline, StoreSpec};
use crate::runtime::{Access, Pipeline};
use crate::store::{self, StoreConfig, StoreError};
use zeroflow_core::ledger::Ledger;

/// A successful probe is trusted this long, a failed one half as long, so reconciles caused by
/// worker churn do not list the bucket again (and a slow endpoint does not hold a reconcile slot
/// on every one of them).
const PROBE_TTL: Duration = Duration::from_secs(60);

/// The last probe of a pipeline's source, in its runtime.
#[derive(Debug, Clone)]
pub struct Probe {
    generation: Option<i64>,
    checked_at: Instant,
    result: Result<(), StoreError>,
}

impl Probe {
    /// The result, if it is for `generation` and fresh at `now`.
    pub fn fresh(&self, generation: Option<i64>, now: Instant) -> Option<Result<(), StoreError>> {
        let ttl = if self.result.is_ok() { PROBE_TTL } else { PROBE_TTL / 2 };
        (self.generation == generation && now.duration_since(self.checked_at) < ttl).then(|| self.result.clone())
    }
}

/// Whether the source can be listed; on success the runtime gets fresh store access.
pub async fn check(ctx: &Context, pipeline: &DataPipeline, runtime: &Pipeline) -> Result<(), StoreError> {
    let generation = pipeline.metadata.generation;
    let cached = runtime.lock().probe.as_ref().and_then(|p| p.fresh(generation, Instant::now()));
    if let Some(result) = cached {
        return result;
    }
    let result = connect(ctx, pipeline, runtime).await;
    runtime.lock().probe = Some(Probe { generation, checked_at: Instant::now(), result: result.clone() });
    result
}

async fn connect(ctx: &Context, pipeline: &DataPipeline, runtime: &Pipeline) -> Result<(), StoreError> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let source = &pipeline.spec.source;
    let source_config = resolve(ctx, source.store.as_ref(), &namespace).await?;
    let source_bucket = store::open(&source_config, &source.bucket)?;
    store::probe(&source_config, source_bucket.store.as_ref(), &source.bucket, source.prefix.as_deref()).await?;
    let sink_config = match &pipeline.spec.sink.store {
        Some(spec) => resolve(ctx, Some(spec), &namespace).await?,
        None => source_config,
    };
    let sink_bucket = store::open(&sink_config, sink_bucket(pipeline))?;
    let ledger = Ledger::new(sink_bucket.store.clone(), &ledger_prefix(pipeline))
        .map_err(|e| StoreError::Invalid(format!("ledger: {e}")))?;
    let access =
        Access { source: source_bucket.access, sink: sink_bucket.access, source_store: source_bucket.store, ledger };
    runtime.lock().access = Some(Arc::new(access));
    // Polls that waited for store access may lease now.
    runtime.notify.notify_waiters();
    Ok(())
}

/// A store's settings with the credentials from its Secret (or the operator's own identity,
/// when it names none), or the operator's default store.
pub async fn resolve(ctx: &Context, spec: Option<&StoreSpec>, namespace: &str) -> Result<StoreConfig, StoreError> {
    let defaults = &ctx.default_store;
    let Some(spec) = spec else {
        return defaults.store.clone().ok_or(StoreError::NoStore);
    };
    let Some(secret_name) = store::secret_name(spec)? else {
        return store::config_from_spec(spec, None, &defaults.identities);
    };
    let data = read_secret(ctx, namespace, &secret_name).await?;
    store::config_from_spec(spec, Some((&secret_name, &data)), &defaults.identities)
}

/// The data of Secret `name` in `namespace`.
pub async fn read_secret(ctx: &Context, namespace: &str, name: &str) -> Result<store::SecretData, StoreError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 403 => {
                StoreError::SecretForbidden { secret: name.to_owned(), namespace: namespace.to_owned() }
            }
            e => StoreError::Unreachable(format!("cannot read Secret {name:?}: {e}")),
        })?
        .ok_or_else(|| StoreError::SecretNotFound(name.to_owned()))?;
    Ok(secret.data.unwrap_or_default())
}

/// The pipeline's ledger, for one-off passes over it (a re-drive) when the runtime has no store
/// access yet.
pub async fn ledger(ctx: &Context, pipeline: &DataPipeline) -> Result<Ledger, StoreError> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let sink = match &pipeline.spec.sink.store {
        Some(spec) => resolve(ctx, Some(spec), &namespace).await?,
        None => resolve(ctx, pipeline.spec.source.store.as_ref(), &namespace).await?,
    };
    let bucket = store::open(&sink, sink_bucket(pipeline))?;
    Ledger::new(bucket.store, &ledger_prefix(pipeline)).map_err(|e| StoreError::Invalid(format!("ledger: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_cached_per_generation_and_expire() {
        let now = Instant::now();
        let failed =
            Probe { generation: Some(1), checked_at: now, result: Err(StoreError::BucketNotFound("b".into())) };
        assert_eq!(failed.fresh(Some(1), now), Some(Err(StoreError::BucketNotFound("b".into()))));
        assert_eq!(failed.fresh(Some(2), now), None, "a spec change probes again");
        assert_eq!(failed.fresh(Some(1), now + PROBE_TTL / 2), None, "failures are trusted half as long");
        let ok = Probe { generation: Some(1), checked_at: now, result: Ok(()) };
        assert_eq!(ok.fresh(Some(1), now + PROBE_TTL / 2), Some(Ok(())));
        assert_eq!(ok.fresh(Some(1), now + PROBE_TTL), None);
    }
}
