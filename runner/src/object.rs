//! One object, from its input to what is reported about it: the private directories, the
//! invocation under the contract, the output collection and name checks, and the classification
//! of failures. Workers (`run`, [`crate::worker`]) and `try` ([`crate::local`]) both process
//! objects through [`process`]; only the [`Transfer`] differs (the work API's presigned URLs, or
//! local files), so `try` cannot drift from what workers do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Error;
use crate::api::Lease;
use crate::contract::{Contract, contract_env};
use crate::names::{safe_file_name, validate_output_name};
use crate::process::{self, Invocation, Outcome};

/// The object as the transform is told about it (its environment, [`contract_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub bucket: String,
    /// Untrusted text from whoever wrote to the bucket: never used as a path.
    pub key: String,
    pub etag: Option<String>,
    /// Bytes, when known.
    pub size: Option<u64>,
    /// 1 on the first attempt.
    pub attempt: u32,
}

impl From<&Lease> for Object {
    fn from(lease: &Lease) -> Self {
        Object {
            bucket: lease.bucket.clone(),
            key: lease.key.clone(),
            etag: lease.etag.clone(),
            size: lease.size,
            attempt: lease.attempt,
        }
    }
}

/// What to run for each object and how.
#[derive(Debug, Clone)]
pub struct Transform {
    pub contract: Contract,
    /// The command and its arguments; never empty (clap requires one).
    pub command: Vec<String>,
    /// Longest run before the command's process group is killed.
    pub timeout: Duration,
}

/// Why an attempt failed. The work API learns it through [`Failure`]'s flags; `try` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The command exited with a code other than 0 (`code`), or a signal ended it (`signal`,
    /// and `code` is `None`).
    Exited { code: Option<i32>, signal: Option<i32> },
    /// The command ran longer than the timeout; its process group was killed.
    TimedOut,
    /// The command exited 0 but wrote an output whose name the work API refuses: a retry would
    /// write the same name.
    RefusedOutputName,
    /// The runner could not do its part (start the command, fetch the input, store an output).
    Runner,
    /// The runner stopped the command because it is stopping itself: the object is handed back.
    HandedBack,
    /// The input no longer exists (deleted or overwritten after its notification).
    InputMissing,
}

/// Why an object failed, as reported to the work API (and printed by `try`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    /// The end of the command's stderr, or the runner's own explanation; at most
    /// [`crate::names::STDERR_TAIL_LIMIT`] bytes.
    pub stderr_tail: String,
}

impl Failure {
    /// Whether another attempt could succeed: everything but a refused output name.
    pub fn retryable(&self) -> bool {
        self.cause != Cause::RefusedOutputName
    }

    /// The command's exit code: `None` when a signal, a timeout or the runner ended it, or when
    /// it never ran; `Some(0)` for a refused output name.
    pub fn exit_code(&self) -> Option<i32> {
        match self.cause {
            Cause::Exited { code, .. } => code,
            Cause::RefusedOutputName => Some(0),
            Cause::TimedOut | Cause::Runner | Cause::HandedBack | Cause::InputMissing => None,
        }
    }

    /// The object goes back to the queue without using an attempt.
    pub fn handed_back(&self) -> bool {
        self.cause == Cause::HandedBack
    }

    /// The work API checks the store and skips the object when its revision is gone.
    pub fn input_missing(&self) -> bool {
        self.cause == Cause::InputMissing
    }
}

/// What happened to an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Every output was stored; their names, sorted.
    Complete(Vec<String>),
    Fail(Failure),
    /// The object stopped being this runner's while the command ran (its work lease expired and
    /// it may be another worker's now): nothing is stored or reported.
    LeaseLost,
}

/// What an input fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The input is in the file.
    Input,
    /// The object no longer exists; the text says how the store answered.
    Missing(String),
}

/// Where an object's input comes from and where its outputs go.
pub trait Transfer {
    /// Writes the input into `file`, which must not exist yet.
    fn fetch(&self, file: &Path) -> impl Future<Output = Result<Fetched, Error>> + Send;
    /// Stores the output `name` (already checked by [`validate_output_name`]) from `file`.
    fn store(&self, name: &str, file: &Path) -> impl Future<Output = Result<(), Error>> + Send;
    /// Whether the object is still this runner's to finish; asked once the command has ended.
    fn held(&self) -> bool;
}

/// Processes one object in `dir` (created here, private, and left for the caller to remove):
/// fetches the input into `dir/in/<name>`, runs the transform under its contract with outputs in
/// `dir/out` (stdout in `dir/stdout` under `stdio`), checks the output names and stores the
/// outputs. The command is stopped when `stop` resolves (and the object handed back). Errors of
/// the runner's own part are retryable failures.
pub async fn process(
    transform: &Transform,
    object: &Object,
    transfer: &(impl Transfer + Sync),
    dir: &Path,
    stop: impl Future<Output = ()>,
) -> Report {
    match attempt(transform, object, transfer, dir, stop).await {
        Ok(report) => report,
        Err(e) => Report::Fail(Failure { cause: Cause::Runner, stderr_tail: e.to_string() }),
    }
}

/// The directories [`process`] makes under its `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub input_dir: PathBuf,
    pub output_dir: PathBuf,
    /// The command's stdout under the `stdio` contract.
    pub stdout: PathBuf,
}

