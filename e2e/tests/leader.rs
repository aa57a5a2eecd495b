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
    let lease = zeroflow_e2e::kubectl(&[
        "get",
        "lease",
        "-n",
        &ns.name,
        "zeroflow-operator-leader",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .await?;
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
    assert!(killed_at.elapsed() < Duration::from_secs(15) + TIMEOUT);
    assert!(takeover < Duration::from_secs(15), "takeover took {takeover:?}");
    Ok(())
}
