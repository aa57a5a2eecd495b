//! Storage events from the testbed's real MinIO reach the operator's gateway and become pending
//! items of exactly the pipelines whose filters match. Every test here binds the MinIO webhook
//! address, so they run one at a time behind a lock.

use std::time::Duration;

use anyhow::Context as _;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::Mutex;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually};
use zeroflow_operator::api::DataPipeline;

static WEBHOOK: Mutex<()> = Mutex::const_new(());

async fn mc(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(std::env::var("MC")?).args(args).output().await?;
    anyhow::ensure!(out.status.success(), "mc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

async fn upload(bucket: &str, key: &str, content: &str) -> anyhow::Result<()> {
    let alias = std::env::var("ZF_MC_ALIAS")?;
    let file = std::env::temp_dir().join(format!("zf-upload-{}", std::process::id()));
    std::fs::write(&file, content)?;
    mc(&["cp", file.to_str().context("utf-8 path")?, &format!("{alias}/{bucket}/{key}")]).await?;
    Ok(())
}

fn pipeline(name: &str, bucket: &str, prefix: &str, suffix: Option<&str>) -> anyhow::Result<DataPipeline> {
    let mut source = json!({"bucket": bucket, "prefix": prefix});
    if let Some(suffix) = suffix {
        source["suffix"] = json!(suffix);
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": name},
        "spec": {"source": source, "sink": {"bucket": "zf-sink"}, "transform": {"image": "example.org/t:1"}}
    }))?)
}

async fn pending(pipelines: &Api<DataPipeline>, name: &str) -> anyhow::Result<i64> {
    Ok(pipelines.get(name).await?.status.map(|s| s.pending).unwrap_or_default())
}

#[tokio::test]
async fn minio_notifications_become_pending_items_of_matching_pipelines_only() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-events").await?;
    let suffix = ns.name.rsplit('-').next().unwrap_or("x").to_owned();
    let (bucket, other) = (format!("zf-ev-{suffix}"), format!("zf-ev-other-{suffix}"));
    let alias = std::env::var("ZF_MC_ALIAS")?;

    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    for p in [
        pipeline("csv", &bucket, "in/", Some(".csv"))?,
        pipeline("everything-in", &bucket, "in/", None)?,
        pipeline("reports", &bucket, "reports/", None)?,
        pipeline("elsewhere", &other, "in/", None)?,
    ] {
        pipelines.create(&PostParams::default(), &p).await?;
    }
    let token_file = std::env::temp_dir().join(format!("zf-gateway-token-{}", ns.name));
    std::fs::write(&token_file, std::env::var("ZF_WEBHOOK_TOKEN")?)?;
    let webhook = std::env::var("ZF_WEBHOOK_ADDR")?;
    let operator = Operator::start_with(
        &ns.name,
        "solo",
        &["--gateway-addr", &webhook, "--gateway-token-file", token_file.to_str().context("utf-8 path")?],
    )
    .await?;
    operator.wait_ready(TIMEOUT).await?;

    for b in [&bucket, &other] {
        mc(&["mb", &format!("{alias}/{b}")]).await?;
        let arn = std::env::var("ZF_WEBHOOK_ARN")?;
        // MinIO refuses to bind a target it believes offline until its own health check passes.
        eventually("mc event add", TIMEOUT, || async {
            Ok(mc(&["event", "add", &format!("{alias}/{b}"), &arn, "--event", "put"]).await.ok())
        })
        .await?;
    }

    upload(&bucket, "in/a.csv", "id\n1\n").await?;
    upload(&bucket, "in/b b.csv", "id\n2\n").await?;
    upload(&bucket, "in/notes.txt", "hello").await?;
    upload(&bucket, "misc/c.csv", "id\n3\n").await?;
    let expected = [("csv", 2), ("everything-in", 3), ("reports", 0), ("elsewhere", 0)];
    for (name, count) in expected {
        eventually(&format!("{name} has {count} pending"), TIMEOUT, || async {
            Ok((pending(&pipelines, name).await? == count).then_some(()))
        })
        .await?;
    }

    // The same content again is a duplicate notification; new content supersedes the pending
    // revision instead of queueing the object twice.
    upload(&bucket, "in/a.csv", "id\n1\n").await?;
    upload(&bucket, "in/b b.csv", "id\n2\nchanged\n").await?;
    eventually("duplicates counted by the gateway", TIMEOUT, || async {
        let metrics = operator.metrics().await?;
        Ok(metrics
            .lines()
            .any(|l| l.starts_with("zeroflow_events_received_total{") && l.contains("outcome=\"duplicate\""))
            .then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // two status periods
    for (name, count) in expected {
        assert_eq!(pending(&pipelines, name).await?, count, "{name} after re-uploads");
    }
    let metrics = operator.metrics().await?;
    assert!(!metrics.contains("outcome=\"unauthorized\""), "MinIO's token was refused:\n{metrics}");
    let gauge = format!("zeroflow_backlog_pending{{namespace=\"{}\",pipeline=\"everything-in\"}} 3", ns.name);
    assert!(metrics.contains(&gauge), "no {gauge} in:\n{metrics}");
    Ok(())
}
