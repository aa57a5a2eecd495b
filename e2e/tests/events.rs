//! Storage events from the testbed's real MinIO reach the operator's gateway and become pending
//! items of exactly the pipelines whose filters match. Every test here binds the MinIO webhook
//! address, so they run one at a time behind a lock.

use std::time::Duration;

use anyhow::Context as _;
use kube::api::{Api, PostParams};
use serde_json::json;
use zeroflow_e2e::pipelines::{Buckets, WEBHOOK, operator_with_gateway, upload};
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, kubectl, mc};
use zeroflow_operator::api::DataPipeline;

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
        // Every endpoint's series exist from the start at 0: a duplicate is a count above it.
        Ok(metrics
            .lines()
            .filter(|l| l.starts_with("zeroflow_events_received_total{") && l.contains("outcome=\"duplicate\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .any(|count| count > 0.0)
            .then_some(()))
    })
    .await?;
    // Nothing to wait for: the counts must stay as they were. Longer than one status period
    // (2 s), so a wrongly queued duplicate would have been published by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, count) in expected {
        assert_eq!(pending(&pipelines, name).await?, count, "{name} after re-uploads");
    }
    let metrics = operator.metrics().await?;
    // Every endpoint's series exist from the start at 0: a refusal is a count above it.
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("zeroflow_events_received_total{") && l.contains("outcome=\"unauthorized\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 0.0, "MinIO's token was refused:\n{metrics}");
    let gauge = format!("zeroflow_backlog_pending{{namespace=\"{}\",pipeline=\"everything-in\"}} 3", ns.name);
    assert!(metrics.contains(&gauge), "no {gauge} in:\n{metrics}");
    Ok(())
}

/// Plays the runner against the operator's work API with the worker ServiceAccount's token:
/// one lease, read, transform, write, complete. `None` when nothing was pending.
async fn process_one(work_api: &str, namespace: &str, pipeline: &str, token: &str) -> anyhow::Result<Option<String>> {
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let base = format!("{work_api}/v1/pipelines/{namespace}/{pipeline}/leases");
    let (status, body) = zeroflow_e2e::http("POST", &format!("{base}?wait_seconds=1"), &headers, b"{}").await?;
    if status == 204 {
        return Ok(None);
    }
    anyhow::ensure!(status == 200, "lease: {status} {}", String::from_utf8_lossy(&body));
    let lease: serde_json::Value = serde_json::from_slice(&body)?;
    let id = lease["lease_id"].as_str().context("lease_id")?;
    let (status, input) =
        zeroflow_e2e::http("GET", lease["input_url"].as_str().context("input_url")?, &[], b"").await?;
    anyhow::ensure!(status == 200, "presigned GET: {status}");
    let output = json!({"name": "upper.txt"}).to_string();
    let (status, body) =
        zeroflow_e2e::http("POST", &format!("{base}/{id}/outputs"), &headers, output.as_bytes()).await?;
    anyhow::ensure!(status == 200, "output URL: {status} {}", String::from_utf8_lossy(&body));
    let put: serde_json::Value = serde_json::from_slice(&body)?;
    let upper = String::from_utf8_lossy(&input).to_uppercase();
    let (status, _) = zeroflow_e2e::http("PUT", put["url"].as_str().context("url")?, &[], upper.as_bytes()).await?;
    anyhow::ensure!(status == 200, "presigned PUT: {status}");
    let complete = json!({"outputs": ["upper.txt"]}).to_string();
    let (status, body) =
        zeroflow_e2e::http("POST", &format!("{base}/{id}/complete"), &headers, complete.as_bytes()).await?;
    anyhow::ensure!(status == 200, "complete: {status} {}", String::from_utf8_lossy(&body));
    Ok(Some(lease["key"].as_str().context("key")?.to_owned()))
}

