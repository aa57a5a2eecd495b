//! `zeroflow-runner try`: one object from a local file, processed by the same
//! [`object::process`] as a leased object in a worker, with local files as its [`Transfer`]: the
//! input is copied in (as a download is), and the outputs a worker would upload are copied into
//! a local directory. What the worker would report is returned as a [`TryReport`], whose
//! [`Verdict`] gives `try` its exit code. Pure apart from [`LocalTransfer`], [`try_object`] and
//! [`relative_paths`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use zeroflow_contract::duration::format_duration;
use zeroflow_contract::names::output_key;

use crate::Error;
use crate::contract::Contract;
use crate::object::{self, Cause, Fetched, Object, Report, Transfer, Transform};

/// How outputs are laid out in the `--out` directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `<out>/<output name>`.
    Flat,
    /// `<out>/<sink prefix><key>/<output name>`: the key each output gets in the sink.
    Sink,
}

/// Where the outputs of one object go, locally and (would go) in the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub out: PathBuf,
    pub layout: Layout,
    /// The pipeline's `sink.prefix`, for the keys outputs would get.
    pub sink_prefix: String,
    /// The object's key.
    pub key: String,
}

/// A key that has no local path under `--out` with [`Layout::Sink`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sink key {key:?} has no local path under --out (it has an empty, '.' or '..' segment); use --layout flat")]
pub struct NoLocalPath {
    pub key: String,
}

impl Placement {
    /// The key the output `name` gets in the sink ([`output_key`]).
    pub fn sink_key(&self, name: &str) -> String {
        output_key(&self.sink_prefix, &self.key, name)
    }

    /// Where the output `name` (a valid output name) lands locally.
    pub fn path(&self, name: &str) -> Result<PathBuf, NoLocalPath> {
        match self.layout {
            Layout::Flat => Ok(self.out.join(name)),
            Layout::Sink => local_path(&self.out, &self.sink_key(name)),
        }
    }

    /// Fails when outputs cannot be laid out (checked before the command runs); output names
    /// themselves are checked by the work API's rules and are always one plain segment.
    pub fn check(&self) -> Result<(), NoLocalPath> {
        self.path("output").map(drop)
    }
}

/// `out` joined with each `/`-separated segment of `key`. Keys are untrusted text where `..` and
/// empty segments are ordinary characters; as paths they would climb out of `out` or lose a
/// level, so such keys are refused rather than rewritten.
pub fn local_path(out: &Path, key: &str) -> Result<PathBuf, NoLocalPath> {
    let mut path = out.to_path_buf();
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(NoLocalPath { key: key.to_owned() });
        }
        path.push(segment);
    }
    Ok(path)
}

/// Local files as an object's [`Transfer`].
#[derive(Debug, Clone)]
pub struct LocalTransfer {
    /// The user's file; only ever read.
    pub input: PathBuf,
    pub placement: Placement,
}

impl Transfer for LocalTransfer {
    /// A copy, as a download is one: the transform may change or delete its input, and must not
    /// change the user's file.
    async fn fetch(&self, file: &Path) -> Result<Fetched, Error> {
        let io = |source| Error::Io { what: "copying the input", source };
        let mut from = tokio::fs::File::open(&self.input).await.map_err(io)?;
        let mut to = tokio::fs::OpenOptions::new().write(true).create_new(true).open(file).await.map_err(io)?;
        tokio::io::copy(&mut from, &mut to).await.map_err(io)?;
        to.flush().await.map_err(io)?;
        Ok(Fetched::Input)
    }

    /// Copies the output into place, replacing an earlier one as a retry replaces it in the sink.
    async fn store(&self, name: &str, file: &Path) -> Result<(), Error> {
        let io = |source| Error::Io { what: "copying an output into --out", source };
        let target = self.placement.path(name).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::copy(file, &target).await.map_err(io)?;
        Ok(())
    }

    fn held(&self) -> bool {
        true
    }
}

/// How a `try` ended; each has its own exit code ([`Verdict::exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Exit 0: every output was copied into `--out`.
    Completed,
    /// Exit 3: the command exited non-zero or a signal killed it (retryable).
    Failed,
    /// Exit 4: the command ran past the timeout and its process group was killed (retryable).
    TimedOut,
    /// Exit 5: an output name the work API refuses (not retryable; nothing copied).
    RefusedOutputName,
    /// Exit 6: the runner could not do its part, e.g. start the command (retryable).
    RunnerError,
    /// Exit 130: SIGINT or SIGTERM stopped the command (a worker hands the object back).
    Interrupted,
}

