//! Resync and backfill: the level-triggered truth behind notifications.
//!
//! Work = source objects that match the pipeline's filter minus those with a ledger marker for
//! their current etag. Both listings come from the store in key order (S3 lists keys in UTF-8
//! binary order; marker names sort like their keys, see `ledger`), so one pass over each, side by
//! side, finds the work in constant memory: neither listing is ever collected, only a page of each
//! is held at a time. Excluded prefixes (the pipeline's outputs and ledger in the same bucket) are
//! jumped over with a `start-after` offset rather than listed.

use std::cmp::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use thiserror::Error;

use crate::backlog::{ObjectId, WorkItem};
use crate::ledger::{Ledger, LedgerError, MAX_KEY_BYTES, MarkerName, MarkerPath, normalize_etag};

/// Which source objects belong to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFilter {
    pub bucket: String,
    /// Any string, not only a "directory".
    pub prefix: String,
    pub suffix: Option<String>,
    /// Prefixes in the source bucket never to process: the pipeline's own outputs and ledger when
    /// they share the bucket. Empty prefixes are ignored.
    pub exclude: Vec<String>,
}

impl SourceFilter {
    /// Whether a key that starts with the prefix and is not excluded is the pipeline's work.
    /// Folder placeholders are never work (see [`crate::events::StorageEvent::is_folder_marker`]).
    fn admits(&self, key: &str) -> bool {
        self.suffix.as_deref().is_none_or(|s| key.ends_with(s)) && !crate::events::is_folder_marker(key)
    }

    fn excluded_by(&self, key: &str) -> Option<&str> {
        if key.starts_with(crate::routing::RESERVED_PREFIX) {
            return Some(crate::routing::RESERVED_PREFIX);
        }
        self.exclude.iter().map(String::as_str).find(|p| !p.is_empty() && key.starts_with(p))
    }

    /// The part of the prefix up to its last `/`: object_store lists whole "directories" only.
    fn list_dir(&self) -> Result<Option<Path>, ResyncError> {
        let dir = self.prefix.rfind('/').map_or("", |i| &self.prefix[..i]);
        if dir.is_empty() {
            return Ok(None);
        }
        match Path::parse(dir) {
            Ok(path) if path.as_ref() == dir => Ok(Some(path)),
            _ => Err(ResyncError::UnlistablePrefix(self.prefix.clone())),
        }
    }
}

/// What the backlog said about a discovered object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It was not known: a notification was missed (or this is a backfill).
    Queued,
    /// Already pending or in flight.
    AlreadyQueued,
    /// The backlog is full: stop; the next resync continues.
    Full,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResyncReport {
    /// Source objects listed, including some outside the filter: those in the listed "directory"
    /// before the prefix, and the first of each excluded range.
    pub listed: u64,
    /// Objects that are the pipeline's work (filter, exclusions and backfill cutoff applied).
    pub matched: u64,
    /// Matching objects with a marker for their current etag (succeeded or failed).
    pub already_done: u64,
    /// Objects without a marker that the backlog did not know.
    pub discovered: u64,
    /// Objects without a marker that were already pending or in flight.
    pub already_queued: u64,
    /// Times the listing jumped past an excluded prefix (outputs, ledger) instead of listing it.
    pub skipped_ranges: u64,
    /// Folder placeholders (keys ending in `/`) passed over: never work.
    pub folder_markers: u64,
    /// False when the backlog filled up and the pass stopped early.
    pub complete: bool,
    pub took: Duration,
}

