//! Status tells the truth when workers cannot run (issue #13 item 7, cases 10 and 11): pods a
//! ResourceQuota forbids and pods no node can take make the pipeline Degraded with the cluster's
//! own words within a minute, use no attempt, and clear by themselves once the cause is fixed.
//! On the KWOK node (the scheduler and quota are the real apiserver's and controller-manager's);
//! image pulls and crash loops need the real node (e2e/tests/node.rs).

use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use zeroflow_e2e::loop_bed::LoopBed;
use zeroflow_e2e::pipelines::{WEBHOOK, upload};
use zeroflow_e2e::{client, eventually};
use zeroflow_operator::api::DataPipelineStatus;

/// Waits until the pipeline's Degraded condition is True with `reason`; returns its message.
async fn degraded_with(t: &LoopBed, reason: &str) -> anyhow::Result<String> {
    let found = eventually(&format!("Degraded {reason}"), Duration::from_secs(60), || async {
        let s = t.status().await?;
        let c =
            s.conditions.iter().find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == reason).cloned();
        Ok(c.map(|c| c.message))
    })
    .await;
    match found {
        Ok(message) => Ok(message),
        Err(e) => anyhow::bail!("{e:#}\nstatus: {:?}\n{}", t.status().await.ok(), t.operator.log_tail()),
    }
}

fn unattempted(s: &DataPipelineStatus) -> bool {
    s.pending == 1 && s.in_flight == 0 && s.failed == 0 && s.succeeded == 0
}

/// The object waits, unleased and unfailed (counts are published every 2 s).
async fn waits_unattempted(t: &LoopBed) -> anyhow::Result<()> {
    eventually("the object waits, not leased, not failed", Duration::from_secs(10), || async {
        Ok(unattempted(&t.status().await?).then_some(()))
    })
    .await
}

#[tokio::test]
async fn a_quota_that_forbids_workers_is_reported_and_clears_when_lifted() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let copy = json!({"image": "example.org/t:1", "command": ["sh", "-c", "cp \"$ZEROFLOW_INPUT\" \"$ZEROFLOW_OUTPUT_DIR/\""]});
    let t = LoopBed::start("quota", "quota", json!({"scaling": {"idleTimeout": "5s"}, "transform": copy})).await?;
    let quotas: Api<ResourceQuota> = Api::namespaced(client().await?, &t.ns.name);
    let quota: ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": "zf-q"}, "spec": {"hard": {"pods": "0"}}}))?;
    quotas.create(&PostParams::default(), &quota).await?;
    upload(&t.buckets.source, "incoming/1.txt", "a\n").await?;
    let message = degraded_with(&t, "QuotaExceeded").await?;
    assert!(message.contains("zf-q") && message.contains("exceeded quota"), "the quota's own words: {message}");
    waits_unattempted(&t).await?;
    let s = t.status().await?;
    assert!(s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "QuotaExceeded"));

    quotas.delete("zf-q", &DeleteParams::default()).await?;
    t.wait_finished(1, 0, Duration::from_secs(120)).await?;
    eventually("Degraded clears", Duration::from_secs(60), || async {
        let s = t.status().await?;
        Ok(s.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "False").then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn workers_no_node_can_take_are_reported_and_clear_when_they_fit() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let spec = json!({"scaling": {"idleTimeout": "5s"},
                      "transform": {"command": ["sh", "-c", "cp \"$ZEROFLOW_INPUT\" \"$ZEROFLOW_OUTPUT_DIR/\""],
                                    "resources": {"requests": {"cpu": "512", "memory": "4Ti"}}}});
    let t = LoopBed::start("unschedulable", "toobig", spec).await?;
    upload(&t.buckets.source, "incoming/1.txt", "a\n").await?;
    let message = degraded_with(&t, "Unschedulable").await?;
    assert!(message.contains("nodes are available"), "the scheduler's words: {message}");
    waits_unattempted(&t).await?;

    let patch = json!({"spec": {"transform": {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}}});
    t.pipelines.patch("toobig", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    t.wait_finished(1, 0, Duration::from_secs(120)).await?;
    eventually("Degraded clears", Duration::from_secs(60), || async {
        let s = t.status().await?;
        Ok(s.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "False").then_some(()))
    })
    .await?;
    Ok(())
}
