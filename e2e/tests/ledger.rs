//! The ledger and resync against the testbed's real MinIO: markers round-trip, and resync finds
//! exactly the objects without a marker for their current etag. Each test has its own bucket.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use zeroflow_core::ledger::{FailureDetail, Ledger, Marker, MarkerName, MarkerPath, Outcome, SourceObject};
use zeroflow_core::resync::{Admission, ResyncReport, SourceFilter, resync};
use zeroflow_e2e::mc;
use zeroflow_operator::store::bucket_client;

const LEDGER: &str = ".zeroflow/ledger/ns/pipeline/";

/// A bucket that exists for one test; removed (with its objects) when dropped.
struct TestBucket {
    name: String,
    store: Arc<dyn ObjectStore>,
}

impl TestBucket {
    async fn create(prefix: &str) -> anyhow::Result<Self> {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.subsec_nanos();
        let name = format!("{prefix}-{}-{nanos}", std::process::id());
        mc(&["mb", &format!("{}/{name}", std::env::var("ZF_MC_ALIAS")?)]).await?;
        Ok(Self { store: Arc::new(bucket_client(&zeroflow_e2e::store_config()?, &name)?), name })
    }

    fn ledger(&self) -> anyhow::Result<Ledger> {
        Ok(Ledger::new(self.store.clone(), LEDGER)?)
    }

    /// Uploads an object and returns its etag as the store lists it.
    async fn put(&self, key: &str, body: &str) -> anyhow::Result<String> {
        let path = Path::parse(key)?;
        anyhow::ensure!(path.as_ref() == key, "object_store would store {key:?} as {path}");
        self.store.put(&path, PutPayload::from(body.to_owned())).await?;
        self.store.head(&path).await?.e_tag.context("MinIO returns etags")
    }

    /// The whole bucket, minus the ledger.
    fn filter(&self, prefix: &str) -> SourceFilter {
        SourceFilter { bucket: self.name.clone(), prefix: prefix.into(), suffix: None, exclude: vec![LEDGER.into()] }
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        if let (Ok(mc), Ok(alias)) = (std::env::var("MC"), std::env::var("ZF_MC_ALIAS")) {
            let _ = std::process::Command::new(mc).args(["rb", "--force", &format!("{alias}/{}", self.name)]).output();
        }
    }
}

fn marker(bucket: &str, key: &str, etag: &str) -> Marker {
    Marker {
        outcome: Outcome::Succeeded,
        source: SourceObject { bucket: bucket.into(), key: key.into(), etag: Some(etag.into()), version_id: None },
        outputs: vec![format!("out/{key}.json")],
        attempts: 1,
        finished_at: SystemTime::now().into(),
        error: None,
    }
}

/// Runs a resync and returns its report and the keys handed to the backlog, in order.
async fn run(
    bucket: &TestBucket,
    filter: &SourceFilter,
    cutoff: Option<SystemTime>,
) -> anyhow::Result<(ResyncReport, Vec<String>)> {
    let mut admitted = Vec::new();
    let report = resync(bucket.store.as_ref(), filter, &bucket.ledger()?, cutoff, |item| {
        admitted.push(item.object.key.to_string());
        Admission::Queued
    })
    .await?;
    Ok((report, admitted))
}

/// A key of `len` bytes in segments MinIO accepts (it refuses path segments over 255 bytes).
fn long_key(len: usize) -> String {
    let mut key: String = (0..len).map(|i| if i % 200 == 199 { '/' } else { 'x' }).collect();
    key.replace_range(len - 1.., "z");
    key
}

/// Keys that are hard for a naive ledger: escapes, spaces, unicode, a key at S3's length limit.
/// `..` and empty segments are in the ledger test only: MinIO and object_store refuse such objects.
fn hostile_source_keys() -> Vec<String> {
    vec!["%2F".into(), "a%2Fb/c".into(), "with space.csv".into(), "ünï/çødé 日本.csv".into(), long_key(1000)]
}

