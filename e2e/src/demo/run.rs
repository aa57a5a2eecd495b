//! The demo's job, step by step, against a testbed where the operator already runs: the
//! example's pipeline applied, objects uploaded, the scaling 0 -> N -> 0 watched and timed,
//! every output checked. A step that fails is named in the error.

use std::collections::BTreeSet;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::TryStreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde_json::Value;
use zeroflow_operator::api::parse_duration;

use super::example::{self, Input, Testbed};
use super::observe::Observer;
use super::timeline::{Milestone, OperatorFigures, Timeline, describe, histogram_mean, stamp, summary};
use crate::{eventually, kubectl, mc};

/// Field manager of what the demo applies.
const MANAGER: &str = "zeroflow-demo";
/// From the upload to the worker Deployment leaving zero.
const SCALE_TIMEOUT: Duration = Duration::from_secs(30);
/// From the upload to the first Running worker pod (image already on the node).
const RUNNING_TIMEOUT: Duration = Duration::from_secs(180);
/// From the upload to the last output.
const OUTPUTS_TIMEOUT: Duration = Duration::from_secs(300);
/// Beyond idleTimeout and the scale-down window, for the return to zero and the pods to go.
const DRAIN_MARGIN: Duration = Duration::from_secs(120);

/// What to run where.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The example's directory: `pipeline.yaml`, `sample/*.csv` and `sample/expected/`.
    pub example: PathBuf,
    pub testbed: Testbed,
    /// MinIO webhook target (ARN) that sends the source bucket's events to the gateway.
    pub arn: String,
    /// Invoices generated on top of the example's samples.
    pub invoices: usize,
    /// The operator's metrics address (`IP:PORT`): 127.0.0.1, or its pod's IP on the node.
    pub metrics: Option<String>,
}

