use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::TimeZone;

use super::*;
use crate::audit::MemoryAuditSink;
use crate::backend::{Backend, BackendRef, IssueError, IssuedRef};
use crate::clock::ManualClock;
use crate::lease::{Activation, Claim, LeaseHolder, LeaseId};
use crate::metrics::MemoryMetrics;
use crate::store::memory::MemoryLeaseStore;

/// Counts revocations per lease; fails while `failures_left` > 0.
#[derive(Debug, Default)]
struct CountingRevoker {
    calls: Mutex<HashMap<LeaseId, usize>>,
    failures_left: AtomicU32,
}

impl Backend for CountingRevoker {
    fn backend(&self) -> BackendKind {
        BackendKind::SignedToken
    }
}

#[async_trait::async_trait]
impl CredentialRevoker for CountingRevoker {
    async fn revoke(&self, issued: IssuedRef<'_>) -> Result<(), IssueError> {
        let id = LeaseId::parse(issued.lease_id).expect("a lease id");
        *self.calls.lock().unwrap().entry(id).or_default() += 1;
        // Let concurrent sweeps interleave.
        tokio::task::yield_now().await;
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(IssueError::Unavailable("backend down".into()));
        }
        Ok(())
    }
}

struct Harness {
    revoker: Revoker,
    clock: Arc<ManualClock>,
    store: Arc<MemoryLeaseStore>,
    backend: Arc<CountingRevoker>,
    audit: Arc<MemoryAuditSink>,
    metrics: Arc<MemoryMetrics>,
}

fn harness(settings: RevokerSettings) -> Harness {
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()));
    let store = Arc::new(MemoryLeaseStore::new().with_clock(clock.clone()));
    let backend = Arc::new(CountingRevoker::default());
    let audit = Arc::new(MemoryAuditSink::default());
    let metrics = Arc::new(MemoryMetrics::default());
    let revoker = Revoker::new(
        RevokerPorts {
            store: store.clone(),
            revokers: Revokers::default().with(backend.clone()),
            clock: clock.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
        },
        settings,
    );
    Harness { revoker, clock, store, backend, audit, metrics }
}

fn far_deadline() -> Instant {
    Instant::now() + Duration::from_mins(10)
}

impl Harness {
    /// A lease created now; activated to expire after `expires_in` unless `pending`.
    async fn lease(&self, expires_in: TimeDelta, pending: bool) -> Lease {
        let now = self.clock.now();
        let lease = Lease {
            id: LeaseId::generate(now).unwrap(),
            status: LeaseStatus::Pending,
            policy: "p".into(),
            grant: "g".into(),
            holder: LeaseHolder { issuer: "https://i".into(), subject: "s".into() },
            backend: BackendRef::SignedToken { audience: "a".into(), key_id: "k".into() },
            created_at: now,
            issued_at: None,
            expires_at: now + expires_in,
            max_expires_at: now + TimeDelta::hours(1),
            next_action_at: now + TimeDelta::minutes(5),
            attempts: 0,
            last_error: None,
            owner: None,
            version: 0,
            gc_at: now + TimeDelta::days(30),
        };
        self.store.create_pending(&lease).await.unwrap();
        if pending {
            return lease;
        }
        let activation =
            Activation { issued_at: now, expires_at: now + expires_in, gc_at: now + TimeDelta::days(30) };
        self.store.activate(&lease.id, 0, activation).await.unwrap()
    }

    async fn status(&self, lease: &Lease) -> LeaseStatus {
        self.store.get(&lease.id).await.unwrap().unwrap().status
    }
}

#[tokio::test]
async fn sweep_revokes_expired_and_stale_pending_leases_only() {
    let h = harness(RevokerSettings::default());
    let expiring = h.lease(TimeDelta::minutes(1), false).await;
    let stale_pending = h.lease(TimeDelta::minutes(30), true).await;
    let live = h.lease(TimeDelta::minutes(30), false).await;
    h.clock.advance(TimeDelta::minutes(10));

    let report = h.revoker.sweep(&*h.store, "test", far_deadline()).await.unwrap();
    assert_eq!((report.revoked, report.failed, report.skipped), (2, 0, 0), "{report:?}");
    assert_eq!(h.status(&expiring).await, LeaseStatus::Revoked);
    assert_eq!(h.status(&stale_pending).await, LeaseStatus::Revoked, "crashed issuance cleaned up");
    assert_eq!(h.status(&live).await, LeaseStatus::Active);
    assert_eq!(h.metrics.get("LeasesRevoked"), 2);
    let events = h.audit.events();
    assert_eq!(events.iter().filter(|e| e.reason == "revoked").count(), 2);

    let again = h.revoker.sweep(&*h.store, "test", far_deadline()).await.unwrap();
    assert_eq!(again.examined, 0, "nothing left due; revoked leases left the index");
}

/// The memory store's due leases, with one record in front that cannot be read (what a
/// newer broker version's lease looks like to this one, or a damaged item).
#[derive(Debug)]
struct WithUnreadable(Arc<MemoryLeaseStore>);

