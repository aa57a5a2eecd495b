use proptest::prelude::*;

use super::*;

fn config() -> BacklogConfig {
    BacklogConfig {
        capacity: 4,
        finished_capacity: 3,
        max_attempts: 3,
        lease_duration_ms: 100,
        backoff_base_ms: 10,
        backoff_max_ms: 25,
    }
}

fn item(key: &str, etag: &str) -> WorkItem {
    WorkItem {
        object: ObjectId { bucket: "b".into(), key: key.into() },
        etag: Some(etag.into()),
        version_id: None,
        size: Some(1),
        sequencer: None,
    }
}

fn with_seq(mut item: WorkItem, seq: &str) -> WorkItem {
    item.sequencer = Some(seq.into());
    item
}

fn checked(b: &Backlog) {
    if let Err(e) = b.check_invariants() {
        panic!("invariant broken: {e}");
    }
}

#[test]
fn admit_then_lease_then_complete() {
    let mut b = Backlog::new(config());
    assert_eq!(b.admit(item("a", "1"), 0), Ok(Admitted::New));
    assert_eq!(b.counts(), Counts { pending: 1, in_flight: 0, succeeded: 0, failed: 0, skipped: 0 });
    let lease = b.lease(5).expect("leased");
    assert_eq!((lease.attempt, lease.deadline, &*lease.item.object.key), (1, 105, "a"));
    assert_eq!(b.counts().in_flight, 1);
    assert!(b.lease(5).is_none(), "nothing else pending");
    b.complete(lease.id).expect("held");
    assert_eq!(b.counts(), Counts { pending: 0, in_flight: 0, succeeded: 1, failed: 0, skipped: 0 });
    assert!(b.is_idle());
    assert_eq!(b.complete(lease.id), Err(LeaseError::NotHeld(lease.id)));
    checked(&b);
}

#[test]
fn duplicates_are_noops_while_pending_leased_or_done() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    assert_eq!(b.admit(item("a", "1"), 1), Ok(Admitted::Duplicate));
    let lease = b.lease(2).expect("leased");
    assert_eq!(b.admit(item("a", "1"), 3), Ok(Admitted::Duplicate));
    b.complete(lease.id).expect("held");
    assert_eq!(b.admit(item("a", "1"), 4), Ok(Admitted::Duplicate));
    assert_eq!(b.finished(&item("a", "1").id()), Some(Finished::Done));
    assert_eq!(b.counts().pending, 0);
    checked(&b);
}

#[test]
fn a_new_etag_supersedes_a_pending_older_one() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    assert_eq!(b.admit(item("a", "2"), 1), Ok(Admitted::Superseded));
    assert_eq!(b.counts().pending, 1);
    assert_eq!(b.lease(1).expect("leased").item.etag.as_deref(), Some("2"));
    checked(&b);
}

#[test]
fn a_new_etag_while_leased_waits_for_the_running_revision() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    let first = b.lease(0).expect("leased");
    assert_eq!(b.admit(item("a", "2"), 1), Ok(Admitted::New));
    assert!(b.lease(1).is_none(), "one revision of a key at a time");
    b.complete(first.id).expect("held");
    assert_eq!(b.lease(2).expect("leased").item.etag.as_deref(), Some("2"));
    checked(&b);
}

#[test]
fn a_new_etag_after_completion_is_new_work() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    let l = b.lease(0).expect("leased");
    b.complete(l.id).expect("held");
    assert_eq!(b.admit(item("a", "2"), 1), Ok(Admitted::New));
}

#[test]
fn stale_notifications_lose_to_newer_sequencers() {
    let mut b = Backlog::new(config());
    b.admit(with_seq(item("a", "2"), "0000A"), 0).expect("admitted");
    assert_eq!(b.admit(with_seq(item("a", "1"), "9"), 1), Ok(Admitted::Duplicate), "9 < A");
    assert_eq!(b.admit(with_seq(item("a", "3"), "00B"), 1), Ok(Admitted::Superseded));
    assert!(is_older(Some("FF"), Some("100")));
    assert!(!is_older(Some("100"), Some("FF")));
    assert!(!is_older(None, Some("1")));
}

