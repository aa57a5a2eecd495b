//! Security against the real operator and apiserver: who may act on a pipeline's objects, and
//! whether the gateway keeps serving its senders while refusing a flood of bad ones.
//!
//! - Workers: two pipelines `alpha` (keys under `a/`) and `beta` (`b/`) share one source bucket.
//!   Tokens of every other kind (beta's worker, the namespace's default ServiceAccount, an
//!   `alpha-worker` of another namespace, alpha's own account with the wrong audience, a token
//!   revoked by deleting the object it was bound to, a forged JWT, none) cannot lease, heartbeat,
//!   get an upload URL for, complete or fail alpha's objects; alpha's lease id is worthless on
//!   beta's path with beta's token; a forged lease id naming an object gets nothing for an
//!   object outside the caller's route; a finished lease's heartbeat, replayed, is refused.
//!   Expired tokens are not tested as such: the apiserver mints no token shorter than 10 minutes
//!   (TokenRequest's minimum), so revocation stands in for "no longer valid"; a token that was
//!   valid is trusted from the operator's cache for up to 60 s (`workapi::auth::DEFAULT_TTL`).
//! - Gateway: requests without the token, with a wrong one (Bearer, Basic, path) are refused
//!   (401/403) and admit nothing; valid senders are served during a flood of such requests.
//!   Throughput with and without the flood is printed, never asserted.
//!
//! Each test runs its own operator on its own ports (not MinIO's webhook address): events are
//! posted by the test, as a sender would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::{Value, json};
use zeroflow_e2e::pipelines::Buckets;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, free_port, http, store_config, token};
use zeroflow_operator::api::DataPipeline;
use zeroflow_operator::store::bucket_client;

/// An operator for `ns` with its gateway and work API on ports of its own, and the token.
struct Bed {
    operator: Operator,
    gateway: String,
    work_api: String,
    sender_token: String,
}

async fn start_operator(ns: &TestNamespace) -> anyhow::Result<Bed> {
    let sender_token = format!("sender-{}", ns.name);
    let token_file = std::env::temp_dir().join(format!("zf-security-token-{}", ns.name));
    std::fs::write(&token_file, &sender_token)?;
    let gateway = format!("127.0.0.1:{}", free_port()?);
    let work_api = format!("127.0.0.1:{}", free_port()?);
    let work_url = format!("http://{work_api}");
    let flags = [
        "--gateway-addr",
        &gateway,
        "--gateway-token-file",
        token_file.to_str().context("utf-8 path")?,
        "--work-api-addr",
        &work_api,
        "--work-api-url",
        &work_url,
    ];
    let operator = Operator::start_with(&ns.name, "solo", &flags).await?;
    operator.wait_ready(TIMEOUT).await?;
    Ok(Bed { operator, gateway, work_api, sender_token })
}

/// A MinIO webhook body announcing `key` (query-escaped as MinIO does) in `bucket`.
fn minio_put(bucket: &str, key: &str, etag: &str) -> Value {
    let escaped: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
    json!({"EventName": "s3:ObjectCreated:Put", "Key": format!("{bucket}/{key}"),
        "Records": [{"eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": escaped, "size": 5, "eTag": etag}}}]})
}

