//! Command line: `run -- <command>`, `try <input> -- <command>` and `install <dir>`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use zeroflow_contract::env;
use zeroflow_contract::worker::DEFAULT_TIMEOUT;
use zeroflow_runner::api::Client;
use zeroflow_runner::contract::Contract;
use zeroflow_runner::local::{self, Layout, Placement, TryRequest, Verdict};
use zeroflow_runner::object::{Object, Transform};
use zeroflow_runner::worker::{self, Context};

/// `exec` or `stdio`, listed in `--help`.
fn contract_parser() -> impl clap::builder::TypedValueParser<Value = Contract> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new([Contract::Exec.as_str(), Contract::Stdio.as_str()])
        .try_map(|s| s.parse::<Contract>())
}

fn timeout_parser(s: &str) -> Result<Duration, String> {
    zeroflow_contract::duration::parse_timeout(s).map_err(|e| e.to_string())
}

const CONTRACT_HELP: &str = "\
THE CONTRACT FOR TRANSFORM AUTHORS
  The runner leases one object at a time per slot, downloads it, runs your command once for it,
  uploads what the command produced and reports the result. Your command needs no credentials.

  Environment of your command (on top of the container's own):
    ZEROFLOW_INPUT       path of the downloaded object (a file in a fresh private directory;
                         its name is the last segment of the key, sanitized)
    ZEROFLOW_OUTPUT_DIR  an empty directory for your outputs (exec contract)
    ZEROFLOW_BUCKET      source bucket
    ZEROFLOW_KEY         source object key (untrusted text: do not use it as a path)
    ZEROFLOW_ETAG        the object's ETag (may be empty)
    ZEROFLOW_SIZE        the object's size in bytes (may be empty)
    ZEROFLOW_ATTEMPT     1 on the first try, higher on retries
  The working directory is the object's private directory; it is deleted afterwards.

  --contract exec   Read ZEROFLOW_INPUT; write each output as a regular file at the top of
                    ZEROFLOW_OUTPUT_DIR. Each file is uploaded as <sink prefix><key>/<file name>.
                    Names must be at most 255 bytes, without '/', '\\', '..' or control
                    characters, or the object fails without retry. Subdirectories and symlinks
                    are ignored. Stdout goes to the pod log.
  --contract stdio  The object is on stdin; everything written to stdout is the single output,
                    named after the input file. Nothing else is uploaded.

  Stderr goes to the pod log; its last 4 KiB are reported with a failure.

  An input that no longer exists when it is downloaded (404/412: deleted or overwritten after
  its notification) is not run: the object is skipped without using an attempt.
  When the work API or the store does not answer (an operator restart, a leader change, a
  store restart), heartbeats are retried within seconds (a new leader re-attaches the lease),
  and the outputs' uploads and the result for as long as the lease lasts (at least a minute),
  with backoff and jitter, also while a new leader is still loading its pipelines (503): a
  successful run is not run again for a transient error, and a result is never dropped
  silently.

  Exit codes: 0 = success (outputs uploaded, object done). Any other code, or death by a signal,
  = failure, retried up to the pipeline's maxAttempts, then recorded as failed.
  Timeout: after --timeout the command's whole process group gets SIGKILL and the attempt
  fails (retryable). Commands that fork keep their children in that group; do not
  detach from it.

  Shutdown: on SIGTERM the runner takes no new objects, lets running ones finish and exits 0.
  A second SIGTERM, or the end of --grace-seconds (less a few seconds), kills running commands
  and hands their objects back to the queue, before the kubelet's SIGKILL. A handed-back object
  is leased again at once and does not use up one of its attempts.
  Processing is at-least-once: an object may be run again after a crash, so write outputs that
  are safe to overwrite.

  Try your transform on your machine, exactly as a worker runs it, with no cluster:
    zeroflow-runner try --contract exec --timeout 2m --out out/ sample.csv -- python3 transform.py
  See `zeroflow-runner try --help`.";

const TRY_HELP: &str = "\
TRYING A TRANSFORM ON YOUR MACHINE
  `try` processes INPUT the way a worker processes an object it leased, through the same code:
  the file is copied into a fresh private directory (your file is never changed), COMMAND runs
  there with the worker's environment on top of yours (ZEROFLOW_INPUT, ZEROFLOW_OUTPUT_DIR,
  ZEROFLOW_BUCKET, ZEROFLOW_KEY, ZEROFLOW_ETAG, ZEROFLOW_SIZE, ZEROFLOW_ATTEMPT; see `run --help`),
  under the same contract, timeout (the whole process group is killed), output-name rules and
  failure rules. Nothing is sent anywhere: the outputs a worker would upload are copied into
  --out, and what the worker would report is printed on stdout (and written as JSON with
  --report). Set the pipeline's transform.env in your own environment; --key, --bucket, --etag,
  --size and --attempt stand in for what a lease says about the object. The command runs in the
  object's directory, as in a worker: name your script by an absolute path ($PWD/transform.py).

  Outputs in --out:
    --layout flat  <out>/<output name>                        (default)
    --layout sink  <out>/<sink prefix><key>/<output name>     the key each output gets in the sink;
                   a key with an empty, '.' or '..' segment has no such local path (exit 1)
  An output already in --out is replaced, as a retry replaces it in the sink. After a failure
  nothing is copied, as a worker uploads nothing; --keep keeps the object's directory (in/,
  out/, stdout) to look at what the command left.

  Exit codes of try:
    0    completed: every output is in --out
    3    failed: the command exited non-zero or a signal killed it (a worker retries it)
    4    timed out: the command's process group was killed after --timeout (a worker retries it)
    5    refused: the command exited 0 but wrote an output name the work API refuses; nothing is
         copied (a worker records the object as failed without retrying)
    6    the runner could not do its part, e.g. start the command (a worker retries it)
    130  interrupted by SIGINT or SIGTERM: the command's process group was killed
    1    nothing was run: INPUT is not a readable file, --out cannot be made, ...
    2    bad command line

  --report FILE writes one JSON object: outcome (completed, failed, timed-out,
  refused-output-name, runner-error, interrupted), retryable, exit_code, signal, stderr_tail,
  outputs [{name, key, path}], object {bucket, key, etag, size, attempt}, contract, timeout,
  seconds, kept_dir.";

