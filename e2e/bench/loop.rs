//! End-to-end throughput of the whole loop on the testbed: N objects PUT into a source bucket
//! whose MinIO notifications reach a real operator, a pipeline scaled from zero, one
//! `zeroflow-runner` process per worker pod (see `HostWorkers`) running a trivial transform
//! (`cp`), outputs and ledger markers written to MinIO. Prints objects/s from the first PUT to
//! the last success, the upload time alone, the first output's latency and the peak replicas.
//!
//! Run it with `e2e/bench/loop [N]` (default 500), which builds release binaries. It only talks
//! to the testbed on 127.0.0.1. Figures, not a timed test: it asserts only that every object
//! succeeded.
//!
//! Measured 2026-11-27 on the testbed (2 cores shared by apiserver, MinIO, operator, runners):
//! 2000 objects, 4 workers x 4 concurrent `cp`s: 14.0 s from the first PUT to the last success,
//! 143 objects/s (500 objects: 95 objects/s, the cold start weighing more).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::json;
use zeroflow_e2e::pipelines::{Buckets, operator_with_gateway};
use zeroflow_e2e::workers::HostWorkers;
use zeroflow_e2e::{TestNamespace, client, free_port};
use zeroflow_operator::api::DataPipeline;
use zeroflow_operator::store::bucket_client;

const PARALLEL_PUTS: usize = 16;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).map(|a| a.parse()).transpose()?.unwrap_or(500);
    let config = zeroflow_e2e::store_config()?;
    if !config.endpoint.as_deref().unwrap_or_default().starts_with("http://127.0.0.1:") {
        bail!("refusing to run against {:?}: only the testbed on 127.0.0.1", config.endpoint);
    }
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-bench-loop").await?;
    let buckets = Buckets::create(&client, &ns, "bl").await?;
    let spec = json!({
        "sink": {"prefix": "out/"},
        "scaling": {"maxReplicas": 4, "targetPerReplica": 25, "concurrencyPerReplica": 4, "idleTimeout": "5s"},
        "transform": {"image": "example.org/t:1", "contract": "exec",
                      "command": ["sh", "-c", "cp \"$ZEROFLOW_INPUT\" \"$ZEROFLOW_OUTPUT_DIR/copy\""]}
    });
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    pipelines.create(&PostParams::default(), &buckets.pipeline("bench", "", spec)?).await?;
    let operator = operator_with_gateway(&ns, &format!("127.0.0.1:{}", free_port()?)).await?;
    buckets.notify_on_put().await?;
    let _workers = HostWorkers::start(client.clone(), &ns.name, "bench")?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    let source = std::sync::Arc::new(bucket_client(&config, &buckets.source)?);
    let sink = bucket_client(&config, &buckets.sink)?;
    let started = Instant::now();
    let uploads = futures::stream::iter(0..count)
        .map(move |i| {
            let source = source.clone();
            async move {
                let body = format!("object {i}\n");
                source.put(&Path::parse(format!("in/{i:06}.txt"))?, PutPayload::from(body.into_bytes())).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL_PUTS)
        .collect::<Vec<_>>();
    let uploaded = tokio::spawn(async move {
        let results = uploads.await;
        (results.into_iter().collect::<anyhow::Result<Vec<_>>>(), started.elapsed())
    });

    let first_output = Path::parse("out/in/000000.txt/copy")?;
    let mut first_output_at = None;
    let mut peak_replicas = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if first_output_at.is_none() && sink.head(&first_output).await.is_ok() {
            first_output_at = Some(started.elapsed());
        }
        let replicas = deployments.get("bench-worker").await?.spec.and_then(|s| s.replicas).unwrap_or(0);
        peak_replicas = peak_replicas.max(replicas);
        let status = pipelines.get("bench").await?.status.unwrap_or_default();
        if status.failed > 0 {
            bail!("{} objects failed; operator log:\n{}", status.failed, operator.log_tail());
        }
        if status.succeeded >= i64::try_from(count)? {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {} of {count} succeeded after 600 s", status.succeeded);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    let (results, upload_time) = uploaded.await?;
    results.context("uploading")?;
    // Status is published every 2 s: the end is known to within that.
    println!("objects:              {count}");
    println!("upload ({PARALLEL_PUTS} parallel PUTs): {:.1} s", upload_time.as_secs_f64());
    println!("first PUT to all done: {:.1} s (status is published every 2 s)", total.as_secs_f64());
    println!("throughput:           {:.1} objects/s", count as f64 / total.as_secs_f64());
    if let Some(first) = first_output_at {
        println!("first output after:   {:.2} s (cold start included)", first.as_secs_f64());
    }
    println!("peak worker replicas: {peak_replicas}");
    Ok(())
}