/// Processes objects one after another until `expected` are done.
async fn process_all(
    work_api: &str,
    namespace: &str,
    pipeline: &str,
    token: &str,
    expected: usize,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    // A stall fails, not a slow machine: the deadline moves with every completed object (one
    // worker takes a few seconds for 500 objects on a quiet machine, minutes under load).
    let mut deadline = tokio::time::Instant::now() + TIMEOUT;
    while done.len() < expected {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {} of {expected} processed, none in the last {TIMEOUT:?}",
            done.len()
        );
        let finished = process_one(work_api, namespace, pipeline, token).await?;
        if finished.is_some() {
            deadline = tokio::time::Instant::now() + TIMEOUT;
        }
        done.extend(finished);
    }
    Ok(done)
}

/// Runs `workers` concurrent workers until `total` objects are completed; returns every
/// completed key (duplicates included, so callers can check there are none).
async fn drain(
    work_api: &str,
    namespace: &str,
    pipeline: &str,
    token: &str,
    workers: usize,
    total: usize,
) -> anyhow::Result<Vec<String>> {
    use std::sync::{Arc, Mutex as SyncMutex};
    let done = Arc::new(SyncMutex::new(Vec::new()));
    let deadline = tokio::time::Instant::now() + 3 * TIMEOUT;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (done, work_api, namespace, pipeline, token) =
            (done.clone(), work_api.to_owned(), namespace.to_owned(), pipeline.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let finished = done.lock().map(|d| d.len()).unwrap_or(total);
                if finished >= total {
                    return anyhow::Ok(());
                }
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "only {finished} of {total} processed");
                // One object at a time per worker, like a runner with concurrencyPerReplica 1.
                let key = process_one(&work_api, &namespace, &pipeline, &token).await?;
                done.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.extend(key);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let keys = done.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    Ok(keys)
}

