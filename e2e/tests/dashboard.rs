//! The Grafana dashboard (`charts/zeroflow/dashboards/zeroflow.json`) against metrics scraped the
//! way the chart's monitors make Prometheus scrape them.
//!
//! A real operator runs two pipelines in two namespaces (events, scale from zero, successes, a
//! failure, a resync discovery, a reconcile error), and real Prometheus servers on loopback scrape
//! its `/metrics` with the scrape configuration prometheus-operator generates from the rendered
//! ServiceMonitor or PodMonitor: `honor_labels` as rendered, and the target labels it adds
//! (`namespace` of the operator, `service`, `pod`, `container`, `endpoint`, `job`). Every query of
//! every panel and every template variable is evaluated against each: each returns series, and
//! the namespace variable filters pipelines by their own namespace. The same scrape without
//! `honorLabels` is the control: there the namespace variable only offers the operator's
//! namespace, which is the bug the flag prevents. A fourth server stands for a Prometheus whose
//! operator overrides honorLabels, with the chart README's `metricRelabelings` example, which
//! must put the pipelines' namespace back.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use zeroflow_e2e::chart::{self, documents, find, template};
use zeroflow_e2e::pipelines::{Buckets, WEBHOOK, upload};
use zeroflow_e2e::prometheus_server::Prometheus;
use zeroflow_e2e::workers::HostWorkers;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, free_port, mc};
use zeroflow_operator::api::DataPipeline;

/// The dashboard's time range, rate interval and interval in the queries: longer than the test,
/// so every rate and increase covers all of its activity.
const WINDOW: &str = "10m";
/// How often the test's Prometheus servers scrape.
const SCRAPE: &str = "1s";

/// What prometheus-operator makes of the rendered monitor: honor_labels and the target labels.
#[derive(Debug)]
struct Scrape {
    honor_labels: bool,
    labels: Value,
    /// The monitor's metricRelabelings as Prometheus' metric_relabel_configs.
    metric_relabel_configs: Value,
}

/// Renders the chart as release `zeroflow` in `namespace` with `args` and derives the scrape of
/// its ServiceMonitor or PodMonitor (whichever the values enable), as prometheus-operator
/// generates it: job is the Service's name (ServiceMonitor) or "<namespace>/<PodMonitor name>",
/// endpoint the port's name, container the container that has that port.
async fn scrape_of_render(namespace: &str, args: &[&str]) -> anyhow::Result<Scrape> {
    let docs = documents(&template("zeroflow", &chart::chart(), namespace, args).await?)?;
    let deployment = find(&docs, "Deployment", "zeroflow")?;
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let (endpoint, job, service) = if let Ok(monitor) = find(&docs, "ServiceMonitor", "zeroflow") {
        let endpoint = monitor["spec"]["endpoints"][0].clone();
        // The Service the monitor selects, and the container port its endpoint port targets.
        let service = docs
            .iter()
            .find(|d| {
                d["kind"] == "Service"
                    && monitor["spec"]["selector"]["matchLabels"]
                        .as_object()
                        .is_some_and(|m| m.iter().all(|(k, v)| d["metadata"]["labels"][k] == *v))
            })
            .context("no Service selected by the ServiceMonitor")?;
        let port = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == endpoint["port"])
            .context("the ServiceMonitor's port is not on the Service")?;
        let name = service["metadata"]["name"].as_str().context("service name")?.to_owned();
        let endpoint = json!({"honorLabels": endpoint["honorLabels"], "port": port["targetPort"], "path": endpoint["path"],
                              "metricRelabelings": endpoint["metricRelabelings"]});
        (endpoint, name.clone(), Some(name))
    } else {
        let monitor = find(&docs, "PodMonitor", "zeroflow")?;
        let endpoint = monitor["spec"]["podMetricsEndpoints"][0].clone();
        (endpoint, format!("{namespace}/zeroflow"), None)
    };
    anyhow::ensure!(endpoint["path"] == "/metrics", "scrape path {}", endpoint["path"]);
    let port = endpoint["port"].as_str().context("endpoint port")?;
    let container = pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["ports"].as_array().into_iter().flatten().any(|p| p["name"] == port))
        .context("no container has the monitor's port")?;
    let mut labels = json!({
        "namespace": namespace,
        "pod": "zeroflow-5d8f7c9b6-x2x4q",
        "container": container["name"],
        "endpoint": port,
        "job": job,
    });
    if let Some(service) = service {
        labels["service"] = json!(service);
    }
    Ok(Scrape {
        honor_labels: endpoint["honorLabels"].as_bool().unwrap_or(false),
        labels,
        metric_relabel_configs: relabel_configs(&endpoint["metricRelabelings"]),
    })
}

