//! The real runner binary against a fake work API and a fake presigned store, both on loopback.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

const TOKEN: &str = "test-token";

#[derive(Default)]
struct Fake {
    base: String,
    queue: Mutex<VecDeque<(String, Vec<u8>)>>,
    /// lease id -> key
    leases: Mutex<HashMap<String, String>>,
    next: AtomicU64,
    heartbeats: AtomicU64,
    /// (lease id, "complete" | "fail", body)
    results: Mutex<Vec<(String, String, Value)>>,
    store: Mutex<HashMap<String, Vec<u8>>>,
    /// Answer this many results with 503 first, as a restarting operator would.
    refuse_results: AtomicU64,
    /// Answer this many output requests, then this many results, with 404 for the pipeline, as
    /// a new leader does in the moment between its election and its first reconcile.
    unknown_outputs: AtomicU64,
    unknown_results: AtomicU64,
    /// Heartbeat bodies received.
    heartbeat_bodies: Mutex<Vec<Value>>,
    /// Inputs the fake store answers 404 for (deleted before the worker got to them).
    gone: Mutex<Vec<String>>,
}

type Shared = Arc<Fake>;

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn lease(State(fake): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let next = fake.queue.lock().expect("poisoned").pop_front();
    let Some((key, body)) = next else {
        // A short long poll keeps idle runners from spinning.
        tokio::time::sleep(Duration::from_millis(200)).await;
        return StatusCode::NO_CONTENT.into_response();
    };
    let id = format!("1-{}", fake.next.fetch_add(1, Ordering::SeqCst));
    fake.store.lock().expect("poisoned").insert(format!("in/{id}"), body.clone());
    fake.leases.lock().expect("poisoned").insert(id.clone(), key.clone());
    axum::Json(json!({
        "lease_id": id, "bucket": "src", "key": key, "etag": "\"e1\"", "version_id": null,
        "size": body.len(), "attempt": 1, "deadline_unix_ms": 0, "lease_seconds": 10,
        "heartbeat_interval_seconds": 1, "input_url": format!("{}/store/in/{id}", fake.base),
    }))
    .into_response()
}

