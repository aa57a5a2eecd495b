//! Helpers for the Helm chart tests (`tests/chart/`, `tests/dashboard.rs`): the testbed's
//! helm, kubectl, promtool and prometheus, renders parsed into objects, and test copies of the
//! chart whose CRD is renamed into a per-test API group.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize as _;
use serde_json::Value;
use tokio::process::Command;

/// The repository's root directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `charts/zeroflow`.
pub fn chart() -> PathBuf {
    root().join("charts/zeroflow")
}

/// The Kubernetes version renders are made for (`--kube-version`): the testbed's.
pub fn kube_version() -> String {
    std::env::var("ZF_KUBE_VERSION").unwrap_or_else(|_| "1.34.4".to_owned())
}

/// What a finished command printed, and whether it exited 0.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout then stderr, without helm's warning about the chart's symlinked CRD (helm warns on
    /// every command that loads a chart with a symlink; the link is intended, see the README).
    pub fn text(&self) -> String {
        let all = format!("{}{}", self.stdout, self.stderr);
        all.lines().filter(|l| !l.contains("found symbolic link in path")).collect::<Vec<_>>().join("\n")
    }

    /// Fails with everything printed unless the command succeeded.
    pub fn success(self, what: &str) -> anyhow::Result<String> {
        if !self.ok {
            bail!("{what} failed:\n{}", self.text());
        }
        Ok(self.stdout)
    }

    /// Fails unless the command failed; returns what it printed.
    pub fn failure(self, what: &str) -> anyhow::Result<String> {
        if self.ok {
            bail!("{what} succeeded, but should have failed:\n{}", self.text());
        }
        Ok(self.text())
    }
}

/// Runs `program` with `args` (in `dir` when given) and waits for it.
pub async fn run_in(dir: Option<&Path>, program: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Run> {
    let mut command = Command::new(program);
    command.args(args).envs(env.iter().copied()).kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let out = command.output().await.with_context(|| format!("running {}", program.display()))?;
    Ok(Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A tool of the testbed named by an environment variable of `e2e/testbed env`.
pub fn tool_from_env(var: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).with_context(|| format!("{var} is not set: eval \"$(e2e/testbed env)\""))
}

/// What the testbed builds into `$ZF_CACHE/bin/<tool>-<version>/`, the version from
/// `e2e/testbed.d/versions.sh`; fails when it is not there.
pub fn testbed_dir(tool: &str, version_var: &str) -> anyhow::Result<PathBuf> {
    let versions = std::fs::read_to_string(root().join("e2e/testbed.d/versions.sh"))?;
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{version_var}=")))
        .with_context(|| format!("no {version_var} in versions.sh"))?;
    let cache = std::env::var_os("ZF_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/zeroflow-testbed")))
        .context("neither ZF_CACHE nor HOME is set")?;
    let dir = cache.join(format!("bin/{tool}-{version}"));
    let build = tool.replace('-', "_");
    anyhow::ensure!(dir.join(".built").exists(), "{} is missing: run `e2e/testbed build {build}`", dir.display());
    Ok(dir)
}

/// A tool the testbed builds (promtool, prometheus): `$VAR` when set, else the build's path.
pub fn testbed_tool(var: &str, tool: &str, version_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    Ok(testbed_dir(tool, version_var)?.join(tool))
}

pub async fn helm_run(args: &[&str]) -> anyhow::Result<Run> {
    run_in(None, &tool_from_env("HELM")?, args, &[]).await
}

/// Runs helm; fails with its output unless it succeeds.
pub async fn helm(args: &[&str]) -> anyhow::Result<String> {
    helm_run(args).await?.success(&format!("helm {}", args.join(" ")))
}

pub async fn kubectl_run(args: &[&str]) -> anyhow::Result<Run> {
    run_in(None, &tool_from_env("KUBECTL")?, args, &[]).await
}

/// `helm template RELEASE CHART -n NAMESPACE --kube-version <testbed's> ARGS...`.
pub async fn template(release: &str, chart: &Path, namespace: &str, args: &[&str]) -> anyhow::Result<String> {
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let kube_version = kube_version();
    let mut all = vec!["template", release, chart, "-n", namespace, "--kube-version", &kube_version];
    all.extend_from_slice(args);
    helm(&all).await
}

