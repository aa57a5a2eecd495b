//! Resync over many objects in the testbed's MinIO: creates N source objects (parallel PUTs),
//! records ledger markers for half of them, runs one resync pass and prints objects listed per
//! second, the discovered count, wall time and the process's peak RSS during the pass.
//!
//! Run it with `e2e/bench/resync [N]` (default 100000), which sets up the environment. It only
//! talks to a store on 127.0.0.1. Figures, not a timed test: it asserts only that the pass found
//! exactly the unmarked half.
//!
//! Measured 2026-11-27 on the testbed (2 busy cores, MinIO on loopback), 100000 objects and 50000
//! markers in the same bucket: seeding took 200 s; the pass took 8.9 s (11300 objects listed/s),
//! discovered 50000, and peaked at 11 MiB RSS (9 MiB with 2000 objects: memory does not grow with N).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use zeroflow_core::ledger::{Ledger, Marker, Outcome, SourceObject};
use zeroflow_core::resync::{Admission, SourceFilter, resync};
use zeroflow_operator::store::bucket_client;

/// Requests in flight while seeding; MinIO on a busy 2-core machine saturates well below this.
const PARALLEL_PUTS: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let bucket = std::env::var("ZF_BENCH_BUCKET").context("the e2e/bench/resync script creates the bucket")?;
    let config = zeroflow_e2e::store_config()?;
    if !config.endpoint.as_deref().unwrap_or_default().starts_with("http://127.0.0.1:") {
        bail!("refusing to run against {:?}: this benchmark only talks to the testbed on 127.0.0.1", config.endpoint);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(bucket_client(&config, &bucket)?);
    let ledger = Ledger::new(store.clone(), ".zeroflow/ledger/bench/resync/")?;

    let seeding = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let (store, ledger, bucket) = (store.clone(), ledger.clone(), bucket.clone());
            async move {
                let key = format!("data/{:02x}/{i:07}.csv", i % 256);
                let put = store.put(&Path::parse(&key)?, PutPayload::from(format!("{i}\n"))).await?;
                if i % 2 == 0 {
                    let source = SourceObject { bucket, key, etag: put.e_tag, version_id: None };
                    let finished_at = SystemTime::now().into();
                    let marker = Marker {
                        outcome: Outcome::Succeeded,
                        source,
                        outputs: vec![],
                        attempts: 1,
                        finished_at,
                        error: None,
                    };
                    ledger.record(&marker).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL_PUTS)
        .try_collect::<()>()
        .await?;
    println!("seeded {count} objects and {} markers in {:.1} s", count.div_ceil(2), seeding.elapsed().as_secs_f64());

    let rss_before = status_kib("VmRSS");
    reset_peak_rss();
    let filter =
        SourceFilter { bucket: bucket.clone(), prefix: "data/".into(), suffix: None, exclude: vec![ledger.prefix()] };
    let report = resync(store.as_ref(), &filter, &ledger, None, |_| Admission::Queued).await?;
    let peak = status_kib("VmHWM");

    let seconds = report.took.as_secs_f64();
    println!("objects listed:      {}", report.listed);
    println!("listed per second:   {:.0}", report.listed as f64 / seconds);
    println!("already done:        {}", report.already_done);
    println!("discovered:          {}", report.discovered);
    println!("wall time:           {seconds:.2} s");
    println!("RSS before the pass: {} MiB", rss_before.unwrap_or(0) / 1024);
    println!("peak RSS in the pass: {} MiB", peak.unwrap_or(0) / 1024);
    anyhow::ensure!(report.discovered as usize == count / 2, "expected {} discoveries", count / 2);
    Ok(())
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` 5), so the peak is the pass's own.
fn reset_peak_rss() {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("note: could not reset the peak RSS; it includes seeding");
    }
}
