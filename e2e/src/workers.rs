//! A stand-in for the kubelet on the testbed's KWOK node, whose pods cannot run processes.
//!
//! For every Running worker pod of a pipeline it starts the pod's own command — the
//! operator-built `zeroflow-runner run -- <transform>` with the pod's environment — as a process
//! on the host, with a ServiceAccount token bound to that pod (what the kubelet projects), a
//! private work dir, and the runner binary from this workspace in place of the init container's
//! copy. Like the kubelet it restarts a runner that dies while its pod lives, and sends SIGTERM
//! when the pod is deleted. Everything it started is killed when it is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How often the pods are looked at (the kubelet reacts to a watch; polling keeps this simple).
const POLL: Duration = Duration::from_millis(200);

/// One runner process for one pod.
struct Runner {
    child: Child,
    /// The pod's terminationGracePeriodSeconds.
    grace: Duration,
    /// Set at SIGTERM: SIGKILL follows when the grace period is over, as the kubelet does.
    kill_at: Option<std::time::Instant>,
}

#[derive(Default)]
struct State {
    runners: HashMap<String, Runner>,
    /// Every pod a runner was started for, in order.
    started: Vec<String>,
    /// Runners that ended, with their exit code (`None`: killed by a signal).
    exits: Vec<(String, Option<i32>)>,
    /// Runners started again after dying while their pod lived.
    restarts: usize,
    /// SIGTERMs sent because a pod was deleted: (pod, when).
    terminations: Vec<(String, std::time::SystemTime)>,
}

pub struct HostWorkers {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
    pub scratch: PathBuf,
}

impl HostWorkers {
    /// Runs workers for the pods of `pipeline` in `namespace` until dropped; runner logs and
    /// work dirs go under `scratch/<pod>/`.
    pub fn start(client: Client, namespace: &str, pipeline: &str) -> anyhow::Result<Self> {
        Self::start_with_transform(client, namespace, pipeline, None)
    }

    /// Like [`HostWorkers::start`], with `transform` run in place of the pod's own transform
    /// command (whose paths exist inside its image, not on this host).
    pub fn start_with_transform(
        client: Client,
        namespace: &str,
        pipeline: &str,
        transform: Option<Vec<String>>,
    ) -> anyhow::Result<Self> {
        let selector = format!("zeroflow.dev/pipeline={pipeline},app.kubernetes.io/component=worker");
        Self::spawn(client, namespace, pipeline, selector, transform)
    }

    /// Like [`HostWorkers::start_with_transform`], for the worker pods of every pipeline in
    /// `namespace` (one poll of the namespace's pods, however many pipelines there are).
    pub fn start_for_all_pipelines(
        client: Client,
        namespace: &str,
        transform: Option<Vec<String>>,
    ) -> anyhow::Result<Self> {
        Self::spawn(client, namespace, "all", "app.kubernetes.io/component=worker".to_owned(), transform)
    }