async fn lease_call(
    State(fake): State<Shared>,
    UrlPath((_ns, _name, id, call)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match call.as_str() {
        "heartbeat" => {
            fake.heartbeats.fetch_add(1, Ordering::SeqCst);
            fake.heartbeat_bodies.lock().expect("poisoned").push(body.clone());
            if fake.leases.lock().expect("poisoned").get(&id).is_some_and(|key| key == "expired") {
                return (StatusCode::GONE, axum::Json(json!({"error": "the lease expired or was finished"})))
                    .into_response();
            }
            axum::Json(json!({"deadline_unix_ms": 0})).into_response()
        }
        "outputs" if take_one(&fake.unknown_outputs) => unknown_pipeline(),
        "outputs" => {
            let name = body["name"].as_str().unwrap_or_default().to_owned();
            axum::Json(json!({
                "name": name, "bucket": "sink", "key": format!("out/{id}/{name}"), "method": "PUT",
                "url": format!("{}/store/out/{id}/{name}", fake.base), "expires_in_seconds": 60,
                // As Azure names x-ms-blob-type: the upload must carry it.
                "headers": [["x-test-blob-type", "BlockBlob"]],
            }))
            .into_response()
        }
        "complete" | "fail" if take_one(&fake.unknown_results) => unknown_pipeline(),
        "complete" | "fail" => {
            let refuse = fake.refuse_results.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if refuse.is_ok() {
                return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": "not the leader yet"})))
                    .into_response();
            }
            fake.results.lock().expect("poisoned").push((id, call, body));
            axum::Json(json!({"recorded": true, "lease_held": true})).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Takes one from `counter` unless it is zero.
fn take_one(counter: &AtomicU64) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// The work API's answer for a pipeline it does not know.
fn unknown_pipeline() -> Response {
    (StatusCode::NOT_FOUND, axum::Json(json!({"error": "no such pipeline", "code": "not_found"}))).into_response()
}

async fn store_get(State(fake): State<Shared>, UrlPath(path): UrlPath<String>) -> Response {
    let gone = fake.gone.lock().expect("poisoned").iter().any(|id| path == format!("in/{id}"));
    if gone {
        return (StatusCode::NOT_FOUND, "<Error><Code>NoSuchKey</Code></Error>").into_response();
    }
    match fake.store.lock().expect("poisoned").get(&path) {
        Some(body) => body.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn store_put(State(fake): State<Shared>, UrlPath(path): UrlPath<String>, headers: HeaderMap, body: Bytes) {
    // S3 refuses PUTs without a length, Azure without the headers the target names; so does
    // this fake.
    assert!(headers.contains_key("content-length"), "upload without Content-Length");
    assert_eq!(
        headers.get("x-test-blob-type").and_then(|v| v.to_str().ok()),
        Some("BlockBlob"),
        "upload without the target's headers"
    );
    fake.store.lock().expect("poisoned").insert(path, body.to_vec());
}

async fn start_fake(objects: &[(&str, &[u8])]) -> Shared {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("test setup");
    let base = format!("http://{}", listener.local_addr().expect("test setup"));
    let fake = Arc::new(Fake {
        base,
        queue: Mutex::new(objects.iter().map(|(k, b)| (k.to_string(), b.to_vec())).collect()),
        ..Fake::default()
    });
    let app = Router::new()
        .route("/v1/pipelines/{ns}/{name}/leases", post(lease))
        .route("/v1/pipelines/{ns}/{name}/leases/{id}/{call}", post(lease_call))
        .route("/store/{*path}", get(store_get).put(store_put))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("test setup") });
    fake
}

/// A scratch directory per test: `root/work` is the runner's work dir, `root/token` its token.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!("zeroflow-runner-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("work")).expect("test setup");
        std::fs::write(root.join("token"), format!("{TOKEN}\n")).expect("test setup");
        Scratch { root }
    }
    fn work(&self) -> PathBuf {
        self.root.join("work")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn spawn_runner(fake: &Fake, scratch: &Scratch, contract: &str, timeout: u64, script: &str) -> tokio::process::Child {
    runner_command(fake, scratch, contract, timeout, script).spawn().expect("starting the runner")
}

fn runner_command(
    fake: &Fake,
    scratch: &Scratch,
    contract: &str,
    timeout: u64,
    script: &str,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zeroflow-runner"));
    command
        .args(["run", "--", "sh", "-c", script])
        .env("ZEROFLOW_WORK_API", &fake.base)
        .env("ZEROFLOW_PIPELINE", "team/pipe")
        .env("ZEROFLOW_CONTRACT", contract)
        .env("ZEROFLOW_TIMEOUT", format!("{timeout}s"))
        .env("ZEROFLOW_CONCURRENCY", "1")
        .env("ZEROFLOW_TOKEN_FILE", scratch.root.join("token"))
        .env("ZEROFLOW_WORK_DIR", scratch.work())
        .env("ZEROFLOW_POD_NAME", "pod-0")
        .kill_on_drop(true);
    command
}

/// Polls `done` until it holds; panics after `limit`.
async fn until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn results(fake: &Fake) -> Vec<(String, String, Value)> {
    fake.results.lock().expect("poisoned").clone()
}

async fn wait_results(fake: &Fake, n: usize) -> Vec<(String, String, Value)> {
    until(Duration::from_secs(30), "results", || fake.results.lock().expect("poisoned").len() >= n).await;
    results(fake)
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("runner running").to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("running kill");
}

async fn terminate(child: &mut tokio::process::Child) -> ExitStatus {
    sigterm(child);
    tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("runner did not exit").expect("test setup")
}

fn stored(fake: &Fake, path: &str) -> Option<Vec<u8>> {
    fake.store.lock().expect("poisoned").get(path).cloned()
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("test setup").next().is_none()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_contract_uploads_every_output_file() {
    let fake = start_fake(&[("data/a.txt", b"hello")]).await;
    let scratch = Scratch::new("exec");
    // A directory an earlier run of this pod's container left, and one of another runner.
    std::fs::create_dir_all(scratch.work().join("pod-0-1-1/in")).expect("test setup");
    std::fs::write(scratch.work().join("pod-0-1-1/in/stale"), "x").expect("test setup");
    std::fs::create_dir(scratch.work().join("other-pod-1-1")).expect("test setup");
    let script = r#"cp "$ZEROFLOW_INPUT" "$ZEROFLOW_OUTPUT_DIR/copy.txt" &&
        printf '%s|%s|%s' "$ZEROFLOW_KEY" "$ZEROFLOW_SIZE" "$ZEROFLOW_BUCKET" > "$ZEROFLOW_OUTPUT_DIR/meta.txt" &&
        mkdir "$ZEROFLOW_OUTPUT_DIR/ignored-dir""#;
    let mut runner = spawn_runner(&fake, &scratch, "exec", 30, script);
    let results = wait_results(&fake, 1).await;
    assert!(terminate(&mut runner).await.success());
    let (id, call, body) = &results[0];
    assert_eq!(call, "complete", "{body}");
    assert_eq!(body["outputs"], json!(["copy.txt", "meta.txt"]));
    assert_eq!(body["key"], "data/a.txt");
    assert_eq!(stored(&fake, &format!("out/{id}/copy.txt")).as_deref(), Some(&b"hello"[..]));
    assert_eq!(stored(&fake, &format!("out/{id}/meta.txt")).as_deref(), Some(&b"data/a.txt|5|src"[..]));
    std::fs::remove_dir(scratch.work().join("other-pod-1-1")).expect("another runner's directory is kept");
    assert!(is_empty_dir(&scratch.work()), "the object's directory and the leftover are removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_contract_turns_stdout_into_the_output() {
    let fake = start_fake(&[("x/b.txt", b"abc\n")]).await;
    let scratch = Scratch::new("stdio");
    let mut runner = spawn_runner(&fake, &scratch, "stdio", 30, "tr a-z A-Z");
    let results = wait_results(&fake, 1).await;
    assert!(terminate(&mut runner).await.success());
    let (id, call, body) = &results[0];
    assert_eq!(call, "complete", "{body}");
    assert_eq!(body["outputs"], json!(["b.txt"]));
    assert_eq!(stored(&fake, &format!("out/{id}/b.txt")).as_deref(), Some(&b"ABC\n"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_command_is_reported_with_its_code_and_stderr() {
    let fake = start_fake(&[("k", b"x")]).await;
    let scratch = Scratch::new("fail");
    let mut runner = spawn_runner(&fake, &scratch, "exec", 30, "echo first >&2; echo oops >&2; exit 3");
    let results = wait_results(&fake, 1).await;
    assert!(terminate(&mut runner).await.success());
    let (_, call, body) = &results[0];
    assert_eq!(call, "fail");
    assert_eq!(body["retryable"], true);
    assert_eq!(body["exit_code"], 3);
    assert_eq!(body["stderr_tail"], "first\noops\n");
    assert!(is_empty_dir(&scratch.work()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_the_whole_process_group() {
    let fake = start_fake(&[("k", b"x")]).await;
    let scratch = Scratch::new("timeout");
    let pid_file = scratch.root.join("background.pid");
    // A background grandchild that would outlive a kill of the shell alone.
    let script = format!("sleep 30 & echo $! > '{}'; sleep 30", pid_file.display());
    let started = std::time::Instant::now();
    let mut runner = spawn_runner(&fake, &scratch, "exec", 1, &script);
    let results = wait_results(&fake, 1).await;
    assert!(started.elapsed() < Duration::from_secs(15), "the timeout was enforced");
    let (_, call, body) = &results[0];
    assert_eq!(call, "fail");
    assert_eq!(body["retryable"], true);
    assert!(body["stderr_tail"].as_str().unwrap().contains("timeout"), "{body}");
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    until(Duration::from_secs(5), "the background sleep to die", || {
        // Gone, or a zombie waiting for a reaper that is not ours.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
            .unwrap_or(true)
    })
    .await;
    assert!(terminate(&mut runner).await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_key_stays_inside_the_work_dir() {
    let fake = start_fake(&[("../../etc/passwd", b"not a password file")]).await;
    let scratch = Scratch::new("hostile");
    let script = r#"printf '%s' "$ZEROFLOW_INPUT" > "$ZEROFLOW_OUTPUT_DIR/input-path""#;
    let mut runner = spawn_runner(&fake, &scratch, "exec", 30, script);
    let results = wait_results(&fake, 1).await;
    assert!(terminate(&mut runner).await.success());
    let (id, call, body) = &results[0];
    assert_eq!(call, "complete", "{body}");
    let input = String::from_utf8(stored(&fake, &format!("out/{id}/input-path")).unwrap()).unwrap();
    let work = scratch.work().display().to_string();
    assert!(input.starts_with(&format!("{work}/")) && input.ends_with("/in/passwd"), "{input}");
    assert!(!input.contains(".."), "{input}");
    // Only what the test made is left next to the work dir, and the work dir is clean.
    let mut left: Vec<_> =
        std::fs::read_dir(&scratch.root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["token", "work"]);
    assert!(is_empty_dir(&scratch.work()));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_object_finish_and_takes_no_more() {
    let fake = start_fake(&[("first", b"1"), ("second", b"2")]).await;
    let scratch = Scratch::new("drain");
    let script = r#"sleep 2; cp "$ZEROFLOW_INPUT" "$ZEROFLOW_OUTPUT_DIR/out""#;
    let mut runner = spawn_runner(&fake, &scratch, "exec", 30, script);
    until(Duration::from_secs(10), "the first lease", || fake.next.load(Ordering::SeqCst) == 1).await;
    let status = terminate(&mut runner).await;
    assert!(status.success(), "{status}");
    let results = results(&fake);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].1, "complete", "{}", results[0].2);
    assert_eq!(fake.next.load(Ordering::SeqCst), 1, "no new lease after SIGTERM");
    assert_eq!(fake.queue.lock().expect("poisoned").len(), 1);
    assert!(fake.heartbeats.load(Ordering::SeqCst) >= 1, "heartbeats while the command ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_hands_the_running_object_back() {
    let fake = start_fake(&[("slow", b"1")]).await;
    let scratch = Scratch::new("abort");
    let log = scratch.root.join("runner.log");
    let mut command = runner_command(&fake, &scratch, "exec", 60, "echo started >&2; sleep 30");
    command.stderr(std::fs::File::create(&log).expect("test setup"));
    let mut runner = command.spawn().expect("starting the runner");
    until(Duration::from_secs(10), "the lease", || fake.next.load(Ordering::SeqCst) == 1).await;
    sigterm(&runner);
    // Signals coalesce: the second is sent once the first was seen.
    until(Duration::from_secs(10), "the first SIGTERM", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("draining"))
    })
    .await;
    let status = terminate(&mut runner).await;
    assert!(status.success(), "{status}");
    let results = results(&fake);
    assert_eq!(results.len(), 1);
    let (_, call, body) = &results[0];
    assert_eq!(call, "fail");
    assert_eq!(body["retryable"], true);
    assert!(body["stderr_tail"].as_str().expect("tail").contains("runner is stopping"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_name_the_server_refuses_fails_without_retry() {
    let fake = start_fake(&[("k", b"x")]).await;
    let scratch = Scratch::new("badname");
    let script = r#"touch "$ZEROFLOW_OUTPUT_DIR/ok" "$ZEROFLOW_OUTPUT_DIR/$(printf 'a\tb')""#;
    let mut runner = spawn_runner(&fake, &scratch, "exec", 30, script);
    let results = wait_results(&fake, 1).await;
    assert!(terminate(&mut runner).await.success());
    let (id, call, body) = &results[0];
    assert_eq!(call, "fail");
    assert_eq!(body["retryable"], false);
    assert!(body["stderr_tail"].as_str().expect("tail").contains("control character"), "{body}");
    assert_eq!(stored(&fake, &format!("out/{id}/ok")), None, "nothing uploaded");
}

#[test]
fn install_copies_an_executable_runner_and_help_documents_the_contract() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("install");
    let dir = scratch.root.join("bin");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_zeroflow-runner"))
        .args(["install", &dir.display().to_string()])
        .status()
        .expect("running install");
    assert!(status.success());
    let installed = dir.join("zeroflow-runner");
    let mode = std::fs::metadata(&installed).expect("installed").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let help = std::process::Command::new(&installed).args(["run", "--help"]).output().expect("running help");
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in ["ZEROFLOW_INPUT", "ZEROFLOW_OUTPUT_DIR", "stdio", "Exit codes", "SIGKILL", "SIGTERM"] {
        assert!(help.contains(needle), "help lacks {needle}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_lease_stops_the_command_and_reports_nothing() {
    let fake = start_fake(&[("expired", b"1")]).await;
    let scratch = Scratch::new("lost");
    let started = std::time::Instant::now();
    let mut runner = spawn_runner(&fake, &scratch, "exec", 60, "sleep 30");
    until(Duration::from_secs(10), "the lease", || fake.next.load(Ordering::SeqCst) == 1).await;
    until(Duration::from_secs(15), "the command to be stopped and its directory removed", || {
        fake.heartbeats.load(Ordering::SeqCst) >= 1 && is_empty_dir(&scratch.work())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(20), "stopped at the first refused heartbeat");
    assert!(terminate(&mut runner).await.success());
    assert!(results(&fake).is_empty(), "a lost lease is not reported");
}

/// A restarting operator answers 503 (or nothing) for a while: the result is reported again with
/// backoff until it is taken, not dropped (which would let the lease expire and the object run
/// a second time).
#[tokio::test(flavor = "multi_thread")]
async fn results_are_reported_again_until_the_work_api_takes_them() {
    let fake = start_fake(&[("r/a.txt", b"abc")]).await;
    fake.refuse_results.store(3, Ordering::SeqCst);
    let scratch = Scratch::new("retry");
    let mut runner = spawn_runner(&fake, &scratch, "stdio", 30, "cat");
    let results = wait_results(&fake, 1).await;
    assert!(terminate(&mut runner).await.success());
    assert_eq!(fake.refuse_results.load(Ordering::SeqCst), 0, "three refusals, then taken");
    assert_eq!((results.len(), results[0].1.as_str()), (1, "complete"));
}

/// Found by the chaos run (issue #14): a new leader serves the work API a moment before its
/// first reconcile has loaded the pipelines, and answers 404 for them meanwhile. A finished run's
/// outputs and result are offered again until it knows the pipeline, not dropped (which failed
/// the run, or let its lease expire, and ran the object a second time).
#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_that_has_not_loaded_the_pipeline_yet_gets_outputs_and_result_again() {
    let fake = start_fake(&[("n/a.txt", b"abc")]).await;
    fake.unknown_outputs.store(2, Ordering::SeqCst);
    fake.unknown_results.store(2, Ordering::SeqCst);
    let scratch = Scratch::new("unknown-pipeline");
    let mut runner = spawn_runner(&fake, &scratch, "stdio", 30, "cat");
    let results = wait_results(&fake, 1).await;
    assert!(terminate(&mut runner).await.success());
    let left = (fake.unknown_outputs.load(Ordering::SeqCst), fake.unknown_results.load(Ordering::SeqCst));
    assert_eq!(left, (0, 0), "both 404s answered, then taken");
    assert_eq!((results.len(), results[0].1.as_str()), (1, "complete"), "{results:?}");
    let id = &results[0].0;
    assert_eq!(stored(&fake, &format!("out/{id}/a.txt")).as_deref(), Some(&b"abc"[..]));
}

/// Heartbeats name the object and attempt, so a new leader can re-attach the lease.
#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_name_their_object_and_attempt() {
    let fake = start_fake(&[("h/slow.txt", b"x")]).await;
    let scratch = Scratch::new("heartbeat-body");
    let mut runner = spawn_runner(&fake, &scratch, "exec", 30, "sleep 2.5");
    wait_results(&fake, 1).await;
    assert!(terminate(&mut runner).await.success());
    let bodies = fake.heartbeat_bodies.lock().expect("poisoned").clone();
    assert!(!bodies.is_empty(), "a 1 s heartbeat interval beat during a 2.5 s command");
    for body in bodies {
        assert_eq!(
            (body["bucket"].as_str(), body["key"].as_str(), body["etag"].as_str(), body["attempt"].as_u64()),
            (Some("src"), Some("h/slow.txt"), Some("\"e1\""), Some(1)),
            "{body}"
        );
    }
}

/// An input deleted before the worker read it is reported as missing, never run.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_input_is_reported_as_missing_without_running_the_command() {
    let fake = start_fake(&[("g/gone.txt", b"x")]).await;
    fake.gone.lock().expect("poisoned").push("1-0".into());
    let scratch = Scratch::new("gone");
    let marker = scratch.root.join("ran");
    let script = format!("touch {}", marker.display());
    let mut runner = spawn_runner(&fake, &scratch, "exec", 30, &script);
    let results = wait_results(&fake, 1).await;
    assert!(terminate(&mut runner).await.success());
    let (_, call, body) = &results[0];
    assert_eq!((call.as_str(), body["input_missing"].as_bool()), ("fail", Some(true)), "{body}");
    assert!(!marker.exists(), "the transform never ran");
    assert!(is_empty_dir(&scratch.work()));
}
