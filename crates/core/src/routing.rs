//! Which pipelines an event feeds. Pure: the controller rebuilds the [`RouteTable`] from the
//! `DataPipeline`s it sees and swaps it in; the gateway only reads it.

use std::collections::HashMap;

use thiserror::Error;

use crate::PipelineKey;
use crate::events::StorageEvent;

/// Every key under this prefix, in any bucket, belongs to zeroflow (ledgers live under
/// `.zeroflow/ledger/` by default) and is never work for any pipeline.
pub const RESERVED_PREFIX: &str = ".zeroflow/";

/// One pipeline's source filter. Matching is byte-exact and case-sensitive, like S3's own filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub namespace: String,
    pub name: String,
    pub bucket: String,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    /// Keys under these prefixes are never routed to this pipeline: its own outputs (when the sink
    /// is the source bucket) and its ledger, so a pipeline never feeds on itself.
    pub exclude_prefixes: Vec<String>,
}

/// Where a pipeline writes, for computing its exclusions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    /// Writing anywhere in the source bucket would make every output an input again.
    #[error(
        "{what} writes to the source bucket {bucket:?} without a prefix, so the pipeline would consume its own output"
    )]
    WritesOverSource { what: &'static str, bucket: String },
}

impl Route {
    /// A pipeline's route with its own sink and ledger excluded when they share the source bucket.
    pub fn for_pipeline(
        pipeline: &PipelineKey,
        source: Location<'_>,
        suffix: Option<&str>,
        sink: Location<'_>,
        ledger: Location<'_>,
    ) -> Result<Self, RouteError> {
        let mut exclude_prefixes = Vec::new();
        for (what, place) in [("the sink", sink), ("the ledger", ledger)] {
            if place.bucket != source.bucket {
                continue;
            }
            if place.prefix.is_empty() {
                return Err(RouteError::WritesOverSource { what, bucket: source.bucket.to_owned() });
            }
            exclude_prefixes.push(place.prefix.to_owned());
        }
        Ok(Self {
            namespace: pipeline.namespace.clone(),
            name: pipeline.name.clone(),
            bucket: source.bucket.to_owned(),
            prefix: Some(source.prefix.to_owned()).filter(|p| !p.is_empty()),
            suffix: suffix.map(str::to_owned).filter(|s| !s.is_empty()),
            exclude_prefixes,
        })
    }

    pub fn key(&self) -> PipelineKey {
        PipelineKey::new(self.namespace.clone(), self.name.clone())
    }

    /// Whether this route takes an object (bucket and key), ignoring the event kind.
    pub fn matches(&self, bucket: &str, key: &str) -> bool {
        bucket == self.bucket
            && !key.starts_with(RESERVED_PREFIX)
            && self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
            && !self.exclude_prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// All routes, indexed by bucket so a lookup costs the routes of one bucket, not all of them.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_bucket: HashMap<String, Vec<Indexed>>,
}

/// A route with its pipeline's key made once, so a lookup hands out references instead of
/// building keys for every event.
#[derive(Debug, Clone)]
struct Indexed {
    key: PipelineKey,
    route: Route,
}

impl RouteTable {
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        let mut by_bucket: HashMap<String, Vec<Indexed>> = HashMap::new();
        for route in routes {
            by_bucket.entry(route.bucket.clone()).or_default().push(Indexed { key: route.key(), route });
        }
        for routes in by_bucket.values_mut() {
            routes.sort_by(|a, b| a.key.cmp(&b.key));
            routes.dedup_by(|a, b| a.key == b.key);
        }
        Self { by_bucket }
    }

    pub fn len(&self) -> usize {
        self.by_bucket.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_bucket.is_empty()
    }

    /// Every pipeline whose filter takes the event's object, in a stable order.
    pub fn routes_for(&self, event: &StorageEvent) -> Vec<PipelineKey> {
        self.matching(event).cloned().collect()
    }