#[derive(Debug, Parser)]
#[command(name = "zeroflow-runner", version, about = "Turns any container into a zeroflow worker", after_help = CONTRACT_HELP)]
struct Cli {
    /// Log format: `plain` for people, `json` for log pipelines. Filter with RUST_LOG.
    #[arg(long, global = true, env = env::LOG_FORMAT, value_enum, default_value = "plain")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

/// Logs go to stderr (stdout may be the output under the stdio contract); colours only on a
/// terminal, never in pod logs.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).init(),
        LogFormat::Plain => registry.with(layer.with_ansi(std::io::stderr().is_terminal())).init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lease objects and run COMMAND once per object until SIGTERM.
    #[command(after_help = CONTRACT_HELP)]
    Run(RunArgs),
    /// Run COMMAND once on a local file exactly as a worker runs it on an object, with no
    /// cluster, and print what the worker would report.
    #[command(after_help = TRY_HELP)]
    Try(TryArgs),
    /// Copy this executable into DIR (mode 0755); used by the worker pod's init container.
    Install { dir: PathBuf },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Base URL of the operator's work API.
    #[arg(long, env = env::WORK_API)]
    work_api: String,
    /// The pipeline, as <namespace>/<name>.
    #[arg(long, env = env::PIPELINE)]
    pipeline: String,
    /// How the command receives input and gives back outputs: exec or stdio.
    #[arg(long, env = env::CONTRACT, default_value = "exec", value_parser = contract_parser())]
    contract: Contract,
    /// Longest time one run of the command may take before its process group is killed, as a
    /// duration (500ms, 30s, 10m, 1h30m; at most 168h), the same grammar as transform.timeout.
    #[arg(long, env = env::TIMEOUT, default_value = DEFAULT_TIMEOUT, value_parser = timeout_parser)]
    timeout: Duration,
    /// Objects processed at once.
    #[arg(long, env = env::CONCURRENCY, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// The ServiceAccount token; re-read on every request because the kubelet rotates it.
    #[arg(long, env = env::TOKEN_FILE)]
    token_file: PathBuf,
    /// Where per-object directories are created.
    #[arg(long, env = env::WORK_DIR, default_value = "/zeroflow/work")]
    work_dir: PathBuf,
    /// The pod's termination grace period: after a SIGTERM, running commands that have not
    /// finished a few seconds before it ends are stopped and their objects handed back.
    #[arg(long, env = env::GRACE_SECONDS)]
    grace_seconds: Option<u64>,
    /// Names this runner's directories and logs.
    #[arg(long, env = env::POD_NAME)]
    pod_name: Option<String>,
    /// The transform and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct TryArgs {
    /// How the command receives input and gives back outputs: exec or stdio.
    #[arg(long, env = env::CONTRACT, default_value = "exec", value_parser = contract_parser())]
    contract: Contract,
    /// Longest time the command may take before its process group is killed, as a duration
    /// (500ms, 30s, 10m, 1h30m; at most 168h), the same grammar as transform.timeout.
    #[arg(long, env = env::TIMEOUT, default_value = DEFAULT_TIMEOUT, value_parser = timeout_parser)]
    timeout: Duration,
    /// The object's key (ZEROFLOW_KEY); its last segment names the input file. Default: the
    /// name of INPUT.
    #[arg(long)]
    key: Option<String>,
    /// The source bucket (ZEROFLOW_BUCKET).
    #[arg(long, default_value = "local")]
    bucket: String,
    /// The object's ETag (ZEROFLOW_ETAG); empty when not given.
    #[arg(long)]
    etag: Option<String>,
    /// The object's size in bytes (ZEROFLOW_SIZE). Default: the size of INPUT.
    #[arg(long)]
    size: Option<u64>,
    /// The attempt (ZEROFLOW_ATTEMPT): 1 on the first try, higher on retries.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    attempt: u32,
    /// Where the outputs are copied (created when missing).
    #[arg(long)]
    out: PathBuf,
    /// flat: <out>/<name>; sink: <out>/<sink prefix><key>/<name>.
    #[arg(long, value_enum, default_value = "flat")]
    layout: Layout,
    /// The pipeline's sink.prefix, for the keys outputs would get.
    #[arg(long, default_value = "")]
    sink_prefix: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the object's private directory is made. Default: the system's temporary directory
    /// (TMPDIR).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the object's directory (in/, out/, stdout) and print its path.
    #[arg(long)]
    keep: bool,
    /// The local file to process as the object.
    input: PathBuf,
    /// The transform and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    match cli.command {
        Command::Install { dir } => {
            let target = zeroflow_runner::install::install(&dir)?;
            tracing::info!(path = %target.display(), "installed");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => runtime()?.block_on(run(args)).map(|()| ExitCode::SUCCESS),
        Command::Try(args) => runtime()?.block_on(try_object(args)),
    }
}

