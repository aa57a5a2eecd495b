//! Two operator replicas: only the leader is ready and writes; when it is killed with SIGKILL
//! the other takes over within 15 s; a leader cut off from the apiserver steps down before the
//! other takes over, so two replicas never act as leader at once.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

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

/// A loopback TCP relay to the apiserver that the test can cut: the operator behind it talks
/// TLS to the real apiserver through it (the serving certificate is for 127.0.0.1, any port).
/// Dropping it closes the listener and every relayed connection, as the apiserver's host going
/// away would.
struct Cuttable {
    port: u16,
    _tasks: JoinSet<()>,
}

impl Cuttable {
    async fn to(upstream: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self { port, _tasks: tasks })
    }
}

/// The testbed's kubeconfig and its apiserver's `host:port`.
fn testbed_kubeconfig() -> anyhow::Result<(serde_yaml::Value, String)> {
    let path = std::env::var("KUBECONFIG").context("KUBECONFIG")?;
    let config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
    let server = config["clusters"][0]["cluster"]["server"].as_str().context("no server in the kubeconfig")?;
    let upstream = server.trim_start_matches("https://").trim_end_matches('/').to_owned();
    Ok((config, upstream))
}

#[tokio::test]
async fn a_leader_cut_off_from_the_apiserver_steps_down_before_a_follower_takes_over() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-fence").await?;
    let (mut config, upstream) = testbed_kubeconfig()?;
    let relay = Cuttable::to(upstream.clone()).await?;
    config["clusters"][0]["cluster"]["server"] = serde_yaml::Value::from(format!("https://127.0.0.1:{}", relay.port));
    let kubeconfig = std::env::temp_dir().join(format!("{}-kubeconfig", ns.name));
    std::fs::write(&kubeconfig, serde_yaml::to_string(&config)?)?;
    let kubeconfig = kubeconfig.to_str().context("path")?.to_owned();
    let mut cut_off =
        Operator::start_with_env(&ns.name, "replica-cut-off", &[], &[("KUBECONFIG", &kubeconfig)]).await?;
    cut_off.wait_ready(TIMEOUT).await?;
    let follower = Operator::start(&ns.name, "replica-connected").await?;
    eventually("follower answers readyz", TIMEOUT, || async { Ok(follower.readyz().await) }).await?;
    assert_eq!(lease_holder(&ns.name).await?, cut_off.identity);
    println!("relay to {upstream} on port {}", relay.port);

    // Cut the leader off. It can no longer renew; the follower takes the Lease once it expires.
    let cut_at = Instant::now();
    drop(relay);
    let follower_led = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while follower.readyz().await != Some(200) {
            anyhow::ensure!(Instant::now() < deadline, "the follower did not take over");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((Instant::now(), follower))
    });
    let status = tokio::time::timeout(Duration::from_secs(30), cut_off.child.wait())
        .await
        .with_context(|| format!("the cut-off leader is still running 30 s later: {}", cut_off.log_tail()))??;
    let exited_at = Instant::now();
    let (led_at, follower) = follower_led.await??;
    println!(
        "cut off at 0 s: the old leader exited at {:.1} s ({status}), the follower led at {:.1} s",
        (exited_at - cut_at).as_secs_f64(),
        (led_at - cut_at).as_secs_f64()
    );
    assert_eq!(status.code(), Some(1), "a leader that lost its Lease exits 1: {}", cut_off.log_tail());
    let log = std::fs::read_to_string(&cut_off.log)?;
    assert!(log.contains("no renewal of the leader lease seen in time"), "{}", cut_off.log_tail());
    assert!(
        exited_at < led_at,
        "two leaders: the follower led {:?} before the cut-off leader stopped",
        exited_at - led_at
    );
    assert_eq!(lease_holder(&ns.name).await?, follower.identity);
    Ok(())
}