#[test]
fn lease_order_is_oldest_eligible_first() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    b.admit(item("b", "1"), 1).expect("admitted");
    b.admit(item("c", "1"), 2).expect("admitted");
    assert!(b.lease(0).is_some_and(|l| &*l.item.object.key == "a"));
    assert!(b.lease(1).is_some_and(|l| &*l.item.object.key == "b"));
    assert!(b.lease(1).is_none(), "c is not eligible before it was admitted");
}

#[test]
fn retryable_failures_back_off_exponentially_then_fail() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    let l1 = b.lease(0).expect("leased");
    assert_eq!(b.fail(l1.id, true, "exit 1", 0), Ok(Retry::At(10)));
    assert!(b.lease(9).is_none(), "backing off");
    let l2 = b.lease(10).expect("leased");
    assert_eq!(l2.attempt, 2);
    assert_eq!(b.fail(l2.id, true, "exit 1", 10), Ok(Retry::At(30)));
    let l3 = b.lease(30).expect("leased");
    assert_eq!(l3.attempt, 3);
    assert_eq!(b.fail(l3.id, true, "exit 2", 30), Ok(Retry::Exhausted));
    assert_eq!(b.counts(), Counts { pending: 0, in_flight: 0, succeeded: 0, failed: 1, skipped: 0 });
    let id = item("a", "1").id();
    assert_eq!(b.finished(&id), Some(Finished::Failed));
    assert_eq!(b.last_error(&id), Some("exit 2"));
    assert_eq!(b.last_failure(), Some(&("a".to_owned(), "exit 2".to_owned())));
    assert_eq!(b.admit(item("a", "1"), 40), Ok(Admitted::Duplicate), "failed items wait for a re-drive");
    checked(&b);
}

#[test]
fn backoff_is_capped() {
    let b = Backlog::new(config());
    assert_eq!((b.backoff(1), b.backoff(2), b.backoff(3), b.backoff(40)), (10, 20, 25, 25));
}

#[test]
fn permanent_failure_skips_retries() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    let l = b.lease(0).expect("leased");
    assert_eq!(b.fail(l.id, false, "bad input", 0), Ok(Retry::Exhausted));
    assert_eq!(b.counts().failed, 1);
}

#[test]
fn heartbeats_extend_and_expiry_requeues() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    let l = b.lease(0).expect("leased");
    assert_eq!(b.heartbeat(l.id, 90), Ok(190));
    assert!(b.expire(150).is_empty());
    assert_eq!(b.next_wakeup(), Some(190));
    let expired = b.expire(190);
    assert_eq!(expired, vec![(item("a", "1").id(), Retry::At(200))]);
    assert_eq!(b.heartbeat(l.id, 191), Err(LeaseError::NotHeld(l.id)));
    assert_eq!(b.complete(l.id), Err(LeaseError::NotHeld(l.id)), "a late worker cannot complete");
    assert_eq!(b.lease(200).expect("leased").attempt, 2);
    checked(&b);
}

#[test]
fn expiry_counts_as_an_attempt() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    let mut now = 0;
    for _ in 0..3 {
        let l = b.lease(now).expect("leased");
        now = l.deadline;
        b.expire(now);
        now += 100;
    }
    assert_eq!(b.counts().failed, 1);
    assert_eq!(b.last_error(&item("a", "1").id()), Some("lease expired"));
}

#[test]
fn redrive_returns_failed_items_with_fresh_attempts() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    let l = b.lease(0).expect("leased");
    b.fail(l.id, false, "bad", 0).expect("held");
    assert_eq!(b.redrive(&item("z", "1").id(), 1), Err(RedriveError::NotFailed));
    assert_eq!(b.redrive_failed("b", 1), Ok(0), "outside the prefix");
    assert_eq!(b.redrive_failed("", 1), Ok(1));
    assert_eq!(b.counts(), Counts { pending: 1, in_flight: 0, succeeded: 0, failed: 0, skipped: 0 });
    assert_eq!(b.lease(1).expect("leased").attempt, 1);
    checked(&b);
}

