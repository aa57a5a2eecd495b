//! The short chaos schedule (issue #14): three minutes of uploads into three pipelines while the
//! leader is killed every 30 s (two replicas), worker pods are deleted, runners are SIGKILLed,
//! MinIO and the apiserver are restarted, one pipeline loses notifications at every leader change
//! (MinIO's queue-less target) and objects fail or hang on purpose. The history must be clean:
//! every revision that exists has exactly its one marker, outputs are the transform's, nothing
//! ran after it completed, no busy runner was stopped by a scale-down, every pipeline is back at
//! zero. The seed is printed; `ZF_CHAOS_SEED=<n>` replays a schedule. `e2e/bench/chaos` is the
//! long run: with `ZF_CHAOS_MINUTES=<n>` this test runs the long schedule instead.

use zeroflow_e2e::chaos::schedule::FaultKind;
use zeroflow_e2e::chaos::{ChaosConfig, run, seed_from_env};
use zeroflow_e2e::pipelines::WEBHOOK;

#[tokio::test]
async fn every_fault_at_once_loses_nothing_and_redoes_nothing_completed() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let config = match std::env::var("ZF_CHAOS_MINUTES").ok().and_then(|m| m.parse().ok()) {
        Some(minutes) => ChaosConfig::long(seed_from_env(), minutes),
        None => ChaosConfig::short(seed_from_env()),
    };
    let report = run(&config).await?;
    let failures = report.verdict.failures();
    assert!(failures.is_empty(), "{}\n{}", report.summary, failures.join("\n"));
    assert!(report.drained, "not every revision got a marker: {}", report.summary);
    assert!(report.not_at_zero.is_empty(), "{}", report.summary);
    for kind in FaultKind::ALL {
        assert!(report.injected.get(&kind).copied().unwrap_or(0) > 0, "no {kind} was injected: {}", report.summary);
    }
    // The run did what it says: hundreds of revisions checked, failures and hangs among them.
    assert!(report.verdict.revisions >= 400, "{}", report.summary);
    assert!(report.verdict.failed > 0 && report.verdict.succeeded > 0, "{}", report.summary);
    Ok(())
}