impl Bed {
    async fn post_event(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> anyhow::Result<u16> {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        Ok(http("POST", &format!("http://{}{path}", self.gateway), &all, body.to_string().as_bytes()).await?.0)
    }

    /// POSTs to `{work API}/v1/pipelines/{ns}/{pipeline}/leases{rest}`.
    async fn call(
        &self,
        ns: &str,
        pipeline: &str,
        token: Option<&str>,
        rest: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("http://{}/v1/pipelines/{ns}/{pipeline}/leases{rest}", self.work_api);
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        let (status, body) = http("POST", &url, &headers, body.to_string().as_bytes()).await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

/// A token bound to a Secret: the apiserver refuses it once the Secret is deleted.
async fn revoked_token(client: &kube::Client, ns: &str, account: &str) -> anyhow::Result<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let holder: Secret = serde_json::from_value(json!({"metadata": {"name": "token-holder"}}))?;
    let holder = secrets.create(&PostParams::default(), &holder).await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["zeroflow".into()],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some("token-holder".into()),
                uid: holder.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let minted = accounts.create_token_request(account, &PostParams::default(), &request).await?;
    secrets.delete("token-holder", &DeleteParams::default()).await?;
    // Deletion is final once the object is gone from the apiserver.
    eventually("the token's Secret is gone", TIMEOUT, || async {
        Ok(secrets.get_opt("token-holder").await?.is_none().then_some(()))
    })
    .await?;
    Ok(minted.status.context("TokenRequest without status")?.token)
}

async fn create_pipelines(client: &kube::Client, ns: &TestNamespace, buckets: &Buckets) -> anyhow::Result<()> {
    let api: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    for (name, prefix) in [("alpha", "a/"), ("beta", "b/")] {
        api.create(&PostParams::default(), &buckets.pipeline(name, prefix, json!({}))?).await?;
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    for account in ["alpha-worker", "beta-worker", "default"] {
        eventually(&format!("ServiceAccount {account}"), TIMEOUT, || async {
            Ok(accounts.get_opt(account).await?.map(|_| ()))
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_worker_acts_only_for_its_own_pipeline() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-sec").await?;
    let elsewhere = TestNamespace::create(&client, "zf-sec-other").await?;
    let buckets = Buckets::create(&client, &ns, "sec").await?;
    let bed = start_operator(&ns).await?;
    create_pipelines(&client, &ns, &buckets).await?;
    let other_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &elsewhere.name);
    let same_name: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "alpha-worker"}}))?;
    other_accounts.create(&PostParams::default(), &same_name).await?;

    let alpha = token(&client, &ns.name, "alpha-worker", "zeroflow").await?;
    let beta = token(&client, &ns.name, "beta-worker", "zeroflow").await?;
    let forbidden = [
        ("beta's worker", token(&client, &ns.name, "beta-worker", "zeroflow").await?),
        ("the default ServiceAccount", token(&client, &ns.name, "default", "zeroflow").await?),
        ("alpha-worker of another namespace", token(&client, &elsewhere.name, "alpha-worker", "zeroflow").await?),
    ];
    let unauthenticated = [
        ("alpha's worker, wrong audience", token(&client, &ns.name, "alpha-worker", "not-zeroflow").await?),
        ("alpha's worker, revoked", revoked_token(&client, &ns.name, "alpha-worker").await?),
        ("forged", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln".to_owned()),
    ];

    // One object per pipeline, announced by a sender with the gateway's token.
    let store = bucket_client(&store_config()?, &buckets.source)?;
    let mut etags = Vec::new();
    for key in ["a/1.csv", "b/1.csv"] {
        let put = store.put(&Path::parse(key)?, PutPayload::from(b"hello".to_vec())).await?;
        let etag = put.e_tag.context("etag")?.trim_matches('"').to_owned();
        let bearer = format!("Bearer {}", bed.sender_token);
        let status = bed
            .post_event("/v1/events/s3", &[("Authorization", bearer.as_str())], &minio_put(&buckets.source, key, &etag))
            .await?;
        ensure!(status == 200, "event for {key}: {status}");
        etags.push(etag);
    }
    let a_object = json!({"bucket": buckets.source, "key": "a/1.csv", "etag": etags[0], "attempt": 1});
    let b_object = json!({"bucket": buckets.source, "key": "b/1.csv", "etag": etags[1], "attempt": 1});

    // Alpha's worker leases alpha's object (the scaler adopts the pipeline first).
    let lease = eventually("alpha's lease", TIMEOUT, || async {
        let (status, lease) = bed.call(&ns.name, "alpha", Some(alpha.as_str()), "?wait_seconds=2", &json!({})).await?;
        Ok((status == 200).then_some(lease))
    })
    .await?;
    assert_eq!(lease["key"], "a/1.csv");
    let lease_id = lease["lease_id"].as_str().context("lease_id")?.to_owned();

    // Every other caller, on every call about alpha's objects.
    let mut with_name = a_object.clone();
    with_name["name"] = json!("out.txt");
    let mut completion = a_object.clone();
    completion["outputs"] = json!([]);
    let mut failure = a_object.clone();
    failure["retryable"] = json!(false);
    let calls = [
        ("lease", "?wait_seconds=0".to_owned(), json!({})),
        ("heartbeat", format!("/{lease_id}/heartbeat"), a_object.clone()),
        ("outputs", format!("/{lease_id}/outputs"), with_name.clone()),
        ("complete", format!("/{lease_id}/complete"), completion.clone()),
        ("fail", format!("/{lease_id}/fail"), failure.clone()),
    ];
    for (what, rest, body) in &calls {
        for (who, token) in &forbidden {
            let (status, answer) = bed.call(&ns.name, "alpha", Some(token.as_str()), rest, body).await?;
            assert_eq!(status, 403, "{what} by {who}: {answer}");
        }
        for (who, token) in &unauthenticated {
            let (status, answer) = bed.call(&ns.name, "alpha", Some(token.as_str()), rest, body).await?;
            assert_eq!(status, 401, "{what} by {who}: {answer}");
        }
        let (status, answer) = bed.call(&ns.name, "alpha", None, rest, body).await?;
        assert_eq!(status, 401, "{what} without a token: {answer}");
    }

    // Alpha's lease id and object on beta's path with beta's own token: not beta's to touch.
    for (what, rest, body) in calls.iter().skip(1) {
        let (status, answer) = bed.call(&ns.name, "beta", Some(beta.as_str()), rest, body).await?;
        assert_eq!(status, 404, "{what} of alpha's lease through beta: {answer}");
    }
    // A forged lease id on alpha's own path: nothing without an object, nothing for beta's.
    let forged = "00000000deadbeef-1";
    let (status, _) =
        bed.call(&ns.name, "alpha", Some(alpha.as_str()), &format!("/{forged}/heartbeat"), &json!({})).await?;
    assert_eq!(status, 404, "a forged lease id naming no object");
    let mut b_completion = b_object.clone();
    b_completion["outputs"] = json!([]);
    for (what, body) in [("heartbeat", &b_object), ("complete", &b_completion)] {
        let (status, answer) =
            bed.call(&ns.name, "alpha", Some(alpha.as_str()), &format!("/{forged}/{what}"), body).await?;
        assert_eq!(status, 404, "{what} of beta's object with a forged lease id: {answer}");
    }

    // Alpha's worker finishes its object; the finished lease, replayed, is refused.
    let (status, heartbeat) =
        bed.call(&ns.name, "alpha", Some(alpha.as_str()), &format!("/{lease_id}/heartbeat"), &a_object).await?;
    assert_eq!(status, 200, "alpha's own heartbeat: {heartbeat}");
    let (status, done) =
        bed.call(&ns.name, "alpha", Some(alpha.as_str()), &format!("/{lease_id}/complete"), &completion).await?;
    assert_eq!((status, done["lease_held"].clone()), (200, json!(true)), "{done}");
    let (status, _) =
        bed.call(&ns.name, "alpha", Some(alpha.as_str()), &format!("/{lease_id}/heartbeat"), &a_object).await?;
    assert_eq!(status, 410, "a finished lease's heartbeat, replayed");

    // Beta's object was never touched: beta's worker leases it, as the first attempt.
    let lease = eventually("beta's lease", TIMEOUT, || async {
        let (status, lease) = bed.call(&ns.name, "beta", Some(beta.as_str()), "?wait_seconds=2", &json!({})).await?;
        Ok((status == 200).then_some(lease))
    })
    .await?;
    assert_eq!((lease["key"].as_str(), lease["attempt"].as_u64()), (Some("b/1.csv"), Some(1)));
    let metrics = bed.operator.metrics().await?;
    assert!(metrics.contains("zeroflow_workapi_requests_refused_total"), "refusals are counted");
    Ok(())
}

/// Outcome counts of one kind of sender during one phase.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    other: AtomicU64,
}

const PHASE: Duration = Duration::from_secs(4);
const VALID_SENDERS: usize = 4;
const BAD_SENDERS: usize = 16;

/// Valid senders post distinct events for `PHASE`; with `flood`, bad senders hammer meanwhile.
/// Returns (valid accepted, valid refused, bad refused as expected, bad with another answer).
async fn phase(bed: &Arc<Bed>, bucket: &str, tag: &str, flood: bool) -> anyhow::Result<[u64; 4]> {
    let valid = Arc::new(Tally::default());
    let bad = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for sender in 0..VALID_SENDERS {
        let (bed, valid, stop, bucket, tag) =
            (bed.clone(), valid.clone(), stop.clone(), bucket.to_owned(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let bearer = format!("Bearer {}", bed.sender_token);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let event =
                    minio_put(&bucket, &format!("f/{tag}-{sender}-{n}.csv"), "0123456789abcdef0123456789abcdef");
                let status = bed.post_event("/v1/events/s3", &[("Authorization", bearer.as_str())], &event).await?;
                let tally = if status == 200 { &valid.ok } else { &valid.other };
                tally.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    if flood {
        for sender in 0..BAD_SENDERS {
            let (bed, bad, stop, bucket) = (bed.clone(), bad.clone(), stop.clone(), bucket.to_owned());
            tasks.push(tokio::spawn(async move {
                let event = minio_put(&bucket, "f/bad.csv", "ffffffffffffffffffffffffffffffff");
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let (path, auth, expected) = match (sender + n) % 4 {
                        0 => ("/v1/events/s3", None, 401),
                        1 => ("/v1/events/s3", Some("Bearer wrong-token"), 403),
                        2 => ("/v1/events/s3", Some("Basic emVyb2Zsb3c6d3Jvbmc="), 403),
                        _ => ("/v1/events/s3/t/wrong-token", None, 403),
                    };
                    let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
                    let status = bed.post_event(path, &headers, &event).await?;
                    let tally = if status == expected { &bad.ok } else { &bad.other };
                    tally.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                anyhow::Ok(())
            }));
        }
    }
    tokio::time::sleep(PHASE).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok([
        valid.ok.load(Ordering::Relaxed),
        valid.other.load(Ordering::Relaxed),
        bad.ok.load(Ordering::Relaxed),
        bad.other.load(Ordering::Relaxed),
    ])
}

#[tokio::test]
async fn the_gateway_refuses_bad_senders_and_serves_good_ones_during_a_flood() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-flood").await?;
    let buckets = Buckets::create(&client, &ns, "flood").await?;
    let bed = Arc::new(start_operator(&ns).await?);
    let api: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    // Paused: no worker takes anything, so the backlog counts exactly what was admitted.
    let mut pipeline = buckets.pipeline("flood", "f/", json!({}))?;
    pipeline.metadata.annotations = Some([("zeroflow.dev/paused".to_owned(), "true".to_owned())].into());
    api.create(&PostParams::default(), &pipeline).await?;
    let source = buckets.source.clone();
    eventually("the pipeline's route", TIMEOUT, || async {
        let probe = minio_put(&source, "f/probe.csv", "0123456789abcdef0123456789abcdef");
        let bearer = format!("Bearer {}", bed.sender_token);
        let status = bed.post_event("/v1/events/s3", &[("Authorization", bearer.as_str())], &probe).await?;
        let pending = pending(&bed, &ns.name).await?;
        Ok((status == 200 && pending >= 1.0).then_some(()))
    })
    .await?;

    // Alternating rounds, so a change of load on the shared machine hits both conditions.
    let mut admitted = 1u64;
    let mut rows = Vec::new();
    for round in 0..3 {
        for flood in [false, true] {
            let started = Instant::now();
            let [ok, refused, bad_ok, bad_other] = phase(&bed, &source, &format!("r{round}{flood}"), flood).await?;
            let seconds = started.elapsed().as_secs_f64();
            assert_eq!(refused, 0, "valid events refused (round {round}, flood {flood})");
            assert_eq!(bad_other, 0, "bad requests answered other than 401/403 (round {round})");
            admitted += ok;
            rows.push((round, flood, ok as f64 / seconds, bad_ok as f64 / seconds));
        }
    }
    let floor: Vec<f64> = rows.iter().filter(|r| !r.1).map(|r| r.2).collect();
    let floor = floor.iter().sum::<f64>() / floor.len() as f64;
    println!(
        "gateway under a flood of refused requests ({VALID_SENDERS} valid senders, {BAD_SENDERS} bad, {PHASE:?} per sample):"
    );
    for (round, flood, valid, bad) in &rows {
        println!(
            "  round {round} flood={flood:<5} valid accepted {valid:>8.1}/s ({:.2} x floor)  bad refused {bad:>8.1}/s",
            valid / floor
        );
    }
    println!("  floor (mean without flood): {floor:.1} valid events/s");
    // Nothing a bad sender sent was admitted, and nothing a good one sent was lost.
    eventually("every valid event pending", TIMEOUT, || async {
        let pending = pending(&bed, &ns.name).await?;
        Ok((pending == admitted as f64).then_some(()))
    })
    .await
    .with_context(|| format!("expected {admitted} pending"))?;
    Ok(())
}

/// The pipeline's pending count from the operator's metrics.
async fn pending(bed: &Bed, namespace: &str) -> anyhow::Result<f64> {
    let metrics = bed.operator.metrics().await?;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("zeroflow_backlog_pending{") && l.contains(&format!("namespace=\"{namespace}\"")));
    Ok(line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0))
}

/// The pending count of one pipeline, from the operator's metrics.
async fn pending_of(bed: &Bed, namespace: &str, name: &str) -> anyhow::Result<f64> {
    let metrics = bed.operator.metrics().await?;
    let (ns, name) = (format!("namespace=\"{namespace}\""), format!("pipeline=\"{name}\""));
    let line =
        metrics.lines().find(|l| l.starts_with("zeroflow_backlog_pending{") && l.contains(&ns) && l.contains(&name));
    Ok(line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0))
}