    /// Runs workers for the pods `selector` (a label selector) finds in `namespace`; their
    /// logs and work dirs go under a scratch dir named after `name`.
    fn spawn(
        client: Client,
        namespace: &str,
        name: &str,
        selector: String,
        transform: Option<Vec<String>>,
    ) -> anyhow::Result<Self> {
        let scratch = std::env::temp_dir().join(format!("zf-workers-{namespace}-{name}"));
        std::fs::create_dir_all(&scratch)?;
        let runner = crate::workspace_binary("zeroflow-runner")?;
        let state = Arc::new(Mutex::new(State::default()));
        let kubelet = Kubelet {
            pods: Api::namespaced(client.clone(), namespace),
            accounts: Api::namespaced(client, namespace),
            selector,
            runner,
            transform,
            scratch: scratch.clone(),
            state: state.clone(),
        };
        let task = tokio::spawn(async move {
            // An error is printed when it starts, not on every poll while it lasts (the chaos
            // run restarts the apiserver under this loop).
            let mut last_error = None;
            loop {
                match kubelet.sync().await {
                    Ok(()) => last_error = None,
                    Err(e) => {
                        let text = format!("{e:#}");
                        if last_error.as_ref() != Some(&text) {
                            eprintln!("host workers: {text}");
                            last_error = Some(text);
                        }
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Ok(Self { state, task, scratch })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pods a runner was started for, in order.
    pub fn started(&self) -> Vec<String> {
        self.state().started.clone()
    }

    /// Runners that ended, with their exit codes.
    pub fn exits(&self) -> Vec<(String, Option<i32>)> {
        self.state().exits.clone()
    }

    /// Runners started again after they died with their pod still there.
    pub fn restarts(&self) -> usize {
        self.state().restarts
    }

    /// The SIGTERMs sent to runners of deleted pods: (pod, when).
    pub fn terminations(&self) -> Vec<(String, std::time::SystemTime)> {
        self.state().terminations.clone()
    }

    /// Pods with a runner process right now.
    pub fn running(&self) -> Vec<String> {
        self.state().runners.keys().cloned().collect()
    }

    /// The process id of the runner of `pod`, while it runs.
    pub fn pid(&self, pod: &str) -> Option<u32> {
        self.state().runners.get(pod).and_then(|r| r.child.id())
    }

    /// SIGKILLs the runner of `pod`, as an OOM kill or a crash would.
    pub async fn kill(&self, pod: &str) -> anyhow::Result<()> {
        let pid = self.state().runners.get(pod).and_then(|r| r.child.id()).context("no runner for that pod")?;
        signal(pid, "-KILL").await
    }

    /// The log of the runner of `pod` (every start appended).
    pub fn log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.scratch.join(pod).join("runner.log")).unwrap_or_default()
    }
}

impl Drop for HostWorkers {
    fn drop(&mut self) {
        self.task.abort();
        for runner in self.state().runners.values_mut() {
            let _ = runner.child.start_kill();
        }
        // Tokens, logs and work dirs; kept for a look after a failure with ZF_KEEP_NAMESPACES.
        if std::env::var_os("ZF_KEEP_NAMESPACES").is_none() {
            let _ = std::fs::remove_dir_all(&self.scratch);
        }
    }
}

struct Kubelet {
    pods: Api<Pod>,
    accounts: Api<ServiceAccount>,
    selector: String,
    runner: PathBuf,
    transform: Option<Vec<String>>,
    scratch: PathBuf,
    state: Arc<Mutex<State>>,
}

impl Kubelet {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn sync(&self) -> anyhow::Result<()> {
        let pods = self.pods.list(&ListParams::default().labels(&self.selector)).await?.items;
        let live: HashMap<String, &Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .map(|p| (p.name_any(), p))
            .collect();
        let mut to_start = Vec::new();
        {
            let mut state = self.state();
            let state = &mut *state;
            // Reap the ones that ended; a pod's runner that died is started again.
            let mut ended = Vec::new();
            for (pod, runner) in &mut state.runners {
                if let Ok(Some(status)) = runner.child.try_wait() {
                    ended.push((pod.clone(), status.code(), runner.kill_at.is_some()));
                }
            }
            for (pod, code, terminating) in ended {
                state.runners.remove(&pod);
                state.exits.push((pod.clone(), code));
                if !terminating && live.contains_key(&pod) {
                    state.restarts += 1;
                }
            }
            // Deleted pods: SIGTERM, once, as the kubelet does at the start of the grace period,
            // and SIGKILL at its end.
            let now = std::time::Instant::now();
            let mut terminated = Vec::new();
            for (pod, runner) in &mut state.runners {
                match runner.kill_at {
                    None if !live.contains_key(pod) => {
                        runner.kill_at = Some(now + runner.grace);
                        if let Some(pid) = runner.child.id() {
                            to_terminate(pid);
                            terminated.push(pod.clone());
                        }
                    }
                    Some(at) if now >= at => {
                        let _ = runner.child.start_kill();
                    }
                    _ => {}
                }
            }
            let at = std::time::SystemTime::now();
            state.terminations.extend(terminated.into_iter().map(|pod| (pod, at)));
            for (name, pod) in &live {
                if !state.runners.contains_key(name) {
                    to_start.push((*pod).clone());
                }
            }
        }
        for pod in to_start {
            let name = pod.name_any();
            let child = self.start(&pod).await.with_context(|| format!("starting the runner of {name}"))?;
            let mut state = self.state();
            if !state.started.contains(&name) {
                state.started.push(name.clone());
            }
            let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
            let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            state.runners.insert(name, Runner { child, grace, kill_at: None });
        }
        Ok(())
    }

    async fn start(&self, pod: &Pod) -> anyhow::Result<Child> {
        let name = pod.name_any();
        let spec = pod.spec.as_ref().context("pod without spec")?;
        let container = spec.containers.first().context("pod without containers")?;
        let account = spec.service_account_name.as_deref().context("pod without a ServiceAccount")?;
        let dir = self.scratch.join(&name);
        for sub in ["work", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let token = self.bound_token(account, pod).await?;
        std::fs::write(dir.join("token"), token)?;
        let mut argv = container.command.clone().context("worker container without command")?;
        if let Some(transform) = &self.transform {
            // `<runner> run -- <transform...>`: keep the runner's part, replace the rest.
            let end = argv.iter().position(|a| a == "--").context("no `--` in the worker command")?;
            argv.truncate(end + 1);
            argv.extend(transform.iter().cloned());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("runner.log"))?;
        let mut command = Command::new(&self.runner);
        command
            .args(argv.iter().skip(1))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(pod_env(container, &name))
            .env("ZEROFLOW_TOKEN_FILE", dir.join("token"))
            .env("ZEROFLOW_WORK_DIR", dir.join("work"))
            .env("TMPDIR", dir.join("tmp"))
            .env("HOME", &dir)
            .current_dir(&dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        Ok(command.spawn()?)
    }

    /// A token for the pod's ServiceAccount bound to the pod, with the audience its projected
    /// volume asks for: the apiserver then names the pod in TokenReview answers.
    async fn bound_token(&self, account: &str, pod: &Pod) -> anyhow::Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["zeroflow".into()],
                expiration_seconds: Some(3600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.name_any()),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let minted = self.accounts.create_token_request(account, &PostParams::default(), &request).await?;
        Ok(minted.status.context("TokenRequest without status")?.token)
    }
}

/// The container's environment as the kubelet resolves it: literal values, and the pod's name
/// for `fieldRef: metadata.name`.
fn pod_env(container: &Container, pod: &str) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .filter_map(|var| {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) if from.field_ref.as_ref().is_some_and(|f| f.field_path == "metadata.name") => {
                    pod.to_owned()
                }
                _ => return None,
            };
            Some((var.name.clone(), value))
        })
        .collect()
}

fn to_terminate(pid: u32) {
    tokio::spawn(async move {
        let _ = signal(pid, "-TERM").await;
    });
}

async fn signal(pid: u32, which: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").args([which, &pid.to_string()]).status().await?;
    anyhow::ensure!(status.success(), "kill {which} {pid} failed");
    Ok(())
}

/// Files under `dir`, recursively (for checks that nothing was written outside a work dir).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}
