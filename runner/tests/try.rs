//! `zeroflow-runner try`, the real binary on local files: both contracts, stdin and stdout, a
//! timeout, failures, refused output names, hostile keys, interruption, and the exit codes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A scratch directory per test: `input` (the user's file), `work` (try's --work-dir), `out`.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str, input: &[u8]) -> Scratch {
        let root = std::env::temp_dir().join(format!("zeroflow-try-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("work")).expect("test setup");
        std::fs::write(root.join("a.txt"), input).expect("test setup");
        Scratch { root }
    }
    fn input(&self) -> PathBuf {
        self.root.join("a.txt")
    }
    fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    fn out(&self) -> PathBuf {
        self.root.join("out")
    }
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    /// `try --work-dir <work> --out <out> --report <report.json> ARGS <input> -- sh -c SCRIPT`.
    fn command(&self, args: &[&str], script: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zeroflow-runner"));
        command
            .arg("try")
            .arg("--work-dir")
            .arg(self.work())
            .arg("--out")
            .arg(self.out())
            .arg("--report")
            .arg(self.path("report.json"))
            .args(args)
            .arg(self.input())
            .args(["--", "sh", "-c", script])
            // What the shell running the tests may have set must not change the defaults.
            .env_remove("ZEROFLOW_CONTRACT")
            .env_remove("ZEROFLOW_TIMEOUT");
        command
    }
    /// Runs `try` to its end, failing the test when it takes more than a minute (a timeout or a
    /// kill that does not work must fail, not hang). Its stdout and stderr go through files, so
    /// background processes that inherited them cannot hold the test.
    fn run(&self, args: &[&str], script: &str) -> Tried {
        let (stdout, stderr) = (self.path("try.stdout"), self.path("try.stderr"));
        let mut child = self
            .command(args, script)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("test setup"))
            .stderr(std::fs::File::create(&stderr).expect("test setup"))
            .spawn()
            .expect("running try");
        let status = wait_for(&mut child);
        let read = |path: &Path| {
            let bytes = std::fs::read(path).expect("try's output");
            std::fs::remove_file(path).expect("test cleanup");
            bytes
        };
        let (stdout, stderr) = (read(&stdout), read(&stderr));
        self.tried(status, &stdout, &stderr)
    }
    fn tried(&self, status: std::process::ExitStatus, stdout: &[u8], stderr: &[u8]) -> Tried {
        let report = std::fs::read(self.path("report.json"))
            .map(|bytes| serde_json::from_slice(&bytes).expect("the report is JSON"))
            .unwrap_or(Value::Null);
        Tried {
            code: status.code(),
            stdout: String::from_utf8_lossy(stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            report,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[derive(Debug)]
struct Tried {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("listing").file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// `try`'s exit status, failing the test when it runs for more than a minute.
fn wait_for(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for try") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("try did not end within 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gone, or a zombie waiting for a reaper that is not ours.
fn dead(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn exec_outputs_land_in_out_with_the_workers_environment() {
    let scratch = Scratch::new("exec", b"hello");
    let script = r#"cp "$ZEROFLOW_INPUT" "$ZEROFLOW_OUTPUT_DIR/copy.txt" &&
        { for v in INPUT OUTPUT_DIR BUCKET KEY ETAG SIZE ATTEMPT; do eval "echo $v=\$ZEROFLOW_$v"; done
          echo "cwd=$(pwd)"; echo "mode=$(stat -c %a .)"; } > "$ZEROFLOW_OUTPUT_DIR/env.txt" &&
        mkdir "$ZEROFLOW_OUTPUT_DIR/a-dir" && ln -s copy.txt "$ZEROFLOW_OUTPUT_DIR/a-link" &&
        echo changed > "$ZEROFLOW_INPUT""#;
    let args = ["--key", "data/a.txt", "--bucket", "src", "--etag", "\"e1\"", "--attempt", "2"];
    let tried = scratch.run(&[&args[..], &["--sink-prefix", "copies/"]].concat(), script);
    assert_eq!(tried.code, Some(0), "{tried:?}");
    let report = &tried.report;
    assert_eq!((report["outcome"].as_str(), report["exit_code"].as_i64()), (Some("completed"), Some(0)), "{report}");
    let out = scratch.out().display().to_string();
    assert_eq!(
        report["outputs"],
        json!([
            {"name": "copy.txt", "key": "copies/data/a.txt/copy.txt", "path": format!("{out}/copy.txt")},
            {"name": "env.txt", "key": "copies/data/a.txt/env.txt", "path": format!("{out}/env.txt")},
        ]),
        "directories and symlinks are not outputs"
    );
    assert_eq!(entries(&scratch.out()), ["copy.txt", "env.txt"]);
    assert_eq!(std::fs::read(scratch.out().join("copy.txt")).expect("copied"), b"hello");
    assert_eq!(std::fs::read(scratch.input()).expect("the input"), b"hello", "the user's file is never changed");

    let env = std::fs::read_to_string(scratch.out().join("env.txt")).expect("env.txt");
    let get = |name: &str| {
        env.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("{name} in {env}"))
    };
    let dir = get("cwd");
    let work = scratch.work().display().to_string();
    assert!(dir.starts_with(&format!("{work}/zeroflow-try-")), "the command runs in the object's directory: {dir}");
    assert_eq!(get("INPUT"), format!("{dir}/in/a.txt"));
    assert_eq!(get("OUTPUT_DIR"), format!("{dir}/out"));
    assert_eq!(get("mode"), "700", "the object's directory is private");
    assert_eq!(
        ["BUCKET", "KEY", "ETAG", "SIZE", "ATTEMPT"].map(get),
        ["src", "data/a.txt", "\"e1\"", "5", "2"],
        "the object as a lease would describe it"
    );
    assert_eq!(
        report["object"],
        json!({"bucket": "src", "key": "data/a.txt", "etag": "\"e1\"", "size": 5, "attempt": 2})
    );
    assert!(entries(&scratch.work()).is_empty(), "the object's directory is removed");
    assert!(tried.stdout.starts_with("completed: 2 outputs\n"), "{}", tried.stdout);
    assert!(tried.stdout.contains("copy.txt -> sink key \"copies/data/a.txt/copy.txt\""), "{}", tried.stdout);
}

#[test]
fn the_sink_layout_puts_outputs_under_their_sink_keys() {
    let scratch = Scratch::new("sink", b"x");
    let args = ["--layout", "sink", "--sink-prefix", "jsonl/", "--key", "incoming/2026/a.csv"];
    let tried = scratch.run(&args, r#"echo one > "$ZEROFLOW_OUTPUT_DIR/a.jsonl""#);
    assert_eq!(tried.code, Some(0), "{tried:?}");
    let placed = scratch.out().join("jsonl/incoming/2026/a.csv/a.jsonl");
    assert_eq!(std::fs::read_to_string(&placed).expect("placed under its key"), "one\n");
    assert_eq!(tried.report["outputs"][0]["key"], "jsonl/incoming/2026/a.csv/a.jsonl");
    assert_eq!(tried.report["outputs"][0]["path"], placed.display().to_string());
    // A second run replaces the output, as a retry replaces it in the sink.
    let again = scratch.run(&args, r#"echo two > "$ZEROFLOW_OUTPUT_DIR/a.jsonl""#);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(std::fs::read_to_string(&placed).expect("replaced"), "two\n");
}

#[test]
fn stdio_pipes_the_input_in_and_takes_stdout_as_the_only_output() {
    let scratch = Scratch::new("stdio", b"abc\n");
    let script = r#"tr a-z A-Z; echo "to the log" >&2; touch "$ZEROFLOW_OUTPUT_DIR/not-an-output""#;
    let tried = scratch.run(&["--contract", "stdio", "--key", "x/b.txt"], script);
    assert_eq!(tried.code, Some(0), "{tried:?}");
    assert_eq!(
        tried.report["outputs"],
        json!([{"name": "b.txt", "key": "x/b.txt/b.txt", "path": scratch.out().join("b.txt").display().to_string()}])
    );
    assert_eq!(entries(&scratch.out()), ["b.txt"], "nothing else is an output under stdio");
    assert_eq!(std::fs::read(scratch.out().join("b.txt")).expect("output"), b"ABC\n");
    assert!(tried.stderr.contains("to the log"), "stderr goes to the log: {}", tried.stderr);
    assert!(!tried.stdout.contains("ABC"), "stdout is the output, not the log: {}", tried.stdout);
}

/// Under exec the command's stdin is empty whatever `try`'s own stdin holds (a terminal, a pipe
/// that stays open), and its stdout goes to the log, as in a pod.
#[test]
fn exec_gives_the_command_an_empty_stdin_and_logs_its_stdout() {
    let scratch = Scratch::new("stdin", b"input");
    let script = r#"cat > "$ZEROFLOW_OUTPUT_DIR/stdin.txt"; echo "printed on stdout""#;
    // A timeout turns a command waiting on an inherited stdin into a failure, not a hang.
    let mut child = scratch
        .command(&["--timeout", "20s"], script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("try");
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(b"typed at the terminal\n").expect("writing to try's stdin");
    let output = child.wait_with_output().expect("try ends with its stdin still open");
    drop(stdin);
    let tried = scratch.tried(output.status, &output.stdout, &output.stderr);
    assert_eq!(tried.code, Some(0), "{tried:?}");
    assert_eq!(std::fs::read(scratch.out().join("stdin.txt")).expect("output"), b"", "stdin is empty under exec");
    assert!(tried.stdout.starts_with("printed on stdout\n"), "{}", tried.stdout);
    assert_eq!(entries(&scratch.out()), ["stdin.txt"]);
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let scratch = Scratch::new("timeout", b"x");
    let pid_file = scratch.path("background.pid");
    // A background grandchild that a kill of the shell alone would leave running; its output
    // goes elsewhere, so only a kill of the group ends it before the test gives up.
    let script = format!(
        r#"sleep 600 >/dev/null 2>&1 & echo $! > '{}'; echo started >&2; touch "$ZEROFLOW_OUTPUT_DIR/partial"; sleep 600"#,
        pid_file.display()
    );
    let tried = scratch.run(&["--timeout", "1s"], &script);
    assert_eq!(tried.code, Some(4), "{tried:?}");
    let report = &tried.report;
    assert_eq!(
        (report["outcome"].as_str(), report["retryable"].as_bool(), &report["exit_code"]),
        (Some("timed-out"), Some(true), &Value::Null)
    );
    let tail = report["stderr_tail"].as_str().expect("tail");
    assert!(tail.starts_with("started\n") && tail.ends_with("[zeroflow-runner] killed after the 1s timeout"), "{tail}");
    let pid = std::fs::read_to_string(&pid_file).expect("pid").trim().to_owned();
    wait_until("the background sleep to die", || dead(&pid));
    assert!(entries(&scratch.out()).is_empty(), "nothing is copied after a failure");
    assert!(tried.stdout.starts_with("failed (retryable): timed out after 1s\n"), "{}", tried.stdout);
}

/// As in a worker, what a command leaves running in the background is killed when it exits.
#[test]
fn background_processes_are_killed_when_the_command_exits() {
    let scratch = Scratch::new("leftover", b"x");
    let pid_file = scratch.path("background.pid");
    let script = format!("sleep 600 >/dev/null 2>&1 & echo $! > '{}'", pid_file.display());
    let tried = scratch.run(&[], &script);
    assert_eq!(tried.code, Some(0), "{tried:?}");
    let pid = std::fs::read_to_string(&pid_file).expect("pid").trim().to_owned();
    wait_until("the background sleep to die", || dead(&pid));
}

#[test]
fn a_failing_command_reports_its_exit_code_and_the_end_of_stderr() {
    let scratch = Scratch::new("fail", b"x");
    // About 9 KB of stderr: only the last 4 KiB are reported.
    let script = r#"i=0; while [ $i -lt 300 ]; do echo "line $i of the error log" >&2; i=$((i+1)); done
        echo "the end" >&2; touch "$ZEROFLOW_OUTPUT_DIR/partial"; exit 7"#;
    let tried = scratch.run(&[], script);
    assert_eq!(tried.code, Some(3), "{tried:?}");
    let report = &tried.report;
    assert_eq!(
        (report["outcome"].as_str(), report["retryable"].as_bool(), report["exit_code"].as_i64()),
        (Some("failed"), Some(true), Some(7))
    );
    let tail = report["stderr_tail"].as_str().expect("tail");
    assert_eq!(tail.len(), 4096, "the last 4 KiB");
    assert!(tail.ends_with("line 299 of the error log\nthe end\n"), "{tail}");
    assert!(!tail.contains("line 0 of"), "{tail}");
    assert_eq!(report["outputs"], json!([]));
    assert!(entries(&scratch.out()).is_empty(), "a failed object's outputs are never copied");
    assert!(tried.stdout.starts_with("failed (retryable): the command exited with code 7\n"), "{}", tried.stdout);
    assert!(tried.stderr.contains("line 0 of the error log"), "all of stderr goes to the log");
}

#[test]
fn a_command_killed_by_a_signal_is_a_retryable_failure_without_exit_code() {
    let scratch = Scratch::new("signal", b"x");
    let tried = scratch.run(&[], "kill -9 $$");
    assert_eq!(tried.code, Some(3), "{tried:?}");
    let report = &tried.report;
    assert_eq!((&report["exit_code"], report["signal"].as_i64()), (&Value::Null, Some(9)));
    assert!(tried.stdout.starts_with("failed (retryable): the command was killed by signal 9\n"), "{}", tried.stdout);
}

#[test]
fn an_output_name_the_work_api_refuses_fails_without_retry_and_copies_nothing() {
    let scratch = Scratch::new("badname", b"x");
    let tried = scratch.run(&[], r#"touch "$ZEROFLOW_OUTPUT_DIR/ok" "$ZEROFLOW_OUTPUT_DIR/$(printf 'a\tb')""#);
    assert_eq!(tried.code, Some(5), "{tried:?}");
    let report = &tried.report;
    assert_eq!(
        (report["outcome"].as_str(), report["retryable"].as_bool(), report["exit_code"].as_i64()),
        (Some("refused-output-name"), Some(false), Some(0))
    );
    assert!(report["stderr_tail"].as_str().expect("tail").contains("control character"), "{report}");
    assert!(entries(&scratch.out()).is_empty(), "not even the valid output is copied");
}

#[test]
fn a_key_that_tries_to_escape_stays_a_name() {
    let scratch = Scratch::new("hostile", b"not a password file");
    let script = r#"printf '%s' "$ZEROFLOW_INPUT" > "$ZEROFLOW_OUTPUT_DIR/input-path""#;
    let tried = scratch.run(&["--key", "../../etc/passwd"], script);
    assert_eq!(tried.code, Some(0), "{tried:?}");
    let input = std::fs::read_to_string(scratch.out().join("input-path")).expect("output");
    let work = scratch.work().display().to_string();
    assert!(input.starts_with(&format!("{work}/zeroflow-try-")) && input.ends_with("/in/passwd"), "{input}");
    assert!(!input.contains(".."), "{input}");
    // The key a store would really give the output: ".." is only text there.
    assert_eq!(tried.report["outputs"][0]["key"], "../../etc/passwd/input-path");
    assert_eq!(entries(&scratch.root), ["a.txt", "out", "report.json", "work"], "nothing written outside");
    assert!(entries(&scratch.work()).is_empty());

    // Laid out under its sink key, it would leave --out: refused before the command runs.
    let marker = scratch.path("ran");
    std::fs::remove_dir_all(scratch.out()).expect("test setup");
    std::fs::remove_file(scratch.path("report.json")).expect("test setup");
    let script = format!("touch '{}'", marker.display());
    let tried = scratch.run(&["--key", "../../etc/passwd", "--layout", "sink"], &script);
    assert_eq!(tried.code, Some(1), "{tried:?}");
    assert!(tried.stderr.contains("has no local path under --out"), "{}", tried.stderr);
    assert!(!marker.exists(), "the command never ran");
    assert_eq!(entries(&scratch.root), ["a.txt", "work"], "no --out, no report");
}

#[test]
fn a_command_that_cannot_start_is_a_runner_error() {
    let scratch = Scratch::new("nostart", b"x");
    let mut command = Command::new(env!("CARGO_BIN_EXE_zeroflow-runner"));
    command.arg("try").arg("--out").arg(scratch.out()).arg("--report").arg(scratch.path("report.json"));
    let output = command.arg(scratch.input()).args(["--", "/nonexistent/transform"]).output().expect("try");
    let tried = scratch.tried(output.status, &output.stdout, &output.stderr);
    assert_eq!(tried.code, Some(6), "{tried:?}");
    assert_eq!(
        (tried.report["outcome"].as_str(), tried.report["retryable"].as_bool()),
        (Some("runner-error"), Some(true))
    );
    assert!(tried.report["stderr_tail"].as_str().expect("tail").contains("starting the command"), "{tried:?}");
}

#[test]
fn interrupting_try_kills_the_command_and_its_group() {
    let scratch = Scratch::new("interrupt", b"x");
    let pid_file = scratch.path("background.pid");
    let script =
        format!("sleep 600 >/dev/null 2>&1 & echo $! > '{}.tmp' && mv '{0}.tmp' '{0}'; sleep 600", pid_file.display());
    let mut child = scratch.command(&[], &script).stdout(Stdio::null()).spawn().expect("try");
    wait_until("the command to start", || pid_file.exists());
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let status = wait_for(&mut child);
    let tried = scratch.tried(status, b"", b"");
    assert_eq!(tried.code, Some(130), "{tried:?}");
    assert_eq!(tried.report["outcome"], "interrupted");
    let pid = std::fs::read_to_string(&pid_file).expect("pid").trim().to_owned();
    wait_until("the background sleep to die", || dead(&pid));
    assert!(entries(&scratch.work()).is_empty(), "the object's directory is removed");
}

#[test]
fn keep_leaves_the_objects_directory_to_look_at() {
    let scratch = Scratch::new("keep", b"x");
    let tried = scratch.run(&["--keep"], r#"echo half > "$ZEROFLOW_OUTPUT_DIR/partial"; exit 1"#);
    assert_eq!(tried.code, Some(3), "{tried:?}");
    let kept = PathBuf::from(tried.report["kept_dir"].as_str().expect("kept_dir"));
    assert!(kept.starts_with(scratch.work()), "{kept:?}");
    assert_eq!(entries(&kept.join("in")), ["a.txt"]);
    assert_eq!(std::fs::read_to_string(kept.join("out/partial")).expect("left by the command"), "half\n");
    assert!(entries(&scratch.out()).is_empty());
    assert!(tried.stdout.contains(&format!("kept the object's directory: {}", kept.display())), "{}", tried.stdout);
}

#[test]
fn setup_errors_and_usage_errors_have_their_own_codes() {
    let scratch = Scratch::new("usage", b"x");
    let missing = Command::new(env!("CARGO_BIN_EXE_zeroflow-runner"))
        .args(["try", "--out"])
        .arg(scratch.out())
        .arg(scratch.path("missing.csv"))
        .args(["--", "true"])
        .output()
        .expect("try");
    assert_eq!(missing.status.code(), Some(1), "a missing input runs nothing");
    assert!(!scratch.out().exists());
    let usage = Command::new(env!("CARGO_BIN_EXE_zeroflow-runner"))
        .args(["try", "--contract", "grpc", "--out", "o", "i", "--", "true"])
        .output()
        .expect("try");
    assert_eq!(usage.status.code(), Some(2), "{}", String::from_utf8_lossy(&usage.stderr));
}

#[test]
fn help_documents_try() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_zeroflow-runner")).args(args).output().expect("help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let try_help = help(&["try", "--help"]);
    for needle in ["--layout", "--report", "--keep", "Exit codes of try", "130", "ZEROFLOW_INPUT", "absolute path"] {
        assert!(try_help.contains(needle), "try --help lacks {needle}");
    }
    assert!(help(&["run", "--help"]).contains("zeroflow-runner try"), "run --help points to try");
}
