//! The testbed's real node (kubelet, containerd and runc in a network namespace the harness
//! creates; see `e2e/node/README.md`) for Rust tests. Its lifecycle stays in shell —
//! `e2e/testbed node check|up|down` and `e2e/node/operator install` — and this module runs those
//! commands, reads their settings, and checks what `node down` must leave behind: nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tokio::process::Command;

/// The checkout (the e2e crate's parent directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Runs one of the checkout's lifecycle scripts; returns its stdout. Its stderr (progress)
/// goes to the test's output; a failure names the command and its exit status.
pub async fn lifecycle(script: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(repo_root().join(script))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script} {} failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The `export NAME='value'` lines the lifecycle scripts print, as a map.
pub fn parse_exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

/// Whether this machine can run a node: `Ok(Err(why))` when it cannot (`node check` exits 3),
/// an error when the check itself failed (e.g. the packages could not be installed).
pub async fn can_run_a_node() -> anyhow::Result<Result<(), String>> {
    let out = Command::new(repo_root().join("e2e/testbed")).args(["node", "check"]).output().await?;
    match out.status.code() {
        Some(0) => Ok(Ok(())),
        Some(3) => Ok(Err(String::from_utf8_lossy(&out.stdout).trim().to_owned())),
        _ => bail!("e2e/testbed node check failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)),
    }
}

/// A running real node and its settings (`ZF_NODE_*` from `e2e/testbed env`).
pub struct RealNode {
    pub env: BTreeMap<String, String>,
    /// Whether [`RealNode::start`] started it (and so may stop it).
    pub started: bool,
}

impl RealNode {
    /// The testbed's node, started unless one runs.
    pub async fn start() -> anyhow::Result<Self> {
        let mut env = parse_exports(&lifecycle("e2e/testbed", &["env"]).await?);
        let started = !env.contains_key("ZF_NODE_NAME");
        if started {
            lifecycle("e2e/testbed", &["node", "up"]).await?;
            env = parse_exports(&lifecycle("e2e/testbed", &["env"]).await?);
        }
        Ok(Self { env, started })
    }

    /// A setting of the node or the testbed.
    pub fn var(&self, name: &str) -> anyhow::Result<&str> {
        self.env.get(name).map(String::as_str).with_context(|| format!("{name} missing from e2e/testbed env"))
    }

    /// Stops the node (`e2e/testbed node down`) and fails, listing them, if any process of the
    /// node is left: one whose command line names the node's directory, one in the node's
    /// cgroups, one still in its network namespace; or if the netns or a cgroup remains, or
    /// `e2e/testbed env` still names the node.
    pub async fn down_leaves_nothing(self) -> anyhow::Result<()> {
        let netns = self.var("ZF_NODE_NETNS")?.to_owned();
        let id = netns.strip_prefix("zfn-").context("unexpected netns name")?.to_owned();
        let cgroup = format!("zeroflow-node-{id}");
        let node_dir = format!("{}/node/", self.var("ZF_TESTBED_STATE")?);
        let netns_inode = std::fs::metadata(format!("/run/netns/{netns}")).map(|m| inode(&m)).ok();
        lifecycle("e2e/testbed", &["node", "down"]).await?;

        let mut left = Vec::new();
        for (pid, cmdline) in processes() {
            let proc = format!("/proc/{pid}");
            let in_cgroup = std::fs::read_to_string(format!("{proc}/cgroup")).is_ok_and(|c| c.contains(&cgroup));
            let in_netns = netns_inode.is_some()
                && std::fs::metadata(format!("{proc}/ns/net")).is_ok_and(|m| Some(inode(&m)) == netns_inode);
            if cmdline.contains(&node_dir) || in_cgroup || in_netns {
                left.push(format!("pid {pid}: {cmdline} (cgroup {in_cgroup}, netns {in_netns})"));
            }
        }
        if Path::new(&format!("/run/netns/{netns}")).exists() {
            left.push(format!("network namespace {netns}"));
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
            let dir = hierarchy.path().join(&cgroup);
            if dir.exists() {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
        let env = parse_exports(&lifecycle("e2e/testbed", &["env"]).await?);
        if let Some(name) = env.get("ZF_NODE_NAME") {
            left.push(format!("`e2e/testbed env` still names node {name}"));
        }
        if !left.is_empty() {
            bail!("e2e/testbed node down left behind:\n{}", left.join("\n"));
        }
        Ok(())
    }
}

fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

/// Live (not zombie) processes with their command lines.
fn processes() -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
        })
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            (pid, String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_owned())
        })
        .collect()
}

/// The chart's operator installed as a pod on the node (`e2e/node/operator install`).
pub struct NodeOperator {
    pub release: String,
    pub namespace: String,
    /// `ZF_OPERATOR_POD`, `ZF_OPERATOR_IP` and the `ZF_NODE_*_IMAGE` names.
    pub env: BTreeMap<String, String>,
}

impl NodeOperator {
    /// Builds and imports the images, applies the CRD, `helm install`s `release` into
    /// `namespace` watching `watch`, and starts the forwarders to the operator pod.
    pub async fn install(release: &str, namespace: &str, watch: &str) -> anyhow::Result<Self> {
        let env = parse_exports(&lifecycle("e2e/node/operator", &["install", release, namespace, watch]).await?);
        Ok(Self { release: release.to_owned(), namespace: namespace.to_owned(), env })
    }

    /// `helm upgrade --reuse-values --set KEY=VALUE...` (`set`), which rolls the operator pod
    /// when a value reaches its template; returns once the new pod is the Ready leader and the
    /// forwarders point at it. `ZF_OPERATOR_POD` and `ZF_OPERATOR_IP` then name the new pod.
    pub async fn upgrade(&mut self, set: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["upgrade", self.release.as_str(), self.namespace.as_str()];
        args.extend_from_slice(set);
        let env = parse_exports(&lifecycle("e2e/node/operator", &args).await?);
        self.env.extend(env);
        Ok(())
    }

    pub fn var(&self, name: &str) -> anyhow::Result<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("{name} missing from e2e/node/operator's output"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_read_as_the_shell_writes_them() {
        let env =
            parse_exports("export ZF_NODE_NAME='172.30.9.2'\nnoise\nexport ZF_NODE_TAINT='zeroflow.dev/real-node'\n");
        assert_eq!(env.get("ZF_NODE_NAME").map(String::as_str), Some("172.30.9.2"));
        assert_eq!(env.get("ZF_NODE_TAINT").map(String::as_str), Some("zeroflow.dev/real-node"));
        assert_eq!(env.len(), 2);
    }
}
