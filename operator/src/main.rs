use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use kube::runtime::events::Reporter;
use kube::{Client, Resource};
use tokio::sync::watch;
use tracing::{error, info, warn};
use zeroflow_operator::api::DataPipeline;
use zeroflow_operator::cli::Cli;
use zeroflow_operator::controller::{self, Context, build::WorkerOptions};
use zeroflow_operator::events::EventRecorder;
use zeroflow_operator::gateway::auth::NamespaceTokens;
use zeroflow_operator::gateway::metrics::GatewayMetrics;
use zeroflow_operator::gateway::notices::{Notices, PodEvents};
use zeroflow_operator::gateway::{self, GatewayConfig};
use zeroflow_operator::health::{self, Readiness};
use zeroflow_operator::leader::Leadership;
use zeroflow_operator::metrics::Metrics;
use zeroflow_operator::runtime::{Pipelines, progress, resync};
use zeroflow_operator::scaler::Scaler;
use zeroflow_operator::sources::sqs::pipelines::ConsumerParts;
use zeroflow_operator::sources::{self, metrics::SourceMetrics};
use zeroflow_operator::status_writer::StatusWriter;
use zeroflow_operator::telemetry;
use zeroflow_operator::workapi::{self, CachingVerifier, TokenReviewVerifier, WorkApi};