#[async_trait::async_trait]
impl DueLeases for WithUnreadable {
    async fn list_due(&self, now: DateTime<Utc>, limit: usize) -> Result<DueBatch, StoreError> {
        let mut batch = self.0.list_due(now, limit).await?;
        batch
            .unreadable
            .push(UnreadableLease { key: "lease#01FUTURE".into(), detail: "unknown field `x`".into() });
        Ok(batch)
    }
}

#[tokio::test]
async fn an_unreadable_record_is_reported_and_every_other_lease_still_ends() {
    let h = harness(RevokerSettings { batch_size: 2, ..RevokerSettings::default() });
    let mut leases = Vec::new();
    for _ in 0..5 {
        leases.push(h.lease(TimeDelta::minutes(1), false).await);
    }
    h.clock.advance(TimeDelta::minutes(10));

    let due = WithUnreadable(h.store.clone());
    let report = h.revoker.sweep(&due, "test", far_deadline()).await.expect("the sweep goes on");
    assert_eq!((report.revoked, report.unreadable), (5, 1), "reported once per sweep: {report:?}");
    for lease in &leases {
        assert_eq!(h.status(lease).await, LeaseStatus::Revoked);
    }
    assert_eq!(h.metrics.get("LeasesUnreadable"), 1);
    let events = h.audit.events();
    let unreadable: Vec<_> = events.iter().filter(|e| e.reason == "lease_unreadable").collect();
    assert_eq!(unreadable.len(), 1, "{events:?}");
    assert!(unreadable[0].detail.as_deref().unwrap().contains("lease#01FUTURE: unknown field"));

    let again = h.revoker.sweep(&due, "test", far_deadline()).await.unwrap();
    assert_eq!((again.examined, again.unreadable), (0, 1), "reported again until a version reads it");
}

#[tokio::test]
async fn failing_backend_backs_off_then_becomes_irrevocable_then_daily_retry_heals() {
    let settings = RevokerSettings { max_attempts: 3, ..RevokerSettings::default() };
    let h = harness(settings.clone());
    let lease = h.lease(TimeDelta::minutes(1), false).await;
    h.backend.failures_left.store(u32::MAX, Ordering::SeqCst);
    h.clock.advance(TimeDelta::minutes(2));

    for attempt in 1..=3u32 {
        let report = h.revoker.sweep(&*h.store, "test", far_deadline()).await.unwrap();
        assert_eq!(report.failed, 1, "attempt {attempt}: {report:?}");
        let stored = h.store.get(&lease.id).await.unwrap().unwrap();
        assert_eq!(stored.attempts, attempt);
        assert_eq!(stored.last_error.as_deref(), Some("backend unavailable: backend down"));
        assert!(stored.gc_at >= stored.next_action_at, "never garbage-collected while it needs action");
        if attempt < 3 {
            assert_eq!(stored.status, LeaseStatus::Revoking);
            let wait = stored.next_action_at - h.clock.now();
            let ceiling = delta(settings.base_backoff.saturating_mul(1 << (attempt - 1)));
            assert!(
                wait <= ceiling && wait * 2 >= ceiling,
                "attempt {attempt}: backoff {wait} within jitter of {ceiling}"
            );
            assert_eq!(
                h.revoker.sweep(&*h.store, "test", far_deadline()).await.unwrap().examined,
                0,
                "not retried before its time"
            );
            h.clock.set(stored.next_action_at);
        } else {
            assert_eq!(stored.status, LeaseStatus::Irrevocable);
            assert_eq!(report.irrevocable, 1);
            assert_eq!(stored.next_action_at, h.clock.now() + TimeDelta::hours(24));
        }
    }
    assert_eq!(h.metrics.get("LeasesIrrevocable"), 1, "alarmable metric emitted");
    assert!(h.audit.events().iter().any(|e| e.reason == "irrevocable"));

    // The backend heals; the daily retry ends the lease.
    h.backend.failures_left.store(0, Ordering::SeqCst);
    h.clock.advance(TimeDelta::hours(24));
    let report = h.revoker.sweep(&*h.store, "test", far_deadline()).await.unwrap();
    assert_eq!(report.revoked, 1);
    assert_eq!(h.status(&lease).await, LeaseStatus::Revoked);
}

#[tokio::test]
async fn concurrent_sweeps_and_duplicate_deliveries_revoke_each_lease_once() {
    let h = harness(RevokerSettings { batch_size: 7, concurrency: 4, ..RevokerSettings::default() });
    let mut leases = Vec::new();
    for _ in 0..60 {
        leases.push(h.lease(TimeDelta::seconds(1), false).await);
    }
    h.clock.advance(TimeDelta::minutes(1));
    let (a, b, c) = tokio::join!(
        h.revoker.sweep(&*h.store, "revoker-a", far_deadline()),
        h.revoker.sweep(&*h.store, "revoker-b", far_deadline()),
        h.revoker.sweep(&*h.store, "revoker-a", far_deadline()), // the same event delivered twice
    );
    let revoked = a.unwrap().revoked + b.unwrap().revoked + c.unwrap().revoked;
    assert_eq!(revoked, 60);
    for lease in &leases {
        assert_eq!(h.status(lease).await, LeaseStatus::Revoked);
    }
    let calls = h.backend.calls.lock().unwrap();
    assert!(calls.values().all(|n| *n == 1), "no lease revoked twice: {calls:?}");
    assert_eq!(h.audit.events().iter().filter(|e| e.reason == "revoked").count(), 60);
}

