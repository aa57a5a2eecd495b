use std::time::{Duration, Instant, SystemTime};

use zeroflow_core::events::{EventKind, StorageEvent};

use super::*;

fn created(bucket: &str, key: &str, etag: &str) -> StorageEvent {
    StorageEvent {
        kind: EventKind::Created,
        bucket: bucket.into(),
        key: key.into(),
        etag: Some(etag.into()),
        version_id: None,
        size: Some(1),
        sequencer: None,
        time: None,
    }
}

fn route(namespace: &str, name: &str, bucket: &str) -> Route {
    Route {
        namespace: namespace.into(),
        name: name.into(),
        bucket: bucket.into(),
        prefix: None,
        suffix: None,
        exclude_prefixes: vec!["out/".into()],
    }
}

fn pipelines() -> (Pipelines, mpsc::UnboundedReceiver<Kick>) {
    let (kick, kicks) = mpsc::unbounded_channel();
    (Pipelines::new(3, kick, Arc::new(Metrics::new().expect("metrics"))), kicks)
}

#[test]
fn events_reach_every_matching_pipeline_and_kick_the_scaler_once_per_request() {
    let (p, mut kicks) = pipelines();
    let a = p.upsert(
        &PipelineKey::new("ns", "a"),
        Settings::new(route("ns", "a", "raw"), BacklogConfig::default()),
        &Seed::default(),
    );
    let b = p.upsert(
        &PipelineKey::new("ns", "b"),
        Settings::new(route("ns", "b", "raw"), BacklogConfig::default()),
        &Seed::default(),
    );
    let events = [created("raw", "x.csv", "1"), created("raw", "y.csv", "1"), created("other", "z", "1")];
    let report = p.admit(&events, Instant::now(), None).expect("admitted");
    assert_eq!(
        report,
        AdmitReport { accepted: 4, duplicate: 0, unrouted: 1, skipped: 0, withdrawn: 0, not_permitted: 0 }
    );
    assert_eq!((a.lock().backlog.counts().pending, b.lock().backlog.counts().pending), (2, 2));
    let mut kicked: Vec<_> = std::iter::from_fn(|| kicks.try_recv().ok()).map(|k| k.pipeline.name).collect();
    kicked.sort();
    assert_eq!(kicked, ["a", "b"], "one kick per pipeline that got work");
    let again = p.admit(&events[..1], Instant::now(), None).expect("admitted");
    assert_eq!((again.accepted, again.duplicate), (0, 2));
    assert!(kicks.try_recv().is_err(), "duplicates wake nobody");
    assert!(a.lock().progress.clone().last_event_seen(), "the event time is kept for status");
}