#[derive(Debug, Error)]
pub enum ResyncError {
    #[error("source prefix {0:?} cannot be listed: object_store refuses empty, `.` or `..` segments")]
    UnlistablePrefix(String),
    /// Includes keys object_store cannot represent (`..` or empty segments): the page fails.
    #[error("listing the source failed")]
    List(#[source] object_store::Error),
    #[error("reading the ledger failed")]
    Ledger(#[from] LedgerError),
    #[error("the {0} listing is not in key order; the store does not list like S3")]
    Unsorted(&'static str),
}

/// Finds the pipeline's unfinished objects and hands each to `admit` (the caller maps it to
/// `Backlog::admit`). With a `cutoff` (no backfill), objects last modified before it are skipped.
pub async fn resync(
    source: &dyn ObjectStore,
    filter: &SourceFilter,
    ledger: &Ledger,
    cutoff: Option<SystemTime>,
    mut admit: impl FnMut(WorkItem) -> Admission,
) -> Result<ResyncReport, ResyncError> {
    let started = Instant::now();
    let cutoff_ms = cutoff.map(system_time_millis);
    let mut report = ResyncReport { complete: true, ..ResyncReport::default() };
    let dir = filter.list_dir()?;
    let mut listing = source.list(dir.as_ref());
    let mut markers = MarkerCursor::new(ledger.list_from(&filter.prefix));
    let mut previous: Option<String> = None;
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(ResyncError::List)?;
        let key = meta.location.as_ref();
        if let Some(p) = previous.as_deref()
            && p >= key
        {
            // object_store lists a folder placeholder `a/` as `a`, which can sort before keys
            // S3 listed ahead of it (`a-1` < `a/`, but `a` < `a-1`): that one is skipped; any
            // other disorder means the store does not list like S3.
            if p.starts_with(key) && meta.size == 0 {
                report.folder_markers += 1;
                continue;
            }
            return Err(ResyncError::Unsorted("source"));
        }
        report.listed += 1;
        if !key.starts_with(filter.prefix.as_str()) {
            // Keys with the prefix are one contiguous run of the sorted listing.
            if key > filter.prefix.as_str() {
                break;
            }
            previous = Some(key.to_owned());
            continue;
        }
        if let Some(excluded) = filter.excluded_by(key) {
            // Outputs and markers can outnumber the sources many times over: jump past them.
            let past = skip_past(excluded);
            if past.as_str() > key
                && let Ok(offset) = Path::parse(&past)
            {
                report.skipped_ranges += 1;
                listing = crate::listing::list_after(source, dir.as_ref(), &offset);
            }
            previous = Some(meta.location.into());
            continue;
        }
        let in_time = cutoff_ms.is_none_or(|c| meta.last_modified.timestamp_millis() >= c);
        if filter.admits(key) && in_time {
            // A zero-byte entry may be a folder placeholder `a/` listed as `a`: only a real
            // object of that name is work (one HEAD, for empty objects only).
            if meta.size == 0 && !exists(source, &meta.location).await? {
                report.folder_markers += 1;
                previous = Some(meta.location.into());
                continue;
            }
            report.matched += 1;
            let etag = normalize_etag(meta.e_tag.as_deref());
            let done = match ledger.path_of(key, Some(&etag)) {
                MarkerPath::Plain(_) => markers.has(key, &etag).await?,
                // Not in the sorted listing: ask for it by name.
                MarkerPath::Hashed(_) => ledger.contains(key, Some(&etag)).await?,
            };
            if done {
                report.already_done += 1;
            } else {
                let item = WorkItem {
                    object: ObjectId::new(filter.bucket.as_str(), key),
                    etag: (!etag.is_empty()).then(|| etag.into_owned()),
                    version_id: meta.version.clone(),
                    size: Some(meta.size),
                    sequencer: None,
                };
                match admit(item) {
                    Admission::Queued => report.discovered += 1,
                    Admission::AlreadyQueued => report.already_queued += 1,
                    Admission::Full => {
                        report.complete = false;
                        break;
                    }
                }
            }
        }
        previous = Some(meta.location.into());
    }
    report.took = started.elapsed();
    Ok(report)
}

/// Whether an object exists under exactly this name.
async fn exists(source: &dyn ObjectStore, path: &Path) -> Result<bool, ResyncError> {
    match source.head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(ResyncError::List(e)),
    }
}

/// A `start-after` offset at or after every key (of at most 1024 bytes) that starts with
/// `prefix`, and before every larger key that does not: the prefix followed by the largest
/// character. A key that still sorts after it (a few bytes longer) is merely listed, not skipped.
fn skip_past(prefix: &str) -> String {
    let mut offset = prefix.to_owned();
    while offset.len() + char::MAX.len_utf8() <= MAX_KEY_BYTES {
        offset.push(char::MAX);
    }
    offset
}

fn system_time_millis(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The ledger side of the merge-join: a read position in the sorted marker listing.
struct MarkerCursor {
    stream: BoxStream<'static, Result<MarkerName, LedgerError>>,
    head: Option<MarkerName>,
    previous: Option<MarkerName>,
    exhausted: bool,
}

impl MarkerCursor {
    fn new(stream: BoxStream<'static, Result<MarkerName, LedgerError>>) -> Self {
        Self { stream, head: None, previous: None, exhausted: false }
    }

    /// Whether a marker for `(key, etag)` exists. Keys must be asked in increasing order; markers
    /// of smaller keys are passed over (their objects are gone or outside the filter).
    async fn has(&mut self, key: &str, etag: &str) -> Result<bool, ResyncError> {
        let mut found = false;
        loop {
            if self.head.is_none() {
                if self.exhausted {
                    return Ok(found);
                }
                match self.stream.next().await {
                    None => {
                        self.exhausted = true;
                        return Ok(found);
                    }
                    Some(name) => {
                        let name = name?;
                        if self.previous.as_ref().is_some_and(|p| *p >= name) {
                            return Err(ResyncError::Unsorted("ledger"));
                        }
                        self.head = Some(name);
                    }
                }
            }
            let Some(head) = self.head.as_ref() else { continue };
            match head.key.as_str().cmp(key) {
                Ordering::Greater => return Ok(found),
                Ordering::Equal => found |= head.etag == etag,
                Ordering::Less => {}
            }
            self.previous = self.head.take();
        }
    }
}

#[cfg(test)]
mod tests;
