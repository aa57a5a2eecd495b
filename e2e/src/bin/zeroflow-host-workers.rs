//! Runs one `zeroflow-runner` per Running worker pod of a pipeline on this host, as the kubelet
//! would on a real node, until SIGINT or SIGTERM: the testbed's KWOK node cannot run processes.
//! `e2e/demo` uses it.
//!
//! Usage: zeroflow-host-workers NAMESPACE PIPELINE|--all-pipelines [-- TRANSFORM...]
//!
//! `--all-pipelines` serves the worker pods of every pipeline in the namespace
//! (`e2e/bench/sources-event-to-scale`). TRANSFORM replaces the pod's transform command (its paths exist in the image, not here).
//! The runner binary is found next to this one, or at `$ZF_ZEROFLOW_RUNNER_BIN`.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use zeroflow_e2e::workers::HostWorkers;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (names, transform) = match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], Some(args[at + 1..].to_vec())),
        None => (&args[..], None),
    };
    let [namespace, pipeline] = names else {
        anyhow::bail!("usage: zeroflow-host-workers NAMESPACE PIPELINE|--all-pipelines [-- TRANSFORM...]");
    };
    let client = zeroflow_e2e::client().await?;
    let workers = if pipeline == "--all-pipelines" {
        HostWorkers::start_for_all_pipelines(client, namespace, transform)?
    } else {
        HostWorkers::start_with_transform(client, namespace, pipeline, transform)?
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (mut started, mut exited) = (BTreeSet::new(), 0);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for pod in workers.started() {
            if started.insert(pod.clone()) {
                println!("worker pod {pod}: runner started");
            }
        }
        let exits = workers.exits();
        for (pod, code) in &exits[exited..] {
            println!("worker pod {pod}: runner exited ({})", code.map_or("signal".into(), |c| c.to_string()));
        }
        exited = exits.len();
    }
    Ok(())
}
