//! Which pipelines feed which: a pipeline whose sink can produce keys that another pipeline's
//! source filter takes feeds it. Chains are fine; a cycle would run forever (each hop writes new
//! keys, which are new work for the next). AWS added recursive-loop detection to Lambda for the
//! same reason ("Use Lambda recursive loop detection to prevent infinite loops", AWS Lambda
//! Developer Guide). Here cycles are found from the specs, before anything runs: the newest
//! pipeline of a cycle (the one that closed it) is stopped. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::PipelineKey;

/// What lineage needs of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub key: PipelineKey,
    /// When it was created: the newest of a cycle is the one stopped.
    pub created: Option<SystemTime>,
    pub source_bucket: String,
    pub source_prefix: String,
    /// Prefixes the source never takes although they start with `source_prefix`: its own sink
    /// and ledger when they share its bucket ([`crate::routing::Route`]'s `exclude_prefixes`).
    pub source_excludes: Vec<String>,
    pub sink_bucket: String,
    /// Outputs are `<sink prefix><input key>/<name>`.
    pub sink_prefix: String,
}

/// Whether `a`'s outputs can be `b`'s inputs. Outputs start with `a`'s sink prefix followed by
/// any input key, and the transform names them freely, so only the prefixes can rule a match
/// out: the sink prefix and the source prefix must not diverge, and `b` must not exclude every
/// key `a` writes (two pipelines on one bucket with the default sink `zeroflow-output/` both skip
/// that prefix, so neither sees the other's outputs). A pipeline never feeds itself (its own
/// outputs and ledger are excluded from its route).
pub fn feeds(a: &Stage, b: &Stage) -> bool {
    a.key != b.key
        && a.sink_bucket == b.source_bucket
        && (b.source_prefix.starts_with(&a.sink_prefix) || a.sink_prefix.starts_with(&b.source_prefix))
        && !b.source_excludes.iter().any(|e| !e.is_empty() && a.sink_prefix.starts_with(e.as_str()))
}

/// A cycle and the pipeline stopped to break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// Every pipeline on the cycle, in flow order starting from the stopped one.
    pub members: Vec<PipelineKey>,
    pub stopped: PipelineKey,
}

impl Cycle {
    /// `a -> b -> c -> a`, for messages.
    pub fn describe(&self) -> String {
        let mut path: Vec<String> = self.members.iter().map(ToString::to_string).collect();
        path.push(self.stopped.to_string());
        path.join(" -> ")
    }
}

/// The cycles among `stages` (strongly connected groups of two or more), each with its newest
/// member stopped (the latest `created`, then the greatest key, so the choice is stable).
pub fn cycles(stages: &[Stage]) -> Vec<Cycle> {
    let edges: Vec<Vec<usize>> = stages
        .iter()
        .map(|a| stages.iter().enumerate().filter(|(_, b)| feeds(a, b)).map(|(j, _)| j).collect())
        .collect();
    let mut found = Vec::new();
    for component in strongly_connected(&edges) {
        if component.len() < 2 {
            continue;
        }
        let Some(&stopped) = component
            .iter()
            .max_by(|&&x, &&y| (stages[x].created, &stages[x].key).cmp(&(stages[y].created, &stages[y].key)))
        else {
            continue;
        };
        let members = flow_order(stopped, &component, &edges);
        found.push(Cycle {
            members: members.into_iter().map(|i| stages[i].key.clone()).collect(),
            stopped: stages[stopped].key.clone(),
        });
    }
    found.sort_by(|a, b| a.stopped.cmp(&b.stopped));
    found
}

