//! Runs the user command in its own process group, so a timeout or an abort kills everything it
//! started, and keeps the end of its stderr.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::Error;
use crate::names::TailBuffer;

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exited; `code` is `None` when a signal ended it, and `signal` names that signal.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        stderr_tail: String,
    },
    TimedOut {
        stderr_tail: String,
    },
    /// Stopped because the runner must leave (second SIGTERM).
    Aborted {
        stderr_tail: String,
    },
}

/// What to run and with which streams.
pub struct Invocation<'a> {
    pub argv: &'a [String],
    pub env: Vec<(&'static str, String)>,
    pub cwd: &'a Path,
    /// File on stdin (stdio contract); otherwise stdin is empty.
    pub stdin: Option<&'a Path>,
    /// File that receives stdout (stdio contract); otherwise stdout goes to the runner's.
    pub stdout: Option<&'a Path>,
    pub timeout: Duration,
}

/// Runs to completion, timeout, or until `abort` resolves.
pub async fn run(inv: Invocation<'_>, abort: impl Future<Output = ()>) -> Result<Outcome, Error> {
    let (program, args) = inv.argv.split_first().ok_or_else(|| Error::Config("no command given".into()))?;
    let io = |what| move |source| Error::Io { what, source };
    let mut command = Command::new(program);
    command.args(args).envs(inv.env).current_dir(inv.cwd).process_group(0).kill_on_drop(true);
    command.stdin(match inv.stdin {
        Some(path) => Stdio::from(std::fs::File::open(path).map_err(io("opening the input"))?),
        None => Stdio::null(),
    });
    command.stdout(match inv.stdout {
        Some(path) => Stdio::from(std::fs::File::create_new(path).map_err(io("creating the stdout file"))?),
        None => Stdio::inherit(),
    });
    command.stderr(Stdio::piped());
    let mut child = command.spawn().map_err(io("starting the command"))?;
    let pgid = child.id();
    let stderr = child.stderr.take();
    // Stderr is passed on to the pod log and its end kept for the failure report.
    let tail = tokio::spawn(async move {
        let mut buffer = TailBuffer::default();
        let Some(mut stderr) = stderr else { return buffer };
        let mut chunk = vec![0u8; 8192];
        while let Ok(n) = stderr.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buffer.push(&chunk[..n]);
            // Small writes to the pod log; a blocking write is fine here.
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), &chunk[..n]);
        }
        buffer
    });

    enum End {
        Exit(std::io::Result<std::process::ExitStatus>),
        Timeout,
        Abort,
    }
    let end = tokio::select! {
        status = child.wait() => End::Exit(status),
        () = tokio::time::sleep(inv.timeout) => End::Timeout,
        () = abort => End::Abort,
    };
    // Also after a clean exit: background processes it left would hold stderr open and outlive
    // the object.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    let stderr_tail = |tail: Result<TailBuffer, _>| tail.map(|b: TailBuffer| b.tail()).unwrap_or_default();
    Ok(match end {
        End::Exit(status) => {
            let status = status.map_err(io("waiting for the command"))?;
            Outcome::Exited { code: status.code(), signal: status.signal(), stderr_tail: stderr_tail(tail.await) }
        }
        End::Timeout => {
            let _ = child.wait().await;
            Outcome::TimedOut { stderr_tail: stderr_tail(tail.await) }
        }
        End::Abort => {
            let _ = child.wait().await;
            Outcome::Aborted { stderr_tail: stderr_tail(tail.await) }
        }
    })
}

/// SIGKILL to the whole group; a group that is already gone is fine.
fn kill_group(pgid: u32) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    match killpg(Pid::from_raw(raw), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(error = %e, pgid, "could not kill the command's process group"),
    }
}
