//! Pipelines that feed each other (issue #13, case 08): a chain works and the next stage never
//! eats the previous stage's ledger; the pipeline that closes a cycle is stopped and says why,
//! before anything loops. Real operator, MinIO notifications, runner processes.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use zeroflow_e2e::pipelines::{WEBHOOK, operator_with_gateway, upload};
use zeroflow_e2e::workers::HostWorkers;
use zeroflow_e2e::{TIMEOUT, TestNamespace, client, eventually, free_port, mc};
use zeroflow_operator::api::conditions::is_true;
use zeroflow_operator::api::{DataPipeline, DataPipelineStatus};

/// A pass-through that changes content, as the case describes, and logs every run.
fn transform(log: &std::path::Path) -> serde_json::Value {
    let script = format!(
        "echo \"$ZEROFLOW_PIPELINE $ZEROFLOW_KEY\" >> {}; f=$(basename \"$ZEROFLOW_INPUT\"); \
         {{ cat \"$ZEROFLOW_INPUT\"; date +%s%N; }} > \"$ZEROFLOW_OUTPUT_DIR/$f\"",
        log.display()
    );
    json!({"image": "example.org/t:1", "command": ["sh", "-c", script]})
}

fn pipeline(
    name: &str,
    source: (&str, &str),
    sink: (&str, &str),
    transform: &serde_json::Value,
) -> anyhow::Result<DataPipeline> {
    let store = json!({"endpoint": std::env::var("ZF_S3_ENDPOINT")?, "credentialsSecretRef": {"name": "store"}});
    Ok(serde_json::from_value(json!({
        "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": name},
        "spec": {"source": {"bucket": source.0, "prefix": source.1, "store": store}, "sink": {"bucket": sink.0, "prefix": sink.1},
                 "transform": transform, "scaling": {"idleTimeout": "3s"}}
    }))?)
}

async fn status(api: &Api<DataPipeline>, name: &str) -> anyhow::Result<DataPipelineStatus> {
    Ok(api.get(name).await?.status.unwrap_or_default())
}

