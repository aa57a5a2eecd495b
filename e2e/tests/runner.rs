//! The real `zeroflow-runner` binary on the host, with a TokenRequest-minted token in a file,
//! presigned GET/PUT against the testbed's MinIO and the apiserver's TokenReview: once against
//! the work API served in-process (as in `workapi.rs`), once against a real operator.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use kube::api::{Api, PostParams};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::json;
use zeroflow_core::backlog::BacklogConfig;
use zeroflow_core::ledger::Outcome;
use zeroflow_e2e::work_api::WorkApiBed;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, free_port, mc, token, workspace_binary};
use zeroflow_operator::api::DataPipeline;
use zeroflow_operator::store::bucket_client;

#[tokio::test]
async fn the_runner_binary_drains_a_pipeline_into_the_sink() -> anyhow::Result<()> {
    let bed = WorkApiBed::start("zf-runner", BacklogConfig::default()).await?;
    let namespace = bed.namespace.clone();
    let mut expected = BTreeMap::new();
    for i in 0..6 {
        let key = format!("in/batch {i}/report-{i}.txt");
        let content = format!("report number {i}\n");
        bed.upload_and_admit(&key, &content).await?;
        expected.insert(key, content);
    }

    let scratch = std::env::temp_dir().join(format!("zf-runner-e2e-{namespace}"));
    std::fs::create_dir_all(scratch.join("work"))?;
    std::fs::write(scratch.join("token"), &bed.worker_token)?;
    let mut runner = tokio::process::Command::new(workspace_binary("zeroflow-runner")?)
        .args(["run", "--", "tr", "a-z", "A-Z"])
        .env("ZEROFLOW_WORK_API", format!("http://{}", bed.addr))
        .env("ZEROFLOW_PIPELINE", format!("{namespace}/demo"))
        .env("ZEROFLOW_CONTRACT", "stdio")
        .env("ZEROFLOW_TIMEOUT", "30s")
        .env("ZEROFLOW_CONCURRENCY", "3")
        .env("ZEROFLOW_TOKEN_FILE", scratch.join("token"))
        .env("ZEROFLOW_WORK_DIR", scratch.join("work"))
        .kill_on_drop(true)
        .spawn()
        .context("starting zeroflow-runner")?;

    let wanted = expected.len();
    let records = eventually("every object recorded", Duration::from_secs(60), || async {
        let records = bed.records().await?;
        Ok((records.len() >= wanted).then_some(records))
    })
    .await?;
    let pid = runner.id().context("runner exited early")?.to_string();
    tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await?;
    let status =
        tokio::time::timeout(Duration::from_secs(30), runner.wait()).await.context("runner ignored SIGTERM")??;
    assert!(status.success(), "runner exited with {status}");

    assert_eq!(records.len(), expected.len());
    for marker in &records {
        let key = &marker.source.key;
        let name = key.rsplit('/').next().context("key")?;
        let output = format!("out/{key}/{name}");
        assert_eq!((marker.outcome, marker.attempts, &marker.outputs), (Outcome::Succeeded, 1, &vec![output.clone()]));
        let written = bed.s3.get(&Path::parse(&output)?).await?.bytes().await?;
        let input = expected.get(key).context("unexpected object")?;
        assert_eq!(String::from_utf8(written.to_vec())?, input.to_uppercase());
    }
    assert_eq!(std::fs::read_dir(scratch.join("work"))?.count(), 0, "per-object directories are cleaned");
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// Starts the runner binary for `namespace/pipeline` with `command`; the token is in `scratch`.
fn start_runner(
    scratch: &std::path::Path,
    api: &str,
    pipeline: &str,
    contract: &str,
    command: &[&str],
) -> anyhow::Result<tokio::process::Child> {
    std::fs::create_dir_all(scratch.join("work"))?;
    tokio::process::Command::new(workspace_binary("zeroflow-runner")?)
        .arg("run")
        .arg("--")
        .args(command)
        .env("ZEROFLOW_WORK_API", api)
        .env("ZEROFLOW_PIPELINE", pipeline)
        .env("ZEROFLOW_CONTRACT", contract)
        .env("ZEROFLOW_TIMEOUT", "30s")
        .env("ZEROFLOW_CONCURRENCY", "2")
        .env("ZEROFLOW_TOKEN_FILE", scratch.join("token"))
        .env("ZEROFLOW_WORK_DIR", scratch.join("work"))
        .kill_on_drop(true)
        .spawn()
        .context("starting zeroflow-runner")
}

#[tokio::test]
async fn the_runner_binary_works_for_a_real_operator() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-runner-op").await?;
    let namespace = ns.name.clone();
    let suffix = namespace.rsplit('-').next().unwrap_or("x");
    let (source, sink) = (format!("zf-rop-in-{suffix}"), format!("zf-rop-out-{suffix}"));
    let alias = std::env::var("ZF_MC_ALIAS")?;
    for bucket in [&source, &sink] {
        mc(&["mb", "--ignore-existing", &format!("{alias}/{bucket}")]).await?;
    }
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "store"}, "stringData": {
        "accessKeyId": std::env::var("ZF_S3_ACCESS_KEY")?, "secretAccessKey": std::env::var("ZF_S3_SECRET_KEY")?}}))?;
    Api::<Secret>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &secret).await?;

    // Objects exist before the operator starts: its start-up resync finds them.
    let config = zeroflow_e2e::store_config()?;
    let source_s3 = bucket_client(&config, &source)?;
    let mut expected = BTreeMap::new();
    for i in 0..4 {
        let key = format!("in/part-{i}.txt");
        let content = format!("line {i}: hello\n");
        source_s3.put(&Path::parse(&key)?, PutPayload::from(content.clone().into_bytes())).await?;
        expected.insert(key, content);
    }
    let pipeline: DataPipeline = serde_json::from_value(json!({
        "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": "upper"},
        "spec": {
            "source": {"bucket": source, "prefix": "in/",
                       "store": {"endpoint": config.endpoint, "credentialsSecretRef": {"name": "store"}}},
            "sink": {"bucket": sink, "prefix": "out/"},
            "transform": {"image": "example.org/t:1", "contract": "exec"}
        }
    }))?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &namespace);
    pipelines.create(&PostParams::default(), &pipeline).await?;
    let lease_addr = format!("127.0.0.1:{}", free_port()?);
    let operator = Operator::start_with(&namespace, "solo", &["--work-api-addr", &lease_addr]).await?;
    operator.wait_ready(TIMEOUT).await?;
    let worker_token = eventually("the worker ServiceAccount", TIMEOUT, || {
        let client = client.clone();
        let namespace = namespace.clone();
        async move { Ok(token(&client, &namespace, "upper-worker", "zeroflow").await.ok()) }
    })
    .await?;

    let scratch = std::env::temp_dir().join(format!("zf-runner-op-{namespace}"));
    std::fs::create_dir_all(&scratch)?;
    std::fs::write(scratch.join("token"), &worker_token)?;
    let script = r#"tr a-z A-Z < "$ZEROFLOW_INPUT" > "$ZEROFLOW_OUTPUT_DIR/upper.txt" && wc -c < "$ZEROFLOW_INPUT" > "$ZEROFLOW_OUTPUT_DIR/size.txt""#;
    let mut runner = start_runner(
        &scratch,
        &format!("http://{lease_addr}"),
        &format!("{namespace}/upper"),
        "exec",
        &["sh", "-c", script],
    )?;
    let wanted = expected.len() as i64;
    let result = eventually("every object succeeded", Duration::from_secs(90), || {
        let pipelines = pipelines.clone();
        async move {
            let status = pipelines.get("upper").await?.status.unwrap_or_default();
            Ok((status.succeeded >= wanted && status.in_flight == 0).then_some(()))
        }
    })
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e:#}\noperator log:\n{}", operator.log_tail());
    }
    let pid = runner.id().context("runner exited early")?.to_string();
    tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await?;
    let status =
        tokio::time::timeout(Duration::from_secs(30), runner.wait()).await.context("runner ignored SIGTERM")??;
    assert!(status.success(), "runner exited with {status}");

    let sink_s3 = bucket_client(&config, &sink)?;
    for (key, content) in &expected {
        let upper = sink_s3.get(&Path::parse(format!("out/{key}/upper.txt"))?).await?.bytes().await?;
        assert_eq!(String::from_utf8(upper.to_vec())?, content.to_uppercase());
        let size = sink_s3.get(&Path::parse(format!("out/{key}/size.txt"))?).await?.bytes().await?;
        assert_eq!(String::from_utf8(size.to_vec())?.trim(), content.len().to_string());
    }
    assert_eq!(std::fs::read_dir(scratch.join("work"))?.count(), 0, "per-object directories are cleaned");
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
