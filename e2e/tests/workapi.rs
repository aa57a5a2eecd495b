//! The work API against the real testbed: real projected-token TokenReview by the apiserver,
//! real presigned GET/PUT against MinIO. The test plays the runner: it leases with a
//! TokenRequest-minted ServiceAccount token, downloads, uploads an output and completes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde_json::json;
use zeroflow_core::backlog::BacklogConfig;
use zeroflow_core::ledger::Outcome;
use zeroflow_e2e::work_api::WorkApiBed;
use zeroflow_e2e::{client, http, token};

const OBJECTS: usize = 50;
const WORKERS: usize = 4;

/// The runner's loop: lease, download, transform, upload, complete, until the poll is empty.
async fn work(bed: &WorkApiBed) -> anyhow::Result<usize> {
    let token = Some(bed.worker_token.as_str());
    let mut done = 0;
    loop {
        let (status, lease) = bed.call(token, "?wait_seconds=1", json!({})).await?;
        match status {
            204 => return Ok(done),
            200 => {}
            other => bail!("lease: {other} {lease}"),
        }
        let id = lease["lease_id"].as_str().context("lease_id")?;
        let (status, input) = http("GET", lease["input_url"].as_str().context("input_url")?, &[], b"").await?;
        ensure!(status == 200, "presigned GET answered {status}");
        let (status, beat) = bed.call(token, &format!("/{id}/heartbeat"), json!({})).await?;
        ensure!(status == 200, "heartbeat: {status} {beat}");
        let (status, output) = bed.call(token, &format!("/{id}/outputs"), json!({"name": "upper.txt"})).await?;
        ensure!(status == 200, "outputs: {status} {output}");
        let upper = String::from_utf8(input)?.to_uppercase();
        let (status, _) = http("PUT", output["url"].as_str().context("url")?, &[], upper.as_bytes()).await?;
        ensure!(status == 200, "presigned PUT answered {status}");
        let (status, finish) = bed.call(token, &format!("/{id}/complete"), json!({"outputs": ["upper.txt"]})).await?;
        ensure!(status == 200 && finish["lease_held"] == true, "complete: {status} {finish}");
        done += 1;
    }
}

#[tokio::test]
async fn workers_with_projected_tokens_process_every_object_exactly_once() -> anyhow::Result<()> {
    let bed = Arc::new(WorkApiBed::start("zf-workapi", BacklogConfig::default()).await?);
    let client = client().await?;

    // Who may call: only the pipeline's worker account, with a token for our audience.
    let other = token(&client, &bed.namespace, "other-worker", "zeroflow").await?;
    let wrong_audience = token(&client, &bed.namespace, "demo-worker", "not-zeroflow").await?;
    assert_eq!(bed.call(Some(&other), "?wait_seconds=0", json!({})).await?.0, 403);
    assert_eq!(bed.call(Some(&wrong_audience), "?wait_seconds=0", json!({})).await?.0, 401);
    assert_eq!(bed.call(None, "?wait_seconds=0", json!({})).await?.0, 401);
    assert_eq!(bed.call(Some("not.a.jwt"), "?wait_seconds=0", json!({})).await?.0, 401);
    assert_eq!(bed.call(Some(&bed.worker_token), "?wait_seconds=0", json!({})).await?.0, 204);

    let mut expected = BTreeMap::new();
    for i in 0..OBJECTS {
        let key = format!("in/batch 1/invoice-{i:03}.csv");
        let content = format!("invoice {i}, amount {}\n", i * 10);
        bed.upload_and_admit(&key, &content).await?;
        expected.insert(key, content);
    }
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let bed = bed.clone();
            tokio::spawn(async move { work(&bed).await })
        })
        .collect();
    let mut processed = 0;
    for worker in workers {
        processed += tokio::time::timeout(Duration::from_secs(120), worker).await.context("workers stuck")???;
    }
    assert_eq!(processed, OBJECTS);

    let records = bed.records().await?;
    let keys: Vec<_> = records.iter().map(|m| m.source.key.clone()).collect();
    assert_eq!(keys.len(), OBJECTS, "one record per object");
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), OBJECTS, "no object recorded twice");
    for marker in &records {
        let output = format!("out/{}/upper.txt", marker.source.key);
        assert_eq!((marker.outcome, marker.attempts, &marker.outputs), (Outcome::Succeeded, 1, &vec![output.clone()]));
        let written = bed.s3.get(&Path::parse(&output)?).await?.bytes().await?;
        let input = expected.get(&marker.source.key).context("unexpected object")?;
        assert_eq!(String::from_utf8(written.to_vec())?, input.to_uppercase());
    }
    let counts = bed.counts();
    assert_eq!((counts.pending, counts.in_flight, counts.succeeded), (0, 0, OBJECTS as u64));
    Ok(())
}

#[tokio::test]
async fn a_lease_that_stops_heartbeating_is_leased_again_after_it_expires() -> anyhow::Result<()> {
    let config = BacklogConfig { lease_duration_ms: 1_500, ..BacklogConfig::default() };
    let bed = WorkApiBed::start("zf-workapi-expiry", config).await?;
    bed.upload_and_admit("in/slow.csv", "slow").await?;
    let token = Some(bed.worker_token.as_str());

    let (status, first) = bed.call(token, "?wait_seconds=0", json!({})).await?;
    assert_eq!(status, 200, "{first}");
    let first_id = first["lease_id"].as_str().context("lease_id")?.to_owned();
    // The worker goes silent; the next poll gets the object once the lease has expired.
    let (status, second) = bed.call(token, "?wait_seconds=10", json!({})).await?;
    assert_eq!(status, 200, "{second}");
    assert_eq!((second["key"].as_str(), second["attempt"].as_u64()), (Some("in/slow.csv"), Some(2)));
    // The first worker's heartbeat names its object, as the runner's does: refused, the object
    // is another worker's now.
    let object = json!({"bucket": bed.bucket, "key": "in/slow.csv", "etag": first["etag"], "attempt": 1});
    assert_eq!(bed.call(token, &format!("/{first_id}/heartbeat"), object).await?.0, 410);

    let second_id = second["lease_id"].as_str().context("lease_id")?;
    let (status, done) = bed.call(token, &format!("/{second_id}/complete"), json!({"outputs": []})).await?;
    assert_eq!((status, done["lease_held"].clone()), (200, json!(true)));
    assert_eq!(bed.records().await?.len(), 1);
    Ok(())
}
