//! What `e2e/demo` reports while the pipeline runs: snapshots of the pipeline, taken whenever
//! something changes, become timestamped milestones (scale 0 -> N -> 0, pods Running, outputs
//! written) and, at the end, the figures a person evaluating zeroflow asks for.
//!
//! Pure: the caller observes the cluster and the store and passes the time since the upload
//! started.

use std::fmt::Write as _;
use std::time::Duration;

/// The pipeline as seen at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The worker Deployment's `spec.replicas`: what the scaler asked for.
    pub replicas: i32,
    /// Worker pods Running and not being deleted.
    pub running: usize,
    /// Worker pods that exist at all (pending, running or terminating).
    pub pods: usize,
    /// Node of one Running worker pod.
    pub node: Option<String>,
    /// Expected outputs found in the sink bucket.
    pub outputs: usize,
    /// `status.failed` of the DataPipeline.
    pub failed: i64,
}

/// A change worth a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Milestone {
    /// The worker Deployment's replicas changed.
    Scaled { from: i32, to: i32 },
    /// The number of Running worker pods changed.
    Running { count: usize, node: Option<String> },
    /// The first expected output appeared in the sink.
    FirstOutput,
    /// Every expected output is in the sink.
    AllOutputs { count: usize },
    /// More objects were recorded as failed.
    Failed { count: i64 },
    /// The last worker pod is gone.
    PodsGone,
}

/// Milestones with their time since the upload started.
#[derive(Debug)]
pub struct Timeline {
    last: Snapshot,
    expected_outputs: usize,
    pub marks: Vec<(Duration, Milestone)>,
}

impl Timeline {
    /// A timeline starting from `initial` (observed before the upload), expecting
    /// `expected_outputs` outputs.
    pub fn new(initial: Snapshot, expected_outputs: usize) -> Self {
        Self { last: initial, expected_outputs, marks: Vec::new() }
    }

    /// Records what changed since the last snapshot; returns the new milestones.
    pub fn observe(&mut self, at: Duration, now: Snapshot) -> Vec<(Duration, Milestone)> {
        let last = std::mem::replace(&mut self.last, now.clone());
        let mut new = Vec::new();
        if now.replicas != last.replicas {
            new.push(Milestone::Scaled { from: last.replicas, to: now.replicas });
        }
        if now.running != last.running {
            new.push(Milestone::Running { count: now.running, node: now.node.clone() });
        }
        if last.outputs == 0 && now.outputs > 0 {
            new.push(Milestone::FirstOutput);
        }
        if last.outputs < self.expected_outputs && now.outputs >= self.expected_outputs {
            new.push(Milestone::AllOutputs { count: now.outputs });
        }
        if now.failed > last.failed {
            new.push(Milestone::Failed { count: now.failed });
        }
        if last.pods > 0 && now.pods == 0 {
            new.push(Milestone::PodsGone);
        }
        let new: Vec<_> = new.into_iter().map(|m| (at, m)).collect();
        self.marks.extend(new.iter().cloned());
        new
    }

    /// The last snapshot.
    pub fn now(&self) -> &Snapshot {
        &self.last
    }

    fn first(&self, wanted: impl Fn(&Milestone) -> bool) -> Option<Duration> {
        self.marks.iter().find(|(_, m)| wanted(m)).map(|(at, _)| *at)
    }

    fn last_mark(&self, wanted: impl Fn(&Milestone) -> bool) -> Option<Duration> {
        self.marks.iter().rev().find(|(_, m)| wanted(m)).map(|(at, _)| *at)
    }

    /// The figures so far.
    pub fn figures(&self) -> Figures {
        let peak = |f: fn(&Milestone) -> Option<usize>| self.marks.iter().filter_map(|(_, m)| f(m)).max().unwrap_or(0);
        Figures {
            event_to_scale: self.first(|m| matches!(m, Milestone::Scaled { from: 0, to } if *to > 0)),
            first_running: self.first(|m| matches!(m, Milestone::Running { count, .. } if *count > 0)),
            first_output: self.first(|m| matches!(m, Milestone::FirstOutput)),
            all_outputs: self.first(|m| matches!(m, Milestone::AllOutputs { .. })),
            peak_replicas: peak(|m| match m {
                Milestone::Scaled { to, .. } => usize::try_from(*to).ok(),
                _ => None,
            }),
            peak_running: peak(|m| match m {
                Milestone::Running { count, .. } => Some(*count),
                _ => None,
            }),
            back_to_zero: self.last_mark(|m| matches!(m, Milestone::Scaled { to: 0, .. })),
            pods_gone: self.last_mark(|m| matches!(m, Milestone::PodsGone)),
        }
    }
}

