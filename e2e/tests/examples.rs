//! The example pipelines in examples/, without running them on the cluster: each transform runs
//! through `zeroflow-runner try` (so exactly as a worker runs it) with the contract, command,
//! timeout, environment and sink prefix of its pipeline.yaml, on every file in its sample/, and
//! must give exactly sample/expected/<file>/; broken inputs must fail the way the README says.
//! Each pipeline.yaml must pass `kubectl apply --dry-run=server --validate=strict` against the
//! real CRD (the testbed's, installed by e2e/test-all).
//!
//! The transform tests need `python3` and `gzip` on PATH, the dry runs the testbed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use zeroflow_e2e::{TestNamespace, client, kubectl, workspace_binary};

/// The examples' directory.
fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// One example: its directory and the DataPipeline of its pipeline.yaml.
struct Example {
    name: String,
    dir: PathBuf,
    pipeline: Value,
}

impl Example {
    fn load(name: &str) -> anyhow::Result<Example> {
        let dir = examples_dir().join(name);
        let yaml = std::fs::read_to_string(dir.join("pipeline.yaml")).context("reading pipeline.yaml")?;
        let mut pipelines = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&yaml) {
            let value: Value = serde::Deserialize::deserialize(document).context("parsing pipeline.yaml")?;
            if value["kind"] == "DataPipeline" {
                pipelines.push(value);
            }
        }
        ensure!(pipelines.len() == 1, "{name}: {} DataPipelines in pipeline.yaml, want 1", pipelines.len());
        Ok(Example { name: name.to_owned(), dir, pipeline: pipelines.remove(0) })
    }

    /// Every example with a pipeline.yaml.
    fn all() -> anyhow::Result<Vec<Example>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(examples_dir())? {
            let entry = entry?;
            if entry.path().join("pipeline.yaml").is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        names.iter().map(|name| Example::load(name)).collect()
    }

    fn transform(&self, field: &str) -> &Value {
        &self.pipeline["spec"]["transform"][field]
    }

    /// The pipeline's command with the script path inside the image replaced by the script in
    /// the example's directory: the Dockerfile must `COPY <script> <path>` for the path the
    /// command names, so the command the worker runs is the one tested here.
    fn local_command(&self) -> anyhow::Result<Vec<String>> {
        let command: Vec<String> = serde_json::from_value(self.transform("command").clone())
            .with_context(|| format!("{}: transform.command is not a list of strings", self.name))?;
        let dockerfile = std::fs::read_to_string(self.dir.join("Dockerfile"))
            .with_context(|| format!("{}: no Dockerfile", self.name))?;
        let copies: BTreeMap<&str, &str> = dockerfile
            .lines()
            .filter_map(|line| line.strip_prefix("COPY "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(from, to)| (to.trim(), from.trim()))
            .collect();
        let mut local = Vec::new();
        let mut mapped = 0;
        for arg in command {
            match copies.get(arg.as_str()) {
                Some(from) => {
                    let path = self.dir.join(from);
                    ensure!(path.is_file(), "{}: the Dockerfile copies {from}, which is not there", self.name);
                    local.push(path.display().to_string());
                    mapped += 1;
                }
                None => local.push(arg),
            }
        }
        ensure!(mapped == 1, "{}: the Dockerfile copies {mapped} files the command names, want 1", self.name);
        Ok(local)
    }

    /// `transform.env` (plain values only) as NAME=VALUE pairs.
    fn env(&self) -> anyhow::Result<Vec<(String, String)>> {
        let Some(list) = self.transform("env").as_array() else { return Ok(Vec::new()) };
        list.iter()
            .map(|var| match (var["name"].as_str(), var["value"].as_str()) {
                (Some(name), Some(value)) => Ok((name.to_owned(), value.to_owned())),
                _ => bail!("{}: transform.env entry without a plain value: {var}", self.name),
            })
            .collect()
    }

    /// The sample inputs, sorted by name.
    fn samples(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("sample"))? {
            let path = entry?.path();
            if path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }
}

