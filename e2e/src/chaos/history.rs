//! The chaos run's verdict, from its history rather than its counters: the transform's run log,
//! the ledger markers, the outputs, the objects that still exist at the end and the runner
//! terminations. Pure: the I/O that gathers these lives in [`super::run`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use zeroflow_core::ledger::Outcome;

use super::schedule::{FaultKind, ObjectKind, expected_output};

/// One object revision of one pipeline: (pipeline, key, ETag without quotes).
pub type RevisionId = (String, String, String);

/// One line of the run log the transform writes:
/// `start <pipeline> <key> <etag> <pod> <unix ns>` or `end ... <unix ns> ok|fail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLine {
    pub start: bool,
    pub revision: RevisionId,
    pub pod: String,
    pub at_ns: u128,
    /// For `end` lines: whether the transform succeeded.
    pub ok: bool,
}

/// Parses the run log. A torn last line (a transform killed while writing) is ignored.
pub fn parse_runs(text: &str) -> anyhow::Result<Vec<RunLine>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut runs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let parts: Vec<&str> = line.split(' ').collect();
        let parsed = match parts.as_slice() {
            ["start", p, key, etag, pod, at] => Some((true, p, key, etag, pod, at, true)),
            ["end", p, key, etag, pod, at, result] => Some((false, p, key, etag, pod, at, *result == "ok")),
            _ => None,
        };
        let Some((start, p, key, etag, pod, at, ok)) = parsed else {
            anyhow::ensure!(i + 1 == lines.len(), "bad run log line {line:?}");
            continue;
        };
        runs.push(RunLine {
            start,
            revision: ((*p).to_owned(), (*key).to_owned(), etag.trim_matches('"').to_owned()),
            pod: (*pod).to_owned(),
            at_ns: at.parse().with_context(|| format!("time in {line:?}"))?,
            ok,
        });
    }
    Ok(runs)
}

/// A revision that exists at the end of the run, and the content it holds.
#[derive(Debug, Clone)]
pub struct FinalRevision {
    pub id: RevisionId,
    pub content: Vec<u8>,
}

/// A ledger marker as found in the sink.
#[derive(Debug, Clone)]
pub struct SeenMarker {
    pub id: RevisionId,
    pub outcome: Outcome,
    pub finished_at_ns: u128,
    /// The sink keys it lists, with their content at the end (`None`: missing).
    pub outputs: Vec<(String, Option<Vec<u8>>)>,
}

/// Something that ends a transform run without an `end` line, or excuses running it again.
#[derive(Debug, Clone)]
pub struct Interruption {
    /// The pod whose runner (and transforms) were SIGKILLed, or which was deleted; `None`: every
    /// pod (e.g. the store restarted under them).
    pub pod: Option<String>,
    pub at_ns: u128,
    /// The pod was deleted rather than its runner killed. On this testbed that is a force
    /// delete: KWOK removes a deleted pod's object at once, where a kubelet keeps it until the
    /// containers have exited, and a token bound to a pod that no longer exists fails TokenReview.
    /// A leader that has not cached the token (any leader after a change) then refuses the
    /// runner's reports with 401, so every result the pod had not reported yet may be lost,
    /// runs that started after the delete (before the runner's SIGTERM) included.
    pub deleted: bool,
}

impl Interruption {
    /// Whether this explains a run of `end`'s revision starting at `rerun_ns` after that
    /// successful run on `end`'s pod, which started at `started_ns`: a killed runner may not
    /// have reported what it started before the kill; a deleted pod may not have reported
    /// anything (see [`Interruption::deleted`]).
    fn excuses(&self, end: &RunLine, started_ns: u128, rerun_ns: u128) -> bool {
        self.pod.as_ref().is_none_or(|p| *p == end.pod)
            && self.at_ns <= rerun_ns
            && (self.deleted || self.at_ns >= started_ns)
    }
}

