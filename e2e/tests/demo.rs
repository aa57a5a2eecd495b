//! `e2e/demo --once`, the README's main command in the run that ends by itself, with the
//! example's transform broken on purpose: it must exit non-zero and name the step that failed
//! and why. (`.ci/run` runs the unbroken demo.) The two runs share the demo's namespace and Helm
//! release, so they run one after the other in one test.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context as _, ensure};
use zeroflow_e2e::node::repo_root;

/// Runs `e2e/demo --once` on a copy of examples/csv-to-jsonl whose transform.py is
/// `transform`; returns whether it succeeded and its output.
async fn demo_with(transform: &str) -> anyhow::Result<(bool, String)> {
    let example = repo_root().join("examples/csv-to-jsonl");
    let copy = std::env::temp_dir().join(format!("zf-demo-test-{}/csv-to-jsonl", std::process::id()));
    copy_dir(&example, &copy)?;
    std::fs::write(copy.join("transform.py"), transform)?;
    let node_before = testbed_env().await?.contains("ZF_NODE_NAME");
    let out = tokio::process::Command::new(repo_root().join("e2e/demo"))
        .args(["--once", "--example"])
        .arg(&copy)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running e2e/demo")?;
    let _ = std::fs::remove_dir_all(copy.parent().context("no parent")?);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Whatever the transform did, `--once` must leave no node behind for the tests after it.
    ensure!(!text.contains("e2e/demo: stopping the node failed"), "e2e/demo could not stop the node:\n{}", tail(&text));
    let env = testbed_env().await?;
    ensure!(
        node_before || !env.contains("ZF_NODE_NAME"),
        "after e2e/demo --once, `e2e/testbed env` still names the node it started:\n{env}"
    );
    Ok((out.status.success(), text))
}

/// What `e2e/testbed env` prints (empty when the testbed is not up).
async fn testbed_env() -> anyhow::Result<String> {
    let out = tokio::process::Command::new(repo_root().join("e2e/testbed")).arg("env").output().await?;
    Ok(String::from_utf8(out.stdout)?)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[tokio::test]
async fn the_demo_fails_and_names_the_step_when_the_transform_is_broken() -> anyhow::Result<()> {
    let original = std::fs::read_to_string(repo_root().join("examples/csv-to-jsonl/transform.py"))?;

    // 1. Every object fails: the transform exits non-zero with a message on stderr.
    let failing = original.replace(
        "def main() -> int:\n",
        "def main() -> int:\n    print(\"broken on purpose\", file=sys.stderr)\n    return 3\n",
    );
    ensure!(failing != original, "the example's transform.py changed shape: update this test");
    let (ok, out) = demo_with(&failing).await?;
    ensure!(!ok, "e2e/demo exited 0 with a transform that fails every object:\n{}", tail(&out));
    for needle in [
        "FAILED: step \"watch: scale from zero, convert, outputs in the sink\"",
        "object(s) failed",
        "broken on purpose",
        "e2e/demo FAILED at step",
    ] {
        ensure!(out.contains(needle), "no '{needle}' in the output of e2e/demo:\n{}", tail(&out));
    }

    // 2. Every object "succeeds" with a wrong output: the last row of each file is dropped.
    let lossy = original.replace("for row in reader:", "for row in list(reader)[:-1]:");
    ensure!(lossy != original, "the example's transform.py changed shape: update this test");
    let (ok, out) = demo_with(&lossy).await?;
    ensure!(!ok, "e2e/demo exited 0 with a transform that writes wrong outputs:\n{}", tail(&out));
    for needle in ["FAILED: step \"check every output\"", "is not what transform.py writes for its input"] {
        ensure!(out.contains(needle), "no '{needle}' in the output of e2e/demo:\n{}", tail(&out));
    }
    Ok(())
}