/// Runs the steps; prints the timeline and the figures as it goes.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let client = crate::client().await?;
    let ns = settings.testbed.namespace.clone();
    let pipeline_yaml = settings.example.join("pipeline.yaml");

    let patched = step("read the example", async {
        let yaml =
            std::fs::read_to_string(&pipeline_yaml).with_context(|| format!("reading {}", pipeline_yaml.display()))?;
        let patched = example::patch(&yaml, &settings.testbed)?;
        println!("  {} is applied as it is, except what the testbed forces:", pipeline_yaml.display());
        for change in &patched.changes {
            println!("    {change}");
        }
        Ok(patched)
    })
    .await?;
    let pipeline = example::pipeline(&patched.objects)?.clone();
    let name = pipeline["metadata"]["name"].as_str().context("the DataPipeline has no name")?.to_owned();
    let spec = &pipeline["spec"];
    let source = spec["source"]["bucket"].as_str().context("no spec.source.bucket")?.to_owned();
    let sink = spec["sink"]["bucket"].as_str().unwrap_or(&source).to_owned();
    let prefix = spec["source"]["prefix"].as_str().unwrap_or_default().to_owned();
    let sink_prefix = spec["sink"]["prefix"].as_str().unwrap_or("zeroflow-output/").to_owned();
    let idle_timeout = spec["scaling"]["idleTimeout"].as_str().unwrap_or("60s").to_owned();
    let stabilization = spec["scaling"]["scaleDownStabilization"].as_str().unwrap_or("30s").to_owned();

    let store = crate::store_config()?;
    let source_store: Arc<dyn ObjectStore> = Arc::new(zeroflow_operator::store::bucket_client(&store, &source)?);
    let sink_store: Arc<dyn ObjectStore> = Arc::new(zeroflow_operator::store::bucket_client(&store, &sink)?);

    step("buckets", async {
        let alias = std::env::var("ZF_MC_ALIAS").context("ZF_MC_ALIAS unset: eval \"$(e2e/testbed env)\"")?;
        for bucket in BTreeSet::from([&source, &sink]) {
            // A fresh bucket each run, so the figures and outputs are this run's own.
            let _ = mc(&["rb", "--force", &format!("{alias}/{bucket}")]).await;
            mc(&["mb", &format!("{alias}/{bucket}")]).await?;
        }
        println!("  source {source}, sink {sink} (empty)");
        Ok(())
    })
    .await?;

    let pipelines = dynamic_api(&client, &ns, "zeroflow.dev", "v1alpha1", "DataPipeline");
    step("apply the pipeline; it is Ready at zero workers", async {
        for object in &patched.objects {
            apply(&client, &ns, object).await?;
        }
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let worker = format!("{name}-worker");
        eventually(
            "the DataPipeline Ready with its worker Deployment at 0 replicas and no pod",
            Duration::from_secs(60),
            || async {
                let dp = pipelines.get(&name).await?;
                let ready = dp.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                let replicas = deployments.get_opt(&worker).await?.and_then(|d| d.spec?.replicas);
                let no_pods = pods
                    .list(&ListParams::default().labels(&format!("zeroflow.dev/pipeline={name}")))
                    .await?
                    .items
                    .is_empty();
                Ok((ready && replicas == Some(0) && no_pods).then_some(()))
            },
        )
        .await?;
        println!("  DataPipeline {ns}/{name} Ready; Deployment {worker} at 0 replicas, no worker pod");
        Ok(())
    })
    .await?;

    step("MinIO notifies the gateway", async {
        let alias = std::env::var("ZF_MC_ALIAS")?;
        let target = format!("{alias}/{source}");
        // MinIO refuses the binding while it believes the gateway offline.
        eventually("mc event add", Duration::from_secs(60), || async {
            Ok(mc(&["event", "add", &target, &settings.arn, "--event", "put"]).await.ok())
        })
        .await?;
        println!("  bucket {source}: put events -> {} (sent at once, no queue dir)", settings.arn);
        Ok(())
    })
    .await?;

    let mut inputs: Vec<Input> = (1..=settings.invoices).map(|i| example::generated_invoice(&prefix, i)).collect();
    inputs.extend(sample_inputs(&settings.example.join("sample"), &prefix)?);
    let expected: Vec<(String, Vec<u8>)> = inputs.iter().flat_map(|i| i.output_keys(&sink_prefix)).collect();
    let expected_keys: BTreeSet<String> = expected.iter().map(|(k, _)| k.clone()).collect();

    let mut observer = Observer::new(
        &client,
        pipelines.clone(),
        &ns,
        &name,
        Some((sink_store.clone(), Path::from(sink_prefix.as_str()), expected_keys.clone())),
    );
    let mut timeline = Timeline::new(observer.prime().await?, expected.len());

    let started = step("upload", async {
        // Outside the pipeline's prefix: no work, no output.
        put(&source_store, "archive/2025/old.csv", b"invoice,amount\nOLD-1,1.00\n".to_vec()).await?;
        let started = Instant::now();
        for input in &inputs {
            put(&source_store, &input.key, input.body.clone()).await?;
        }
        println!(
            "  {} CSV files under {source}/{prefix} ({} generated invoices and the example's sample/*.csv) in {:.2} s, \
             and 1 outside the filter",
            inputs.len(),
            settings.invoices,
            started.elapsed().as_secs_f64()
        );
        Ok(started)
    })
    .await?;

    step("watch: scale from zero, convert, outputs in the sink", async {
        println!("{}  upload started", stamp(Duration::ZERO));
        loop {
            let snapshot = observer.next().await?;
            let at = started.elapsed();
            for (at, milestone) in timeline.observe(at, snapshot) {
                println!("{}  {}", stamp(at), describe(&milestone));
                if let Milestone::Failed { count } = milestone {
                    bail!("{count} object(s) failed: {}", failure_note(&client, &ns, &name).await);
                }
            }
            if let Some(problem) = observer.pod_problem() {
                bail!("{problem}");
            }
            let figures = timeline.figures();
            if figures.all_outputs.is_some() {
                return Ok(());
            }
            if figures.event_to_scale.is_none() && at > SCALE_TIMEOUT {
                bail!("the worker Deployment is still at 0 replicas {SCALE_TIMEOUT:?} after the upload: no storage event reached the operator?");
            }
            if figures.first_running.is_none() && at > RUNNING_TIMEOUT {
                bail!("no worker pod Running {RUNNING_TIMEOUT:?} after the upload ({} pods exist)", timeline.now().pods);
            }
            if at > OUTPUTS_TIMEOUT {
                bail!("only {} of {} outputs in the sink {OUTPUTS_TIMEOUT:?} after the upload", timeline.now().outputs, expected.len());
            }
        }
    })
    .await?;

    step("check every output", async {
        for (key, want) in &expected {
            let got = sink_store.get(&Path::from(key.as_str())).await?.bytes().await?;
            if got.as_ref() != want.as_slice() {
                bail!(
                    "{sink}/{key} is not what transform.py writes for its input:\n--- got\n{}--- want\n{}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(want)
                );
            }
        }
        let listed: Vec<_> = sink_store.list(Some(&Path::from(sink_prefix.as_str()))).try_collect().await?;
        let extra: Vec<String> =
            listed.iter().map(|o| o.location.to_string()).filter(|k| !expected_keys.contains(k)).collect();
        if !extra.is_empty() {
            bail!("unexpected outputs in {sink}/{sink_prefix}: {extra:?}");
        }
        println!("  {} outputs in {sink}/{sink_prefix}, each exactly the JSON Lines of its CSV; nothing for the file outside the filter", expected.len());
        Ok(())
    })
    .await?;

    let drain_timeout = parse_duration(&idle_timeout)? + parse_duration(&stabilization)? + DRAIN_MARGIN;
    step("back to zero when idle", async {
        println!("  (idleTimeout {idle_timeout} from pipeline.yaml, then the {stabilization} scale-down window)");
        let done_at = started.elapsed();
        loop {
            let snapshot = observer.next().await?;
            let at = started.elapsed();
            for (at, milestone) in timeline.observe(at, snapshot) {
                println!("{}  {}", stamp(at), describe(&milestone));
                if let Milestone::Failed { count } = milestone {
                    bail!("{count} object(s) failed: {}", failure_note(&client, &ns, &name).await);
                }
            }
            let now = timeline.now();
            if now.replicas == 0 && now.pods == 0 && timeline.figures().back_to_zero.is_some() {
                break;
            }
            if at > done_at + drain_timeout {
                bail!(
                    "not back to zero {drain_timeout:?} after the last output: {} replicas, {} pods",
                    now.replicas,
                    now.pods
                );
            }
        }
        let succeeded = inputs.len();
        eventually("status.succeeded to count every object", Duration::from_secs(30), || async {
            let dp = pipelines.get(&name).await?;
            let status = &dp.data["status"];
            Ok((status["succeeded"].as_u64() == Some(succeeded as u64) && status["failed"].as_u64() == Some(0))
                .then_some(()))
        })
        .await?;
        Ok(())
    })
    .await?;

    let dp = pipelines.get(&name).await?;
    let page = match &settings.metrics {
        Some(addr) => metrics_page(addr).await.unwrap_or_else(|e| {
            println!("  (the operator's metrics at {addr}: {e:#})");
            String::new()
        }),
        None => String::new(),
    };
    let operator = OperatorFigures {
        cold_start: dp.data["status"]["lastColdStartSeconds"].as_f64(),
        event_to_scale: histogram_mean(&page, "zeroflow_event_to_scale_seconds"),
    };
    println!("\n--- figures (this run)");
    print!("{}", summary(&timeline.figures(), &operator, inputs.len(), &idle_timeout));
    println!("\n$ kubectl get dp -n {ns}");
    print!("{}", kubectl(&["get", "dp", "-n", &ns]).await?);
    // The largest of the example's own samples shows the most of the conversion.
    let sample = inputs[settings.invoices..].iter().max_by_key(|i| i.body.len());
    for (key, body) in sample.map(|s| s.output_keys(&sink_prefix)).unwrap_or_default() {
        println!("\n$ mc cat {sink}/{key}    # the output of one of the example's sample/ files");
        print!("{}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// Prints the transitions of a running pipeline (scaling, pods, counts) until interrupted.
pub async fn follow(namespace: &str, name: &str) -> anyhow::Result<()> {
    let client = crate::client().await?;
    let pipelines = dynamic_api(&client, namespace, "zeroflow.dev", "v1alpha1", "DataPipeline");
    let mut observer = Observer::new(&client, pipelines, namespace, name, None);
    let mut timeline = Timeline::new(observer.prime().await?, usize::MAX);
    let mut succeeded = observer.succeeded();
    let started = Instant::now();
    loop {
        let snapshot = observer.next().await?;
        for (_, milestone) in timeline.observe(started.elapsed(), snapshot) {
            println!("  {}  {}", clock(), describe(&milestone));
        }
        if observer.succeeded() != succeeded {
            succeeded = observer.succeeded();
            println!("  {}  succeeded: {succeeded}", clock());
        }
    }
}

/// The time of day (UTC), `HH:MM:SS.mmm`.
fn clock() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (now.as_secs() % 86_400, now.subsec_millis());
    format!("{:02}:{:02}:{:02}.{millis:03} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `GET /metrics` over plain HTTP/1.0 (the operator's metrics server, on loopback or on its
/// pod's address inside the testbed's node network).
async fn metrics_page(addr: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let connect = tokio::net::TcpStream::connect(addr);
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect).await.context("connect timed out")??;
    stream.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .context("read timed out")??;
    let (head, body) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_owned())
}

async fn step<T>(name: &str, work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    println!("\n--- {name}");
    work.await.with_context(|| format!("step \"{name}\""))
}

fn dynamic_api(client: &kube::Client, ns: &str, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()));
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Server-side applies one object of the example (its apiVersion and kind name the API).
async fn apply(client: &kube::Client, ns: &str, object: &Value) -> anyhow::Result<()> {
    let api_version = object["apiVersion"].as_str().context("an object without apiVersion")?;
    let kind = object["kind"].as_str().context("an object without kind")?;
    let name = object["metadata"]["name"].as_str().context("an object without a name")?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let api = dynamic_api(client, ns, group, version, kind);
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object))
        .await
        .with_context(|| format!("applying {kind} {name}"))?;
    Ok(())
}

