//! The chaos run's plan, decided before anything runs: which faults, when, against which target,
//! and which objects are uploaded. Pure and seeded, so a failing run is replayed with its seed.

use std::fmt;
use std::time::Duration;

/// A small deterministic generator (SplitMix64): the same seed gives the same schedule.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; 0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

/// What a fault does. The notification gap and the backlog overflow are not separate actions:
/// every leader kill is a gap for the pipeline on MinIO's queue-less target, and the operators
/// run with a small backlog capacity, so bursts overflow it (both are counted from the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL the operator replica that leads; a new replica is started at once.
    LeaderKill,
    /// Delete a random Running worker pod (its runner gets SIGTERM and drains).
    PodDelete,
    /// SIGKILL a random runner and the transforms it started, as a container crash would.
    RunnerKill,
    /// Stop MinIO and start it again on the same port and data.
    MinioRestart,
    /// Stop the kube-apiserver and start it again.
    ApiserverRestart,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::LeaderKill,
        FaultKind::PodDelete,
        FaultKind::RunnerKill,
        FaultKind::MinioRestart,
        FaultKind::ApiserverRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::LeaderKill => "leader_kill",
            FaultKind::PodDelete => "pod_delete",
            FaultKind::RunnerKill => "runner_kill",
            FaultKind::MinioRestart => "minio_restart",
            FaultKind::ApiserverRestart => "apiserver_restart",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned fault: `at` after the run's start; `pick` chooses the target among those that
/// exist at that moment (a pod, a runner), so the plan does not depend on what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub at: Duration,
    pub kind: FaultKind,
    pub pick: u64,
}

/// How often each kind of fault happens.
#[derive(Debug, Clone)]
pub struct FaultRates {
    /// The leader is killed every this often (Knative's chaos duck kills leaders every 30 s).
    pub leader_every: Duration,
    /// Mean gap between worker pod deletions (each gap drawn from half to one and a half of it).
    pub pod_delete_every: Duration,
    /// Mean gap between runner kills.
    pub runner_kill_every: Duration,
    /// MinIO and the apiserver are each restarted this often (at least once per run).
    pub restart_every: Duration,
}

impl FaultRates {
    /// The rates of both schedules: the short CI run and the long benchmark differ in length only.
    pub fn standard() -> Self {
        Self {
            leader_every: Duration::from_secs(30),
            pod_delete_every: Duration::from_secs(20),
            runner_kill_every: Duration::from_secs(15),
            restart_every: Duration::from_secs(240),
        }
    }
}

/// The faults of a run of `length`, sorted by time. The last fault is at least `quiet` before the
/// end, so the run's end is a recovery, not a fault.
pub fn faults(seed: u64, length: Duration, quiet: Duration, rates: &FaultRates) -> Vec<Fault> {
    let mut rng = Rng::new(seed);
    let end = length.saturating_sub(quiet);
    let mut plan = Vec::new();
    let mut at = rates.leader_every / 2;
    while at < end {
        plan.push(Fault { at, kind: FaultKind::LeaderKill, pick: 0 });
        at += rates.leader_every;
    }
    for (kind, every) in
        [(FaultKind::PodDelete, rates.pod_delete_every), (FaultKind::RunnerKill, rates.runner_kill_every)]
    {
        let mut at = rng.between(every / 2, every * 3 / 2);
        while at < end {
            plan.push(Fault { at, kind, pick: rng.next_u64() });
            at += rng.between(every / 2, every * 3 / 2);
        }
    }
    // The restarts: evenly spread, at least one each, MinIO's and the apiserver's interleaved
    // and kept apart from each other (each takes seconds), at a random offset within their slot.
    let restarts = (end.as_secs() / rates.restart_every.as_secs().max(1)).max(1);
    let slot = end / (2 * restarts as u32).max(1);
    for i in 0..restarts as u32 {
        for (j, kind) in [FaultKind::MinioRestart, FaultKind::ApiserverRestart].into_iter().enumerate() {
            let start = slot * (2 * i + j as u32);
            let at = start + rng.between(slot / 4, slot * 3 / 4);
            plan.push(Fault { at, kind, pick: 0 });
        }
    }
    plan.sort_by_key(|f| (f.at, f.kind));
    plan
}

/// What an uploaded object is meant to exercise; its key carries the kind, so the transform and
/// the history check both know it from the key alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// Processed once, successfully.
    Plain,
    /// Uploaded, then uploaded again with other content shortly after: the last revision counts.
    Overwritten,
    /// Uploaded and deleted right after: may be skipped or processed, never failed.
    Deleted,
    /// The transform exits non-zero: one failed marker after maxAttempts.
    Fail,
    /// The transform hangs past its timeout: one failed marker after maxAttempts.
    Hang,
}