/// What `zeroflow-runner try` did with one input.
#[derive(Debug)]
struct Tried {
    /// try's exit code (0 completed, 3 failed, ...; see `zeroflow-runner try --help`).
    code: Option<i32>,
    /// try's --report.
    report: Value,
    /// try's stderr: the runner's log and all of the command's stderr.
    stderr: String,
    /// try's --out.
    out: PathBuf,
    /// The object's directory (--keep).
    kept: PathBuf,
}

/// A scratch directory per test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("zf-examples-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Runs `example`'s transform on `input` through `zeroflow-runner try`, with a clean
    /// environment plus the pipeline's transform.env and `env`, outputs in `<scratch>/<run>/out`.
    fn try_example(
        &self,
        example: &Example,
        input: &Path,
        run: &str,
        key: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Tried> {
        let dir = self.path(run);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work"))?;
        let mut command = Command::new(workspace_binary("zeroflow-runner")?);
        command.arg("try");
        if let Some(contract) = example.transform("contract").as_str() {
            command.args(["--contract", contract]);
        }
        if let Some(timeout) = example.transform("timeout").as_str() {
            command.args(["--timeout", timeout]);
        }
        if let Some(prefix) = example.pipeline["spec"]["sink"]["prefix"].as_str() {
            command.args(["--sink-prefix", prefix]);
        }
        if let Some(key) = key {
            command.args(["--key", key]);
        }
        command
            .arg("--keep")
            .arg("--work-dir")
            .arg(dir.join("work"))
            .arg("--out")
            .arg(dir.join("out"))
            .arg("--report")
            .arg(dir.join("report.json"))
            .arg(input)
            .arg("--")
            .args(example.local_command()?);
        command.env_clear();
        for name in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.env("LANG", "C.UTF-8");
        command.envs(example.env()?);
        command.envs(env.iter().copied());
        let output = command.output().context("running zeroflow-runner try")?;
        let report = std::fs::read(dir.join("report.json")).context("try wrote no report")?;
        let report: Value = serde_json::from_slice(&report)?;
        let kept = PathBuf::from(report["kept_dir"].as_str().context("no kept_dir in the report")?);
        Ok(Tried {
            code: output.status.code(),
            report,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            out: dir.join("out"),
            kept,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files in `dir` by name, each `NAME.gz` (which must be valid gzip) decompressed to `NAME`.
fn normalized(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().context("a file name")?.to_string_lossy().into_owned();
        match name.strip_suffix(".gz") {
            Some(plain) => files.insert(plain.to_owned(), gunzip(&path)?),
            None => files.insert(name, std::fs::read(&path)?),
        };
    }
    Ok(files)
}

/// `gzip -dc`, failing unless `gzip -t` finds the file valid.
fn gunzip(path: &Path) -> anyhow::Result<Vec<u8>> {
    let test = Command::new("gzip").arg("-t").arg(path).output().context("running gzip")?;
    ensure!(test.status.success(), "{} is not valid gzip: {}", path.display(), String::from_utf8_lossy(&test.stderr));
    let out = Command::new("gzip").arg("-dc").arg(path).output()?;
    ensure!(out.status.success(), "gzip -dc {}", path.display());
    Ok(out.stdout)
}

/// `gzip -cn` of `data`: a member without name or time.
fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .arg("-cn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    child.stdin.take().context("gzip's stdin")?.write_all(data)?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "gzip failed");
    Ok(out.stdout)
}

fn summary(tried: &Tried) -> anyhow::Result<Value> {
    let bytes = std::fs::read(tried.out.join("summary.json")).context("no summary.json")?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Every file in sample/ gives exactly sample/expected/<file>/ through `try`, the outputs under
/// the names the pipeline's sink would give them; every expected directory has its input.
fn check_samples(name: &str) -> anyhow::Result<()> {
    let example = Example::load(name)?;
    let scratch = Scratch::new(name)?;
    let samples = example.samples()?;
    ensure!(samples.len() >= 2, "{name}: only {} sample inputs", samples.len());
    let prefix = example.pipeline["spec"]["sink"]["prefix"].as_str().unwrap_or_default();
    for (i, input) in samples.iter().enumerate() {
        let file = input.file_name().context("a file name")?.to_string_lossy().into_owned();
        // The key is the file's name (try's default), which the expected summaries name.
        let tried = scratch.try_example(&example, input, &format!("run-{i}"), None, &[])?;
        ensure!(tried.code == Some(0), "{name}: try on sample/{file}: {tried:#?}");
        let got = normalized(&tried.out)?;
        let expected = normalized(&example.dir.join("sample/expected").join(&file))
            .with_context(|| format!("{name}: no expected outputs for sample/{file}"))?;
        for (output, bytes) in &expected {
            let got = got.get(output).with_context(|| format!("{name}: sample/{file} gave no {output}"))?;
            assert_eq!(
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(bytes),
                "{name}: {output} for sample/{file} (left: got, right: expected)"
            );
        }
        assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{name}: outputs of {file}");
        for output in tried.report["outputs"].as_array().context("outputs")? {
            let output_name = output["name"].as_str().context("name")?;
            assert_eq!(output["key"], format!("{prefix}{file}/{output_name}"), "{name}: the sink key of {output}");
        }
        eprintln!("{name}: sample/{file}: outputs as expected");
    }
    for entry in std::fs::read_dir(example.dir.join("sample/expected"))? {
        let expected = entry?.file_name();
        ensure!(
            example.dir.join("sample").join(&expected).is_file(),
            "{name}: sample/expected/{} has no input",
            expected.to_string_lossy()
        );
    }
    Ok(())
}

/// The transform failed as a worker would record it: a non-zero exit code, `needle` in the
/// stderr tail, no traceback; returns the exit code.
fn expect_failure(tried: &Tried, needle: &str) -> anyhow::Result<i64> {
    ensure!(tried.code == Some(3), "try should report a failed command (exit 3): {tried:#?}");
    let code = tried.report["exit_code"].as_i64().context("an exit code")?;
    ensure!(code != 0);
    let tail = tried.report["stderr_tail"].as_str().context("a stderr tail")?;
    ensure!(tail.contains(needle), "{needle:?} not in the stderr tail {tail:?}");
    ensure!(!tail.contains("Traceback"), "a traceback instead of a message: {tail}");
    ensure!(std::fs::read_dir(&tried.out)?.next().is_none(), "outputs copied after a failure");
    Ok(code)
}

#[test]
fn csv_to_jsonl_samples_give_the_expected_outputs() -> anyhow::Result<()> {
    check_samples("csv-to-jsonl")
}

#[test]
fn csv_to_jsonl_fails_an_empty_file_with_a_message() -> anyhow::Result<()> {
    let example = Example::load("csv-to-jsonl")?;
    let scratch = Scratch::new("csv-empty")?;
    let input = scratch.path("empty.csv");
    std::fs::write(&input, b"")?;
    let tried = scratch.try_example(&example, &input, "run", Some("incoming/empty.csv"), &[])?;
    expect_failure(&tried, "incoming/empty.csv: no CSV header")?;
    assert_eq!(tried.report["retryable"], true, "{tried:#?}");
    Ok(())
}

#[test]
fn log_filter_samples_give_the_expected_outputs() -> anyhow::Result<()> {
    check_samples("log-filter")?;
    // The samples cover both kinds of input.
    let mut kinds = (0, 0);
    for sample in Example::load("log-filter")?.samples()? {
        if std::fs::read(&sample)?.starts_with(&[0x1f, 0x8b]) {
            kinds.0 += 1;
        } else {
            kinds.1 += 1;
        }
    }
    assert!(
        kinds.0 >= 1 && kinds.1 >= 1,
        "samples: {} gzip'd and {} plain, want one of each at least",
        kinds.0,
        kinds.1
    );
    Ok(())
}

/// A retry overwrites the outputs of an earlier attempt: they must be the same bytes, which
/// needs a gzip header without file name and time.
#[test]
fn log_filter_gives_the_same_bytes_on_a_retry() -> anyhow::Result<()> {
    let example = Example::load("log-filter")?;
    let scratch = Scratch::new("log-retry")?;
    let input = example.dir.join("sample/app-2026-11-27T10.log.gz");
    let first = scratch.try_example(&example, &input, "a", None, &[])?;
    ensure!(first.code == Some(0), "{first:#?}");
    // The gzip header's time has a resolution of one second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = scratch.try_example(&example, &input, "b", None, &[])?;
    ensure!(second.code == Some(0), "{second:#?}");
    for output in ["filtered.jsonl.gz", "summary.json"] {
        let (a, b) = (std::fs::read(first.out.join(output))?, std::fs::read(second.out.join(output))?);
        assert!(a == b, "two runs gave different {output}");
    }
    let gz = std::fs::read(first.out.join("filtered.jsonl.gz"))?;
    assert_eq!(gz[..3], [0x1f, 0x8b, 0x08], "gzip magic and deflate");
    assert_eq!(gz[3], 0, "gzip flags: no FNAME");
    assert_eq!(gz[4..8], [0, 0, 0, 0], "gzip mtime");
    Ok(())
}

#[test]
fn log_filter_counts_and_skips_malformed_lines() -> anyhow::Result<()> {
    let example = Example::load("log-filter")?;
    let scratch = Scratch::new("log-malformed")?;
    // Every kind of bad line in one plain file, between good ones.
    let mut lines: Vec<Vec<u8>> = vec![
        b"{\"level\":\"error\",\"service\":\"api\",\"msg\":\"crlf line\"}\r\n".to_vec(),
        b"{\"level\":\"warn\",\"service\":\"api\",\"msg\":\"\xff\xfe not utf-8\"}\n".to_vec(),
        b"{\"level\":\"error\",\"service\":\"api\",\"latency\":NaN}\n".to_vec(),
        b"[\"an\", \"array\"]\n".to_vec(),
    ];
    let mut long = b"{\"level\":\"error\",\"service\":\"api\",\"pad\":\"".to_vec();
    long.extend(std::iter::repeat_n(b'x', 2 << 20));
    long.extend(b"\"}\n");
    lines.push(long);
    lines.extend([
        b"not json at all\n".to_vec(),
        b"\n".to_vec(),
        b"{\"level\":60,\"service\":{\"name\":\"billing\"},\"msg\":\"pino fatal\"}\n".to_vec(),
        b"{\"level\":\"info\",\"service\":\"api\"}\n".to_vec(),
        b"{\"msg\":\"no level\"}\n".to_vec(),
        b"{\"log\":{\"level\":\"warn\"},\"service\":{\"name\":\"billing\"},\"msg\":\"no newline at the end\"}".to_vec(),
    ]);
    let input = scratch.path("edge.log");
    std::fs::write(&input, lines.concat())?;
    let tried = scratch.try_example(&example, &input, "run", Some("services/api/edge.log"), &[])?;
    ensure!(tried.code == Some(0), "malformed lines failed the file: {tried:#?}");
    let summary = summary(&tried)?;
    assert_eq!(summary["input"], "services/api/edge.log");
    let counts = ["lines", "blank", "records", "kept", "malformed"].map(|k| summary[k].clone());
    assert_eq!(counts, [11, 1, 5, 3, 5].map(|n| json!(n)), "{summary}");
    assert_eq!(summary["malformed_lines"], json!([2, 3, 4, 5, 6]));
    assert_eq!(summary["by_level"], json!({"(none)": 1, "ERROR": 1, "FATAL": 1, "INFO": 1, "WARN": 1}));
    assert_eq!(summary["by_service"], json!({"api": {"ERROR": 1}, "billing": {"FATAL": 1, "WARN": 1}}));
    let kept = gunzip(&tried.out.join("filtered.jsonl.gz"))?;
    assert_eq!(
        String::from_utf8_lossy(&kept),
        "{\"level\":\"error\",\"service\":\"api\",\"msg\":\"crlf line\"}\n\
         {\"level\":60,\"service\":{\"name\":\"billing\"},\"msg\":\"pino fatal\"}\n\
         {\"log\":{\"level\":\"warn\"},\"service\":{\"name\":\"billing\"},\"msg\":\"no newline at the end\"}\n"
    );
    assert!(tried.stderr.contains("line 5: malformed, skipped (longer than 1048576 bytes)"), "{}", tried.stderr);
    Ok(())
}

/// Two gzip members in one object (an appended rotation) are one stream; LOG_FILTER_MIN_LEVEL
/// (WARN in the pipeline) sets the threshold and refuses a level it does not know.
#[test]
fn log_filter_reads_gzip_members_as_one_stream_and_takes_its_level_from_the_env() -> anyhow::Result<()> {
    let example = Example::load("log-filter")?;
    assert_eq!(example.env()?, [("LOG_FILTER_MIN_LEVEL".to_owned(), "WARN".to_owned())]);
    let scratch = Scratch::new("log-members")?;
    let input = scratch.path("rotated.log.gz");
    let members = [
        gzip(b"{\"level\":\"error\",\"service\":\"a\"}\n{\"level\":\"warn\",\"service\":\"a\"}\n")?,
        gzip(b"{\"level\":\"critical\",\"service\":\"b\"}\n{\"level\":\"debug\",\"service\":\"b\"}\n")?,
    ];
    std::fs::write(&input, members.concat())?;
    let tried = scratch.try_example(&example, &input, "warn", None, &[])?;
    ensure!(tried.code == Some(0), "{tried:#?}");
    let summary = summary(&tried)?;
    assert_eq!((&summary["min_level"], &summary["records"], &summary["kept"]), (&json!("WARN"), &json!(4), &json!(3)));

    let tried = scratch.try_example(&example, &input, "error", None, &[("LOG_FILTER_MIN_LEVEL", "error")])?;
    ensure!(tried.code == Some(0), "{tried:#?}");
    let summary = self::summary(&tried)?;
    assert_eq!((&summary["min_level"], &summary["kept"]), (&json!("ERROR"), &json!(2)));
    assert_eq!(summary["by_service"], json!({"a": {"ERROR": 1}, "b": {"FATAL": 1}}));

    let tried = scratch.try_example(&example, &input, "loud", None, &[("LOG_FILTER_MIN_LEVEL", "loud")])?;
    assert_eq!(expect_failure(&tried, "LOG_FILTER_MIN_LEVEL='LOUD'")?, 2, "exit code for a bad level");
    Ok(())
}

/// Truncated or corrupt gzip fails with exit code 1 and one line on stderr, and the transform
/// leaves no partial output behind (looked at in the object's directory, kept by --keep: `try`
/// itself never copies the outputs of a failed object).
#[test]
fn log_filter_fails_corrupt_gzip_without_partial_outputs() -> anyhow::Result<()> {
    let example = Example::load("log-filter")?;
    let scratch = Scratch::new("log-corrupt")?;
    let sample = std::fs::read(example.dir.join("sample/app-2026-11-27T10.log.gz"))?;
    let mut bad_crc = sample.clone();
    // The last 8 bytes are CRC32 and length: flip a CRC bit.
    let crc = bad_crc.len() - 8;
    bad_crc[crc] ^= 1;
    let inputs = [
        ("truncated", sample[..sample.len() / 2].to_vec()),
        ("bad-crc", bad_crc),
        ("fake", b"\x1f\x8bnot really gzip\n".to_vec()),
    ];
    for (name, bytes) in inputs {
        let input = scratch.path(&format!("{name}.log.gz"));
        std::fs::write(&input, bytes)?;
        let tried = scratch.try_example(&example, &input, name, None, &[])?;
        let code = expect_failure(&tried, &format!("{name}.log.gz: corrupt gzip"))
            .with_context(|| format!("{name}.log.gz"))?;
        assert_eq!(code, 1, "exit code for {name}.log.gz");
        let left: Vec<_> = std::fs::read_dir(tried.kept.join("out"))?.collect();
        assert!(left.is_empty(), "{name}.log.gz: outputs left after a failure: {left:?}");
    }
    Ok(())
}

/// No container engine here: each image must hold the script its pipeline runs (which is what
/// the transform tests run), from a Python base image.
#[test]
fn dockerfiles_copy_the_script_each_pipeline_runs() -> anyhow::Result<()> {
    let examples = Example::all()?;
    assert!(examples.len() >= 2, "only {} examples with a pipeline.yaml", examples.len());
    for example in &examples {
        let command = example.local_command()?;
        assert_eq!(command[0], "python3", "{}: {command:?}", example.name);
        let dockerfile = std::fs::read_to_string(example.dir.join("Dockerfile"))?;
        assert!(
            dockerfile.lines().any(|l| l.starts_with("FROM python:3")),
            "{}: not a python base image",
            example.name
        );
    }
    let log_filter = std::fs::read_to_string(examples_dir().join("log-filter/Dockerfile"))?;
    assert!(log_filter.lines().any(|l| l == "USER 65532:65532"), "log-filter: the image does not run as 65532");
    Ok(())
}

/// `kubectl apply --dry-run=server --validate=strict -f pipeline.yaml` in a fresh namespace.
async fn dry_run(namespace: &str, file: &Path, extra: &[&str]) -> anyhow::Result<String> {
    let file = file.to_str().context("a UTF-8 path")?;
    let mut args = vec!["apply", "-n", namespace, "--dry-run=server", "--validate=strict", "-f", file];
    args.extend(extra);
    kubectl(&args).await
}

#[tokio::test]
async fn every_pipeline_passes_a_strict_server_dry_run() -> anyhow::Result<()> {
    let client = client().await?;
    kubectl(&["get", "crd", "datapipelines.zeroflow.dev"])
        .await
        .context("the CRD is not installed (kubectl apply --server-side -f crds/)")?;
    let ns = TestNamespace::create(&client, "zf-examples").await?;
    let examples = Example::all()?;
    assert!(examples.len() >= 2, "only {} examples with a pipeline.yaml", examples.len());
    for example in &examples {
        let out = dry_run(&ns.name, &example.dir.join("pipeline.yaml"), &[]).await?;
        eprintln!("{}: {out}", example.name);
        assert!(
            out.lines().any(|l| l.starts_with("datapipeline.zeroflow.dev/") && l.ends_with("created (server dry run)")),
            "{}: {out}",
            example.name
        );
        // Nothing was created: it was a dry run.
        let left = kubectl(&["get", "datapipelines,secrets", "-n", &ns.name, "-o", "name"]).await?;
        assert_eq!(left.trim(), "", "{}: the dry run created objects", example.name);
    }
    // The apiserver's defaults land where the examples' comments say they do.
    let out = dry_run(
        &ns.name,
        &examples_dir().join("log-filter/pipeline.yaml"),
        &[
            "-o",
            "jsonpath={range .items[?(@.kind==\"DataPipeline\")]}{.spec.transform.contract} {.spec.sink.prefix} {.spec.scaling.minReplicas} {.spec.source.backfill}{end}",
        ],
    )
    .await?;
    assert_eq!(out, "exec warn-errors/ 0 true", "log-filter spec after defaulting");
    Ok(())
}

/// The same check refuses a misspelt field and an invalid value, so a passing dry run means
/// something.
#[tokio::test]
async fn the_dry_run_refuses_a_misspelt_field_and_an_invalid_value() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-examples-bite").await?;
    let scratch = Scratch::new("bite")?;
    let yaml = std::fs::read_to_string(examples_dir().join("log-filter/pipeline.yaml"))?;
    let cases = [
        ("    targetPerReplica:", "    targetPerReplicas:", "unknown field \"spec.scaling.targetPerReplicas\""),
        ("    maxReplicas: 20\n", "    maxReplicas: 0\n", "maxReplicas must be between 1 and 1000"),
    ];
    for (from, to, needle) in cases {
        assert_eq!(yaml.matches(from).count(), 1, "{from:?} is in pipeline.yaml once");
        let file = scratch.path("changed.yaml");
        std::fs::write(&file, yaml.replace(from, to))?;
        let refused = dry_run(&ns.name, &file, &[]).await.expect_err("the changed pipeline is refused");
        eprintln!("{refused}");
        assert!(refused.to_string().contains(needle), "{needle:?} not in {refused}");
    }
    Ok(())
}