#[tokio::test]
async fn markers_round_trip_with_hostile_keys() -> anyhow::Result<()> {
    let bucket = TestBucket::create("zf-ledger-rt").await?;
    let ledger = bucket.ledger()?;
    let mut keys = hostile_source_keys();
    keys.extend(["../x".into(), "/leading".into(), "a//b".into(), "./.".into()]);
    for key in &keys {
        ledger.record(&marker(&bucket.name, key, "\"etag-1\"")).await?;
    }
    let failed = Marker {
        outcome: Outcome::Failed,
        attempts: 3,
        error: Some(FailureDetail { exit_code: Some(2), stderr_tail: "Traceback: boom".into() }),
        ..marker(&bucket.name, "poison.csv", "e")
    };
    ledger.record(&failed).await?;

    for key in &keys {
        let got = ledger.get(key, Some("etag-1")).await?.with_context(|| format!("marker of {key:?}"))?;
        assert_eq!(got.source.key, *key);
        assert!(ledger.contains(key, Some("\"etag-1\"")).await?, "quoted and unquoted etags are one revision");
        assert_eq!(ledger.get(key, Some("etag-2")).await?, None, "another revision of {key:?} is not done");
    }
    assert_eq!(ledger.get("poison.csv", Some("e")).await?, Some(failed));

    // The listing is in source-key order and holds every key whose name fits (not the long one).
    let listed: Vec<MarkerName> = ledger.list().try_collect().await?;
    let mut expected: Vec<MarkerName> = keys
        .iter()
        .chain(std::iter::once(&"poison.csv".to_owned()))
        .filter(|k| matches!(ledger.path_of(k, Some("etag-1")), MarkerPath::Plain(_)))
        .map(|k| MarkerName { key: k.clone(), etag: if k == "poison.csv" { "e" } else { "etag-1" }.into() })
        .collect();
    expected.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    assert_eq!(listed, expected);
    assert_eq!(listed.len(), keys.len(), "all but the 1000-byte key are plain, plus poison.csv");
    Ok(())
}

#[tokio::test]
async fn resync_finds_exactly_the_unfinished_objects_and_overwrites() -> anyhow::Result<()> {
    let bucket = TestBucket::create("zf-resync").await?;
    let ledger = bucket.ledger()?;
    let mut keys: Vec<String> = (0..30).map(|i| format!("in/{i:03}.csv")).collect();
    keys.extend(hostile_source_keys());
    let mut unfinished = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let etag = bucket.put(key, key).await?;
        if i % 2 == 0 {
            ledger.record(&marker(&bucket.name, key, &etag)).await?;
        } else {
            unfinished.push(key.clone());
        }
    }
    unfinished.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

    let (report, admitted) = run(&bucket, &bucket.filter(""), None).await?;
    assert_eq!(admitted, unfinished, "in the store's listing order");
    assert_eq!((report.matched, report.already_done, report.discovered), (35, 18, 17));
    assert!(report.complete);
    // The 18 markers share the bucket: one is listed, then MinIO starts after the ledger range.
    assert_eq!((report.listed, report.skipped_ranges), (36, 1));

    // A finished object overwritten with new content has a new etag: it is work again.
    bucket.put(&keys[0], "new content").await?;
    bucket.put(&keys[34], "new content").await?; // the long key, checked by name
    let (_, admitted) = run(&bucket, &bucket.filter(""), None).await?;
    assert!(admitted.contains(&keys[0]) && admitted.contains(&keys[34]), "{admitted:?}");
    assert_eq!(admitted.len(), unfinished.len() + 2);
    Ok(())
}