/// `try`: the exit code tells the outcome ([`local::Verdict::exit_code`]).
async fn try_object(args: TryArgs) -> anyhow::Result<ExitCode> {
    let metadata = std::fs::metadata(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    anyhow::ensure!(metadata.is_file(), "{} is not a regular file", args.input.display());
    let key = match args.key {
        Some(key) => key,
        None => args
            .input
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no UTF-8 file name: give --key", args.input.display()))?
            .to_owned(),
    };
    let object = Object {
        bucket: args.bucket,
        key: key.clone(),
        etag: args.etag,
        size: Some(args.size.unwrap_or(metadata.len())),
        attempt: args.attempt,
    };
    let command = args.command;
    let request = TryRequest {
        transform: Transform { contract: args.contract, command: command.clone(), timeout: args.timeout },
        object,
        input: args.input,
        placement: Placement { out: args.out, layout: args.layout, sink_prefix: args.sink_prefix, key },
        work_dir: args.work_dir.unwrap_or_else(std::env::temp_dir),
        keep: args.keep,
    };
    // The command runs in a process group of its own, which a terminal's Ctrl-C does not reach:
    // SIGINT and SIGTERM to `try` stop it through the runner, as a worker's second SIGTERM does.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    };
    let report = local::try_object(request, stop).await?;
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing the report to {}", path.display()))?;
    }
    print!("{}", report.render());
    if report.outcome != Verdict::Completed
        && let Ok(cwd) = std::env::current_dir()
    {
        for path in local::relative_paths(&command, &cwd) {
            println!(
                "note: the command runs in the object's directory, as in a worker: {path:?} is relative to yours; give it as an absolute path"
            );
        }
    }
    Ok(ExitCode::from(report.outcome.exit_code()))
}

