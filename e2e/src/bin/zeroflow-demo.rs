//! The part of `e2e/demo` that runs and checks the example once the operator runs: applies the
//! example's pipeline (patched only where the testbed forces it), uploads invoices, prints the
//! scaling 0 -> N -> 0 with its timings, checks every output, and exits non-zero naming the
//! step that failed. `e2e/demo` starts the testbed, the node and the operator first.
//!
//! Needs the testbed's environment (`eval "$(e2e/testbed env)"`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zeroflow_e2e::demo::example::Testbed;
use zeroflow_e2e::demo::run::{Settings, follow, run};

/// Runs zeroflow's example pipeline on the testbed and reports what it did.
#[derive(Parser)]
#[command(name = "zeroflow-demo")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Applies the example, uploads objects, watches 0 -> N -> 0 and checks every output.
    Run {
        /// The example's directory (pipeline.yaml, sample/, sample/expected/).
        #[arg(long)]
        example: PathBuf,
        /// Namespace of the example's objects (it must exist and be watched by the operator).
        #[arg(long, default_value = "demo")]
        namespace: String,
        /// S3 endpoint as the operator reaches MinIO (default: $ZF_S3_ENDPOINT).
        #[arg(long)]
        endpoint: Option<String>,
        /// Transform image to use instead of the example's (one the node has).
        #[arg(long)]
        image: Option<String>,
        /// Label and taint key of the real node the workers must run on.
        #[arg(long)]
        node_label: Option<String>,
        /// MinIO webhook target for the source bucket (default: $ZF_WEBHOOK_ARN_NO_QUEUE).
        #[arg(long)]
        arn: Option<String>,
        /// Invoices generated on top of the example's samples.
        #[arg(long, default_value_t = 20)]
        invoices: usize,
        /// The operator's metrics address (IP:PORT), for its own event-to-scale figure.
        #[arg(long)]
        metrics: Option<String>,
    },
    /// Prints the name of the example's DataPipeline.
    PipelineName {
        #[arg(long)]
        example: PathBuf,
    },
    /// Prints the pipeline's scaling and counts as they change, until interrupted.
    Follow {
        #[arg(long, default_value = "demo")]
        namespace: String,
        #[arg(long)]
        pipeline: String,
    },
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow::anyhow!("{name} is not set: eval \"$(e2e/testbed env)\" first"))
}

async fn main_() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run { example, namespace, endpoint, image, node_label, arn, invoices, metrics } => {
            let testbed = Testbed {
                namespace,
                endpoint: endpoint.map_or_else(|| env("ZF_S3_ENDPOINT"), Ok)?,
                access_key: env("ZF_S3_ACCESS_KEY")?,
                secret_key: env("ZF_S3_SECRET_KEY")?,
                image,
                node_label,
            };
            let arn = arn.map_or_else(|| env("ZF_WEBHOOK_ARN_NO_QUEUE"), Ok)?;
            run(&Settings { example, testbed, arn, invoices, metrics }).await
        }
        Command::PipelineName { example } => {
            let yaml = std::fs::read_to_string(example.join("pipeline.yaml"))?;
            println!("{}", zeroflow_e2e::demo::example::pipeline_name(&yaml)?);
            Ok(())
        }
        Command::Follow { namespace, pipeline } => {
            tokio::select! {
                result = follow(&namespace, &pipeline) => result,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match main_().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("\nFAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