#[test]
fn folder_markers_and_own_outputs_are_not_work() {
    let (p, _kicks) = pipelines();
    let a = p.upsert(
        &PipelineKey::new("ns", "a"),
        Settings::new(route("ns", "a", "raw"), BacklogConfig::default()),
        &Seed::default(),
    );
    let report =
        p.admit(&[created("raw", "incoming/2026-01/", "d41d8cd98f00b204e9800998ecf8427e")], Instant::now(), None);
    assert_eq!(report.expect("answered"), AdmitReport { skipped: 1, ..AdmitReport::default() });
    let report = p.admit(&[created("raw", "out/x.csv/x.json", "1")], Instant::now(), None);
    assert_eq!(report.expect("answered").unrouted, 1, "a pipeline never consumes its own output");
    assert!(a.lock().backlog.is_idle());
    let text = p.metrics().render().expect("render");
    assert!(
        text.contains(r#"zeroflow_objects_skipped_total{namespace="ns",pipeline="a",reason="folder_marker"} 1"#),
        "{text}"
    );
}

#[test]
fn a_full_backlog_is_overloaded_but_admits_what_fits_elsewhere() {
    let (p, _kicks) = pipelines();
    let small = BacklogConfig { capacity: 1, ..BacklogConfig::default() };
    let a = p.upsert(&PipelineKey::new("ns", "a"), Settings::new(route("ns", "a", "raw"), small), &Seed::default());
    let b = p.upsert(
        &PipelineKey::new("ns", "b"),
        Settings::new(route("ns", "b", "raw"), BacklogConfig::default()),
        &Seed::default(),
    );
    let overloaded = p.admit(&[created("raw", "1", "e"), created("raw", "2", "e")], Instant::now(), None);
    assert_eq!(overloaded, Err(Overloaded { retry_after_secs: 3 }));
    assert_eq!((a.lock().backlog.counts().pending, b.lock().backlog.counts().pending), (1, 2));
    assert!(a.lock().backlog.take_resync_request(), "the overflow asks for a resync");
}

#[test]
fn removing_a_pipeline_takes_everything_it_had_and_a_new_one_starts_fresh() {
    let (p, _kicks) = pipelines();
    let key = PipelineKey::new("ns", "a");
    let a = p.upsert(&key, Settings::new(route("ns", "a", "raw"), BacklogConfig::default()), &Seed::default());
    p.admit(&[created("raw", "x", "1")], Instant::now(), None).expect("admitted");
    p.metrics().pending.with_label_values(&["ns", "a"]).set(1);
    assert!(p.retain(Some("elsewhere"), &BTreeSet::new()).is_empty(), "other namespaces are untouched");
    assert_eq!(p.retain(Some("ns"), &BTreeSet::new()), vec![key.clone()]);
    assert!(p.get(&key).is_none());
    assert!(p.routes().routes_for(&created("raw", "x", "1")).is_empty(), "its route is gone");
    assert!(!p.metrics().render().expect("render").contains("pipeline=\"a\""), "its series are gone");
    assert_eq!(a.lock().backlog.counts().pending, 1, "a caller still holding the old runtime sees the old one");
    let fresh = p.upsert(&key, Settings::new(route("ns", "a", "raw"), BacklogConfig::default()), &Seed::default());
    assert!(!Arc::ptr_eq(&a, &fresh));
    assert!(fresh.lock().backlog.is_idle() && fresh.lock().backlog.is_held(0), "fresh, and held until adopted");
}

#[test]
fn new_settings_keep_the_backlog_and_rebuild_routes() {
    let (p, _kicks) = pipelines();
    let key = PipelineKey::new("ns", "a");
    let a = p.upsert(&key, Settings::new(route("ns", "a", "raw"), BacklogConfig::default()), &Seed::default());
    p.admit(&[created("raw", "x", "1")], Instant::now(), None).expect("admitted");
    let moved = p.upsert(&key, Settings::new(route("ns", "a", "landing"), BacklogConfig::default()), &Seed::default());
    assert!(Arc::ptr_eq(&a, &moved), "the same runtime");
    assert_eq!(moved.lock().backlog.counts().pending, 1, "the backlog stays");
    assert!(p.routes().routes_for(&created("raw", "y", "1")).is_empty());
    assert_eq!(p.routes().routes_for(&created("landing", "y", "1")), vec![key]);
}

#[test]
fn a_removal_withdraws_a_pending_upload_it_comes_after() {
    let (p, _kicks) = pipelines();
    let a = p.upsert(
        &PipelineKey::new("ns", "a"),
        Settings::new(route("ns", "a", "raw"), BacklogConfig::default()),
        &Seed::default(),
    );
    let mut upload = created("raw", "oops.csv", "1");
    upload.sequencer = Some("0001".into());
    p.admit(&[upload], Instant::now(), None).expect("admitted");
    let removal = StorageEvent {
        kind: EventKind::Removed,
        etag: None,
        sequencer: Some("0002".into()),
        ..created("raw", "oops.csv", "")
    };
    let report = p.admit(&[removal], Instant::now(), None).expect("answered");
    assert_eq!(report.withdrawn, 1);
    assert!(a.lock().backlog.is_idle(), "deleted before any worker got to it: nothing to do");
}

#[test]
fn other_pipelines_ledgers_are_excluded_and_a_cycle_stops_its_newest_pipeline() {
    let (p, _kicks) = pipelines();
    let stage = |name: &str, created: u64, source: (&str, &str), sink: (&str, &str)| {
        let mut route = route("team-a", name, source.0);
        route.prefix = Some(source.1.to_owned()).filter(|s| !s.is_empty());
        route.exclude_prefixes.clear();
        let mut s = Settings::new(route, BacklogConfig::default());
        s.sink_bucket = sink.0.into();
        s.sink_prefix = sink.1.into();
        s.ledger_prefix = format!("ledgers/{name}/");
        s.created = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(created));
        (PipelineKey::new("team-a", name), s)
    };
    let (a, sa) = stage("stage-a", 1, ("in-bucket", "incoming/"), ("mid-bucket", "zeroflow-output/"));
    let (b, sb) = stage("stage-b", 2, ("mid-bucket", ""), ("out-bucket", "zeroflow-output/"));
    p.upsert(&a, sa, &Seed::default());
    p.upsert(&b, sb, &Seed::default());
    // stage-a keeps its ledger (a custom prefix) in mid-bucket, which stage-b reads whole.
    assert!(p.routes().routes_for(&created("mid-bucket", "ledgers/stage-a/k/x!y", "1")).is_empty());
    assert_eq!(p.routes().routes_for(&created("mid-bucket", "zeroflow-output/incoming/x/y", "1")), vec![b.clone()]);
    assert_eq!(p.ledgers_in("mid-bucket"), vec!["ledgers/stage-a/".to_owned()]);
    assert!(p.stop(&a).is_none() && p.stop(&b).is_none(), "a chain runs");
    let (c, sc) = stage("stage-c", 3, ("out-bucket", ""), ("in-bucket", "incoming/"));
    p.upsert(&c, sc, &Seed::default());
    let stop = p.stop(&c).expect("the pipeline that closed the cycle is stopped");
    assert_eq!(stop.reason, "PipelineCycle");
    assert!(
        stop.message.contains("team-a/stage-c -> team-a/stage-a -> team-a/stage-b -> team-a/stage-c"),
        "{}",
        stop.message
    );
    assert!(p.stop(&a).is_none() && p.stop(&b).is_none(), "the others keep running");
    p.remove(&a);
    assert!(p.stop(&c).is_none(), "the cycle is gone with stage-a");
}