#[tokio::test]
async fn a_chain_runs_without_eating_ledgers_and_the_pipeline_closing_a_cycle_is_stopped() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-chain").await?;
    let suffix = ns.name.rsplit('-').next().unwrap_or("x");
    let (inb, mid, out) = (format!("zf-in-{suffix}"), format!("zf-mid-{suffix}"), format!("zf-out-{suffix}"));
    let alias = std::env::var("ZF_MC_ALIAS")?;
    for b in [&inb, &mid, &out] {
        mc(&["mb", &format!("{alias}/{b}")]).await?;
    }
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "store"}, "stringData": {
        "accessKeyId": std::env::var("ZF_S3_ACCESS_KEY")?, "secretAccessKey": std::env::var("ZF_S3_SECRET_KEY")?}}))?;
    Api::<Secret>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &secret).await?;
    let runs = std::env::temp_dir().join(format!("zf-chain-runs-{}.log", ns.name));
    let t = transform(&runs);
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    pipelines
        .create(&PostParams::default(), &pipeline("stage-a", (&inb, "incoming/"), (&mid, "zeroflow-output/"), &t)?)
        .await?;
    pipelines.create(&PostParams::default(), &pipeline("stage-b", (&mid, ""), (&out, "zeroflow-output/"), &t)?).await?;
    let operator = operator_with_gateway(&ns, &format!("127.0.0.1:{}", free_port()?)).await?;
    let arn = std::env::var("ZF_WEBHOOK_ARN_NO_QUEUE")?;
    for b in [&inb, &mid, &out] {
        let target = format!("{alias}/{b}");
        eventually("mc event add", TIMEOUT, || async {
            Ok(mc(&["event", "add", &target, &arn, "--event", "put"]).await.ok())
        })
        .await?;
    }
    let _workers: Vec<HostWorkers> = ["stage-a", "stage-b", "stage-c"]
        .iter()
        .map(|name| HostWorkers::start(client.clone(), &ns.name, name))
        .collect::<anyhow::Result<_>>()?;

    // The chain: one upload runs stage-a once and stage-b once on stage-a's output; stage-a's
    // ledger markers, written into mid-bucket (notified like any object), are nobody's work.
    upload(&inb, "incoming/one.txt", "x\n").await?;
    let finished = eventually("both stages done", Duration::from_secs(120), || async {
        let (a, b) = (status(&pipelines, "stage-a").await?, status(&pipelines, "stage-b").await?);
        Ok((a.succeeded == 1 && b.succeeded == 1 && b.pending == 0 && b.in_flight == 0).then_some((a, b)))
    })
    .await;
    let (a, b) = match finished {
        Ok(done) => done,
        Err(e) => anyhow::bail!("{e:#}\n{}", operator.log_tail()),
    };
    assert_eq!((a.failed, b.failed), (0, 0));
    let ran = std::fs::read_to_string(&runs)?;
    let lines: Vec<&str> = ran.lines().collect();
    assert_eq!(lines.len(), 2, "one run per stage: {ran}");
    assert!(lines.iter().all(|l| !l.contains(".zeroflow/")), "a ledger marker was processed: {ran}");
    assert!(lines.iter().any(|l| l.ends_with("/stage-b zeroflow-output/incoming/one.txt/one.txt")), "{ran}");
    let listed = mc(&["ls", "--recursive", &format!("{alias}/{out}")]).await?;
    let outputs: Vec<&str> = listed.lines().filter(|l| !l.contains(".zeroflow/")).collect();
    assert_eq!(outputs.len(), 1, "one output in out-bucket: {listed}");
    // A periodic resync of stage-b (every 5 m by default) would find the same: its first pass at
    // start-up already saw stage-a's markers in mid-bucket and left them.

    // The cycle: stage-c writes back into stage-a's source. It is refused before it runs.
    pipelines.create(&PostParams::default(), &pipeline("stage-c", (&out, ""), (&inb, "incoming/"), &t)?).await?;
    let api = &pipelines;
    let stopped = eventually("stage-c stopped for the cycle", TIMEOUT, || async move {
        let s = status(api, "stage-c").await?;
        let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded" && c.status == "True").cloned();
        Ok(degraded.filter(|c| c.reason == "PipelineCycle"))
    })
    .await?;
    let path = format!("{0}/stage-c -> {0}/stage-a -> {0}/stage-b -> {0}/stage-c", ns.name);
    assert!(stopped.message.contains(&path), "the message names the cycle: {}", stopped.message);
    let c = status(&pipelines, "stage-c").await?;
    assert_eq!(is_true(&c.conditions, "Ready"), Some(false));
    // Nothing to wait on for runs that must not happen: look for a while. stage-c's resync found
    // stage-b's output, but a stopped pipeline leases nothing and starts no worker.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for _ in 0..15 {
        let replicas = deployments.get("stage-c-worker").await?.spec.and_then(|s| s.replicas).unwrap_or(0);
        assert_eq!(replicas, 0, "a stopped pipeline starts no worker");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(std::fs::read_to_string(&runs)?.lines().count(), 2, "nothing looped");
    for name in ["stage-a", "stage-b"] {
        let s = status(&pipelines, name).await?;
        assert_eq!(is_true(&s.conditions, "Degraded"), Some(false), "{name} keeps running: {:?}", s.conditions);
    }

    // Breaking the cycle (stage-c writes beside stage-a's source prefix, not into it) lets it run.
    let patch = json!({"spec": {"sink": {"bucket": inb, "prefix": "archive/"}}});
    pipelines.patch("stage-c", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    eventually("stage-c runs once the cycle is broken", Duration::from_secs(120), || async {
        let s = status(&pipelines, "stage-c").await?;
        Ok((s.succeeded >= 1 && is_true(&s.conditions, "Degraded") == Some(false)).then_some(()))
    })
    .await?;
    Ok(())
}