#[tokio::test]
async fn filter_and_exclusions_limit_the_work() -> anyhow::Result<()> {
    let bucket = TestBucket::create("zf-resync-filter").await?;
    for key in [
        "in/a.csv",
        "in/b.txt",
        "in/out/c.csv",
        "in/out/d.csv",
        "in/out/e.csv",
        "in2/d.csv",
        "im.csv",
        "zeroflow-output/in/a.csv/x.csv",
    ] {
        bucket.put(key, "x").await?;
    }
    bucket.ledger()?.record(&marker(&bucket.name, "in/old.csv", "gone")).await?;

    let mut csv_in = bucket.filter("in/");
    csv_in.suffix = Some(".csv".into());
    csv_in.exclude.push("in/out/".into());
    let (report, admitted) = run(&bucket, &csv_in, None).await?;
    assert_eq!(admitted, ["in/a.csv"]);
    assert_eq!((report.listed, report.matched), (3, 1), "only the prefix, and one key of in/out/, are listed");
    assert_eq!(report.skipped_ranges, 1);

    let mut everything = bucket.filter("");
    everything.exclude.push("zeroflow-output/".into());
    let (_, admitted) = run(&bucket, &everything, None).await?;
    assert_eq!(
        admitted,
        ["im.csv", "in/a.csv", "in/b.txt", "in/out/c.csv", "in/out/d.csv", "in/out/e.csv", "in2/d.csv"]
    );

    let (_, admitted) = run(&bucket, &bucket.filter("in"), None).await?;
    assert_eq!(
        admitted,
        ["in/a.csv", "in/b.txt", "in/out/c.csv", "in/out/d.csv", "in/out/e.csv", "in2/d.csv"],
        "a prefix need not end in /"
    );
    Ok(())
}

#[tokio::test]
async fn without_backfill_only_objects_since_the_cutoff_are_work() -> anyhow::Result<()> {
    let bucket = TestBucket::create("zf-resync-cutoff").await?;
    bucket.put("before.csv", "x").await?;
    // Listings carry milliseconds (HEAD only whole seconds), and resync compares listed times.
    let listed = |key: &'static str| {
        let store = bucket.store.clone();
        async move {
            let objects = store.list_with_delimiter(None).await?.objects;
            anyhow::Ok(
                objects.into_iter().find(|o| o.location.as_ref() == key).map(|o| SystemTime::from(o.last_modified)),
            )
        }
    };
    let before = listed("before.csv").await?.context("before.csv is listed")?;
    // The pipeline "was created" just after the first object.
    let created = before + Duration::from_millis(1);
    // Write until the new object is stamped at or after the cutoff (the same clock stamps both).
    let mut attempts = 0;
    while listed("after.csv").await?.is_none_or(|t| t < created) {
        attempts += 1;
        anyhow::ensure!(attempts < 100, "MinIO's clock does not advance");
        bucket.put("after.csv", "x").await?;
    }

    let (report, admitted) = run(&bucket, &bucket.filter(""), Some(created)).await?;
    assert_eq!(admitted, ["after.csv"]);
    assert_eq!((report.listed, report.matched), (2, 1));
    let (_, admitted) = run(&bucket, &bucket.filter(""), None).await?;
    assert_eq!(admitted, ["after.csv", "before.csv"], "backfill takes everything");
    Ok(())
}

/// Folder placeholders (`mc mb bucket/prefix/`, what S3 consoles and rclone write) are listed by
/// object_store without their trailing `/`: resync recognises them and never treats them as work,
/// even where the stripped name sorts out of order (`in/a-1.csv` < `in/a/` but `in/a` <
/// `in/a-1.csv`). A real empty object is still work.
#[tokio::test]
async fn folder_placeholders_are_never_work_but_empty_objects_are() -> anyhow::Result<()> {
    let bucket = TestBucket::create("zf-folders").await?;
    let alias = std::env::var("ZF_MC_ALIAS")?;
    for folder in ["in/a/", "in/b/", "in/z/"] {
        mc(&["mb", &format!("{alias}/{}/{folder}", bucket.name)]).await?;
    }
    bucket.put("in/a-1.csv", "x").await?;
    bucket.put("in/b/x.csv", "x").await?;
    bucket.put("in/empty.txt", "").await?;
    let ledger = bucket.ledger()?;
    let mut admitted = Vec::new();
    let report = resync(bucket.store.as_ref(), &bucket.filter("in/"), &ledger, None, |item| {
        admitted.push(item.object.key.to_string());
        Admission::Queued
    })
    .await?;
    assert_eq!(admitted, ["in/a-1.csv", "in/b/x.csv", "in/empty.txt"]);
    assert_eq!(report.folder_markers, 3, "{report:?}");
    Ok(())
}