/// Everything the verdict is made from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub runs: Vec<RunLine>,
    pub revisions: Vec<FinalRevision>,
    pub markers: Vec<SeenMarker>,
    /// Runner kills the run injected.
    pub interruptions: Vec<Interruption>,
    /// SIGTERMs the stand-in kubelet sent to runners: (pod, unix ns).
    pub terminations: Vec<(String, u128)>,
    /// Pods the run deleted on purpose (their SIGTERM is a fault, not a scale-down).
    pub deleted_pods: BTreeSet<String>,
    /// Per pipeline, the transform timeout: a run with no `end` is over after it.
    pub timeouts: HashMap<String, Duration>,
}

/// What the history shows. Every list names the offending revisions or pods.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub revisions: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Revisions without a marker.
    pub lost: Vec<String>,
    /// A success where a failure was meant, or the reverse.
    pub wrong_outcome: Vec<String>,
    /// A success whose outputs are missing, more than one, or differ from the transform's output.
    pub bad_outputs: Vec<String>,
    /// Runs started after the revision's marker was written.
    pub redone_after_completion: Vec<String>,
    /// Runs started after a successful run of the same revision ended, not explained by a runner
    /// kill of that run's pod after it started or by a deletion of that pod
    /// ([`Interruption::excuses`]).
    pub rerun_after_success: Vec<String>,
    /// Re-runs after a success that a runner kill or pod deletion explains (the result never
    /// reached a leader).
    pub rerun_excused: usize,
    /// Runs of revisions that no longer exist at the end (overwritten or deleted).
    pub runs_of_gone_revisions: usize,
    /// Runners sent SIGTERM by a scale-down while a transform of theirs was running.
    pub busy_terminated: Vec<String>,
    pub transform_runs: usize,
}

impl Verdict {
    /// Every failure, one line each; empty when the history is clean.
    pub fn failures(&self) -> Vec<String> {
        let mut all = Vec::new();
        for (what, list) in [
            ("lost (no marker)", &self.lost),
            ("wrong outcome", &self.wrong_outcome),
            ("bad outputs", &self.bad_outputs),
            ("redone after completion", &self.redone_after_completion),
            ("run again after a successful run", &self.rerun_after_success),
            ("busy runner stopped by a scale-down", &self.busy_terminated),
        ] {
            all.extend(list.iter().map(|item| format!("{what}: {item}")));
        }
        all
    }
}

fn name(id: &RevisionId) -> String {
    format!("{}:{}@{}", id.0, id.1, id.2)
}