impl Verdict {
    pub fn of(report: &Report) -> Verdict {
        match report {
            Report::Complete(_) => Verdict::Completed,
            Report::Fail(failure) => match failure.cause {
                Cause::Exited { .. } => Verdict::Failed,
                Cause::TimedOut => Verdict::TimedOut,
                Cause::RefusedOutputName => Verdict::RefusedOutputName,
                // A local input does not vanish the way a notified object can; if it does, the
                // runner could not read it.
                Cause::Runner | Cause::InputMissing => Verdict::RunnerError,
                Cause::HandedBack => Verdict::Interrupted,
            },
            // Local objects have no lease to lose.
            Report::LeaseLost => Verdict::Interrupted,
        }
    }

    /// `try`'s exit code. 1 and 2 are left to errors before the command runs and to clap's
    /// usage errors.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Completed => 0,
            Verdict::Failed => 3,
            Verdict::TimedOut => 4,
            Verdict::RefusedOutputName => 5,
            Verdict::RunnerError => 6,
            Verdict::Interrupted => 130,
        }
    }
}

/// One output: its name, the key it would get in the sink, where it was copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacedOutput {
    pub name: String,
    pub key: String,
    pub path: String,
}

/// The object as the command was told about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectSummary {
    pub bucket: String,
    pub key: String,
    pub etag: Option<String>,
    pub size: Option<u64>,
    pub attempt: u32,
}

/// What a worker would report, and where `try` put things. Written as JSON by `--report`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TryReport {
    pub outcome: Verdict,
    /// For failures: whether a worker would try the object again (up to `maxAttempts`).
    pub retryable: Option<bool>,
    /// The command's exit code; `None` when a signal, the timeout or the runner ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended the command.
    pub signal: Option<i32>,
    /// For failures: the end of stderr (at most 4 KiB) a worker records with the failure.
    pub stderr_tail: Option<String>,
    /// Sorted by name; empty unless completed.
    pub outputs: Vec<PlacedOutput>,
    pub object: ObjectSummary,
    pub contract: Contract,
    /// As users write durations (`30s`, `1m30s`).
    pub timeout: String,
    pub seconds: f64,
    /// The object's directory, when `--keep` kept it.
    pub kept_dir: Option<String>,
}

impl TryReport {
    /// The report of `report` (from [`object::process`]) for `object`, outputs placed by `placement`.
    pub fn new(report: &Report, object: &Object, transform: &Transform, placement: &Placement) -> TryReport {
        let (retryable, exit_code, signal, stderr_tail) = match report {
            Report::Complete(_) => (None, Some(0), None, None),
            Report::Fail(f) => {
                let signal = match f.cause {
                    Cause::Exited { signal, .. } => signal,
                    _ => None,
                };
                (Some(f.retryable()), f.exit_code(), signal, Some(f.stderr_tail.clone()))
            }
            Report::LeaseLost => (None, None, None, None),
        };
        let outputs = match report {
            Report::Complete(names) => names
                .iter()
                .map(|name| PlacedOutput {
                    name: name.clone(),
                    key: placement.sink_key(name),
                    path: placement.path(name).map(|p| p.display().to_string()).unwrap_or_default(),
                })
                .collect(),
            _ => Vec::new(),
        };
        TryReport {
            outcome: Verdict::of(report),
            retryable,
            exit_code,
            signal,
            stderr_tail,
            outputs,
            object: ObjectSummary {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                etag: object.etag.clone(),
                size: object.size,
                attempt: object.attempt,
            },
            contract: transform.contract,
            timeout: format_duration(transform.timeout),
            seconds: 0.0,
            kept_dir: None,
        }
    }

