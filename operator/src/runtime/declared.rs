//! What the DataPipeline caches say exists, so that a new leader can tell a pipeline it has not
//! loaded yet (its workers should retry: 503) from one that does not exist (404).
//!
//! A leader starts with no runtimes: each appears when the controller first reconciles its
//! DataPipeline, seconds after the leader's work API is already answering workers that were
//! busy under the previous leader. Without this, those workers were told "no such pipeline".

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use zeroflow_core::PipelineKey;

/// The declared pipelines, per watch scope (a namespace, or `None` for all), as each
/// controller's cache last listed them. Written by the controllers' prune loops only.
#[derive(Debug, Default)]
pub struct Declared {
    /// How many watch scopes will report; until each has, nothing can be called missing.
    expected: RwLock<usize>,
    scopes: RwLock<HashMap<Option<String>, BTreeSet<PipelineKey>>>,
}

/// Whether a pipeline without a runtime is worth waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Declared (or the caches have not all listed yet): its runtime is on its way.
    Loading,
    /// No cache that covers it declares it.
    Missing,
}

impl Declared {
    /// Sets how many watch scopes (controllers) will call [`Declared::declare`]. With 0 (the
    /// default, as in tests without controllers) every unknown pipeline is [`Lookup::Missing`].
    pub fn expect_scopes(&self, count: usize) {
        *self.expected.write().unwrap_or_else(PoisonError::into_inner) = count;
    }

    /// Records what the cache of watch scope `namespace` lists now.
    pub fn declare(&self, namespace: Option<&str>, keys: BTreeSet<PipelineKey>) {
        self.scopes.write().unwrap_or_else(PoisonError::into_inner).insert(namespace.map(str::to_owned), keys);
    }

    pub fn lookup(&self, key: &PipelineKey) -> Lookup {
        let expected = *self.expected.read().unwrap_or_else(PoisonError::into_inner);
        let scopes = self.scopes.read().unwrap_or_else(PoisonError::into_inner);
        if scopes.len() < expected {
            return Lookup::Loading;
        }
        let declared = scopes
            .iter()
            .any(|(scope, keys)| scope.as_deref().is_none_or(|ns| ns == key.namespace) && keys.contains(key));
        if declared { Lookup::Loading } else { Lookup::Missing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> PipelineKey {
        PipelineKey::new(ns, name)
    }

    #[test]
    fn nothing_is_missing_until_every_scope_has_listed() {
        let declared = Declared::default();
        declared.expect_scopes(2);
        assert_eq!(declared.lookup(&key("a", "p")), Lookup::Loading);
        declared.declare(Some("a"), BTreeSet::from([key("a", "p")]));
        assert_eq!(declared.lookup(&key("b", "q")), Lookup::Loading, "scope b has not listed yet");
        declared.declare(Some("b"), BTreeSet::new());
        assert_eq!(declared.lookup(&key("a", "p")), Lookup::Loading, "declared, runtime on its way");
        assert_eq!(declared.lookup(&key("b", "q")), Lookup::Missing);
        assert_eq!(declared.lookup(&key("c", "r")), Lookup::Missing, "no scope watches c");
    }

    #[test]
    fn a_deleted_pipeline_becomes_missing_at_the_next_listing() {
        let declared = Declared::default();
        declared.expect_scopes(1);
        declared.declare(None, BTreeSet::from([key("a", "p")]));
        assert_eq!(declared.lookup(&key("a", "p")), Lookup::Loading);
        declared.declare(None, BTreeSet::new());
        assert_eq!(declared.lookup(&key("a", "p")), Lookup::Missing);
    }

    #[test]
    fn without_controllers_every_unknown_pipeline_is_missing() {
        assert_eq!(Declared::default().lookup(&key("a", "p")), Lookup::Missing);
    }
}