/// Seconds an event sender is asked to wait (Retry-After) when a backlog is full.
const GATEWAY_RETRY_AFTER_SECONDS: u32 = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let default_store = cli.default_store().map_err(anyhow::Error::msg)?;
    info!(identities = %default_store.identities.description, "cloud identities");
    let sqs = cli.sqs(default_store.identities.aws.as_ref()).map_err(anyhow::Error::msg)?;
    let kafka = cli.kafka().map_err(anyhow::Error::msg)?;
    let gateway_token = cli.gateway_token().map_err(anyhow::Error::msg)?;
    if gateway_token.is_none() {
        warn!("no --gateway-token-file: the event gateway accepts unauthenticated requests");
    }
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let readiness = Arc::new(Readiness::default());

    let listener = tokio::net::TcpListener::bind(cli.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", cli.metrics_addr))?;
    info!(addr = %cli.metrics_addr, "serving /metrics, /livez and /readyz");
    let (stop_tx, stop_rx) = watch::channel(false);
    let health_server = tokio::spawn({
        let router = health::router(readiness.clone(), metrics.clone());
        let mut stop = stop_rx.clone();
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        }
    });

    let client = Client::try_default().await.context("connecting to the Kubernetes API")?;
    let shutdown = shutdown_signal().shared();

    tokio::select! {
        () = wait_for_crd(&client) => readiness.set_crd_installed(),
        () = shutdown.clone() => return Ok(()),
    }

    let identity = cli.identity();
    let mut leadership = None;
    if cli.leader_election {
        let mut election = Leadership::join(
            client.clone(),
            &cli.leader_election_namespace,
            &cli.leader_election_id,
            &identity,
            cli.leader_election_lease_seconds,
        )
        .await
        .context("joining leader election")?;
        info!(identity, lease = cli.leader_election_id, "waiting to become the leader");
        tokio::select! {
            () = election.acquired() => {},
            () = shutdown.clone() => { election.release().await; return Ok(()); }
        }
        info!(identity, "became the leader");
        leadership = Some(election);
    }
    readiness.set_leader(true);
    metrics.leader.set(1);

    let fence = leadership.as_ref().map(|election| {
        // A replica that is no longer sure it leads stops at once, not after a graceful
        // shutdown: its scaler, work API and controllers would otherwise go on acting beside
        // the new leader (two leaders) for as long as shutting down takes. It restarts as a
        // clean follower; runners retry their requests against the new leader.
        let lost = election.lost();
        tokio::spawn(async move {
            lost.await;
            error!("lost the leader lease; exiting");
            std::process::exit(1);
        })
    });
    let stop = shutdown.clone();

    // Everything per pipeline lives in its runtime, in one map this leader owns: the gateway
    // admits into it, the work API leases from it, the scaler and the background tasks read it.
    let (kick, kicks) = tokio::sync::mpsc::unbounded_channel();
    let pipelines = Arc::new(Pipelines::new(GATEWAY_RETRY_AFTER_SECONDS, kick, metrics.clone()));
    // Before the work API answers: until every watch has listed, no pipeline is called missing.
    pipelines.declared().expect_scopes(cli.watched_namespaces().len());
    let recorder = EventRecorder::new(
        client.clone(),
        Reporter { controller: "zeroflow-operator".into(), instance: Some(identity) },
    );
    // For the life of the process, like the recorder: keeps its repeat cache from growing for good.
    tokio::spawn(recorder.clone().renew_periodically());
    let (status, status_task) = StatusWriter::spawn(client.clone(), pipelines.clone());

    let gateway_metrics = GatewayMetrics::register(metrics.registry()).context("registering gateway metrics")?;
    let notices = match &cli.identity {
        // The pod's own name (from the chart's downward API): Warning Events go on it.
        Some(pod) if !pod.is_empty() => {
            Notices::new(PodEvents::new(recorder.clone(), &cli.leader_election_namespace, pod))
        }
        _ => Notices::default(),
    };
    let sender_tokens = NamespaceTokens::default();
    let gateway_config = GatewayConfig {
        token: gateway_token,
        namespace_tokens: sender_tokens.clone(),
        body_limit: cli.gateway_body_limit,
        sns: cli.gateway.sns_settings(),
        notices,
    };
    let gateway_listener = tokio::net::TcpListener::bind(cli.gateway_addr)
        .await
        .with_context(|| format!("binding --gateway-addr {}", cli.gateway_addr))?;
    info!(addr = %cli.gateway_addr, "serving the event gateway");
    let workapi = Arc::new(WorkApi::new(
        pipelines.clone(),
        Arc::new(CachingVerifier::new(TokenReviewVerifier::new(client.clone()))),
    ));
    let workapi_listener = tokio::net::TcpListener::bind(cli.work_api_addr)
        .await
        .with_context(|| format!("binding --work-api-addr {}", cli.work_api_addr))?;
    info!(addr = %cli.work_api_addr, "serving the work API");
    let workapi_server = tokio::spawn({
        let router = workapi::router(workapi);
        let stop = stop.clone();
        async move { axum::serve(workapi_listener, router).with_graceful_shutdown(stop).await }
    });
    let gateway_server = tokio::spawn({
        let pubsub = gateway::pubsub::router(gateway_config.clone(), pipelines.clone(), gateway_metrics.clone());
        let router = gateway::router(gateway_config, pipelines.clone(), gateway_metrics.clone())?.merge(pubsub);
        let stop = stop.clone();
        async move { axum::serve(gateway_listener, router).with_graceful_shutdown(stop).await }
    });

    let scaler = Arc::new(Scaler::new(client.clone(), pipelines.clone(), recorder.clone(), status.clone()));
    let mut runtime_tasks = vec![
        tokio::spawn(scaler.run(kicks)),
        tokio::spawn(progress::run(pipelines.clone(), status.clone(), recorder.clone())),
        tokio::spawn(resync::run(pipelines.clone())),
        tokio::spawn(controller::sender::run(client.clone(), pipelines.clone(), sender_tokens)),
    ];
    // Queue consumers: leader-only like everything above, aborted with it.
    let source_metrics = SourceMetrics::register(metrics.registry()).context("registering source metrics")?;
    if let Some(sqs) = &sqs {
        let consumers = sources::spawn_sqs(
            sqs,
            pipelines.clone(),
            gateway_metrics.clone(),
            source_metrics.clone(),
            readiness.clone(),
        )
        .map_err(anyhow::Error::msg)?;
        runtime_tasks.extend(consumers);
    }
    // The queues pipelines name: consumers started and stopped by the registry as pipelines
    // come and go, aborted with it.
    let (queues, queues_task) = sources::sqs::pipelines::QueueRegistry::spawn(ConsumerParts {
        pipelines: pipelines.clone(),
        status: status.clone(),
        events: gateway_metrics.clone(),
        metrics: source_metrics.clone(),
        readiness: readiness.clone(),
        identity: default_store.identities.aws.clone(),
        wait_seconds: cli.sqs_wait_seconds,
    })
    .map_err(anyhow::Error::msg)?;
    runtime_tasks.push(queues_task);
    if let Some(kafka) = &kafka {
        let metrics = source_metrics.clone();
        runtime_tasks.push(sources::spawn_kafka(
            kafka,
            pipelines.clone(),
            gateway_metrics.clone(),
            metrics,
            readiness.clone(),
        ));
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics: metrics.clone(),
        workers: WorkerOptions { runner_image: cli.runner_image.clone(), work_api_url: cli.work_api_url.clone() },
        runner_delivery: cli.runner_delivery,
        deliveries: Default::default(),
        default_store,
        concurrency: cli.max_concurrent_reconciles,
        backlog_capacity: usize::try_from(cli.backlog_capacity).unwrap_or(usize::MAX),
        pipelines,
        status,
        queues,
    });
    let namespaces = cli.watched_namespaces();
    readiness.expect_watches(namespaces.len());
    let controllers = namespaces.into_iter().map(|ns| {
        let readiness = readiness.clone();
        controller::run(ctx.clone(), ns, stop.clone(), move || readiness.watch_synced())
    });
    futures::future::join_all(controllers).await;
    for task in runtime_tasks {
        task.abort();
    }
    drop(ctx);
    status_task.abort();

    readiness.set_leader(false);
    metrics.leader.set(0);
    if let Some(fence) = fence {
        // Its watch on the election must end before the election task can release the Lease.
        fence.abort();
        let _ = fence.await;
    }
    if let Some(election) = leadership {
        election.release().await;
    }
    let _ = stop_tx.send(true);
    let _ = health_server.await;
    let _ = gateway_server.await;
    let _ = workapi_server.await;
    info!("shut down");
    Ok(())
}

/// Waits until the DataPipeline CRD is served, saying clearly what is missing meanwhile.
/// Uses discovery, which every authenticated client may read, so it works with namespaced RBAC.
async fn wait_for_crd(client: &Client) {
    let api_version = DataPipeline::api_version(&());
    let plural = DataPipeline::plural(&());
    loop {
        match client.list_api_group_resources(&api_version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == plural) => return,
            Ok(_) => warn!("{api_version} is served without datapipelines; run `kubectl apply -f crds/`"),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                warn!(
                    "the DataPipeline CRD (datapipelines.zeroflow.dev) is not installed; run `kubectl apply -f crds/`"
                );
            }
            Err(e) => warn!(error = %e, "cannot discover the DataPipeline API yet"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    info!("shutdown requested");
}
