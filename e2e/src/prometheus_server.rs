//! A real Prometheus server on loopback for tests, built by the testbed
//! (`e2e/testbed build prometheus`): the test writes its scrape configuration, then evaluates
//! PromQL through the HTTP API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::{eventually, free_port, http_get};

/// One sample of an instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A Prometheus process; killed (and its data removed) when dropped.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus with `config` (prometheus.yml as YAML text) on a free loopback port,
    /// storing its data in a temporary directory, and waits until it is ready.
    pub async fn start(config: &str) -> anyhow::Result<Self> {
        let binary = crate::chart::testbed_tool("PROMETHEUS", "prometheus", "PROMETHEUS_VERSION")?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("zf-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting prometheus")?;
        let this = Self { child, port, dir };
        let ready = eventually("prometheus ready", Duration::from_secs(60), || async {
            Ok(http_get(this.port, "/-/ready").await.ok().is_some_and(|(status, _)| status == 200).then_some(()))
        })
        .await;
        if let Err(e) = ready {
            bail!("{e:#}\nprometheus log:\n{}", this.log());
        }
        Ok(this)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GETs an API path and returns its `data`, failing on an error status.
    async fn api(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let (status, body) = http_get(self.port, path_and_query).await?;
        let response: Value = serde_json::from_str(&body).with_context(|| format!("{status}: {body}"))?;
        if status != 200 || response["status"] != "success" {
            bail!("{path_and_query}: {status} {body}");
        }
        Ok(response["data"].clone())
    }

    /// Evaluates `promql` now: the samples of the instant vector (a scalar is one sample
    /// without labels).
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Sample>> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql))).await?;
        let parse = |value: &Value| -> anyhow::Result<f64> {
            let text = value[1].as_str().context("sample value")?;
            // Prometheus writes NaN and infinities as these strings.
            Ok(match text {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other.parse()?,
            })
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .context("result")?
                .iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .context("metric")?
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    Ok(Sample { labels, value: parse(&s["value"])? })
                })
                .collect(),
            Some("scalar") => Ok(vec![Sample { labels: BTreeMap::new(), value: parse(&data["result"])? }]),
            other => bail!("{promql}: unexpected result type {other:?}"),
        }
    }

    /// The values of `label` on the series matching `selector` (Grafana's `label_values`).
    pub async fn label_values(&self, label: &str, selector: &str) -> anyhow::Result<BTreeSet<String>> {
        let data = self.api(&format!("/api/v1/label/{label}/values?match[]={}", encode(selector))).await?;
        Ok(data.as_array().context("values")?.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter (everything but RFC 3986's unreserved characters).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_characters_only() {
        assert_eq!(encode(r#"sum(x{a=~"b|c"}) / 2"#), "sum%28x%7Ba%3D~%22b%7Cc%22%7D%29%20%2F%202");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