#[test]
fn capacity_refuses_and_requests_a_resync() {
    let mut b = Backlog::new(config());
    for k in ["a", "b", "c", "d"] {
        b.admit(item(k, "1"), 0).expect("admitted");
    }
    assert_eq!(b.admit(item("e", "1"), 0), Err(Overloaded { capacity: 4 }));
    assert!(b.needs_resync());
    assert_eq!(b.admit(item("a", "1"), 0), Ok(Admitted::Duplicate), "duplicates still answer");
    assert_eq!(b.admit(item("a", "2"), 0), Ok(Admitted::Superseded), "superseding does not grow");
    assert!(b.take_resync_request());
    assert!(!b.needs_resync());
    checked(&b);
}

#[test]
fn finished_memory_is_bounded() {
    let mut b = Backlog::new(config());
    for i in 0..10 {
        b.admit(item(&format!("k{i}"), "1"), i).expect("admitted");
        let l = b.lease(i).expect("leased");
        b.complete(l.id).expect("held");
        checked(&b);
    }
    assert_eq!(b.counts().succeeded, 10);
    assert!(b.finished(&item("k9", "1").id()).is_some());
    assert!(b.finished(&item("k0", "1").id()).is_none(), "evicted; the ledger is the durable record");
}

#[derive(Debug, Clone)]
enum Op {
    Admit { key: u8, etag: u8, seq: Option<u8> },
    Lease,
    Heartbeat(u8),
    Complete(u8),
    Fail { lease: u8, retryable: bool },
    HandBack(u8),
    Reattach { key: u8, etag: u8, attempt: u8 },
    CompleteUnleased { key: u8, etag: u8 },
    Duplicate(u8),
    Gone(u8),
    Hold(u16),
    Expire,
    Redrive,
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u8, 0..3u8, prop::option::of(0..8u8)).prop_map(|(key, etag, seq)| Op::Admit { key, etag, seq }),
        3 => Just(Op::Lease),
        1 => any::<u8>().prop_map(Op::Heartbeat),
        2 => any::<u8>().prop_map(Op::Complete),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(lease, retryable)| Op::Fail { lease, retryable }),
        1 => any::<u8>().prop_map(Op::HandBack),
        1 => (0..6u8, 0..3u8, 0..5u8).prop_map(|(key, etag, attempt)| Op::Reattach { key, etag, attempt }),
        1 => (0..6u8, 0..3u8).prop_map(|(key, etag)| Op::CompleteUnleased { key, etag }),
        1 => any::<u8>().prop_map(Op::Duplicate),
        1 => any::<u8>().prop_map(Op::Gone),
        1 => (0..300u16).prop_map(Op::Hold),
        1 => Just(Op::Expire),
        1 => Just(Op::Redrive),
        2 => (0..150u16).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let mut b = Backlog::new(config());
        let mut now: Millis = 0;
        let mut granted: Vec<LeaseId> = Vec::new();
        let mut finished_total = 0u64;
        for op in ops {
            match op {
                Op::Admit { key, etag, seq } => {
                    let mut it = item(&format!("k{key}"), &format!("e{etag}"));
                    it.sequencer = seq.map(|s| format!("{s:X}"));
                    let before = b.counts();
                    if let Ok(Admitted::New) = b.admit(it, now) {
                        prop_assert_eq!(b.counts().pending, before.pending + 1);
                    }
                }
                Op::Lease => {
                    if let Some(l) = b.lease(now) {
                        prop_assert!(l.deadline > now);
                        prop_assert!(!granted.contains(&l.id), "lease ids are never reused");
                        granted.push(l.id);
                    }
                }
                Op::Heartbeat(i) => {
                    if let Some(id) = pick(&granted, i) {
                        let _ = b.heartbeat(id, now);
                    }
                }
                Op::Complete(i) => {
                    if let Some(id) = pick(&granted, i)
                        && b.complete(id).is_ok()
                    {
                        finished_total += 1;
                    }
                }
                Op::Fail { lease, retryable } => {
                    if let Some(id) = pick(&granted, lease) {
                        let _ = b.fail(id, retryable, "x", now);
                    }
                }
                Op::HandBack(lease) => {
                    if let Some(id) = pick(&granted, lease) {
                        let _ = b.hand_back(id, now);
                    }
                }
                Op::Reattach { key, etag, attempt } => {
                    let it = item(&format!("k{key}"), &format!("e{etag}"));
                    if let Ok(l) = b.reattach(it, u32::from(attempt), now) {
                        prop_assert!(l.attempt >= 1 && l.attempt <= config().max_attempts);
                        granted.push(l.id);
                    }
                }
                Op::CompleteUnleased { key, etag } => {
                    let it = item(&format!("k{key}"), &format!("e{etag}"));
                    let id = it.id();
                    if b.complete_unleased(it, now) {
                        finished_total += 1;
                    }
                    prop_assert_eq!(b.finished(&id), Some(Finished::Done));
                    prop_assert!(b.lease(now).is_none_or(|l| l.item.id() != id), "a finished revision is never leased");
                }
                Op::Duplicate(i) => {
                    if let Some(id) = pick(&granted, i) {
                        let _ = b.finish_duplicate(id);
                    }
                }
                Op::Gone(i) => {
                    if let Some(id) = pick(&granted, i) {
                        let _ = b.drop_gone(id);
                    }
                }
                Op::Hold(ms) => b.hold_until(now + u64::from(ms)),
                Op::Expire => {
                    for (_, retry) in b.expire(now) {
                        if let Retry::At(at) = retry {
                            prop_assert!(at > now);
                        }
                    }
                }
                Op::Redrive => {
                    let _ = b.redrive_failed("", now);
                }
                Op::Tick(ms) => now += u64::from(ms),
            }
            if let Err(e) = b.check_invariants() {
                prop_assert!(false, "{}", e);
            }
            let c = b.counts();
            prop_assert!(c.in_flight <= c.pending + c.in_flight);
            prop_assert_eq!(c.succeeded, finished_total);
        }
    }
}

