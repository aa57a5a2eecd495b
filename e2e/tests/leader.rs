//! Two operator replicas: only the leader is ready and writes; when it is killed with SIGKILL
//! the other takes over within 15 s.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::json;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually};
use zeroflow_operator::api::DataPipeline;

fn pipeline(name: &str) -> anyhow::Result<DataPipeline> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": name},
        "spec": {"source": {"bucket": "logs"}, "transform": {"image": "example.org/filter:1"}}
    }))?)
}

async fn lease_holder(namespace: &str) -> anyhow::Result<String> {
    let jsonpath = "jsonpath={.spec.holderIdentity}";
    zeroflow_e2e::kubectl(&["get", "lease", "-n", namespace, "zeroflow-operator-leader", "-o", jsonpath]).await
}

fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("zeroflow_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn only_the_leader_writes_and_a_follower_takes_over_after_sigkill() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-leader").await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    let a = Operator::start(&ns.name, "replica-a").await?;
    a.wait_ready(TIMEOUT).await?;
    let b = Operator::start(&ns.name, "replica-b").await?;
    // b answers /readyz, but with 503 while a leads.
    eventually("follower answers readyz", TIMEOUT, || async { Ok(b.readyz().await) }).await?;
    let (mut leader, follower) = (a, b);

    pipelines.create(&PostParams::default(), &pipeline("first")?).await?;
    eventually("leader creates workers", TIMEOUT, || async {
        deployments.get_opt("first-worker").await.map_err(Into::into)
    })
    .await?;
    // Give the follower every chance to (wrongly) reconcile, then check it has not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(follower.readyz().await, Some(503), "a follower must not be ready");
    assert_eq!(reconciles(&follower.metrics().await?), 0, "a follower must not reconcile");
    assert!(reconciles(&leader.metrics().await?) > 0);
    let lease = lease_holder(&ns.name).await?;
    assert_eq!(lease, leader.identity);

    let killed_at = Instant::now();
    leader.kill().await?;
    follower.wait_ready(Duration::from_secs(15)).await?;
    let takeover = killed_at.elapsed();
    println!("takeover after SIGKILL of the leader: {:.1} s", takeover.as_secs_f64());

    // The new leader does the work now.
    pipelines.create(&PostParams::default(), &pipeline("second")?).await?;
    eventually("new leader creates workers", TIMEOUT, || async {
        deployments.get_opt("second-worker").await.map_err(Into::into)
    })
    .await?;
    assert!(takeover < Duration::from_secs(15), "takeover took {takeover:?}");

    // A graceful stop (SIGTERM) ends the process cleanly and gives the lease up; the next
    // replica (which logs JSON) takes over. kube-lease-manager followers still wait for the
    // released lease's old expiry, so the handover is bounded by the lease duration.
    let mut leader = follower;
    let next = Operator::start_with(&ns.name, "replica-c", &["--log-format", "json"]).await?;
    eventually("replica-c answers readyz", TIMEOUT, || async { Ok(next.readyz().await) }).await?;
    let stopped_at = Instant::now();
    let status = leader.terminate().await?;
    assert!(status.success(), "SIGTERM should end the operator cleanly, got {status}");
    let holder = lease_holder(&ns.name).await?;
    assert_ne!(holder, leader.identity, "the lease was not released on SIGTERM");
    next.wait_ready(Duration::from_secs(15)).await?;
    println!("handover after SIGTERM of the leader: {:.1} s", stopped_at.elapsed().as_secs_f64());
    let log = std::fs::read_to_string(&next.log)?;
    for line in log.lines() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok_and(|v| v["level"].is_string()), "not a JSON log line: {line}");
    }
    Ok(())
}