impl Layout {
    pub fn of(dir: &Path) -> Layout {
        Layout { input_dir: dir.join("in"), output_dir: dir.join("out"), stdout: dir.join("stdout") }
    }
}

async fn attempt(
    transform: &Transform,
    object: &Object,
    transfer: &(impl Transfer + Sync),
    dir: &Path,
    stop: impl Future<Output = ()>,
) -> Result<Report, Error> {
    let layout = Layout::of(dir);
    for d in [dir, &layout.input_dir, &layout.output_dir] {
        private_dir(d).await?;
    }
    let name = safe_file_name(&object.key);
    let input = layout.input_dir.join(&name);
    // The object (revision) is gone: deleted, overwritten, or never written. Not the
    // transform's failure; the work API checks the store and skips it.
    if let Fetched::Missing(why) = transfer.fetch(&input).await? {
        tracing::info!(key = %object.key, "the input no longer exists");
        let stderr_tail = format!("[zeroflow-runner] the input no longer exists: {why}");
        return Ok(Report::Fail(Failure { cause: Cause::InputMissing, stderr_tail }));
    }

    let stdio = transform.contract == Contract::Stdio;
    let invocation = Invocation {
        argv: &transform.command,
        env: contract_env(object, &input, &layout.output_dir),
        cwd: dir,
        stdin: stdio.then_some(input.as_path()),
        stdout: stdio.then_some(layout.stdout.as_path()),
        timeout: transform.timeout,
    };
    let outcome = process::run(invocation, stop).await?;
    if !transfer.held() {
        return Ok(Report::LeaseLost);
    }
    let fail = |cause, stderr_tail| Ok(Report::Fail(Failure { cause, stderr_tail }));
    match outcome {
        Outcome::Exited { code: Some(0), .. } => {}
        Outcome::Exited { code, signal, stderr_tail } => return fail(Cause::Exited { code, signal }, stderr_tail),
        Outcome::TimedOut { stderr_tail } => {
            let timeout = zeroflow_contract::duration::format_duration(transform.timeout);
            let note = format!("\n[zeroflow-runner] killed after the {timeout} timeout");
            return fail(Cause::TimedOut, tail_with(stderr_tail, &note));
        }
        Outcome::Aborted { stderr_tail } => {
            let note = "\n[zeroflow-runner] stopped and handed back: the runner is stopping";
            return fail(Cause::HandedBack, tail_with(stderr_tail, note));
        }
    }

    let files = match transform.contract {
        Contract::Stdio => vec![(name, layout.stdout)],
        Contract::Exec => match output_files(&layout.output_dir).await? {
            Ok(files) => files,
            Err(message) => return fail(Cause::RefusedOutputName, message),
        },
    };
    let mut names = Vec::with_capacity(files.len());
    for (name, path) in files {
        transfer.store(&name, &path).await?;
        names.push(name);
    }
    Ok(Report::Complete(names))
}

fn tail_with(mut tail: String, note: &str) -> String {
    tail.push_str(note);
    crate::names::stderr_tail(tail.as_bytes())
}

async fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = dir.to_owned();
    // create (not create_all): a leftover of the same name is an error, never reused.
    tokio::task::spawn_blocking(move || std::fs::DirBuilder::new().mode(0o700).create(&dir))
        .await
        .map_err(|e| Error::Io { what: "creating a work directory", source: std::io::Error::other(e) })?
        .map_err(|source| Error::Io { what: "creating a work directory", source })
}

/// The regular files at the top of the output directory, by name; `Err` names the first file
/// whose name the server would refuse. Symlinks and directories are not outputs.
async fn output_files(dir: &Path) -> Result<Result<Vec<(String, PathBuf)>, String>, Error> {
    let io = |source| Error::Io { what: "listing the outputs", source };
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io)?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(io)? {
        if !entry.file_type().await.map_err(io)?.is_file() {
            continue;
        }
        let raw = entry.file_name();
        let Some(name) = raw.to_str() else {
            return Ok(Err(format!("output file name {raw:?} is not UTF-8")));
        };
        if let Err(e) = validate_output_name(name) {
            return Ok(Err(format!("output file {name:?}: {e}")));
        }
        files.push((name.to_owned(), entry.path()));
    }
    files.sort();
    Ok(Ok(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the work API is told for each cause; the wire fields of the old `Failure` struct.
    #[test]
    fn causes_map_to_what_the_work_api_is_told() {
        let f = |cause| Failure { cause, stderr_tail: String::new() };
        let told = |f: Failure| (f.retryable(), f.exit_code(), f.handed_back(), f.input_missing());
        assert_eq!(told(f(Cause::Exited { code: Some(3), signal: None })), (true, Some(3), false, false));
        assert_eq!(told(f(Cause::Exited { code: None, signal: Some(9) })), (true, None, false, false));
        assert_eq!(told(f(Cause::TimedOut)), (true, None, false, false));
        assert_eq!(told(f(Cause::RefusedOutputName)), (false, Some(0), false, false));
        assert_eq!(told(f(Cause::Runner)), (true, None, false, false));
        assert_eq!(told(f(Cause::HandedBack)), (true, None, true, false));
        assert_eq!(told(f(Cause::InputMissing)), (true, None, false, true));
    }
}