fn pick(granted: &[LeaseId], i: u8) -> Option<LeaseId> {
    (!granted.is_empty()).then(|| granted[usize::from(i) % granted.len()])
}

#[test]
fn a_handed_back_lease_is_pending_again_without_using_an_attempt() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    let first = b.lease(0).expect("leased");
    b.hand_back(first.id, 5).expect("held");
    assert_eq!(b.counts(), Counts { pending: 1, in_flight: 0, succeeded: 0, failed: 0, skipped: 0 });
    let again = b.lease(5).expect("pending at once, no backoff");
    assert_eq!(again.attempt, 1, "the handed-back attempt does not count");
    assert_eq!(b.hand_back(first.id, 5), Err(LeaseError::NotHeld(first.id)));
    // Handed back again and again (a worker fleet rolling over), it never fails.
    let mut lease = again;
    for _ in 0..10 {
        b.hand_back(lease.id, 6).expect("held");
        lease = b.lease(6).expect("pending");
    }
    assert_eq!(lease.attempt, 1);
    checked(&b);
}

#[test]
fn a_held_backlog_admits_but_leases_nothing_until_the_hold_ends() {
    let mut b = Backlog::new(config());
    b.hold_until(Millis::MAX);
    b.admit(item("a", "1"), 0).expect("admitted");
    assert!(b.is_held(10) && b.lease(10).is_none());
    assert_eq!(b.next_wakeup(), Some(Millis::MAX), "nothing to wake for while held");
    b.hold_until(50);
    assert_eq!(b.next_wakeup(), Some(50));
    assert!(b.lease(49).is_none());
    assert!(b.lease(50).is_some());
    checked(&b);
}