/// Times since the upload started, `None` where it has not happened (yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Worker Deployment scaled 0 -> N.
    pub event_to_scale: Option<Duration>,
    /// First worker pod Running.
    pub first_running: Option<Duration>,
    /// First output in the sink.
    pub first_output: Option<Duration>,
    /// Every output in the sink.
    pub all_outputs: Option<Duration>,
    pub peak_replicas: usize,
    pub peak_running: usize,
    /// Scaled back to zero replicas (the last time).
    pub back_to_zero: Option<Duration>,
    /// The last worker pod gone.
    pub pods_gone: Option<Duration>,
}

/// `+12.345s`, aligned for a column.
pub fn stamp(at: Duration) -> String {
    format!("{:>9}", format!("+{:.3}s", at.as_secs_f64()))
}

/// One line for a milestone (without its time).
pub fn describe(milestone: &Milestone) -> String {
    match milestone {
        Milestone::Scaled { from: 0, to } => format!("workers 0 -> {to}   scaled from zero by the first event"),
        Milestone::Scaled { from, to: 0 } => format!("workers {from} -> 0   idle: back to zero"),
        Milestone::Scaled { from, to } => format!("workers {from} -> {to}"),
        Milestone::Running { count, node: Some(node) } if *count > 0 => {
            format!("worker pods Running: {count} (node {node})")
        }
        Milestone::Running { count, .. } => format!("worker pods Running: {count}"),
        Milestone::FirstOutput => "first output written to the sink".into(),
        Milestone::AllOutputs { count } => format!("all {count} outputs written"),
        Milestone::Failed { count } => format!("objects failed: {count}"),
        Milestone::PodsGone => "no worker pod left".into(),
    }
}

/// What the operator measured itself (from its status and metrics), in seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OperatorFigures {
    /// `status.lastColdStartSeconds`: first object at zero workers -> first lease.
    pub cold_start: Option<f64>,
    /// Mean of `zeroflow_event_to_scale_seconds`: object admitted at zero -> scale-up accepted.
    pub event_to_scale: Option<f64>,
}

/// The closing summary: one line per figure, saying what it measures.
pub fn summary(figures: &Figures, operator: &OperatorFigures, objects: usize, idle_timeout: &str) -> String {
    let secs = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    let since = |from: Option<Duration>, to: Option<Duration>| match (from, to) {
        (Some(from), Some(to)) if to >= from => Some(to - from),
        _ => None,
    };
    let mut out = String::new();
    let mut line = |name: &str, value: String, what: &str| {
        let _ = writeln!(out, "  {name:<15} {value:>9}   {what}");
    };
    line(
        "event to scale",
        secs(figures.event_to_scale),
        "upload started -> worker Deployment scaled 0 -> 1 (seen by a watch)",
    );
    if let Some(op) = operator.event_to_scale {
        line(
            "",
            format!("{:.3} s", op),
            "in the operator: object admitted -> scale-up accepted (zeroflow_event_to_scale_seconds)",
        );
    }
    let cold = operator.cold_start.map_or("-".to_owned(), |c| format!("{c:.2} s"));
    line("cold start", cold, "first object at zero workers -> first lease (status.lastColdStartSeconds)");
    line("first output", secs(figures.first_output), "upload started -> first output in the sink");
    line(
        "pods Running",
        secs(figures.first_running),
        &format!(
            "upload started -> the kubelet reports the first worker pod Running ({} at once)",
            figures.peak_running
        ),
    );
    line("scale out", format!("0 -> {}", figures.peak_replicas), "peak worker replicas the scaler asked for");
    line("all done", secs(figures.all_outputs), &format!("upload started -> all {objects} outputs in the sink"));
    line(
        "time to drain",
        secs(since(figures.all_outputs, figures.back_to_zero)),
        &format!("last output -> 0 workers (idleTimeout {idle_timeout}, then the scale-down window)"),
    );
    line("pods gone", secs(since(figures.back_to_zero, figures.pods_gone)), "0 workers -> last worker pod gone");
    out
}