async fn put(store: &Arc<dyn ObjectStore>, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
    store.put(&Path::from(key), PutPayload::from(body)).await.with_context(|| format!("uploading {key}"))?;
    Ok(())
}

/// The example's own samples: `sample/NAME.csv` with `sample/expected/NAME.csv/*` as outputs.
fn sample_inputs(dir: &FsPath, prefix: &str) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for file in files.into_iter().filter(|f| f.is_file()) {
        let name = file.file_name().and_then(|n| n.to_str()).context("a sample with a non-UTF-8 name")?.to_owned();
        let expected_dir = dir.join("expected").join(&name);
        let mut outputs = Vec::new();
        for out in std::fs::read_dir(&expected_dir).with_context(|| format!("no {}", expected_dir.display()))? {
            let out = out?.path();
            let out_name = out.file_name().and_then(|n| n.to_str()).context("non-UTF-8 name")?.to_owned();
            outputs.push((out_name, std::fs::read(&out)?));
        }
        outputs.sort();
        inputs.push(Input { key: format!("{prefix}{name}"), body: std::fs::read(&file)?, outputs });
    }
    Ok(inputs)
}

/// The latest `ObjectsFailed` Event of the pipeline (it quotes the transform's stderr).
async fn failure_note(client: &kube::Client, ns: &str, name: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let Ok(list) = events.list(&ListParams::default()).await else {
        return "(no Events readable)".into();
    };
    list.items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ObjectsFailed") && e.involved_object.name.as_deref() == Some(name))
        .max_by_key(|e| e.metadata.resource_version.clone().unwrap_or_default().parse::<u64>().unwrap_or(0))
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| "(no ObjectsFailed Event yet)".into())
}