/// How long after the first SIGTERM running objects may go on: the grace period less a margin
/// for handing them back (a fifth of it, between 1 and 5 seconds).
fn hand_back_after(grace_seconds: u64) -> Duration {
    let grace = Duration::from_secs(grace_seconds);
    let margin = (grace / 5).clamp(Duration::from_secs(1), Duration::from_secs(5));
    grace.saturating_sub(margin)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.work_api, &args.pipeline, args.token_file)?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating the work dir {}", args.work_dir.display()))?;
    let owner = args.pod_name.as_deref().map_or_else(|| "runner".to_owned(), zeroflow_runner::names::safe_file_name);
    // An emptyDir outlives a container restart: directories an earlier run of this container
    // left behind belong to objects whose leases have expired and gone back to the queue.
    let removed = worker::remove_leftovers(&args.work_dir, &owner).context("cleaning the work dir")?;
    if removed > 0 {
        tracing::info!(removed, "removed directories left by an earlier run");
    }
    let started_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let tag = format!("{owner}-{started_ms}-{}", std::process::id());
    let ctx = Arc::new(Context {
        client,
        transform: Transform { contract: args.contract, command: args.command, timeout: args.timeout },
        work_dir: args.work_dir,
        tag,
        sequence: AtomicU64::new(0),
    });

    let (terms, shutdown) = watch::channel(0u32);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let hand_back_after = args.grace_seconds.map(hand_back_after);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
            terms.send_modify(|n| *n += 1);
            tracing::info!(count = *terms.borrow(), "termination signal: draining");
            if let (1, Some(after)) = (*terms.borrow(), hand_back_after) {
                let terms = terms.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    tracing::warn!("the grace period is ending: handing back unfinished objects");
                    terms.send_modify(|n| *n = (*n).max(2));
                });
            }
        }
    });

    tracing::info!(concurrency = args.concurrency, contract = ?args.contract, "runner started");
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        workers.spawn(worker::work(ctx.clone(), shutdown.clone()));
    }
    while let Some(result) = workers.join_next().await {
        result.context("a worker panicked")?;
    }
    tracing::info!("drained, exiting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_handed_back_before_the_grace_period_ends() {
        assert_eq!(hand_back_after(315), Duration::from_secs(310));
        assert_eq!(hand_back_after(10), Duration::from_secs(8));
        assert_eq!(hand_back_after(2), Duration::from_secs(1));
        assert_eq!(hand_back_after(1), Duration::ZERO);
        assert_eq!(hand_back_after(0), Duration::ZERO, "a zero grace period hands back at once");
    }
}