#[tokio::test]
async fn a_claim_whose_revoker_died_is_taken_over_after_its_deadline() {
    let h = harness(RevokerSettings::default());
    let lease = h.lease(TimeDelta::seconds(1), false).await;
    h.clock.advance(TimeDelta::minutes(1));
    // A revoker claims it and dies.
    let claim = Claim { owner: "dead".into(), deadline: h.clock.now() + TimeDelta::minutes(5) };
    h.store.claim_for_revocation(&lease.id, lease.version, claim).await.unwrap();
    assert_eq!(
        h.revoker.sweep(&*h.store, "live", far_deadline()).await.unwrap().examined,
        0,
        "held until the deadline"
    );
    h.clock.advance(TimeDelta::minutes(5));
    let report = h.revoker.sweep(&*h.store, "live", far_deadline()).await.unwrap();
    assert_eq!(report.revoked, 1);
    assert_eq!(h.status(&lease).await, LeaseStatus::Revoked);
}

#[tokio::test]
async fn the_time_budget_is_respected() {
    let h = harness(RevokerSettings::default());
    h.lease(TimeDelta::seconds(1), false).await;
    h.clock.advance(TimeDelta::minutes(1));
    let report = h.revoker.sweep(&*h.store, "test", Instant::now() + Duration::from_secs(1)).await.unwrap();
    assert!(report.budget_exhausted);
    assert_eq!(report.examined, 0, "nothing claimed that could not be finished");
}

#[tokio::test]
async fn force_ends_the_lease_despite_the_backend_and_says_so() {
    let h = harness(RevokerSettings::default());
    let lease = h.lease(TimeDelta::minutes(30), false).await;
    h.backend.failures_left.store(u32::MAX, Ordering::SeqCst);
    let outcome = h.revoker.revoke_lease(lease.clone(), "admin:ops", far_deadline(), true).await.unwrap();
    let Outcome::Revoked(revoked) = outcome else {
        panic!("forced revocation must end the lease: {outcome:?}")
    };
    assert_eq!(revoked.status, LeaseStatus::Revoked);
    assert!(revoked.last_error.as_deref().unwrap().starts_with("forced by admin:ops"));
    assert_eq!(h.audit.events().last().unwrap().reason, "revoked_forced");
}

#[test]
fn backoff_grows_exponentially_with_jitter_and_a_cap() {
    let settings = RevokerSettings::default();
    for attempts in 1..=12u32 {
        let full = settings.base_backoff.saturating_mul(1 << (attempts - 1)).min(settings.max_backoff);
        let wait = backoff(&settings, attempts);
        assert!(wait <= full && wait * 2 >= full, "attempt {attempts}: {wait:?} vs {full:?}");
    }
}

/// Crash points of one revocation, each followed by the next scheduled run: every lease ends
/// `Revoked`, and the backend call is simply repeated (it is idempotent).
#[tokio::test]
async fn crashes_after_each_step_still_end_every_lease() {
    use crate::broker::fixture::harness;

    let h = harness();
    let revoker = h.revoker();
    let after_claim = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap().lease;
    let after_backend = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap().lease;
    let after_failure = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap().lease;
    h.clock.advance(TimeDelta::hours(1));

    // 1. Crash after the claim: the claim lapses at its deadline.
    let claim = Claim { owner: "crashed".into(), deadline: h.clock.now() + TimeDelta::minutes(5) };
    h.store.claim_for_revocation(&after_claim.id, after_claim.version, claim).await.unwrap();
    // 2. Crash after the backend call, before the lease is marked.
    h.store.fail_mark_revoked.store(true, Ordering::SeqCst);
    let outcome = revoker.revoke_lease(after_backend.clone(), "crashing", far_deadline(), false).await;
    assert!(outcome.is_err(), "the store failure surfaces: {outcome:?}");
    // 3. Crash after recording a failure: nothing special, it is retried at its time.
    *h.aws.fail_with.lock().unwrap() = Some(IssueError::Unavailable);
    revoker.revoke_lease(after_failure.clone(), "failing", far_deadline(), false).await.unwrap();
    *h.aws.fail_with.lock().unwrap() = None;

    h.clock.advance(TimeDelta::minutes(10));
    let report = revoker.sweep(&*h.store, "recovery", far_deadline()).await.unwrap();
    assert_eq!(report.revoked, 3, "{report:?}");
    for lease in [&after_claim, &after_backend, &after_failure] {
        assert_eq!(h.store.get(&lease.id).await.unwrap().unwrap().status, LeaseStatus::Revoked);
    }
    let calls = h.aws.revoked.lock().unwrap();
    assert_eq!(calls.iter().filter(|id| **id == after_backend.id).count(), 2, "repeated after the crash");
    assert_eq!(calls.iter().filter(|id| **id == after_failure.id).count(), 2, "retried after the failure");
}