/// A sender limited to one namespace: its events reach that namespace's pipelines only; each
/// route elsewhere is counted as not permitted, never admitted.
#[test]
fn a_namespace_scope_admits_only_to_that_namespace() {
    let (p, _kicks) = pipelines();
    let mine = p.upsert(
        &PipelineKey::new("a", "p"),
        Settings::new(route("a", "p", "raw"), BacklogConfig::default()),
        &Seed::default(),
    );
    let theirs = p.upsert(
        &PipelineKey::new("b", "p"),
        Settings::new(route("b", "p", "raw"), BacklogConfig::default()),
        &Seed::default(),
    );
    let report = p.admit(&[created("raw", "x.csv", "1")], Instant::now(), Some("a")).expect("admitted");
    assert_eq!((report.accepted, report.not_permitted, report.reached_any()), (1, 1, true));
    assert_eq!((mine.lock().backlog.counts().pending, theirs.lock().backlog.counts().pending), (1, 0));
    let report = p.admit(&[created("raw", "y.csv", "1")], Instant::now(), Some("c")).expect("answered");
    assert_eq!((report.accepted, report.not_permitted, report.reached_any()), (0, 2, false));
    let report = p.admit(&[created("raw", "z.csv", "1")], Instant::now(), None).expect("admitted");
    assert_eq!((report.accepted, report.not_permitted), (2, 0));
    assert_eq!((mine.lock().backlog.counts().pending, theirs.lock().backlog.counts().pending), (2, 1));
}

/// A worker in a pod that a scale-down under way may remove is given nothing; other workers,
/// and workers whose token names no pod, are.
#[test]
fn retiring_workers_may_not_lease() {
    let (p, _kicks) = pipelines();
    let settings = Settings::new(route("ns", "p", "raw"), BacklogConfig::default());
    let pipeline = p.upsert(&PipelineKey::new("ns", "p"), settings, &Seed::default());
    let mut state = pipeline.lock();
    state.retiring.insert("p-worker-1".into(), Instant::now());
    assert!(!state.may_lease_to(Some("p-worker-1")));
    assert!(state.may_lease_to(Some("p-worker-2")) && state.may_lease_to(None));
    state.retiring.clear();
    assert!(state.may_lease_to(Some("p-worker-1")));
}

/// A bucket that is never reached: these tests only need a pipeline to have store access.
struct Unreached;

impl BucketAccess for Unreached {
    fn name(&self) -> &str {
        "raw"
    }

    fn presign<'a>(
        &'a self,
        _: object_store::signer::Method,
        _: &'a str,
        _: Duration,
    ) -> futures::future::BoxFuture<'a, Result<object_store::signer::Url, crate::workapi::ObjectError>> {
        Box::pin(async { Err(crate::workapi::ObjectError::Store("not reached".into())) })
    }

    fn head<'a>(
        &'a self,
        _: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<crate::workapi::ObjectInfo>, crate::workapi::ObjectError>> {
        Box::pin(async { Err(crate::workapi::ObjectError::Store("not reached".into())) })
    }
}

fn give_access(pipeline: &Pipeline) {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let ledger = Ledger::new(store.clone(), ".zeroflow/ledger").expect("ledger");
    let access = Access { source: Arc::new(Unreached), sink: Arc::new(Unreached), source_store: store, ledger };
    pipeline.lock().access = Some(Arc::new(access));
}

/// Whether admitting one new object wakes a lease poll that waits on `pipeline`.
fn admission_wakes(pipelines: &Pipelines, pipeline: &Pipeline, key: &str) -> bool {
    use futures::FutureExt as _;
    let notified = pipeline.notify.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let report = pipelines.admit(&[created("raw", key, "e1")], Instant::now(), None).expect("admitted");
    assert_eq!(report.accepted, 1);
    notified.now_or_never().is_some()
}

#[test]
fn admissions_wake_lease_polls_only_when_they_could_lease() {
    let (pipelines, _kicks) = pipelines();
    let key = PipelineKey::new("ns", "p");
    let pipeline =
        pipelines.upsert(&key, Settings::new(route("ns", "p", "raw"), BacklogConfig::default()), &Seed::default());
    assert!(!admission_wakes(&pipelines, &pipeline, "a.csv"), "no store access: nothing can be leased");
    give_access(&pipeline);
    assert!(admission_wakes(&pipelines, &pipeline, "b.csv"));
    let mut paused = Settings::new(route("ns", "p", "raw"), BacklogConfig::default());
    paused.paused = Some(Paused { replicas: 0 });
    pipelines.upsert(&key, paused, &Seed::default());
    assert!(!admission_wakes(&pipelines, &pipeline, "c.csv"), "paused: nothing is leased");
}