impl ObjectKind {
    /// The word in the key (`fail` and `hang` are what the transform looks for).
    pub fn word(self) -> &'static str {
        match self {
            ObjectKind::Plain => "plain",
            ObjectKind::Overwritten => "over",
            ObjectKind::Deleted => "gone",
            ObjectKind::Fail => "fail",
            ObjectKind::Hang => "hang",
        }
    }

    /// The kind named in a key, by the word its last segment starts with after `<n>-`.
    pub fn of_key(key: &str) -> Option<Self> {
        let name = key.rsplit('/').next()?;
        let word = name.split_once('-')?.1.split('.').next()?;
        [ObjectKind::Plain, ObjectKind::Overwritten, ObjectKind::Deleted, ObjectKind::Fail, ObjectKind::Hang]
            .into_iter()
            .find(|k| k.word() == word)
    }

    /// Whether the last revision must end with a failed marker rather than a success.
    pub fn fails(self) -> bool {
        matches!(self, ObjectKind::Fail | ObjectKind::Hang)
    }
}

/// The `n`-th upload of a run: which pipeline's prefix, and what kind. `hang_allowed` names the
/// pipelines whose short timeout makes hanging objects cheap.
pub fn object_kind(rng: &mut Rng, hang_allowed: bool) -> ObjectKind {
    match rng.below(100) {
        0..70 => ObjectKind::Plain,
        70..80 => ObjectKind::Overwritten,
        80..88 => ObjectKind::Deleted,
        88..95 => ObjectKind::Fail,
        _ if hang_allowed => ObjectKind::Hang,
        _ => ObjectKind::Plain,
    }
}

/// The key of the `n`-th object of `pipeline`'s prefix.
pub fn object_key(prefix: &str, n: usize, kind: ObjectKind) -> String {
    format!("{prefix}{n:05}-{}.txt", kind.word())
}

/// The content of revision `revision` of `key` (distinct per revision, so their ETags differ).
pub fn object_content(key: &str, revision: u32) -> String {
    format!("chaos object {key} revision {revision}\n")
}

/// The transform's deterministic output for `input` in `pipeline` (what the script writes).
pub fn expected_output(pipeline: &str, input: &[u8]) -> Vec<u8> {
    let mut out = format!("pipeline={pipeline}\n").into_bytes();
    out.extend(input.iter().map(u8::to_ascii_uppercase));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let rates = FaultRates::standard();
        let a = faults(7, Duration::from_secs(180), Duration::from_secs(20), &rates);
        assert_eq!(a, faults(7, Duration::from_secs(180), Duration::from_secs(20), &rates));
        assert_ne!(a, faults(8, Duration::from_secs(180), Duration::from_secs(20), &rates));
    }

    #[test]
    fn a_short_run_has_every_kind_sorted_and_ends_quiet() {
        let plan = faults(1, Duration::from_secs(180), Duration::from_secs(20), &FaultRates::standard());
        for kind in FaultKind::ALL {
            assert!(plan.iter().any(|f| f.kind == kind), "{kind} missing: {plan:?}");
        }
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(plan.iter().all(|f| f.at < Duration::from_secs(160)), "{plan:?}");
        let leaders: Vec<_> = plan.iter().filter(|f| f.kind == FaultKind::LeaderKill).map(|f| f.at.as_secs()).collect();
        assert_eq!(leaders, [15, 45, 75, 105, 135]);
    }

    #[test]
    fn restarts_are_spread_over_a_long_run_and_kept_apart() {
        let plan = faults(3, Duration::from_secs(1200), Duration::from_secs(60), &FaultRates::standard());
        let restarts: Vec<_> =
            plan.iter().filter(|f| matches!(f.kind, FaultKind::MinioRestart | FaultKind::ApiserverRestart)).collect();
        assert_eq!(restarts.len(), 2 * 4, "1140 s of faults, one of each every 240 s: {restarts:?}");
        for pair in restarts.windows(2) {
            assert_ne!(pair[0].kind, pair[1].kind, "interleaved");
            assert!(pair[1].at - pair[0].at >= Duration::from_secs(30), "apart: {pair:?}");
        }
    }

    #[test]
    fn keys_carry_their_kind() {
        for kind in
            [ObjectKind::Plain, ObjectKind::Overwritten, ObjectKind::Deleted, ObjectKind::Fail, ObjectKind::Hang]
        {
            assert_eq!(ObjectKind::of_key(&object_key("a/", 12, kind)), Some(kind));
        }
        assert_eq!(ObjectKind::of_key("a/00001-other.txt"), None);
        assert!(object_key("b/", 3, ObjectKind::Hang).contains("hang"));
        assert_ne!(object_content("k", 1), object_content("k", 2));
    }

    #[test]
    fn kinds_follow_the_mix_and_hangs_only_where_allowed() {
        let mut rng = Rng::new(5);
        let kinds: Vec<_> = (0..2000).map(|_| object_kind(&mut rng, false)).collect();
        assert!(!kinds.contains(&ObjectKind::Hang));
        let plain = kinds.iter().filter(|k| **k == ObjectKind::Plain).count();
        assert!((1400..1650).contains(&plain), "{plain}");
        let mut rng = Rng::new(5);
        assert!((0..2000).any(|_| object_kind(&mut rng, true) == ObjectKind::Hang));
    }

    #[test]
    fn the_expected_output_is_the_script_s() {
        assert_eq!(expected_output("a", b"chaos x\n"), b"pipeline=a\nCHAOS X\n");
    }
}
