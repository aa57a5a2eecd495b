//! Resync against an in-memory store (sorted like S3); the e2e tests run the same against MinIO.

use std::collections::BTreeSet;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};
use proptest::prelude::*;

use super::*;
use crate::ledger::{Marker, Outcome, SourceObject};

const BUCKET: &str = "b";
/// The ledger shares the source bucket, as it does by default.
const LEDGER: &str = ".zeroflow/ledger/ns/p/";

fn filter(prefix: &str) -> SourceFilter {
    SourceFilter { bucket: BUCKET.into(), prefix: prefix.into(), suffix: None, exclude: vec![LEDGER.into()] }
}

async fn put(store: &InMemory, key: &str) -> String {
    let path = Path::parse(key).expect("test keys are valid paths");
    store.put(&path, PutPayload::from_static(b"x")).await.expect("put");
    store.head(&path).await.expect("head").e_tag.expect("in-memory objects have etags")
}

fn marker(key: &str, etag: &str) -> Marker {
    Marker {
        outcome: Outcome::Succeeded,
        source: SourceObject { bucket: BUCKET.into(), key: key.into(), etag: Some(etag.into()), version_id: None },
        outputs: vec![],
        attempts: 1,
        finished_at: SystemTime::now().into(),
        error: None,
    }
}

/// Runs a resync and returns the report and the keys handed to the backlog.
async fn run(
    store: &InMemory,
    filter: &SourceFilter,
    ledger: &Ledger,
    cutoff: Option<SystemTime>,
) -> (ResyncReport, Vec<String>) {
    let mut admitted = Vec::new();
    let report = resync(store, filter, ledger, cutoff, |item| {
        admitted.push(item.object.key.to_string());
        Admission::Queued
    })
    .await
    .expect("resync");
    (report, admitted)
}

fn setup() -> (Arc<InMemory>, Ledger) {
    let store = Arc::new(InMemory::new());
    let ledger = Ledger::new(store.clone(), LEDGER).expect("ledger");
    (store, ledger)
}

#[tokio::test]
async fn finds_exactly_the_objects_without_a_marker_for_their_etag() {
    let (store, ledger) = setup();
    for key in ["in/a", "in/b", "in/c", "in/d"] {
        let etag = put(&store, key).await;
        if key == "in/b" || key == "in/d" {
            ledger.record(&marker(key, &etag)).await.expect("record");
        }
    }
    let (report, admitted) = run(&store, &filter("in/"), &ledger, None).await;
    assert_eq!(admitted, ["in/a", "in/c"]);
    assert_eq!((report.matched, report.already_done, report.discovered, report.complete), (4, 2, 2, true));

    put(&store, "in/b").await; // overwritten: its marker is for the old etag
    let (_, admitted) = run(&store, &filter("in/"), &ledger, None).await;
    assert_eq!(admitted, ["in/a", "in/b", "in/c"]);
}

#[tokio::test]
async fn partial_prefix_suffix_and_exclusions_limit_the_work() {
    let (store, ledger) = setup();
    for key in ["in/2024-a.csv", "in/2024-b.txt", "in/2025-a.csv", "in/out/2024-x.csv", "im.csv", "j.csv"] {
        put(&store, key).await;
    }
    let mut only_2024 = filter("in/2024-");
    only_2024.suffix = Some(".csv".into());
    let (report, admitted) = run(&store, &only_2024, &ledger, None).await;
    assert_eq!(admitted, ["in/2024-a.csv"]);
    assert!(report.listed <= 3, "stops after the prefix's run of keys: {report:?}");

    let mut whole_bucket = filter("");
    whole_bucket.exclude.extend(["in/out/".into(), String::new()]);
    ledger.record(&marker("j.csv", "old")).await.expect("record");
    let (_, admitted) = run(&store, &whole_bucket, &ledger, None).await;
    assert_eq!(admitted, ["im.csv", "in/2024-a.csv", "in/2024-b.txt", "in/2025-a.csv", "j.csv"]);
}

/// Another pipeline's ledger in the same bucket (stage B reading stage A's sink) is never work,
/// whatever its prefix, and neither are folder placeholders.
#[tokio::test]
async fn zeroflow_keys_of_any_pipeline_are_never_work() {
    let store = Arc::new(InMemory::new());
    let ledger = Ledger::new(store.clone(), ".zeroflow/ledger/ns/stage-b/").expect("ledger");
    for key in ["one.txt", ".zeroflow/ledger/ns/stage-a/k/Fx!Gy", ".zeroflow/other/x", "zeta.txt"] {
        put(&store, key).await;
    }
    let everything = SourceFilter { bucket: BUCKET.into(), prefix: String::new(), suffix: None, exclude: vec![] };
    let (_, admitted) = run(&store, &everything, &ledger, None).await;
    assert_eq!(admitted, ["one.txt", "zeta.txt"]);
}