/// prometheus-operator RelabelConfigs (camelCase) as Prometheus relabel_configs (snake_case).
fn relabel_configs(relabelings: &Value) -> Value {
    let field = |name: &str| match name {
        "sourceLabels" => "source_labels".to_owned(),
        "targetLabel" => "target_label".to_owned(),
        other => other.to_owned(),
    };
    let configs = relabelings.as_array().into_iter().flatten().filter_map(|r| {
        let object = r.as_object()?;
        Some(Value::Object(object.iter().map(|(k, v)| (field(k), v.clone())).collect()))
    });
    Value::Array(configs.collect())
}

/// The chart README's values for a Prometheus whose operator overrides honorLabels: its YAML
/// example that sets metricRelabelings.
fn readme_relabel_values() -> anyhow::Result<String> {
    let readme = std::fs::read_to_string(chart::chart().join("README.md"))?;
    readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("metricRelabelings:"))
        .map(str::to_owned)
        .context("no YAML example with metricRelabelings in the chart README")
}

/// prometheus.yml scraping the operator's metrics port with `scrape`.
fn prometheus_config(scrape: &Scrape, metrics_port: u16) -> anyhow::Result<String> {
    let config = json!({
        "global": {"scrape_interval": SCRAPE, "scrape_timeout": SCRAPE, "evaluation_interval": SCRAPE},
        "scrape_configs": [{
            "job_name": "zeroflow",
            "honor_labels": scrape.honor_labels,
            "metrics_path": "/metrics",
            "metric_relabel_configs": scrape.metric_relabel_configs,
            "static_configs": [{"targets": [format!("127.0.0.1:{metrics_port}")], "labels": scrape.labels}],
        }],
    });
    Ok(serde_yaml::to_string(&config)?)
}

/// A dashboard query with the template variables and Grafana's interval variables filled in.
fn substitute(expr: &str, namespace: &str, pipeline: &str, price: &str) -> anyhow::Result<String> {
    let query = expr
        .replace("$__rate_interval", WINDOW)
        .replace("$__interval", WINDOW)
        .replace("$__range", WINDOW)
        .replace("$namespace", namespace)
        .replace("$pipeline", pipeline)
        .replace("$core_hour_price", price);
    anyhow::ensure!(!query.contains('$'), "a variable is left in {query}");
    Ok(query)
}

/// Every panel query of the dashboard, with its panel's title.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect()
}

/// A template variable of the dashboard.
fn variable<'a>(dashboard: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .with_context(|| format!("no variable {name}"))
}

/// Evaluates a `label_values(SELECTOR, LABEL)` variable query, with `$namespace` filled in.
async fn variable_values(prometheus: &Prometheus, query: &str, namespace: &str) -> anyhow::Result<BTreeSet<String>> {
    let inner =
        query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).context("not label_values(...)")?;
    let (selector, label) = inner.rsplit_once(',').context("label_values without a label")?;
    prometheus.label_values(label.trim(), &selector.replace("$namespace", namespace)).await
}

/// Grafana's regex for a multi-value selection.
fn any_of(values: &[&str]) -> String {
    format!("({})", values.join("|"))
}

/// The namespaces of `samples`, for queries grouped by namespace.
fn namespaces(samples: &[zeroflow_e2e::prometheus_server::Sample]) -> BTreeSet<String> {
    samples.iter().filter_map(|s| s.labels.get("namespace").cloned()).collect()
}