#[test]
fn a_reattached_lease_takes_the_queued_copy_and_keeps_its_attempt() {
    let mut b = Backlog::new(config());
    b.hold_until(100);
    // The start-up resync queued the object a worker is still processing.
    b.admit(item("a", "1"), 0).expect("admitted");
    let lease = b.reattach(item("a", "1"), 2, 10).expect("re-attached");
    assert_eq!((lease.attempt, lease.deadline), (2, 110));
    assert_eq!(b.counts(), Counts { pending: 0, in_flight: 1, succeeded: 0, failed: 0, skipped: 0 });
    assert_eq!(b.reattach(item("a", "1"), 2, 11), Err(ReattachError::LeasedElsewhere), "one holder");
    assert!(b.lease(200).is_none(), "never leased twice");
    b.heartbeat(lease.id, 50).expect("held");
    b.complete(lease.id).expect("held");
    assert_eq!(b.reattach(item("a", "1"), 2, 60), Err(ReattachError::Finished));
    // A lease nobody queued (no resync yet) is re-attached too; a silly attempt is clamped.
    let other = b.reattach(item("b", "1"), 99, 60).expect("re-attached");
    assert_eq!(other.attempt, config().max_attempts);
    checked(&b);
}

#[test]
fn a_completion_for_an_unknown_lease_removes_the_queued_copy() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    assert!(b.complete_unleased(item("a", "1"), 5));
    assert_eq!(b.counts(), Counts { pending: 0, in_flight: 0, succeeded: 1, failed: 0, skipped: 0 });
    assert!(b.lease(10).is_none(), "finished work is not leased again");
    assert!(!b.complete_unleased(item("a", "1"), 6), "counted once");
    assert_eq!(b.admit(item("a", "1"), 7), Ok(Admitted::Duplicate));
    // Leased to a second worker meanwhile: the lease is taken back.
    b.admit(item("b", "1"), 8).expect("admitted");
    let second = b.lease(8).expect("leased");
    assert!(b.complete_unleased(item("b", "1"), 9));
    assert_eq!(b.heartbeat(second.id, 10), Err(LeaseError::NotHeld(second.id)));
    assert!(b.is_idle());
    checked(&b);
}

#[test]
fn duplicates_and_gone_objects_are_skipped_without_an_attempt() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "1"), 0).expect("admitted");
    b.admit(item("b", "1"), 0).expect("admitted");
    let a = b.lease(0).expect("leased");
    let bl = b.lease(0).expect("leased");
    b.finish_duplicate(a.id).expect("held");
    b.drop_gone(bl.id).expect("held");
    assert_eq!(b.counts(), Counts { pending: 0, in_flight: 0, succeeded: 0, failed: 0, skipped: 2 });
    assert_eq!(b.admit(item("a", "1"), 1), Ok(Admitted::Duplicate), "already done");
    assert_eq!(b.admit(item("b", "1"), 1), Ok(Admitted::New), "uploaded again: new work");
    checked(&b);
}

#[test]
fn the_oldest_pending_item_ages_from_its_first_admission() {
    let mut b = Backlog::new(config());
    assert_eq!(b.oldest_pending_age(100), None);
    b.admit(item("a", "1"), 10).expect("admitted");
    b.admit(item("b", "1"), 30).expect("admitted");
    assert_eq!(b.oldest_pending_age(100), Some(90));
    let a = b.lease(100).expect("leased");
    b.fail(a.id, true, "x", 100).expect("held");
    assert_eq!(b.oldest_pending_age(120), Some(110), "a retry keeps its first admission");
}