    /// For people: the outcome, then the outputs or the failure with its stderr tail.
    pub fn render(&self) -> String {
        let mut text = match self.outcome {
            Verdict::Completed => {
                let n = self.outputs.len();
                format!("completed: {n} output{}\n", if n == 1 { "" } else { "s" })
            }
            Verdict::Failed => match (self.exit_code, self.signal) {
                (Some(code), _) => format!("failed (retryable): the command exited with code {code}\n"),
                (None, Some(signal)) => format!("failed (retryable): the command was killed by signal {signal}\n"),
                (None, None) => "failed (retryable): the command was killed by a signal\n".to_owned(),
            },
            Verdict::TimedOut => format!("failed (retryable): timed out after {}\n", self.timeout),
            Verdict::RefusedOutputName => {
                "failed (not retryable): the command exited 0 but wrote an output name the work API refuses\n"
                    .to_owned()
            }
            Verdict::RunnerError => "failed (retryable): the runner could not process the object\n".to_owned(),
            Verdict::Interrupted => {
                "interrupted: the command was stopped (a worker hands the object back)\n".to_owned()
            }
        };
        for output in &self.outputs {
            text.push_str(&format!("  {} -> sink key {:?}, copied to {}\n", output.name, output.key, output.path));
        }
        // The runner's own notes start on a new line, which is a blank one after an empty stderr.
        if let Some(tail) = self.stderr_tail.as_deref().map(|t| t.trim_start_matches('\n')).filter(|t| !t.is_empty()) {
            text.push_str("stderr tail (recorded with the failure):\n");
            for line in tail.lines() {
                text.push_str(&format!("  | {line}\n"));
            }
        }
        if let Some(dir) = &self.kept_dir {
            text.push_str(&format!("kept the object's directory: {dir}\n"));
        }
        text
    }
}

/// The arguments of `command` (program included) that name an existing file or directory
/// relative to `cwd`. The command runs in the object's directory, as in a worker, where such
/// paths mean something else: `try` points them out when the command fails.
pub fn relative_paths<'a>(command: &'a [String], cwd: &Path) -> Vec<&'a str> {
    command
        .iter()
        .map(String::as_str)
        .filter(|arg| !arg.starts_with('/') && !arg.starts_with('-') && arg.contains('/'))
        .filter(|arg| cwd.join(arg).exists())
        .collect()
}

/// What `try` is asked to do.
#[derive(Debug, Clone)]
pub struct TryRequest {
    pub transform: Transform,
    pub object: Object,
    /// The user's file.
    pub input: PathBuf,
    pub placement: Placement,
    /// The object's private directory is made in here.
    pub work_dir: PathBuf,
    /// Keep the object's directory (input, output dir, stdout) instead of removing it.
    pub keep: bool,
}