#[tokio::test]
async fn uploaded_objects_are_leased_processed_and_recorded_exactly_once() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-loop").await?;
    let store = Buckets::create(&client, &ns, "loop").await?;
    let (source, sink) = (store.source.clone(), store.sink.clone());
    let alias = std::env::var("ZF_MC_ALIAS")?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let pipeline = store.pipeline("upper", "in/", json!({"sink": {"prefix": "out/"}}))?;
    pipelines.create(&PostParams::default(), &pipeline).await?;

    let lease_addr = format!("127.0.0.1:{}", zeroflow_e2e::free_port()?);
    let _operator = operator_with_gateway(&ns, &lease_addr).await?;
    eventually("SourceReachable", TIMEOUT, || async {
        let status = pipelines.get("upper").await?.status.unwrap_or_default();
        Ok(zeroflow_operator::api::conditions::is_true(&status.conditions, "SourceReachable").filter(|r| *r))
    })
    .await?;
    let arn = std::env::var("ZF_WEBHOOK_ARN")?;
    eventually("mc event add", TIMEOUT, || async {
        Ok(mc(&["event", "add", &format!("{alias}/{source}"), &arn, "--event", "put"]).await.ok())
    })
    .await?;

    const OBJECTS: usize = 1000;
    let dir = std::env::temp_dir().join(format!("zf-loop-{}", ns.name));
    std::fs::create_dir_all(dir.join("in"))?;
    for i in 0..OBJECTS {
        std::fs::write(dir.join("in").join(format!("doc {i:04}.txt")), format!("document {i}\n"))?;
    }
    mc(&["cp", "--recursive", &format!("{}/", dir.display()), &format!("{alias}/{source}/")]).await?;
    eventually("all objects pending", TIMEOUT, || async {
        Ok((pending(&pipelines, "upper").await? == OBJECTS as i64).then_some(()))
    })
    .await?;

    let token = zeroflow_e2e::token(&client, &ns.name, "upper-worker", "zeroflow").await?;
    let work_api = format!("http://{lease_addr}");
    let started = std::time::Instant::now();
    let mut done = drain(&work_api, &ns.name, "upper", &token, 4, OBJECTS).await?;
    println!("{OBJECTS} objects drained by 4 test workers in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(done.len(), OBJECTS, "no object may be completed twice");
    done.sort();
    done.dedup();
    assert_eq!(done.len(), OBJECTS, "an object was completed twice");

    // Outputs and ledger markers are in the sink bucket; status counts every object once.
    let listing = mc(&["ls", "--recursive", &format!("{alias}/{sink}")]).await?;
    let outputs = listing.lines().filter(|l| l.contains("out/in/doc ") && l.ends_with("/upper.txt")).count();
    let markers = listing.lines().filter(|l| l.contains(".zeroflow/ledger/")).count();
    assert_eq!((outputs, markers), (OBJECTS, OBJECTS), "{listing}");
    let output = mc(&["cat", &format!("{alias}/{sink}/out/in/doc 0007.txt/upper.txt")]).await?;
    assert_eq!(output, "DOCUMENT 7\n");
    eventually("succeeded in status", TIMEOUT, || async {
        let status = pipelines.get("upper").await?.status.unwrap_or_default();
        Ok((status.succeeded == OBJECTS as i64 && status.pending == 0 && status.in_flight == 0).then_some(()))
    })
    .await?;

    // An object overwritten with new content is processed again: a new etag is new work.
    upload(&source, "in/doc 0007.txt", "rewritten\n").await?;
    eventually("the overwrite is pending", TIMEOUT, || async {
        Ok((pending(&pipelines, "upper").await? == 1).then_some(()))
    })
    .await?;
    let again = drain(&work_api, &ns.name, "upper", &token, 1, 1).await?;
    assert_eq!(again, ["in/doc 0007.txt"]);
    let output = mc(&["cat", &format!("{alias}/{sink}/out/in/doc 0007.txt/upper.txt")]).await?;
    assert_eq!(output, "REWRITTEN\n");
    let markers = mc(&["ls", "--recursive", &format!("{alias}/{sink}/.zeroflow/ledger/")]).await?;
    assert_eq!(markers.lines().count(), OBJECTS + 1, "one marker per revision");

    // Another ServiceAccount's token may not lease this pipeline's objects.
    let other = zeroflow_e2e::token(&client, &ns.name, "default", "zeroflow").await?;
    let auth = format!("Bearer {other}");
    let url = format!("http://{lease_addr}/v1/pipelines/{}/upper/leases?wait_seconds=0", ns.name);
    let (status, _) = zeroflow_e2e::http("POST", &url, &[("Authorization", &auth)], b"{}").await?;
    assert_eq!(status, 403);
    Ok(())
}

/// Answers every request with 200 until dropped: lets MinIO see its webhook target online.
async fn stand_in_endpoint(addr: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        }
    }))
}

