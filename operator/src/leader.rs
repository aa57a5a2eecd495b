//! Leader election with a coordination.k8s.io Lease: only the leader reconciles and writes.
//!
//! kube-lease-manager competes for and renews the Lease. On its own it stays "leader" while it
//! cannot reach the apiserver, and learns of a takeover only once a request gets through again,
//! so a replica cut off from the apiserver (or starved of CPU) could go on scaling and leasing
//! after a follower took over: two leaders. This module adds client-go's renew deadline
//! (`k8s.io/client-go/tools/leaderelection`, `RenewDeadline`): a [`fence`] reads the Lease every
//! second and declares the leadership lost once this replica cannot show a renewal that keeps the
//! Lease valid for at least [`fence_margin`] more, before any follower may take it (a follower
//! takes an expired Lease only after `renewTime + leaseDurationSeconds`).

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};

/// How often the fence reads the Lease.
const FENCE_PERIOD: Duration = Duration::from_secs(1);

/// How long before the Lease could expire the leadership is given up, so that a write already on
/// its way ends before a follower can take over: a fifth of the Lease's duration, at most 2 s.
pub fn fence_margin(duration: Duration) -> Duration {
    (duration / 5).min(Duration::from_secs(2))
}

/// Seconds before expiry kube-lease-manager renews (its "grace"): at a third of the Lease's
/// life, so the fence sees each renewal long before its own deadline even when a renewal takes
/// a few seconds (client-go renews every 2 s of a 15 s Lease).
pub fn renew_grace_seconds(duration_seconds: u64) -> u64 {
    (duration_seconds * 2 / 3).max(1)
}

pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
    fence: Fence,
}

/// What the fence needs to read the Lease.
#[derive(Clone)]
struct Fence {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Leadership {
    /// Joins the election; the returned handle keeps competing (and renewing) in the background.
    pub async fn join(
        client: Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        duration_seconds: u64,
    ) -> Result<Self, LeaseManagerError> {
        let grace = renew_grace_seconds(duration_seconds);
        let manager = LeaseManagerBuilder::new(client.clone(), lease_name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_grace(grace)
            .with_duration(duration_seconds)
            .build()
            .await?;
        let (state, task) = manager.watch().await;
        let fence = Fence {
            api: Api::namespaced(client, namespace),
            name: lease_name.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(duration_seconds),
        };
        Ok(Self { state, task, fence })
    }

    /// Resolves once this replica leads.
    pub async fn acquired(&mut self) {
        let _ = self.state.wait_for(|leader| *leader).await;
    }

    /// Resolves when this replica stops leading, the election task ends, or the fence can no
    /// longer show that the Lease is this replica's (call it once leading: the fence's clock
    /// starts at the call).
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut state = self.state.clone();
        let fence = self.fence.clone();
        async move {
            tokio::select! {
                _ = state.wait_for(|leader| !*leader) => {}
                () = fence.run() => {}
            }
        }
    }

    /// Gives the lease up at once, so a follower can take over without waiting for expiry.
    pub async fn release(self) {
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "failed to release the leader lease"),
            Err(e) => tracing::warn!(error = %e, "leader election task failed"),
        }
    }
}

impl Fence {
    /// Returns once this replica must stop acting as the leader.
    async fn run(self) {
        // Just acquired (or renewed): valid for a whole duration from about now.
        let margin = fence_margin(self.duration);
        let mut deadline = Instant::now() + self.duration.saturating_sub(margin);
        loop {
            tokio::time::sleep(FENCE_PERIOD).await;
            match tokio::time::timeout(FENCE_PERIOD, self.api.get(&self.name)).await {
                Ok(Ok(lease)) => {
                    let spec = lease.spec.unwrap_or_default();
                    if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                        error!(holder = ?spec.holder_identity, "the leader lease is held by another replica");
                        return;
                    }
                    let renewed = spec.renew_time.map(|t| SystemTime::from(t.0));
                    if let Some(left) = valid_for(renewed, self.duration, SystemTime::now()) {
                        deadline = deadline.max(Instant::now() + left.saturating_sub(margin));
                    }
                }
                Ok(Err(e)) => warn!(error = %e, "cannot read the leader lease"),
                Err(_) => warn!("reading the leader lease timed out"),
            }
            if Instant::now() >= deadline {
                error!(
                    margin_ms = margin.as_millis(),
                    "no renewal of the leader lease seen in time: stepping down before a follower may take over"
                );
                return;
            }
        }
    }
}

/// How much longer a Lease renewed at `renewed` (this replica's clock wrote it) stays valid at
/// `now`; `None` without a renewal time. A renewal time in the future counts as now.
fn valid_for(renewed: Option<SystemTime>, duration: Duration, now: SystemTime) -> Option<Duration> {
    let age = now.duration_since(renewed?).unwrap_or(Duration::ZERO);
    Some(duration.saturating_sub(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_valid_for_its_duration_after_the_renewal() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let d = Duration::from_secs(10);
        assert_eq!(valid_for(Some(t0), d, t0), Some(d));
        assert_eq!(valid_for(Some(t0), d, t0 + Duration::from_secs(7)), Some(Duration::from_secs(3)));
        assert_eq!(valid_for(Some(t0), d, t0 + Duration::from_secs(12)), Some(Duration::ZERO));
        // Written a moment "after" now (clock steps): valid for the whole duration, not more.
        assert_eq!(valid_for(Some(t0 + Duration::from_secs(1)), d, t0), Some(d));
        assert_eq!(valid_for(None, d, t0), None);
    }

    #[test]
    fn the_renewal_comes_well_before_the_fence_gives_up() {
        // For every Lease duration the operator accepts (--leader-election-lease-seconds), a
        // renewal is seen (one fence period after it) before the fence gives up, and the fence
        // gives up before a follower may take over.
        for seconds in 5..=300 {
            let duration = Duration::from_secs(seconds);
            let renewed_after = Duration::from_secs(seconds - renew_grace_seconds(seconds));
            let give_up = duration - fence_margin(duration);
            assert!(renewed_after + FENCE_PERIOD < give_up, "{seconds} s: a healthy leader would step down");
            assert!(give_up < duration, "{seconds} s: the fence must act before a follower may");
        }
    }
}