/// The verdict on a run's history.
pub fn check(inputs: &Inputs) -> Verdict {
    let mut verdict = Verdict {
        revisions: inputs.revisions.len(),
        transform_runs: inputs.runs.iter().filter(|r| r.start).count(),
        ..Verdict::default()
    };
    let markers: HashMap<&RevisionId, &SeenMarker> = inputs.markers.iter().map(|m| (&m.id, m)).collect();
    let mut runs_of: HashMap<&RevisionId, Vec<&RunLine>> = HashMap::new();
    for run in &inputs.runs {
        runs_of.entry(&run.revision).or_default().push(run);
    }
    let existing: BTreeSet<&RevisionId> = inputs.revisions.iter().map(|r| &r.id).collect();
    verdict.runs_of_gone_revisions = inputs.runs.iter().filter(|r| r.start && !existing.contains(&r.revision)).count();

    for revision in &inputs.revisions {
        let id = &revision.id;
        let fails = ObjectKind::of_key(&id.1).is_some_and(ObjectKind::fails);
        let Some(marker) = markers.get(id) else {
            verdict.lost.push(name(id));
            continue;
        };
        match (marker.outcome, fails) {
            (Outcome::Succeeded, false) => {
                verdict.succeeded += 1;
                let expected = expected_output(&id.0, &revision.content);
                let good = marker.outputs.len() == 1 && marker.outputs[0].1.as_deref() == Some(expected.as_slice());
                if !good {
                    let seen: Vec<_> = marker
                        .outputs
                        .iter()
                        .map(|(k, v)| format!("{k}={:?}", v.as_deref().map(String::from_utf8_lossy)))
                        .collect();
                    verdict.bad_outputs.push(format!("{} outputs {seen:?}", name(id)));
                }
            }
            (Outcome::Failed, true) => verdict.failed += 1,
            (outcome, _) => verdict.wrong_outcome.push(format!("{} ended {outcome:?}", name(id))),
        }
    }

    // Every revision that ran, existing at the end or not: nothing ran after its completion.
    for (id, runs) in &runs_of {
        let mut runs = runs.clone();
        runs.sort_by_key(|r| (r.at_ns, !r.start));
        if let Some(marker) = markers.get(id) {
            let late = runs.iter().filter(|r| r.start && r.at_ns > marker.finished_at_ns).count();
            if late > 0 {
                verdict.redone_after_completion.push(format!("{} started {late} time(s) after its marker", name(id)));
            }
        }
        let mut success_end: Option<&RunLine> = None;
        for run in &runs {
            if run.start {
                if let Some(end) = success_end {
                    let started = runs
                        .iter()
                        .filter(|r| r.start && r.pod == end.pod && r.at_ns <= end.at_ns)
                        .map(|r| r.at_ns)
                        .max();
                    let excused = started
                        .is_some_and(|started| inputs.interruptions.iter().any(|i| i.excuses(end, started, run.at_ns)));
                    if excused {
                        verdict.rerun_excused += 1;
                    } else {
                        verdict.rerun_after_success.push(format!(
                            "{} ran again on {} after succeeding on {}",
                            name(id),
                            run.pod,
                            end.pod
                        ));
                    }
                }
            } else if run.ok {
                success_end = Some(run);
            }
        }
    }

    // No runner with a transform running was stopped by a scale-down.
    for (pod, at) in &inputs.terminations {
        if inputs.deleted_pods.contains(pod) {
            continue;
        }
        let busy = inputs.runs.iter().filter(|r| r.start && &r.pod == pod && r.at_ns <= *at).find(|start| {
            let ended = inputs.runs.iter().any(|e| {
                !e.start
                    && e.pod == start.pod
                    && e.revision == start.revision
                    && e.at_ns >= start.at_ns
                    && e.at_ns <= *at
            });
            let timeout = inputs.timeouts.get(&start.revision.0).copied().unwrap_or(Duration::ZERO);
            let timed_out = start.at_ns + timeout.as_nanos() + Duration::from_secs(2).as_nanos() <= *at;
            let killed = inputs
                .interruptions
                .iter()
                .any(|i| i.pod.as_ref().is_none_or(|p| p == pod) && i.at_ns >= start.at_ns && i.at_ns <= *at);
            !ended && !timed_out && !killed
        });
        if let Some(run) = busy {
            verdict.busy_terminated.push(format!("{pod} stopped while running {}", name(&run.revision)));
        }
    }
    verdict.lost.sort();
    verdict
}