/// The objects of a multi-document YAML stream, empty documents left out.
pub fn documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).context("parsing rendered YAML")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The documents of a rendered YAML stream as helm wrote them, each with its parsed object
/// (empty documents left out). Writing the text back keeps what a YAML 1.2 parser would read
/// differently from Kubernetes' YAML 1.1 (`defaultMode: 0440` is octal to Kubernetes).
pub fn raw_documents(yaml: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in yaml.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let parsed = documents(&current)?;
            if let Some(value) = parsed.into_iter().next() {
                docs.push((std::mem::take(&mut current), value));
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    Ok(docs)
}

/// The object of `kind` named `name` among `docs`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} in {:?}", kinds(docs)))
}

/// `Kind/name` of every object, to show in failures.
pub fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| format!("{}/{}", d["kind"].as_str().unwrap_or("?"), d["metadata"]["name"].as_str().unwrap_or("?")))
        .collect()
}

/// Copies a directory tree, following symlinks (as `cp -rL`: the chart's CRD is a symlink).
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if std::fs::metadata(entry.path())?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The chart's CRD file renamed into API `group` (short names and categories dropped, so that
/// `kubectl get dp` of other tests stays unambiguous); with `printer_column`, an extra
/// `InFlight` column, as a new CRD version of the product would add.
pub fn rename_crd(text: &str, group: &str, printer_column: bool) -> anyhow::Result<String> {
    let replaced = [
        ("name: datapipelines.zeroflow.dev", format!("name: datapipelines.{group}")),
        ("  group: zeroflow.dev\n", format!("  group: {group}\n")),
        ("    categories:\n    - zeroflow\n", String::new()),
        ("    shortNames:\n    - dp\n", String::new()),
    ]
    .into_iter()
    .try_fold(text.to_owned(), |text, (from, to)| {
        anyhow::ensure!(text.contains(from), "the CRD has no {from:?}");
        Ok(text.replacen(from, &to, 1))
    })?;
    if !printer_column {
        return Ok(replaced);
    }
    let columns = "  - additionalPrinterColumns:\n";
    anyhow::ensure!(replaced.contains(columns), "the CRD has no printer columns");
    Ok(replaced.replacen(
        columns,
        "  - additionalPrinterColumns:\n    - jsonPath: .status.inFlight\n      name: InFlight\n      type: integer\n",
        1,
    ))
}

/// A copy of the chart under `dir` whose CRD is in API `group` (see [`rename_crd`]); returns
/// the copy's chart directory.
pub fn test_chart(dir: &Path, group: &str, printer_column: bool) -> anyhow::Result<PathBuf> {
    let copy = dir.join("zeroflow");
    if copy.exists() {
        std::fs::remove_dir_all(&copy)?;
    }
    copy_tree(&chart(), &copy)?;
    let crd = copy.join("files/datapipelines.zeroflow.dev.yaml");
    let text = std::fs::read_to_string(&crd)?;
    std::fs::write(&crd, rename_crd(&text, group, printer_column)?)?;
    Ok(copy)
}

/// A scratch directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("zf-{tag}-{}-{}", std::process::id(), crate::free_port()?));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_the_crd_changes_name_group_and_drops_short_names() -> anyhow::Result<()> {
        let crd = "metadata:\n  name: datapipelines.zeroflow.dev\nspec:\n  group: zeroflow.dev\n  names:\n    categories:\n    - zeroflow\n    shortNames:\n    - dp\n  versions:\n  - additionalPrinterColumns:\n    - name: Ready\n";
        let renamed = rename_crd(crd, "t1.example.dev", true)?;
        assert!(renamed.contains("name: datapipelines.t1.example.dev"), "{renamed}");
        assert!(renamed.contains("  group: t1.example.dev\n"), "{renamed}");
        assert!(!renamed.contains("shortNames") && !renamed.contains("categories"), "{renamed}");
        assert!(renamed.contains("name: InFlight"), "{renamed}");
        assert!(rename_crd("kind: Other\n", "g", false).is_err());
        Ok(())
    }

    #[test]
    fn raw_documents_keep_the_text() -> anyhow::Result<()> {
        let docs = raw_documents("---\n# Source: a\nkind: A\nmode: 0440\n---\n---\nkind: B\n")?;
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, "# Source: a\nkind: A\nmode: 0440\n");
        assert_eq!(docs[1].1["kind"], "B");
        Ok(())
    }

    #[test]
    fn documents_skip_empty_ones() -> anyhow::Result<()> {
        let docs =
            documents("---\n# only a comment\n---\nkind: A\nmetadata: {name: a}\n---\nkind: B\nmetadata: {name: b}\n")?;
        assert_eq!(kinds(&docs), ["A/a", "B/b"]);
        assert!(find(&docs, "B", "b").is_ok() && find(&docs, "B", "a").is_err());
        Ok(())
    }
}
