//! The testbed itself: a Ready node, Deployments that get running pods, RBAC, helm, and MinIO
//! delivering real webhook notifications to a listener on loopback.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroflow_e2e::{TIMEOUT, TestNamespace, client, eventually, kubectl};

async fn run(program_env: &str, args: &[&str]) -> anyhow::Result<String> {
    let program = std::env::var(program_env).with_context(|| format!("{program_env} is not set"))?;
    let out = tokio::process::Command::new(&program).args(args).output().await?;
    anyhow::ensure!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn a_fake_node_is_ready_and_runs_a_deployments_pods() -> anyhow::Result<()> {
    let client = client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let ready = nodes.list(&ListParams::default()).await?.items.iter().any(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    assert!(ready, "no Ready node");

    let ns = TestNamespace::create(&client, "zf-testbed").await?;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "example.org/web:1"}]}}}
    }))?;
    Api::<Deployment>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &deployment).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    eventually("3 Running and Ready pods", Duration::from_secs(90), || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| {
                let status = p.status.clone().unwrap_or_default();
                status.phase.as_deref() == Some("Running")
                    && status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .count();
        Ok((ready == 3).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn rbac_is_enforced() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-rbac").await?;
    // The namespace's default ServiceAccount (created by kube-controller-manager) may do nothing.
    let who = format!("system:serviceaccount:{}:default", ns.name);
    let kubectl_bin = std::env::var("KUBECTL")?;
    let out = tokio::process::Command::new(&kubectl_bin)
        .args(["auth", "can-i", "list", "pods", "-n", &ns.name, "--as", &who])
        .output()
        .await?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    kubectl(&["create", "role", "pod-reader", "-n", &ns.name, "--verb=list", "--resource=pods"]).await?;
    kubectl(&[
        "create",
        "rolebinding",
        "pod-reader",
        "-n",
        &ns.name,
        "--role=pod-reader",
        &format!("--serviceaccount={}:default", ns.name),
    ])
    .await?;
    let allowed = eventually("RBAC grants list pods", TIMEOUT, || async {
        let out = kubectl(&["auth", "can-i", "list", "pods", "-n", &ns.name, "--as", &who]).await;
        Ok(out.ok().filter(|s| s.trim() == "yes"))
    })
    .await?;
    assert_eq!(allowed.trim(), "yes");
    Ok(())
}

#[tokio::test]
async fn helm_works_offline_against_the_testbed_version() -> anyhow::Result<()> {
    let version = run("HELM", &["version", "--short"]).await?;
    assert!(version.starts_with("v3."), "{version}");
    let chart = tempdir("chart")?;
    std::fs::create_dir_all(chart.join("templates"))?;
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: \">=1.34.0-0\"\n",
    )?;
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {kube: \"{{ .Capabilities.KubeVersion.Version }}\"}\n",
    )?;
    let kube_version = std::env::var("ZF_KUBE_VERSION")?;
    let rendered =
        run("HELM", &["template", "probe", chart.to_str().context("utf-8 path")?, "--kube-version", &kube_version])
            .await?;
    assert!(rendered.contains(&format!("kube: \"v{kube_version}\"")), "{rendered}");
    Ok(())
}

fn tempdir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("zf-e2e-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Reads one HTTP request (headers and a Content-Length body) and answers 200.
async fn read_request(stream: &mut tokio::net::TcpStream) -> anyhow::Result<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "connection closed mid-request");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await?;
                return Ok(text);
            }
        }
    }
}

#[tokio::test]
async fn minio_sends_webhook_notifications_with_the_bearer_token() -> anyhow::Result<()> {
    let addr = std::env::var("ZF_WEBHOOK_ADDR").context("ZF_WEBHOOK_ADDR")?;
    let token = std::env::var("ZF_WEBHOOK_TOKEN")?;
    let alias = std::env::var("ZF_MC_ALIAS")?;
    let listener = tokio::net::TcpListener::bind(&addr).await.context("binding the webhook address")?;
    // Answer everything (MinIO probes the target with HEAD) and hand the requests to the test.
    let (requests_tx, mut requests) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            if let Ok(request) = read_request(&mut stream).await {
                let _ = requests_tx.send(request);
            }
        }
    });
    let bucket = format!("zf-webhook-{}", std::process::id());
    run("MC", &["mb", &format!("{alias}/{bucket}")]).await?;
    let arn = std::env::var("ZF_WEBHOOK_ARN")?;
    // MinIO refuses to bind a target it currently believes offline; it re-checks on its own.
    eventually("mc event add", TIMEOUT, || async {
        Ok(run("MC", &["event", "add", &format!("{alias}/{bucket}"), &arn, "--event", "put"]).await.ok())
    })
    .await?;

    let file = tempdir("upload")?.join("a b.csv");
    std::fs::write(&file, "id,amount\n1,9.99\n")?;
    let key = "incoming/a b.csv";
    run("MC", &["cp", file.to_str().context("utf-8 path")?, &format!("{alias}/{bucket}/{key}")]).await?;
    let ls = run("MC", &["ls", "--recursive", &format!("{alias}/{bucket}")]).await?;
    assert!(ls.contains(key), "object not in MinIO: {ls}");

    let request = tokio::time::timeout(TIMEOUT, async {
        while let Some(request) = requests.recv().await {
            if request.starts_with("POST") && request.contains(&bucket) {
                return Some(request);
            }
        }
        None
    })
    .await
    .context("no webhook notification within the timeout")?
    .context("webhook listener stopped")?;
    let (head, body) = request.split_once("\r\n\r\n").context("request without body")?;
    assert!(
        head.lines().any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {token}"))),
        "no bearer token in {head}"
    );
    let event: serde_json::Value = serde_json::from_str(body)?;
    assert_eq!(event["EventName"], "s3:ObjectCreated:Put");
    assert_eq!(event["Records"][0]["s3"]["bucket"]["name"], bucket.as_str());
    // MinIO query-escapes keys in records: the space arrives as '+'.
    assert_eq!(event["Records"][0]["s3"]["object"]["key"], "incoming%2Fa+b.csv");
    Ok(())
}