#[test]
fn a_removal_withdraws_the_pending_revision_it_comes_after() {
    let mut b = Backlog::new(config());
    let object = ObjectId { bucket: "b".into(), key: "a".into() };
    b.admit(with_seq(item("a", "1"), "0A"), 0).expect("admitted");
    assert!(!b.withdraw(&object, Some("09"), None), "an older removal (delete, then this upload)");
    assert!(!b.withdraw(&object, None, None), "nothing to compare: kept");
    assert!(b.withdraw(&object, Some("0B"), None), "deleted after it was uploaded");
    assert_eq!(b.counts(), Counts { pending: 0, in_flight: 0, succeeded: 0, failed: 0, skipped: 1 });
    // By version: the removal of that very version.
    let mut versioned = item("v", "1");
    versioned.version_id = Some("v1".into());
    b.admit(versioned, 1).expect("admitted");
    let v = ObjectId { bucket: "b".into(), key: "v".into() };
    assert!(!b.withdraw(&v, None, Some("v0")));
    assert!(b.withdraw(&v, None, Some("v1")));
    // A leased revision is the worker's business.
    b.admit(with_seq(item("l", "1"), "01"), 2).expect("admitted");
    let lease = b.lease(2).expect("leased");
    assert!(!b.withdraw(&lease.item.object, Some("FF"), None));
    assert_eq!(b.counts().in_flight, 1);
    checked(&b);
}

/// The chaos run of seed 77664590: a revision found by a listing (no sequencer) was leased,
/// then the first revision's notification, queued by MinIO while the gateway was down, arrived
/// late, and the lease of the current revision expired when its runner was killed. The current
/// revision was recorded as failed ("lease expired") and never processed. Now it is dropped
/// without a record, nothing remembers it as finished, and a resync is asked for: the listing
/// queues it again.
#[test]
fn a_revision_dropped_for_one_not_known_newer_is_left_for_a_resync_to_find_again() {
    let mut b = Backlog::new(config());
    let current = item("a", "2");
    b.admit(current.clone(), 0).expect("admitted");
    let lease = b.lease(0).expect("leased");
    assert_eq!(b.admit(with_seq(item("a", "1"), "0A"), 1), Ok(Admitted::New), "late, order unknown");
    assert!(!b.needs_resync());
    let expired = b.expire(lease.deadline);
    assert_eq!(expired, vec![(current.id(), Retry::Superseded)]);
    assert!(b.take_resync_request(), "the store must say which revision is current");
    assert_eq!(b.finished(&current.id()), None, "not recorded as failed or done");
    assert_eq!(b.counts().failed, 0);
    checked(&b);
    // The resync's listing finds the current revision again: queued, replacing the stale one.
    assert_eq!(b.admit(current.clone(), 2), Ok(Admitted::Superseded));
    assert!(b.lease(2).is_some_and(|l| l.item.etag.as_deref() == Some("2")));
    checked(&b);
}

#[test]
fn a_revision_dropped_for_a_known_newer_one_asks_for_no_resync() {
    let mut b = Backlog::new(config());
    b.admit(with_seq(item("a", "1"), "0A"), 0).expect("admitted");
    let first = b.lease(0).expect("leased");
    assert_eq!(b.admit(with_seq(item("a", "2"), "0B"), 1), Ok(Admitted::New));
    assert_eq!(b.fail(first.id, true, "exit 1", 1), Ok(Retry::Superseded));
    assert!(!b.needs_resync());
    assert_eq!(b.counts().failed, 0);
    // Replacing a pending revision: a newer sequencer needs no resync, an unknown order does.
    let mut b = Backlog::new(config());
    b.admit(with_seq(item("a", "1"), "0A"), 0).expect("admitted");
    assert_eq!(b.admit(with_seq(item("a", "2"), "0B"), 1), Ok(Admitted::Superseded));
    assert!(!b.needs_resync());
    assert_eq!(b.admit(item("a", "3"), 2), Ok(Admitted::Superseded));
    assert!(b.needs_resync());
    checked(&b);
}

#[test]
fn a_revision_handed_back_while_another_is_queued_is_dropped_and_a_resync_asked_for() {
    let mut b = Backlog::new(config());
    b.admit(item("a", "2"), 0).expect("admitted");
    let lease = b.lease(0).expect("leased");
    b.admit(with_seq(item("a", "1"), "0A"), 1).expect("admitted");
    b.hand_back(lease.id, 1).expect("handed back");
    assert!(b.needs_resync());
    assert_eq!(b.counts().pending, 1);
    checked(&b);
}
