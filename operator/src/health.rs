//! `/livez`, `/readyz` and `/metrics`.
//!
//! Ready means: the DataPipeline CRD is installed, every watch has synced once, and this
//! replica is the leader. Followers are deliberately not ready, so the Service sends events and
//! lease requests only to the leader.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Default)]
pub struct Readiness {
    crd_installed: AtomicBool,
    leader: AtomicBool,
    watches_pending: AtomicUsize,
    watches_started: AtomicBool,
}

impl Readiness {
    pub fn set_crd_installed(&self) {
        self.crd_installed.store(true, Ordering::SeqCst);
    }
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }
    /// Declares how many watches must sync before the replica is ready.
    pub fn expect_watches(&self, count: usize) {
        self.watches_pending.store(count, Ordering::SeqCst);
        self.watches_started.store(true, Ordering::SeqCst);
    }
    pub fn watch_synced(&self) {
        let _ = self.watches_pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
    /// Why the replica is not ready, or `None` when it is.
    pub fn blocker(&self) -> Option<&'static str> {
        if !self.crd_installed.load(Ordering::SeqCst) {
            Some("the DataPipeline CRD is not installed (kubectl apply -f crds/)")
        } else if !self.leader.load(Ordering::SeqCst) {
            Some("not the leader")
        } else if !self.watches_started.load(Ordering::SeqCst) || self.watches_pending.load(Ordering::SeqCst) > 0 {
            Some("caches are not synced yet")
        } else {
            None
        }
    }
}

#[derive(Clone)]
struct AppState {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

pub fn router(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { readiness, metrics })
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.blocker() {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")),
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.render() {
        Ok(text) => (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_crd_leadership_and_synced_watches() {
        let r = Readiness::default();
        assert!(r.blocker().expect("not ready").contains("CRD"));
        r.set_crd_installed();
        assert_eq!(r.blocker(), Some("not the leader"));
        r.set_leader(true);
        assert_eq!(r.blocker(), Some("caches are not synced yet"));
        r.expect_watches(2);
        r.watch_synced();
        assert_eq!(r.blocker(), Some("caches are not synced yet"));
        r.watch_synced();
        assert_eq!(r.blocker(), None);
        r.set_leader(false);
        assert_eq!(r.blocker(), Some("not the leader"));
    }
}