/// Checks the whole dashboard against `prometheus`, for pipelines `a_pipeline` in `a` and
/// `b_pipeline` in `b`.
async fn check_dashboard(
    prometheus: &Prometheus,
    dashboard: &Value,
    (a, a_pipeline): (&str, &str),
    (b, b_pipeline): (&str, &str),
) -> anyhow::Result<()> {
    // The variables: the namespace list is the pipelines' namespaces; choosing one namespace
    // offers only its pipelines.
    let ns_query = variable(dashboard, "namespace")?["query"]["query"].as_str().context("namespace query")?;
    let offered = variable_values(prometheus, ns_query, ".*").await?;
    anyhow::ensure!(
        offered.contains(a) && offered.contains(b),
        "namespace variable offers {offered:?}, want {a} and {b}"
    );
    let others: Vec<_> = offered.iter().filter(|n| *n != a && *n != b).collect();
    anyhow::ensure!(others.is_empty(), "namespace variable offers namespaces without pipelines: {others:?}");
    let pipeline_query = variable(dashboard, "pipeline")?["query"]["query"].as_str().context("pipeline query")?;
    let in_a = variable_values(prometheus, pipeline_query, a).await?;
    anyhow::ensure!(in_a.contains(a_pipeline) && !in_a.contains(b_pipeline), "pipelines of {a}: {in_a:?}");
    let price = variable(dashboard, "core_hour_price")?["query"].as_str().context("price")?.to_owned();

    // Every query returns series with everything selected ("All": allValue .*) and with both
    // namespaces selected; a query filtered by namespace and grouped by it returns only the
    // chosen namespace's series.
    let all = variable(dashboard, "namespace")?["allValue"].as_str().context("allValue")?.to_owned();
    let queries = panel_queries(dashboard);
    anyhow::ensure!(queries.len() > 20, "only {} queries", queries.len());
    let mut failures = Vec::new();
    for (title, expr) in &queries {
        for namespace in [all.as_str(), &any_of(&[a, b])] {
            let query = substitute(expr, namespace, &all, &price)?;
            let samples = prometheus.query(&query).await?;
            if !samples.iter().any(|s| s.value.is_finite()) {
                failures.push(format!("{title}: {query} returned {samples:?}"));
            }
        }
        let filtered = expr.contains("namespace=~\"$namespace\"");
        let grouped = expr.contains("by (namespace");
        if filtered && grouped {
            for (namespace, pipeline) in [(a, a_pipeline), (b, b_pipeline)] {
                let query = substitute(expr, namespace, &all, &price)?;
                let samples = prometheus.query(&query).await?;
                let seen = namespaces(&samples);
                let pipelines: BTreeSet<_> = samples.iter().filter_map(|s| s.labels.get("pipeline").cloned()).collect();
                if seen != BTreeSet::from([namespace.to_owned()]) || !pipelines.contains(pipeline) {
                    failures.push(format!("{title} for namespace {namespace}: {query} returned {samples:?}"));
                }
            }
        }
    }
    if !failures.is_empty() {
        bail!("{} of {} queries failed:\n{}", failures.len(), queries.len(), failures.join("\n"));
    }
    Ok(())
}

/// Waits until `prometheus` has scraped the operator's final counts: `done` successes and
/// `failed` failures in all.
async fn scraped(prometheus: &Prometheus, done: f64, failed: f64) -> anyhow::Result<()> {
    eventually("prometheus has the final counts", TIMEOUT, || async {
        let count = |outcome: &'static str| async move {
            let query = format!("sum(zeroflow_workapi_completions_total{{outcome=\"{outcome}\"}})");
            Ok::<_, anyhow::Error>(prometheus.query(&query).await?.first().map(|s| s.value))
        };
        Ok((count("done").await? == Some(done) && count("failed").await? == Some(failed)).then_some(()))
    })
    .await
}