#[tokio::test]
async fn objects_whose_notifications_were_lost_are_found_by_resync_even_across_a_sigkill() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-resync").await?;
    let store = Buckets::create(&client, &ns, "rs").await?;
    let (source, sink) = (store.source.clone(), store.sink.clone());
    let alias = std::env::var("ZF_MC_ALIAS")?;
    // Bind the bucket to MinIO's queue-less target while a stand-in answers, then take the
    // endpoint away: every notification of the uploads below is dropped by MinIO.
    let webhook = std::env::var("ZF_WEBHOOK_ADDR")?;
    let stand_in = stand_in_endpoint(&webhook).await?;
    let arn = std::env::var("ZF_WEBHOOK_ARN_NO_QUEUE")?;
    eventually("mc event add", TIMEOUT, || async {
        Ok(mc(&["event", "add", &format!("{alias}/{source}"), &arn, "--event", "put"]).await.ok())
    })
    .await?;
    stand_in.abort();
    let _ = stand_in.await;

    // 50 get finished, 10 leased and 500 left pending when the operator is killed.
    const OBJECTS: usize = 560;
    let dir = std::env::temp_dir().join(format!("zf-resync-{}", ns.name));
    std::fs::create_dir_all(dir.join("in"))?;
    for i in 0..OBJECTS {
        std::fs::write(dir.join("in").join(format!("obj-{i:03}.txt")), format!("object {i}\n"))?;
    }
    mc(&["cp", "--recursive", &format!("{}/", dir.display()), &format!("{alias}/{source}/")]).await?;

    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let pipeline = store.pipeline("late", "in/", json!({}))?;
    pipelines.create(&PostParams::default(), &pipeline).await?;

    let lease_addr = format!("127.0.0.1:{}", zeroflow_e2e::free_port()?);
    let flags = ["--work-api-addr", lease_addr.as_str()];
    let mut operator = Operator::start_with(&ns.name, "solo", &flags).await?;
    operator.wait_ready(TIMEOUT).await?;
    eventually("resync finds all lost objects", TIMEOUT, || async {
        Ok((pending(&pipelines, "late").await? == OBJECTS as i64).then_some(()))
    })
    .await?;
    let metrics = operator.metrics().await?;
    let discovered =
        format!("zeroflow_resync_discovered_total{{namespace=\"{}\",pipeline=\"late\"}} {OBJECTS}", ns.name);
    assert!(metrics.contains(&discovered), "no {discovered} in:\n{metrics}");

    // Finish 50, then kill the operator with SIGKILL while 10 are leased and 500 pending.
    let token = zeroflow_e2e::token(&client, &ns.name, "late-worker", "zeroflow").await?;
    let base = format!("http://{lease_addr}");
    let first = process_all(&base, &ns.name, "late", &token, 50).await?;
    // Ten more are leased by workers that never finish them: in flight at the moment of the kill.
    let auth = format!("Bearer {token}");
    let lease_url = format!("{base}/v1/pipelines/{}/late/leases?wait_seconds=2", ns.name);
    for _ in 0..10 {
        let (status, _) = zeroflow_e2e::http("POST", &lease_url, &[("Authorization", &auth)], b"{}").await?;
        assert_eq!(status, 200);
    }
    eventually("10 in flight", TIMEOUT, || async {
        let status = pipelines.get("late").await?.status.unwrap_or_default();
        Ok((status.in_flight == 10).then_some(()))
    })
    .await?;
    operator.kill().await?;
    let operator = Operator::start_with(&ns.name, "solo", &flags).await?;
    operator.wait_ready(TIMEOUT).await?;
    // The new leader rebuilt its backlog from the store and the ledger: only the unfinished.
    eventually("backlog rebuilt after SIGKILL", TIMEOUT, || async {
        Ok((pending(&pipelines, "late").await? == (OBJECTS - 50) as i64).then_some(()))
    })
    .await?;
    let rest = process_all(&base, &ns.name, "late", &token, OBJECTS - 50).await?;
    let mut all: Vec<_> = first.into_iter().chain(rest).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), OBJECTS, "every object processed exactly once across the restart");
    let listing = mc(&["ls", "--recursive", &format!("{alias}/{sink}/.zeroflow/ledger/")]).await?;
    assert_eq!(listing.lines().count(), OBJECTS, "one ledger marker per object");
    Ok(())
}