/// The mean of an unlabelled Prometheus histogram (`NAME_sum / NAME_count`) in a metrics page.
pub fn histogram_mean(page: &str, name: &str) -> Option<f64> {
    let value = |series: String| {
        page.lines().find_map(|l| l.strip_prefix(series.as_str())?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    let (sum, count) = (value(format!("{name}_sum"))?, value(format!("{name}_count"))?);
    (count > 0.0).then(|| sum / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(replicas: i32, running: usize, pods: usize, outputs: usize) -> Snapshot {
        Snapshot { replicas, running, pods, node: (running > 0).then(|| "n1".into()), outputs, failed: 0 }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_run_from_zero_to_n_and_back_gives_every_figure() {
        let mut t = Timeline::new(snap(0, 0, 0, 0), 3);
        assert!(t.observe(ms(10), snap(0, 0, 0, 0)).is_empty(), "nothing changed");
        assert_eq!(t.observe(ms(60), snap(1, 0, 1, 0)), vec![(ms(60), Milestone::Scaled { from: 0, to: 1 })]);
        t.observe(ms(400), snap(2, 0, 2, 0));
        assert_eq!(
            t.observe(ms(1800), snap(2, 1, 2, 0)),
            vec![(ms(1800), Milestone::Running { count: 1, node: Some("n1".into()) })]
        );
        assert_eq!(t.observe(ms(2000), snap(2, 2, 2, 1)).len(), 2, "second pod and first output");
        assert_eq!(t.observe(ms(3000), snap(2, 2, 2, 3)), vec![(ms(3000), Milestone::AllOutputs { count: 3 })]);
        t.observe(ms(63_000), snap(0, 2, 2, 3));
        t.observe(ms(63_500), snap(0, 0, 2, 3));
        assert_eq!(t.observe(ms(64_000), snap(0, 0, 0, 3)), vec![(ms(64_000), Milestone::PodsGone)]);
        let f = t.figures();
        assert_eq!(
            f,
            Figures {
                event_to_scale: Some(ms(60)),
                first_running: Some(ms(1800)),
                first_output: Some(ms(2000)),
                all_outputs: Some(ms(3000)),
                peak_replicas: 2,
                peak_running: 2,
                back_to_zero: Some(ms(63_000)),
                pods_gone: Some(ms(64_000)),
            }
        );
        let operator = OperatorFigures { cold_start: Some(1.9), event_to_scale: Some(0.004) };
        let text = summary(&f, &operator, 3, "60s");
        assert!(text.contains("  event to scale     0.06 s   upload started"), "{text}");
        assert!(text.contains("                   0.004 s   in the operator"), "{text}");
        assert!(text.contains("  cold start         1.90 s   first object at zero workers"), "{text}");
        assert!(text.contains("  pods Running       1.80 s   upload started -> the kubelet reports"), "{text}");
        assert!(text.contains("  time to drain     60.00 s   last output"), "{text}");
        assert!(text.contains("  pods gone          1.00 s   0 workers"), "{text}");
    }

    #[test]
    fn failures_are_milestones_and_missing_figures_print_as_dashes() {
        let mut t = Timeline::new(Snapshot::default(), 2);
        let failed = Snapshot { failed: 2, ..Snapshot::default() };
        assert_eq!(t.observe(ms(5), failed), vec![(ms(5), Milestone::Failed { count: 2 })]);
        let f = t.figures();
        assert_eq!(f.event_to_scale, None);
        let text = summary(&f, &OperatorFigures::default(), 2, "60s");
        assert!(text.contains("event to scale          -   upload"), "{text}");
        assert!(!text.contains("in the operator"), "{text}");
    }

    #[test]
    fn the_mean_of_an_operator_histogram() {
        let page = "# HELP x\nzeroflow_event_to_scale_seconds_bucket{le=\"0.001\"} 0\n\
                    zeroflow_event_to_scale_seconds_sum 0.012\nzeroflow_event_to_scale_seconds_count 3\n";
        let mean = histogram_mean(page, "zeroflow_event_to_scale_seconds").unwrap();
        assert!((mean - 0.004).abs() < 1e-9, "{mean}");
        assert_eq!(histogram_mean("zeroflow_x_sum 0\nzeroflow_x_count 0\n", "zeroflow_x"), None);
        assert_eq!(histogram_mean("", "zeroflow_x"), None);
    }

    #[test]
    fn milestones_read_as_the_scaling_story() {
        assert_eq!(
            describe(&Milestone::Scaled { from: 0, to: 1 }),
            "workers 0 -> 1   scaled from zero by the first event"
        );
        assert_eq!(describe(&Milestone::Scaled { from: 5, to: 0 }), "workers 5 -> 0   idle: back to zero");
        assert_eq!(describe(&Milestone::Scaled { from: 1, to: 5 }), "workers 1 -> 5");
        assert_eq!(stamp(ms(1234)), "  +1.234s");
    }
}