#[tokio::test]
async fn excluded_ranges_are_jumped_over_not_listed() {
    let (store, ledger) = setup();
    for i in 0..50 {
        put(&store, &format!("zeroflow-output/{i:02}.json")).await;
        ledger.record(&marker(&format!("in/{i:02}"), "e")).await.expect("record");
    }
    let edge = format!("zeroflow-output/{}", "\u{10FFFF}".repeat(253));
    for key in ["a", "in/x", "zz", edge.as_str()] {
        put(&store, key).await;
    }
    let mut whole_bucket = filter("");
    whole_bucket.exclude.push("zeroflow-output/".into());
    let (report, admitted) = run(&store, &whole_bucket, &ledger, None).await;
    assert_eq!(admitted, ["a", "in/x", "zz"]);
    // a, the first marker, in/x, the first output, the edge key past the offset, zz.
    assert_eq!((report.listed, report.skipped_ranges), (6, 2), "{report:?}");
}

#[test]
fn the_skip_offset_follows_every_key_of_the_prefix_and_precedes_the_rest() {
    let offset = skip_past("out/");
    assert!(offset.len() <= MAX_KEY_BYTES && offset.starts_with("out/"));
    assert!(format!("out/{}", "\u{10FFFF}".repeat(200)) < offset);
    assert!(offset.as_str() < "out0" && offset.as_str() < "ou\u{10FFFF}");
}

#[tokio::test]
async fn without_backfill_only_objects_since_the_cutoff_count() {
    let (store, ledger) = setup();
    put(&store, "old").await;
    let (report, admitted) = run(&store, &filter(""), &ledger, Some(SystemTime::now() + Duration::from_secs(60))).await;
    assert_eq!((report.listed, report.matched, admitted.len()), (1, 0, 0));
    let (_, admitted) = run(&store, &filter(""), &ledger, Some(SystemTime::now() - Duration::from_secs(60))).await;
    assert_eq!(admitted, ["old"]);
}

#[tokio::test]
async fn a_full_backlog_stops_the_pass_and_duplicates_are_not_discoveries() {
    let (store, ledger) = setup();
    for key in ["a", "b", "c"] {
        put(&store, key).await;
    }
    let mut answers = [Admission::AlreadyQueued, Admission::Queued, Admission::Full].into_iter();
    let report = resync(store.as_ref(), &filter(""), &ledger, None, |_| answers.next().expect("three answers"))
        .await
        .expect("resync");
    assert_eq!((report.already_queued, report.discovered, report.complete), (1, 1, false));
}

#[tokio::test]
async fn long_keys_are_checked_by_name() {
    let (store, ledger) = setup();
    let long = "l".repeat(1000);
    let etag = put(&store, &long).await;
    put(&store, "m").await;
    assert!(matches!(ledger.path_of(&long, Some(&etag)), MarkerPath::Hashed(_)));
    ledger.record(&marker(&long, &etag)).await.expect("record");
    let (report, admitted) = run(&store, &filter(""), &ledger, None).await;
    assert_eq!((admitted, report.already_done), (vec!["m".to_owned()], 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Model check: whatever the keys and which of them have current, stale or no markers,
    /// resync admits exactly the objects without a current marker.
    #[test]
    fn admits_exactly_the_unfinished(objects in proptest::collection::btree_map("[a-c/é]{1,6}", 0..3u8, 0..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let (store, ledger) = setup();
            let mut expected = BTreeSet::new();
            for (key, state) in &objects {
                let Ok(path) = Path::parse(key) else { continue };
                if path.as_ref() != key { continue }
                let etag = put(&store, key).await;
                match state {
                    0 => { expected.insert(key.clone()); }
                    1 => { ledger.record(&marker(key, &etag)).await.expect("record"); }
                    _ => {
                        ledger.record(&marker(key, "stale")).await.expect("record");
                        expected.insert(key.clone());
                    }
                }
            }
            let (_, admitted) = run(&store, &filter(""), &ledger, None).await;
            prop_assert_eq!(admitted.into_iter().collect::<BTreeSet<_>>(), expected);
            Ok(())
        })?;
    }
}
