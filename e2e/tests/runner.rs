//! The real `zeroflow-runner` binary against the work API with the apiserver's TokenReview and
//! the testbed's MinIO: a TokenRequest-minted token in a file, presigned GET/PUT, outputs in the
//! sink, a clean exit on SIGTERM. The work API is served in-process, as in `workapi.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::json;
use tokio::net::TcpListener;
use zeroflow_e2e::{TestNamespace, client, eventually, token, workspace_binary};
use zeroflow_operator::dispatch::backlog::{ObjectId, WorkItem};
use zeroflow_operator::dispatch::{BacklogConfig, Backlogs};
use zeroflow_operator::gateway::PipelineKey;
use zeroflow_operator::store::{StoreConfig, bucket_client};
use zeroflow_operator::workapi::{
    CachingVerifier, InMemoryCompletion, Outcome, PipelineAccess, S3Bucket, TokenReviewVerifier, Waiters, WorkApi,
    WorkApiMetrics, router,
};

fn store() -> anyhow::Result<StoreConfig> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} unset: eval \"$(e2e/testbed env)\""));
    Ok(StoreConfig {
        endpoint: var("ZF_S3_ENDPOINT")?,
        region: var("ZF_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        path_style: true,
        access_key_id: var("ZF_S3_ACCESS_KEY")?,
        secret_access_key: var("ZF_S3_SECRET_KEY")?,
    })
}

async fn mc(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(std::env::var("MC")?).args(args).output().await?;
    ensure!(out.status.success(), "mc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn the_runner_binary_drains_a_pipeline_into_the_sink() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-runner").await?;
    let namespace = ns.name.clone();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "demo-worker"}}))?;
    accounts.create(&PostParams::default(), &sa).await?;
    let worker_token = token(&client, &namespace, "demo-worker", "zeroflow").await?;
    let suffix = namespace.rsplit('-').next().unwrap_or("x");
    let bucket = format!("zf-runner-{suffix}");
    mc(&["mb", "--ignore-existing", &format!("{}/{bucket}", std::env::var("ZF_MC_ALIAS")?)]).await?;
    let config = store()?;
    let s3: AmazonS3 = bucket_client(&config, &bucket)?;

    let pipeline = PipelineKey::new(namespace.clone(), "demo");
    let backlogs = Arc::new(Backlogs::new(1));
    backlogs.ensure(pipeline.clone(), BacklogConfig::default());
    let completion = Arc::new(InMemoryCompletion::new());
    let registry = prometheus::Registry::new();
    let api = Arc::new(WorkApi::new(
        backlogs.clone(),
        Arc::new(Waiters::new()),
        Arc::new(CachingVerifier::new(TokenReviewVerifier::new(client.clone()))),
        completion.clone(),
        WorkApiMetrics::register(&registry)?,
    ));
    api.set_pipeline(
        pipeline.clone(),
        PipelineAccess {
            source: Arc::new(S3Bucket::new(&bucket, bucket_client(&config, &bucket)?)),
            sink: Arc::new(S3Bucket::new(&bucket, bucket_client(&config, &bucket)?)),
            sink_prefix: "out/".into(),
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router(api.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut expected = BTreeMap::new();
    for i in 0..6 {
        let key = format!("in/batch {i}/report-{i}.txt");
        let content = format!("report number {i}\n");
        let put = s3.put(&Path::parse(&key)?, PutPayload::from(content.clone().into_bytes())).await?;
        let item = WorkItem {
            object: ObjectId { bucket: bucket.clone(), key: key.clone() },
            etag: put.e_tag.map(|e| e.trim_matches('"').to_owned()),
            version_id: None,
            size: Some(content.len() as u64),
            sequencer: None,
        };
        backlogs.with(&pipeline, |b, now| b.admit(item, now)).context("no backlog")??;
        expected.insert(key, content);
    }
    api.notify(&pipeline);

    let scratch = std::env::temp_dir().join(format!("zf-runner-e2e-{namespace}"));
    std::fs::create_dir_all(scratch.join("work"))?;
    std::fs::write(scratch.join("token"), &worker_token)?;
    let mut runner = tokio::process::Command::new(workspace_binary("zeroflow-runner")?)
        .args(["run", "--", "tr", "a-z", "A-Z"])
        .env("ZEROFLOW_LEASE_API", format!("http://{addr}"))
        .env("ZEROFLOW_PIPELINE", format!("{namespace}/demo"))
        .env("ZEROFLOW_CONTRACT", "stdio")
        .env("ZEROFLOW_TIMEOUT_SECONDS", "30")
        .env("ZEROFLOW_CONCURRENCY", "3")
        .env("ZEROFLOW_TOKEN_FILE", scratch.join("token"))
        .env("ZEROFLOW_WORK_DIR", scratch.join("work"))
        .kill_on_drop(true)
        .spawn()
        .context("starting zeroflow-runner")?;

    let wanted = expected.len();
    let records = eventually("every object recorded", Duration::from_secs(60), || {
        let records = completion.records();
        async move { Ok((records.len() >= wanted).then_some(records)) }
    })
    .await?;
    let pid = runner.id().context("runner exited early")?.to_string();
    tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await?;
    let status =
        tokio::time::timeout(Duration::from_secs(30), runner.wait()).await.context("runner ignored SIGTERM")??;
    assert!(status.success(), "runner exited with {status}");

    assert_eq!(records.len(), expected.len());
    for (_, item, outcome) in &records {
        let name = item.object.key.rsplit('/').next().context("key")?;
        let output = format!("out/{}/{name}", item.object.key);
        assert_eq!(outcome, &Outcome::Done { attempts: 1, outputs: vec![output.clone()] });
        let written = s3.get(&Path::parse(&output)?).await?.bytes().await?;
        let input = expected.get(&item.object.key).context("unexpected object")?;
        assert_eq!(String::from_utf8(written.to_vec())?, input.to_uppercase());
    }
    assert_eq!(std::fs::read_dir(scratch.join("work"))?.count(), 0, "per-object directories are cleaned");
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