    /// [`Self::routes_for`] without allocating: the gateway's path, once per event.
    pub fn matching<'t>(&'t self, event: &'t StorageEvent) -> impl Iterator<Item = &'t PipelineKey> + 't {
        self.by_bucket
            .get(&event.bucket)
            .into_iter()
            .flatten()
            .filter(|r| r.route.matches(&event.bucket, &event.key))
            .map(|r| &r.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    fn event(bucket: &str, key: &str) -> StorageEvent {
        StorageEvent {
            kind: EventKind::Created,
            bucket: bucket.into(),
            key: key.into(),
            etag: Some("e".into()),
            version_id: None,
            size: Some(1),
            sequencer: None,
            time: None,
        }
    }

    fn route(name: &str, bucket: &str, prefix: Option<&str>, suffix: Option<&str>) -> Route {
        Route {
            namespace: "ns".into(),
            name: name.into(),
            bucket: bucket.into(),
            prefix: prefix.map(Into::into),
            suffix: suffix.map(Into::into),
            exclude_prefixes: vec![],
        }
    }

    #[test]
    fn fans_out_to_every_matching_pipeline() {
        let table = RouteTable::new([
            route("all", "raw", None, None),
            route("csv", "raw", Some("in/"), Some(".csv")),
            route("json", "raw", Some("in/"), Some(".json")),
            route("other-bucket", "curated", None, None),
        ]);
        let keys: Vec<String> = table.routes_for(&event("raw", "in/a.csv")).iter().map(|k| k.name.clone()).collect();
        assert_eq!(keys, ["all", "csv"]);
        assert!(table.routes_for(&event("nope", "in/a.csv")).is_empty());
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn matching_is_exact_and_case_sensitive() {
        let r = route("csv", "raw", Some("in/"), Some(".csv"));
        assert!(!r.matches("raw", "IN/a.csv"));
        assert!(!r.matches("raw", "in/a.CSV"));
        assert!(!r.matches("Raw", "in/a.csv"));
        assert!(r.matches("raw", "in/../a.csv"), "keys are not normalized");
        assert!(r.matches("raw", "in/.csv"));
    }

    #[test]
    fn a_pipeline_never_consumes_its_own_output_or_ledger() {
        let key = PipelineKey::new("finance", "invoices");
        let r = Route::for_pipeline(
            &key,
            Location { bucket: "raw", prefix: "" },
            None,
            Location { bucket: "raw", prefix: "out/" },
            Location { bucket: "raw", prefix: ".zeroflow/finance/invoices/" },
        )
        .expect("valid");
        assert_eq!(r.exclude_prefixes, ["out/", ".zeroflow/finance/invoices/"]);
        let table = RouteTable::new([r]);
        assert_eq!(table.routes_for(&event("raw", "in/a.csv")), [key]);
        assert!(table.routes_for(&event("raw", "out/a.parquet")).is_empty());
        assert!(table.routes_for(&event("raw", ".zeroflow/finance/invoices/done/a")).is_empty());
    }

    #[test]
    fn zeroflow_s_own_keys_are_never_work_for_any_pipeline() {
        let r = route("all", "raw", None, None);
        assert!(!r.matches("raw", ".zeroflow/ledger/other-team/stage-a/k/abc!def"));
        assert!(!r.matches("raw", ".zeroflow/anything"));
        assert!(r.matches("raw", ".zeroflowish/a.csv"), "only the reserved prefix");
    }

    #[test]
    fn a_sink_elsewhere_excludes_nothing() {
        let key = PipelineKey::new("ns", "p");
        let r = Route::for_pipeline(
            &key,
            Location { bucket: "raw", prefix: "in/" },
            Some(".csv"),
            Location { bucket: "curated", prefix: "" },
            Location { bucket: "ledger", prefix: "p/" },
        )
        .expect("valid");
        assert!(r.exclude_prefixes.is_empty());
        assert_eq!((r.prefix.as_deref(), r.suffix.as_deref()), (Some("in/"), Some(".csv")));
    }

    #[test]
    fn a_sink_over_the_whole_source_bucket_is_refused() {
        let err = Route::for_pipeline(
            &PipelineKey::new("ns", "p"),
            Location { bucket: "raw", prefix: "" },
            None,
            Location { bucket: "raw", prefix: "" },
            Location { bucket: "ledger", prefix: "p/" },
        )
        .expect_err("refused");
        assert!(matches!(err, RouteError::WritesOverSource { what: "the sink", .. }));
    }

    #[test]
    fn duplicate_routes_collapse() {
        let table = RouteTable::new([route("a", "raw", None, None), route("a", "raw", None, None)]);
        assert_eq!(table.routes_for(&event("raw", "k")).len(), 1);
    }
}
