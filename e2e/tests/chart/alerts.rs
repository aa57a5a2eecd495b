//! The chart's PrometheusRule: its rendered `spec` is a Prometheus rules file, which must pass
//! `promtool check rules`, and every alert has a `promtool test rules` file,
//! `e2e/chart/rules/<Alert>.test.yaml`, with series that fire it and series that must not.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;
use zeroflow_e2e::chart::{self, Scratch, documents, find, run_in, template, testbed_tool};

fn promtool() -> anyhow::Result<PathBuf> {
    testbed_tool("PROMTOOL", "promtool", "PROMETHEUS_VERSION")
}

fn tests_dir() -> PathBuf {
    chart::root().join("e2e/chart/rules")
}

/// Renders the PrometheusRule of release `zeroflow` (ServiceMonitor on, so its job is
/// "zeroflow") with `args`; writes its `spec` to `dir/rules.yaml`; returns the spec.
async fn write_rules(dir: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = vec!["--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true"];
    all.extend_from_slice(args);
    let docs = documents(&template("zeroflow", &chart::chart(), "zeroflow-system", &all).await?)?;
    let spec = find(&docs, "PrometheusRule", "zeroflow")?["spec"].clone();
    std::fs::write(dir.join("rules.yaml"), serde_yaml::to_string(&spec)?)?;
    Ok(spec)
}

/// Every rule of the rendered groups.
fn rules(spec: &Value) -> Vec<&Value> {
    spec["groups"].as_array().into_iter().flatten().flat_map(|g| g["rules"].as_array().into_iter().flatten()).collect()
}

fn alert_names(spec: &Value) -> Vec<String> {
    rules(spec).iter().filter_map(|r| r["alert"].as_str().map(str::to_owned)).collect()
}

/// Runs `promtool test rules` with the test file of `alert`, next to the rules in `dir`.
async fn test_alert(dir: &Path, alert: &str) -> anyhow::Result<zeroflow_e2e::chart::Run> {
    let file = format!("{alert}.test.yaml");
    std::fs::copy(tests_dir().join(&file), dir.join(&file)).with_context(|| format!("no test file for {alert}"))?;
    run_in(Some(dir), &promtool()?, &["test", "rules", &file], &[]).await
}

#[tokio::test]
async fn alert_rules_pass_promtool_check_and_each_alert_its_unit_tests() -> anyhow::Result<()> {
    let scratch = Scratch::new("rules")?;
    let spec = write_rules(&scratch.0, &[]).await?;
    let out = run_in(Some(&scratch.0), &promtool()?, &["check", "rules", "rules.yaml"], &[]).await?;
    let text = out.success("promtool check rules")?;
    assert!(text.contains("SUCCESS: 7 rules found"), "{text}");

    let alerts = alert_names(&spec);
    assert_eq!(
        alerts,
        [
            "ZeroflowBacklogWithoutWorkers",
            "ZeroflowObjectsFailing",
            "ZeroflowOldestPendingObjectTooOld",
            "ZeroflowNoLeader",
            "ZeroflowGatewayRefusingEvents",
            "ZeroflowSlowColdStarts",
            "ZeroflowSourceDisconnected"
        ]
    );
    // One test file per alert, no stale ones, each with a firing and a not-firing case.
    let mut files: Vec<String> = std::fs::read_dir(tests_dir())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".test.yaml").map(str::to_owned))
        .collect();
    files.sort();
    let mut sorted = alerts.clone();
    sorted.sort();
    assert_eq!(files, sorted, "e2e/chart/rules/ has one <Alert>.test.yaml per alert");
    for alert in &alerts {
        let tests: Value =
            serde_yaml::from_str(&std::fs::read_to_string(tests_dir().join(format!("{alert}.test.yaml")))?)?;
        let cases: Vec<&Value> = tests["tests"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
            .collect();
        assert!(cases.iter().all(|c| c["alertname"] == alert.as_str()), "{alert}: cases of other alerts");
        let firing = |c: &&Value| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
        assert!(cases.iter().any(firing), "{alert}: no case where it fires");
        assert!(cases.iter().any(|c| !firing(c)), "{alert}: no case where it stays quiet");

        let run = test_alert(&scratch.0, alert).await?;
        let text = run.text();
        assert!(run.ok && text.contains("SUCCESS"), "promtool test rules {alert}:\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn alert_thresholds_labels_and_selector_come_from_values() -> anyhow::Result<()> {
    // The unit tests test the rendered rule: raise a threshold and the firing case fails.
    let scratch = Scratch::new("rules-values")?;
    write_rules(&scratch.0, &["--set", "prometheusRule.alerts.oldestPendingTooOld.threshold=100000"]).await?;
    let run = test_alert(&scratch.0, "ZeroflowOldestPendingObjectTooOld").await?;
    assert!(!run.ok, "the test passed against a rule that cannot fire:\n{}", run.text());

    let spec = write_rules(
        &scratch.0,
        &[
            "--set",
            "prometheusRule.alerts.noLeader.enabled=false",
            "--set",
            "prometheusRule.alerts.objectsFailing.window=1h",
            "--set",
            "prometheusRule.alerts.objectsFailing.for=10m",
            "--set",
            "prometheusRule.alerts.slowColdStarts.severity=critical",
            "--set",
            r#"prometheusRule.selector=namespace="ops"\,service="zf""#,
            "--set",
            "prometheusRule.alertLabels.team=platform",
            "--set",
            "prometheusRule.runbookBaseUrl=https://wiki.example.com/zeroflow",
        ],
    )
    .await?;
    assert!(!alert_names(&spec).contains(&"ZeroflowNoLeader".to_owned()), "disabled alert rendered");
    let rule = |name: &str| rules(&spec).into_iter().find(|r| r["alert"] == name).cloned().context(name.to_owned());
    let failing = rule("ZeroflowObjectsFailing")?;
    let expr = failing["expr"].as_str().context("expr")?;
    assert!(expr.contains(r#"{namespace="ops",service="zf",outcome="failed"}[1h]"#), "{expr}");
    assert_eq!(failing["for"], "10m");
    assert_eq!(failing["labels"]["team"], "platform");
    assert_eq!(failing["annotations"]["runbook_url"], "https://wiki.example.com/zeroflow#zeroflowobjectsfailing");
    assert_eq!(rule("ZeroflowSlowColdStarts")?["labels"]["severity"], "critical");
    let out = run_in(Some(&scratch.0), &promtool()?, &["check", "rules", "rules.yaml"], &[]).await?;
    out.success("promtool check rules with non-default values")?;

    // With the PodMonitor, the default selector is its job, "<namespace>/<name>".
    let spec = {
        let docs = documents(
            &template(
                "zeroflow",
                &chart::chart(),
                "zeroflow-system",
                &["--set", "prometheusRule.enabled=true", "--set", "podMonitor.enabled=true"],
            )
            .await?,
        )?;
        find(&docs, "PrometheusRule", "zeroflow")?["spec"].clone()
    };
    let expr = rules(&spec)[0]["expr"].as_str().context("expr")?.to_owned();
    assert!(expr.contains(r#"zeroflow_backlog_pending{job="zeroflow-system/zeroflow"}"#), "{expr}");
    Ok(())
}