/// Tenancy: a namespace's own sender token (Secret `zeroflow-sender-token`) enqueues work only
/// for that namespace's pipelines; events for pipelines elsewhere are counted as not permitted,
/// and a request that reaches none of the namespace's pipelines is refused (403). The
/// operator-wide token still reaches every namespace.
#[tokio::test]
async fn a_namespace_sender_token_reaches_only_its_namespace() -> anyhow::Result<()> {
    let client = client().await?;
    let team_a = TestNamespace::create(&client, "zf-team-a").await?;
    let team_b = TestNamespace::create(&client, "zf-team-b").await?;
    let buckets = Buckets::create(&client, &team_a, "tenancy").await?;
    // Team B reads the same bucket with its own copy of the credentials.
    Buckets::create(&client, &team_b, "tenancy-b").await?;
    for (ns, token) in [(&team_a, "team-a-sender"), (&team_b, "team-b-sender")] {
        let secret: Secret = serde_json::from_value(
            json!({"metadata": {"name": "zeroflow-sender-token"}, "stringData": {"token": token}}),
        )?;
        Api::<Secret>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &secret).await?;
    }
    let token_file = std::env::temp_dir().join(format!("zf-tenancy-token-{}", team_a.name));
    let operator_token = format!("operator-{}", team_a.name);
    std::fs::write(&token_file, &operator_token)?;
    let (gateway, work_api) = (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?));
    let flags = [
        "--namespaces",
        &team_b.name,
        "--gateway-addr",
        &gateway,
        "--gateway-token-file",
        token_file.to_str().context("utf-8 path")?,
        "--work-api-addr",
        &work_api,
    ];
    let operator = Operator::start_with(&team_a.name, "solo", &flags).await?;
    operator.wait_ready(TIMEOUT).await?;
    let bed = Bed { operator, gateway, work_api, sender_token: operator_token.clone() };
    // Paused, so the backlogs count exactly what was admitted.
    for (ns, name, prefix) in [(&team_a, "alpha", "x/"), (&team_b, "beta", "x/"), (&team_a, "gamma", "only-a/")] {
        let mut pipeline = buckets.pipeline(name, prefix, json!({}))?;
        pipeline.metadata.annotations = Some([("zeroflow.dev/paused".to_owned(), "true".to_owned())].into());
        Api::<DataPipeline>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &pipeline).await?;
    }
    let post = |token: &str, key: &str| {
        let bearer = format!("Bearer {token}");
        let event = minio_put(&buckets.source, key, "0123456789abcdef0123456789abcdef");
        let bed = &bed;
        async move {
            let url = format!("http://{}/v1/events/s3", bed.gateway);
            let headers = [("Content-Type", "application/json"), ("Authorization", bearer.as_str())];
            let (status, body) = http("POST", &url, &headers, event.to_string().as_bytes()).await?;
            anyhow::Ok((status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)))
        }
    };
    // Both namespaces' tokens are read when their pipelines are reconciled.
    eventually("both sender tokens known", TIMEOUT, || async {
        let a = post("team-a-sender", "only-a/probe.csv").await?.0;
        let b = post("team-b-sender", "x/probe.csv").await?.0;
        Ok((a == 200 && b == 200).then_some(()))
    })
    .await?;

    // A's token, an object both namespaces' pipelines take: only A's pipeline gets it.
    let (status, summary) = post("team-a-sender", "x/1.csv").await?;
    assert_eq!(
        (status, summary["accepted"].as_u64(), summary["not_permitted"].as_u64()),
        (200, Some(1), Some(1)),
        "{summary}"
    );
    // B's token, an object only A's pipelines take: refused, nothing admitted.
    let (status, answer) = post("team-b-sender", "only-a/2.csv").await?;
    assert_eq!(status, 403, "{answer}");
    // B's token, the shared prefix: only B's pipeline.
    let (status, summary) = post("team-b-sender", "x/3.csv").await?;
    assert_eq!(
        (status, summary["accepted"].as_u64(), summary["not_permitted"].as_u64()),
        (200, Some(1), Some(1)),
        "{summary}"
    );
    // The operator-wide token reaches both namespaces.
    let (status, summary) = post(&operator_token, "x/4.csv").await?;
    assert_eq!(
        (status, summary["accepted"].as_u64(), summary["not_permitted"].as_u64()),
        (200, Some(2), Some(0)),
        "{summary}"
    );
    // A token of no namespace is refused as before.
    assert_eq!(post("team-c-sender", "x/5.csv").await?.0, 403);

    // The gauges follow the backlogs within a moment, so wait for them.
    // Absolute counts: the probes above are x/probe.csv (beta) and only-a/probe.csv (gamma).
    let expected =
        [(2.0, "alpha: x/1 and x/4"), (3.0, "beta: the probe, x/3 and x/4"), (1.0, "gamma: its probe, nothing from B")];
    let counts = eventually("pending counts", TIMEOUT, || async {
        let now = [
            pending_of(&bed, &team_a.name, "alpha").await?,
            pending_of(&bed, &team_b.name, "beta").await?,
            pending_of(&bed, &team_a.name, "gamma").await?,
        ];
        Ok((now[0] >= expected[0].0 && now[1] >= expected[1].0 && now[2] >= expected[2].0).then_some(now))
    })
    .await?;
    for (count, (want, what)) in counts.iter().zip(expected) {
        assert_eq!(*count, want, "{what}");
    }
    let metrics = bed.operator.metrics().await?;
    let not_permitted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("zeroflow_events_received_total{") && l.contains("outcome=\"not_permitted\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(not_permitted >= 3.0, "not-permitted routes are counted: {not_permitted}");
    Ok(())
}