#[tokio::test]
async fn a_poison_object_ends_failed_after_max_attempts_and_a_redrive_puts_it_back() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-poison").await?;
    let store = Buckets::create(&client, &ns, "po").await?;
    let (source, sink) = (store.source.clone(), store.sink.clone());
    let alias = std::env::var("ZF_MC_ALIAS")?;
    upload(&source, "in/poison.csv", "not,really,csv\n").await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let pipeline = store.pipeline("poison", "in/", json!({"delivery": {"maxAttempts": 2, "retryBackoff": "500ms"}}))?;
    pipelines.create(&PostParams::default(), &pipeline).await?;
    let lease_addr = format!("127.0.0.1:{}", zeroflow_e2e::free_port()?);
    let operator = Operator::start_with(&ns.name, "solo", &["--work-api-addr", &lease_addr]).await?;
    operator.wait_ready(TIMEOUT).await?;
    eventually("the object is pending (start-up resync)", TIMEOUT, || async {
        Ok((pending(&pipelines, "poison").await? == 1).then_some(()))
    })
    .await?;

    // Every attempt fails: the transform exits 3.
    let token = zeroflow_e2e::token(&client, &ns.name, "poison-worker", "zeroflow").await?;
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let base = format!("http://{lease_addr}/v1/pipelines/{}/poison/leases", ns.name);
    let failure = json!({"retryable": true, "exit_code": 3, "stderr_tail": "ValueError: not a CSV"}).to_string();
    for attempt in 1..=2 {
        let lease = eventually(&format!("attempt {attempt} leased"), TIMEOUT, || async {
            let (status, body) = zeroflow_e2e::http("POST", &format!("{base}?wait_seconds=2"), &headers, b"{}").await?;
            Ok((status == 200).then_some(serde_json::from_slice::<serde_json::Value>(&body)?))
        })
        .await?;
        assert_eq!(lease["attempt"], attempt);
        let id = lease["lease_id"].as_str().context("lease_id")?;
        let (status, body) =
            zeroflow_e2e::http("POST", &format!("{base}/{id}/fail"), &headers, failure.as_bytes()).await?;
        anyhow::ensure!(status == 200, "fail: {status} {}", String::from_utf8_lossy(&body));
    }
    eventually("failed after maxAttempts", TIMEOUT, || async {
        let status = pipelines.get("poison").await?.status.unwrap_or_default();
        Ok((status.failed == 1 && status.pending == 0 && status.in_flight == 0).then_some(()))
    })
    .await?;
    let (status, _) = zeroflow_e2e::http("POST", &format!("{base}?wait_seconds=1"), &headers, b"{}").await?;
    assert_eq!(status, 204, "a failed object is not retried until a user asks");
    let markers = mc(&["ls", "--recursive", &format!("{alias}/{sink}/.zeroflow/ledger/")]).await?;
    let marker_key = markers.split_whitespace().last().context("a failure marker")?.to_owned();
    let marker = mc(&["cat", &format!("{alias}/{sink}/.zeroflow/ledger/{marker_key}")]).await?;
    assert!(marker.contains("\"failed\"") && marker.contains("not a CSV"), "{marker}");
    let events = eventually("an ObjectsFailed event", TIMEOUT, || async {
        let out = kubectl(&["get", "events", "-n", &ns.name, "-o", "jsonpath={.items[*].reason}"]).await?;
        Ok(out.contains("ObjectsFailed").then_some(out))
    })
    .await?;
    assert!(events.contains("ObjectsFailed"));

    // The user re-drives; the object is processed and counted as succeeded.
    kubectl(&["annotate", "dp", "poison", "-n", &ns.name, "zeroflow.dev/redrive=1"]).await?;
    eventually("re-driven", TIMEOUT, || async {
        let status = pipelines.get("poison").await?.status.unwrap_or_default();
        Ok((status.last_redrive.as_deref() == Some("1") && status.pending == 1 && status.failed == 0).then_some(()))
    })
    .await?;
    let done = process_all(&format!("http://{lease_addr}"), &ns.name, "poison", &token, 1).await?;
    assert_eq!(done, ["in/poison.csv"]);
    eventually("succeeded after the re-drive", TIMEOUT, || async {
        let status = pipelines.get("poison").await?.status.unwrap_or_default();
        Ok((status.succeeded == 1 && status.failed == 0).then_some(()))
    })
    .await?;
    let marker = mc(&["cat", &format!("{alias}/{sink}/.zeroflow/ledger/{marker_key}")]).await?;
    assert!(marker.contains("\"succeeded\""), "{marker}");
    Ok(())
}