#[tokio::test]
async fn dashboard_queries_work_through_the_charts_monitors() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let client = client().await?;
    // The operator's own namespace (its Lease; the namespace label of its scrape target), and the
    // two pipelines' namespaces.
    let sys = TestNamespace::create(&client, "zfd-sys").await?;
    let (a, b) = (TestNamespace::create(&client, "zfd-a").await?, TestNamespace::create(&client, "zfd-b").await?);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(chart::chart().join("dashboards/zeroflow.json"))?)?;

    // invoices in a and reports in b: one object each before the operator starts (found by
    // resync), then good ones, and in a ones the transform fails (maxAttempts 1: recorded as
    // failed). A pipeline in a whose worker Deployment name is taken fails to reconcile; a
    // pipeline created late in b has a resync pass while Prometheus watches.
    let transform = r#"if grep -q bad "$ZEROFLOW_INPUT"; then echo "bad input" >&2; exit 3; fi; tr a-z A-Z < "$ZEROFLOW_INPUT" > "$ZEROFLOW_OUTPUT_DIR/upper.txt""#;
    let spec = json!({
        "scaling": {"maxReplicas": 2, "targetPerReplica": 2, "idleTimeout": "3s", "scaleDownStabilization": "1s"},
        "transform": {"image": "example.org/t:1", "command": ["sh", "-c", transform], "contract": "exec",
                      "resources": {"requests": {"cpu": "250m"}}},
        "delivery": {"maxAttempts": 1},
        "sink": {"prefix": "out/"}
    });
    let (store_a, store_b) = (Buckets::create(&client, &a, "dash").await?, Buckets::create(&client, &b, "dash").await?);
    Api::<DataPipeline>::namespaced(client.clone(), &a.name)
        .create(&PostParams::default(), &store_a.pipeline("invoices", "", spec.clone())?)
        .await?;
    Api::<DataPipeline>::namespaced(client.clone(), &b.name)
        .create(&PostParams::default(), &store_b.pipeline("reports", "", spec.clone())?)
        .await?;
    let taken: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "clash-worker"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "clash"}},
                 "template": {"metadata": {"labels": {"app": "clash"}}, "spec": {"containers": [{"name": "c", "image": "example.org/c:1"}]}}}
    }))?;
    Api::<Deployment>::namespaced(client.clone(), &a.name).create(&PostParams::default(), &taken).await?;
    Api::<DataPipeline>::namespaced(client.clone(), &a.name)
        .create(&PostParams::default(), &store_a.pipeline("clash", "clash/", spec.clone())?)
        .await?;
    for store in [&store_a, &store_b] {
        upload(&store.source, "before/old.txt", "an object older than the operator\n").await?;
    }

    // One operator for both namespaces, its gateway on MinIO's webhook address.
    let token_file = std::env::temp_dir().join(format!("zf-gateway-token-{}", sys.name));
    std::fs::write(&token_file, std::env::var("ZF_WEBHOOK_TOKEN")?)?;
    let lease_addr = format!("127.0.0.1:{}", free_port()?);
    let work_api_url = format!("http://{lease_addr}");
    let webhook = std::env::var("ZF_WEBHOOK_ADDR")?;
    let watched = format!("{},{}", a.name, b.name);
    let token_path = token_file.to_str().context("utf-8 path")?;
    let flags = [
        "--namespaces",
        watched.as_str(),
        "--gateway-addr",
        &webhook,
        "--gateway-token-file",
        token_path,
        "--work-api-addr",
        &lease_addr,
        "--work-api-url",
        &work_api_url,
    ];
    let operator = Operator::start_with(&sys.name, "solo", &flags).await?;
    operator.wait_ready(TIMEOUT).await?;

    // Prometheus servers scraping it through the ServiceMonitor, the PodMonitor, (the control)
    // the ServiceMonitor with honorLabels off, and the README's relabelling.
    let through_service = scrape_of_render(&sys.name, &["--set", "serviceMonitor.enabled=true"]).await?;
    let through_pods = scrape_of_render(&sys.name, &["--set", "podMonitor.enabled=true"]).await?;
    let without_honor = scrape_of_render(
        &sys.name,
        &["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.honorLabels=false"],
    )
    .await?;
    assert!(through_service.honor_labels && through_pods.honor_labels && !without_honor.honor_labels);
    // A Prometheus whose operator overrides honorLabels (honor_labels: false whatever the
    // monitor says), with the README's metricRelabelings.
    let values = std::env::temp_dir().join(format!("zf-readme-relabel-{}.yaml", sys.name));
    std::fs::write(&values, readme_relabel_values()?)?;
    let values_arg = values.display().to_string();
    let mut overridden =
        scrape_of_render(&sys.name, &["--set", "serviceMonitor.enabled=true", "-f", &values_arg]).await?;
    let _ = std::fs::remove_file(&values);
    assert_eq!(overridden.metric_relabel_configs.as_array().map(Vec::len), Some(2), "{overridden:?}");
    overridden.honor_labels = false;
    let mut servers = Vec::new();
    for scrape in [&through_service, &through_pods, &without_honor, &overridden] {
        servers.push(Prometheus::start(&prometheus_config(scrape, operator.metrics_port)?).await?);
    }

    // MinIO's target without a queue directory posts each event at once (the queued one polls
    // its directory every few seconds), so each round's first object scales from zero through
    // the event path, which is what the event-to-scale histogram measures.
    for store in [&store_a, &store_b] {
        let target = format!("{}/{}", std::env::var("ZF_MC_ALIAS")?, store.source);
        let arn = std::env::var("ZF_WEBHOOK_ARN_NO_QUEUE")?;
        eventually("mc event add", TIMEOUT, || async {
            Ok(mc(&["event", "add", &target, &arn, "--event", "put"]).await.ok())
        })
        .await?;
    }
    let _workers_a = HostWorkers::start(client.clone(), &a.name, "invoices")?;
    let _workers_b = HostWorkers::start(client.clone(), &b.name, "reports")?;
    // Two rounds: Prometheus only sees a series' increase from its second sample on (a series
    // that appears at its final value has rate 0), so the first round creates every series and
    // the second, after the workers are back at zero, moves them all: another scale from zero,
    // cold start, successes, a failure and reconciles.
    let deployments = |ns: &str| Api::<Deployment>::namespaced(client.clone(), ns);
    let round = |n: usize, (done_a, failed_a, done_b): (i64, i64, i64)| {
        let (store_a, store_b, a, b) = (&store_a, &store_b, &a.name, &b.name);
        let (client, operator) = (&client, &operator);
        async move {
            upload(&store_a.source, &format!("in/good-{n}.txt"), "fine\n").await?;
            upload(&store_a.source, &format!("in/bad-{n}.txt"), "bad\n").await?;
            upload(&store_b.source, &format!("in/r-{n}.txt"), "fine\n").await?;
            let finished = eventually("objects finished", Duration::from_secs(120), || async {
                let status = |ns: &str, name: &'static str| {
                    let api: Api<DataPipeline> = Api::namespaced(client.clone(), ns);
                    async move { Ok::<_, anyhow::Error>(api.get(name).await?.status.unwrap_or_default()) }
                };
                let (sa, sb) = (status(a, "invoices").await?, status(b, "reports").await?);
                let done = sa.succeeded == done_a && sa.failed == failed_a && sb.succeeded == done_b;
                Ok((done && sa.in_flight == 0 && sb.in_flight == 0).then_some(()))
            })
            .await;
            if let Err(e) = finished {
                bail!("round {n}: {e:#}\noperator log:\n{}", operator.log_tail());
            }
            Ok(())
        }
    };
    // Round 1: the objects found by resync, one new object each and a failure in a.
    round(1, (2, 1, 2)).await?;
    for server in &servers {
        scraped(server, 4.0, 1.0).await?;
    }
    eventually("workers back at zero", TIMEOUT, || async {
        let mut idle = true;
        for (ns, name) in [(&a.name, "invoices-worker"), (&b.name, "reports-worker")] {
            idle &= deployments(ns).get(name).await?.spec.and_then(|s| s.replicas) == Some(0);
        }
        Ok(idle.then_some(()))
    })
    .await?;
    round(2, (3, 2, 3)).await?;
    // The periodic resync (every 5 minutes by default) would not run again while Prometheus
    // watches; a new pipeline's first pass does.
    let late = store_b.pipeline("late", "late/", spec.clone())?;
    Api::<DataPipeline>::namespaced(client.clone(), &b.name).create(&PostParams::default(), &late).await?;
    for server in &servers {
        scraped(server, 6.0, 2.0).await?;
        eventually("prometheus saw a resync pass", TIMEOUT, || async {
            let query = "increase(zeroflow_resync_duration_seconds_count[10m]) > 0";
            Ok((!server.query(query).await?.is_empty()).then_some(()))
        })
        .await?;
    }

    let (pa, pb) = ((a.name.as_str(), "invoices"), (b.name.as_str(), "reports"));
    check_dashboard(&servers[0], &dashboard, pa, pb).await.context("through the ServiceMonitor")?;
    check_dashboard(&servers[1], &dashboard, pa, pb).await.context("through the PodMonitor")?;
    check_dashboard(&servers[3], &dashboard, pa, pb)
        .await
        .context("with overrideHonorLabels and the README's relabelling")?;

    // The control: without honorLabels the pipelines' namespace label is renamed and the
    // namespace variable offers only the operator's namespace, so the same check fails.
    let control = &servers[2];
    let ns_query = variable(&dashboard, "namespace")?["query"]["query"].as_str().context("namespace query")?;
    assert_eq!(variable_values(control, ns_query, ".*").await?, BTreeSet::from([sys.name.clone()]));
    let exported = control.label_values("exported_namespace", "zeroflow_replicas").await?;
    assert_eq!(exported, BTreeSet::from([a.name.clone(), b.name.clone()]));
    let error = check_dashboard(control, &dashboard, pa, pb)
        .await
        .err()
        .context("the dashboard check passed without honorLabels")?;
    assert!(format!("{error:#}").contains("namespace variable offers"), "{error:#}");
    Ok(())
}

#[test]
fn substitution_fills_every_variable() -> anyhow::Result<()> {
    let expr = r#"sum(rate(x{namespace=~"$namespace",pipeline=~"$pipeline"}[$__rate_interval])) * $core_hour_price + increase(y[$__range]) + z[$__interval]"#;
    assert_eq!(
        substitute(expr, "(a|b)", ".*", "0.04")?,
        r#"sum(rate(x{namespace=~"(a|b)",pipeline=~".*"}[10m])) * 0.04 + increase(y[10m]) + z[10m]"#
    );
    assert!(substitute("x[$__unknown]", ".*", ".*", "1").is_err());
    Ok(())
}