/// For each fault, the time to the first completion (a marker written) after it, by kind.
pub fn recoveries(faults: &[(FaultKind, u128)], completions_ns: &[u128]) -> BTreeMap<FaultKind, Vec<Duration>> {
    let mut sorted = completions_ns.to_vec();
    sorted.sort_unstable();
    let mut by_kind: BTreeMap<FaultKind, Vec<Duration>> = BTreeMap::new();
    for (kind, at) in faults {
        let next = sorted.partition_point(|c| c <= at);
        if let Some(done) = sorted.get(next) {
            let nanos = u64::try_from(done - at).unwrap_or(u64::MAX);
            by_kind.entry(*kind).or_default().push(Duration::from_nanos(nanos));
        }
    }
    by_kind
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str) -> RevisionId {
        ("a".into(), key.into(), "e1".into())
    }

    fn start(key: &str, pod: &str, at: u128) -> RunLine {
        RunLine { start: true, revision: id(key), pod: pod.into(), at_ns: at, ok: true }
    }

    fn end(key: &str, pod: &str, at: u128, ok: bool) -> RunLine {
        RunLine { start: false, revision: id(key), pod: pod.into(), at_ns: at, ok }
    }

    fn marker(key: &str, outcome: Outcome, at: u128, output: Option<&[u8]>) -> SeenMarker {
        SeenMarker {
            id: id(key),
            outcome,
            finished_at_ns: at,
            outputs: output.map(|o| vec![(format!("out/{key}/out.txt"), Some(o.to_vec()))]).unwrap_or_default(),
        }
    }

    fn revision(key: &str, content: &[u8]) -> FinalRevision {
        FinalRevision { id: id(key), content: content.to_vec() }
    }

    /// One plain success and one failing object, each run once, as a clean run leaves them.
    fn clean() -> Inputs {
        Inputs {
            runs: vec![
                start("a/1-plain.txt", "p1", 10),
                end("a/1-plain.txt", "p1", 20, true),
                start("a/2-fail.txt", "p1", 30),
                end("a/2-fail.txt", "p1", 40, false),
                start("a/2-fail.txt", "p2", 50),
                end("a/2-fail.txt", "p2", 60, false),
            ],
            revisions: vec![revision("a/1-plain.txt", b"x\n"), revision("a/2-fail.txt", b"y\n")],
            markers: vec![
                marker("a/1-plain.txt", Outcome::Succeeded, 25, Some(b"pipeline=a\nX\n")),
                marker("a/2-fail.txt", Outcome::Failed, 65, None),
            ],
            ..Inputs::default()
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let verdict = check(&clean());
        assert_eq!(verdict.failures(), Vec::<String>::new());
        assert_eq!((verdict.revisions, verdict.succeeded, verdict.failed, verdict.transform_runs), (2, 1, 1, 3));
    }

    #[test]
    fn a_missing_marker_is_lost() {
        let mut inputs = clean();
        inputs.markers.remove(0);
        assert_eq!(check(&inputs).lost, ["a:a/1-plain.txt@e1"]);
    }

    #[test]
    fn wrong_outcomes_and_outputs_are_caught() {
        let mut inputs = clean();
        inputs.markers[1].outcome = Outcome::Succeeded;
        inputs.markers[0].outputs[0].1 = Some(b"pipeline=a\nOLD\n".to_vec());
        let verdict = check(&inputs);
        assert_eq!(verdict.wrong_outcome.len(), 1);
        assert_eq!(verdict.bad_outputs.len(), 1);
        let mut inputs = clean();
        inputs.markers[0].outputs[0].1 = None;
        assert_eq!(check(&inputs).bad_outputs.len(), 1, "a missing output");
    }

    #[test]
    fn a_run_after_the_marker_is_redone_after_completion() {
        let mut inputs = clean();
        inputs.runs.push(start("a/1-plain.txt", "p2", 30));
        inputs.runs.push(end("a/1-plain.txt", "p2", 35, true));
        let verdict = check(&inputs);
        assert_eq!(verdict.redone_after_completion.len(), 1);
        assert_eq!(verdict.rerun_after_success.len(), 1);
    }

    /// [`clean`], with the plain object, a success on p1 (10-20), run again on p2 (22-24).
    fn rerun_on_p2() -> Inputs {
        let mut inputs = clean();
        inputs.runs.push(start("a/1-plain.txt", "p2", 22));
        inputs.runs.push(end("a/1-plain.txt", "p2", 24, true));
        inputs
    }

    #[test]
    fn a_rerun_after_success_is_excused_only_by_a_kill_of_that_runner() {
        // Ran to the end on p1, whose runner was killed before reporting; redone on p2.
        let mut inputs = rerun_on_p2();
        inputs.interruptions.push(Interruption { pod: Some("p2".into()), at_ns: 21, deleted: false });
        assert_eq!(check(&inputs).rerun_after_success.len(), 1, "a kill of another pod explains nothing");
        inputs.interruptions.push(Interruption { pod: Some("p1".into()), at_ns: 21, deleted: false });
        let verdict = check(&inputs);
        assert_eq!(verdict.failures(), Vec::<String>::new());
        assert_eq!(verdict.rerun_excused, 1);
    }

    /// CI, seed 823225790: c-worker-...-7726v was deleted at t=104.9 s and the leader killed at
    /// t=105.0 s; the deleted pod's runner, not yet sent SIGTERM, leased c/00378-plain.txt from
    /// the leader that was about to die and ran it to success, but KWOK had removed the pod, so
    /// the next leader refused its report (its bound token no longer authenticated) and the
    /// object ran again on another pod. The run started after the delete, and only a kill
    /// excused runs that started before it.
    #[test]
    fn a_rerun_after_success_on_a_pod_deleted_before_that_run_started_is_excused() {
        let mut inputs = rerun_on_p2();
        // p1's run started at 10; its pod is deleted at 5, before that.
        inputs.interruptions.push(Interruption { pod: Some("p1".into()), at_ns: 5, deleted: false });
        assert_eq!(check(&inputs).rerun_after_success.len(), 1, "a kill before the run started explains nothing");
        inputs.interruptions[0].deleted = true;
        let verdict = check(&inputs);
        assert_eq!(verdict.failures(), Vec::<String>::new());
        assert_eq!(verdict.rerun_excused, 1);
        // A deletion after the rerun started explains nothing, nor one of another pod.
        inputs.interruptions[0].at_ns = 23;
        assert_eq!(check(&inputs).rerun_after_success.len(), 1, "deleted after the rerun started");
        inputs.interruptions[0] = Interruption { pod: Some("p3".into()), at_ns: 5, deleted: true };
        assert_eq!(check(&inputs).rerun_after_success.len(), 1, "another pod deleted");
    }

    #[test]
    fn a_busy_runner_terminated_is_caught_unless_deleted_killed_or_timed_out() {
        let mut inputs = clean();
        inputs.terminations.push(("p1".into(), 15));
        assert_eq!(check(&inputs).busy_terminated.len(), 1);
        inputs.deleted_pods.insert("p1".into());
        assert!(check(&inputs).busy_terminated.is_empty(), "a deletion the run made");
        let mut inputs = clean();
        inputs.terminations.push(("p1".into(), 25));
        assert!(check(&inputs).busy_terminated.is_empty(), "idle by then");
        // A hang that the runner's timeout killed holds nothing after the timeout.
        inputs.runs.push(start("a/3-hang.txt", "p1", 100));
        inputs.terminations.push(("p1".into(), 3_000_000_000));
        inputs.timeouts.insert("a".into(), Duration::from_nanos(1));
        assert!(check(&inputs).busy_terminated.is_empty());
        inputs.timeouts.insert("a".into(), Duration::from_secs(10));
        assert_eq!(check(&inputs).busy_terminated.len(), 1);
        inputs.interruptions.push(Interruption { pod: Some("p1".into()), at_ns: 200, deleted: false });
        assert!(check(&inputs).busy_terminated.is_empty(), "its runner was killed");
    }

    #[test]
    fn run_log_lines_parse_and_a_torn_last_line_is_ignored() {
        let text = "start a k \"e1\" p1 10\nend a k e1 p1 20 ok\nstart a k e1 p";
        let runs = parse_runs(text).expect("parses");
        assert_eq!(runs, [start("k", "p1", 10), end("k", "p1", 20, true)]);
        assert!(parse_runs("bogus\nstart a k e1 p1 10\n").is_err());
    }

    #[test]
    fn recovery_is_the_time_to_the_next_completion() {
        let r = recoveries(&[(FaultKind::LeaderKill, 100), (FaultKind::LeaderKill, 500)], &[50, 300, 450]);
        assert_eq!(r[&FaultKind::LeaderKill], [Duration::from_nanos(200)]);
    }
}