/// A walk from `start` through the component back to it (a shortest cycle through `start`).
fn flow_order(start: usize, component: &BTreeSet<usize>, edges: &[Vec<usize>]) -> Vec<usize> {
    // Breadth-first from start's successors back to start, inside the component.
    let mut previous: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = BTreeSet::from([start]);
    while let Some(at) = queue.pop_front() {
        for &next in &edges[at] {
            if !component.contains(&next) {
                continue;
            }
            if next == start {
                let mut path = vec![at];
                let mut cursor = at;
                while cursor != start {
                    cursor = previous[&cursor];
                    path.push(cursor);
                }
                path.reverse();
                return path;
            }
            if seen.insert(next) {
                previous.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    vec![start]
}

/// Tarjan's strongly connected components over an adjacency list.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<BTreeSet<usize>> {
    struct Walk<'a> {
        edges: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<BTreeSet<usize>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.edges[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(index) if self.on_stack[w] => self.low[v] = self.low[v].min(index),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.insert(w);
                    if w == v {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
    let n = edges.len();
    let mut walk = Walk {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if walk.index[v].is_none() {
            walk.visit(v);
        }
    }
    walk.components
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn stage(name: &str, created: u64, source: (&str, &str), sink: (&str, &str)) -> Stage {
        Stage {
            key: PipelineKey::new("team-a", name),
            created: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(created)),
            source_bucket: source.0.into(),
            source_prefix: source.1.into(),
            source_excludes: if source.0 == sink.0 { vec![sink.1.into()] } else { vec![] },
            sink_bucket: sink.0.into(),
            sink_prefix: sink.1.into(),
        }
    }

    #[test]
    fn a_chain_is_fine_and_closing_it_stops_the_newest() {
        let a = stage("stage-a", 1, ("in-bucket", "incoming/"), ("mid-bucket", "zeroflow-output/"));
        let b = stage("stage-b", 2, ("mid-bucket", ""), ("out-bucket", "zeroflow-output/"));
        assert!(feeds(&a, &b) && !feeds(&b, &a));
        assert!(cycles(&[a.clone(), b.clone()]).is_empty(), "a chain");
        // Case 08: stage-c writes back into stage-a's source prefix.
        let c = stage("stage-c", 3, ("out-bucket", ""), ("in-bucket", "incoming/"));
        let found = cycles(&[a, b, c]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].stopped.name, "stage-c");
        assert_eq!(found[0].describe(), "team-a/stage-c -> team-a/stage-a -> team-a/stage-b -> team-a/stage-c");
    }

    #[test]
    fn prefixes_that_diverge_break_the_edge() {
        let a = stage("a", 1, ("raw", "in/"), ("raw", "out/"));
        let b = stage("b", 2, ("raw", "out/csv/"), ("raw", "in/"));
        // a's outputs are out/<key>/<name>: out/csv/... is possible, so a feeds b; b writes
        // in/<key>/...: a's source. A cycle.
        assert!(feeds(&a, &b) && feeds(&b, &a));
        assert_eq!(cycles(&[a.clone(), b.clone()])[0].stopped.name, "b");
        let c = stage("c", 3, ("raw", "archive/"), ("raw", "in/"));
        assert!(!feeds(&a, &c), "out/ never starts with archive/");
        assert!(cycles(&[a, c]).is_empty());
    }

    #[test]
    fn two_pipelines_feeding_each_other_across_namespaces() {
        let mut a = stage("a", 5, ("x", ""), ("y", "o/"));
        a.key = PipelineKey::new("team-a", "a");
        let mut b = stage("b", 4, ("y", ""), ("x", "o/"));
        b.key = PipelineKey::new("team-b", "b");
        let found = cycles(&[a, b]);
        assert_eq!(found[0].stopped, PipelineKey::new("team-a", "a"), "the newest");
    }

    #[test]
    fn pipelines_sharing_a_bucket_and_the_default_sink_do_not_feed_each_other() {
        // Both take the whole bucket and write to zeroflow-output/, which both skip: found in
        // CI as a false cycle between two pipelines of one test namespace.
        let a = stage("a", 1, ("raw", ""), ("raw", "zeroflow-output/"));
        let b = stage("b", 2, ("raw", ""), ("raw", "zeroflow-output/"));
        assert!(!feeds(&a, &b) && !feeds(&b, &a));
        assert!(cycles(&[a.clone(), b]).is_empty());
        // A sink under another prefix is still seen by the other pipeline, which writes back.
        let c = stage("c", 3, ("raw", ""), ("raw", "derived/"));
        assert!(feeds(&c, &a), "a takes derived/");
        // a writes zeroflow-output/, which c does not skip: a cycle, c (the newest) stopped.
        assert!(feeds(&a, &c));
        assert_eq!(cycles(&[a, c])[0].stopped.name, "c");
    }

    proptest! {
        /// Stopping the chosen pipeline of every cycle leaves no cycle.
        #[test]
        fn stopping_the_chosen_pipelines_breaks_every_cycle(
            specs in prop::collection::vec((0..3u8, 0..3u8, 0..3u8, 0..3u8, 0..100u64), 1..8)
        ) {
            let prefixes = ["", "a/", "a/b/"];
            let stages: Vec<Stage> = specs
                .iter()
                .enumerate()
                .map(|(i, (sb, sp, kb, kp, created))| {
                    let mut s = stage(&format!("p{i}"), *created, ("", prefixes[*sp as usize]), ("", prefixes[*kp as usize]));
                    s.source_bucket = format!("b{sb}");
                    s.sink_bucket = format!("b{kb}");
                    if sb != kb {
                        s.source_excludes.clear();
                    }
                    s
                })
                .collect();
            let mut remaining = stages.clone();
            for _ in 0..stages.len() {
                let found = cycles(&remaining);
                if found.is_empty() {
                    break;
                }
                for cycle in &found {
                    prop_assert!(cycle.members.contains(&cycle.stopped));
                    prop_assert!(cycle.members.len() >= 2);
                }
                remaining.retain(|s| !found.iter().any(|c| c.stopped == s.key));
            }
            prop_assert!(cycles(&remaining).is_empty());
        }
    }
}