/// Runs the object through [`object::process`]; the command is stopped when `stop` resolves.
/// Errors are those before the command could be considered at all (exit 1): the layout of
/// `--out`, creating it, the work dir.
pub async fn try_object(request: TryRequest, stop: impl Future<Output = ()>) -> Result<TryReport, Error> {
    let TryRequest { transform, object, input, placement, work_dir, keep } = request;
    placement.check().map_err(|e| Error::Config(e.to_string()))?;
    let io = |what| move |source| Error::Io { what, source };
    tokio::fs::create_dir_all(&placement.out).await.map_err(io("creating --out"))?;
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let dir = work_dir.join(format!("zeroflow-try-{}-{millis}", std::process::id()));
    let transfer = LocalTransfer { input, placement };
    let started = Instant::now();
    let report = object::process(&transform, &object, &transfer, &dir, stop).await;
    let seconds = started.elapsed().as_secs_f64();
    let mut summary = TryReport::new(&report, &object, &transform, &transfer.placement);
    summary.seconds = seconds;
    if keep {
        summary.kept_dir = Some(dir.display().to_string());
    } else if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, dir = %dir.display(), "could not remove the object's directory");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::object::Failure;

    fn placement(layout: Layout, key: &str) -> Placement {
        Placement { out: PathBuf::from("/o"), layout, sink_prefix: "jsonl/".into(), key: key.into() }
    }

    #[test]
    fn outputs_land_flat_or_under_their_sink_key() {
        let flat = placement(Layout::Flat, "in/a.csv");
        assert_eq!(flat.sink_key("a.jsonl"), "jsonl/in/a.csv/a.jsonl");
        assert_eq!(flat.path("a.jsonl"), Ok(PathBuf::from("/o/a.jsonl")));
        let sink = placement(Layout::Sink, "in/a.csv");
        assert_eq!(sink.path("a.jsonl"), Ok(PathBuf::from("/o/jsonl/in/a.csv/a.jsonl")));
        assert_eq!(sink.check(), Ok(()));
    }

    #[test]
    fn keys_without_a_local_path_are_refused_in_the_sink_layout_only() {
        for key in ["../../etc/passwd", "/etc/passwd", "a//b", "./a", "a/.."] {
            assert!(placement(Layout::Sink, key).check().is_err(), "{key}");
            assert_eq!(placement(Layout::Flat, key).check(), Ok(()), "{key}");
        }
        let hostile = placement(Layout::Flat, "../../etc/passwd");
        assert_eq!(hostile.path("x"), Ok(PathBuf::from("/o/x")));
        assert_eq!(hostile.sink_key("x"), "jsonl/../../etc/passwd/x", "the key a store would really use");
        assert_eq!(local_path(Path::new("o"), "a b/c..d/e"), Ok(PathBuf::from("o/a b/c..d/e")));
    }

    #[test]
    fn each_outcome_has_its_exit_code() {
        let fail = |cause| Report::Fail(Failure { cause, stderr_tail: "tail".into() });
        let cases = [
            (Report::Complete(vec![]), Verdict::Completed, 0),
            (fail(Cause::Exited { code: Some(1), signal: None }), Verdict::Failed, 3),
            (fail(Cause::Exited { code: None, signal: Some(9) }), Verdict::Failed, 3),
            (fail(Cause::TimedOut), Verdict::TimedOut, 4),
            (fail(Cause::RefusedOutputName), Verdict::RefusedOutputName, 5),
            (fail(Cause::Runner), Verdict::RunnerError, 6),
            (fail(Cause::InputMissing), Verdict::RunnerError, 6),
            (fail(Cause::HandedBack), Verdict::Interrupted, 130),
            (Report::LeaseLost, Verdict::Interrupted, 130),
        ];
        for (report, verdict, code) in cases {
            assert_eq!((Verdict::of(&report), Verdict::of(&report).exit_code()), (verdict, code), "{report:?}");
        }
    }

    #[test]
    fn reports_say_what_a_worker_would() {
        let object = Object { bucket: "b".into(), key: "in/a.csv".into(), etag: None, size: Some(3), attempt: 2 };
        let transform =
            Transform { contract: Contract::Exec, command: vec!["t".into()], timeout: Duration::from_secs(90) };
        let place = placement(Layout::Flat, "in/a.csv");
        let done = TryReport::new(&Report::Complete(vec!["a.jsonl".into()]), &object, &transform, &place);
        assert_eq!(
            done.outputs,
            [PlacedOutput { name: "a.jsonl".into(), key: "jsonl/in/a.csv/a.jsonl".into(), path: "/o/a.jsonl".into() }]
        );
        assert_eq!((done.exit_code, done.retryable, done.timeout.as_str()), (Some(0), None, "1m30s"));
        assert!(done.render().contains("a.jsonl -> sink key \"jsonl/in/a.csv/a.jsonl\", copied to /o/a.jsonl"));

        let killed =
            Report::Fail(Failure { cause: Cause::Exited { code: None, signal: Some(9) }, stderr_tail: "oom".into() });
        let killed = TryReport::new(&killed, &object, &transform, &place);
        assert_eq!((killed.retryable, killed.exit_code, killed.signal), (Some(true), None, Some(9)));
        assert!(killed.outputs.is_empty());
        assert_eq!(
            killed.render(),
            "failed (retryable): the command was killed by signal 9\nstderr tail (recorded with the failure):\n  | oom\n"
        );

        let refused = Report::Fail(Failure { cause: Cause::RefusedOutputName, stderr_tail: "bad name".into() });
        let refused = TryReport::new(&refused, &object, &transform, &place);
        assert_eq!((refused.retryable, refused.exit_code), (Some(false), Some(0)));
        let json = serde_json::to_value(&refused).expect("serializes");
        assert_eq!(json["outcome"], "refused-output-name");
        assert_eq!(json["contract"], "exec");
        assert_eq!(json["object"]["attempt"], 2);

        let timed_out =
            Report::Fail(Failure { cause: Cause::TimedOut, stderr_tail: "\n[zeroflow-runner] killed".into() });
        let rendered = TryReport::new(&timed_out, &object, &transform, &place).render();
        assert_eq!(
            rendered,
            "failed (retryable): timed out after 1m30s\nstderr tail (recorded with the failure):\n  | [zeroflow-runner] killed\n"
        );
    }

    #[test]
    fn relative_paths_in_the_command_are_found() {
        let dir = std::env::temp_dir().join(format!("zeroflow-local-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("test setup");
        std::fs::write(dir.join("sub/t.py"), "").expect("test setup");
        let command: Vec<String> = ["python3", "sub/t.py", "/abs", "missing.py", "-v"].map(String::from).into();
        assert_eq!(relative_paths(&command, &dir), ["sub/t.py"]);
        std::fs::remove_dir_all(&dir).expect("test cleanup");
    }
}
