//! The lease-store conformance suite: one set of checks every lease-store adapter must pass
//! (all of its ports: [`LeaseStore`], [`DueLeases`], and the deny lists' [`DenyListRendering`]).
//!
//! Run it with [`run_all`] from each adapter's tests (memory and embedded unit tests, the
//! DynamoDB integration test against LocalStack). Each check uses its own lease ids, holders,
//! issuers and — for `list_due` — its own randomly placed window of (deep past) times, so the
//! checks can share one table and run in parallel with other runs of the suite.
//!
//! Leases are built with whole-second times: the DynamoDB adapter stores epoch seconds, so
//! sub-second parts would not round-trip there.
//!
//! Checks that depend on "now" (lapsed claims, lock expiry) either use instants far from the real
//! clock (a claim deadline an hour ago or ahead, a lock expired a minute ago), so they hold on a
//! store using the system clock, or run in [`run_clocked`] against a store built `with_clock`.
//!
//! Checks panic with a message naming the broken rule (this module is test support).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Timelike, Utc};

use crate::backend::BackendRef;
use crate::clock::ManualClock;
use crate::denylist::{self, DenyList, DenyListRendering};
use crate::lease::{
    Activation, Claim, DueLeases, JtiOutcome, Lease, LeaseHolder, LeaseId, LeaseStatus, LeaseStore,
    LiveFilter, RevokeFailure, StoreError, TokenUse,
};

/// A lease-store adapter as the suite tests it: the lease ports together (each function takes
/// the ones it uses).
pub trait LeaseAdapter: LeaseStore + DueLeases {}

impl<T: LeaseStore + DueLeases> LeaseAdapter for T {}

/// Large enough that leases of other checks never crowd this check's leases out of a result.
const BIG: usize = 1000;

/// Runs every check against `store`, one after the other.
pub async fn run_all(store: Arc<dyn LeaseAdapter>) {
    let s = store.as_ref();
    create_then_get_round_trips(s).await;
    get_of_unknown_id_is_none(s).await;
    duplicate_create_is_already_exists(s).await;
    create_requires_pending_status(s).await;
    activate_sets_fields_and_bumps_version(s).await;
    activate_with_wrong_version_conflicts(s).await;
    transitions_of_missing_lease_are_not_found(s).await;
    activate_twice_conflicts(s).await;
    concurrent_activations_have_one_winner(Arc::clone(&store)).await;
    record_issue_failure_sets_error_and_makes_due(s).await;
    record_issue_failure_requires_pending_at_version(s).await;
    list_due_returns_due_leases_oldest_first_within_limit(s).await;
    list_due_fills_its_limit_when_many_are_due_at_once(s).await;
    active_lease_is_due_at_expiry_not_before(s).await;
    pending_lease_is_due_at_next_action(s).await;
    by_holder_returns_only_that_holder_newest_first(s).await;
    long_identities_and_jtis_work(s).await;
    record_jti_first_use_then_replayed(s).await;
    record_jti_is_per_issuer(s).await;
    token_uses_count_to_their_limit_per_key(s).await;
    expired_token_uses_start_again(s).await;
    concurrent_token_uses_never_pass_the_limit(Arc::clone(&store)).await;
    expired_jti_is_reusable(s).await;
    // Lease lifecycle: revocation claims, outcomes, renewals, live listing.
    claim_works_from_each_claimable_state(s).await;
    claim_refuses_live_claims_revoked_leases_and_stale_versions(s).await;
    lifecycle_transitions_of_missing_lease_are_not_found(s).await;
    concurrent_claims_have_one_winner(Arc::clone(&store)).await;
    mark_revoked_ends_the_lease_and_leaves_the_indexes(s).await;
    mark_revoked_requires_revoking_at_version(s).await;
    record_revoke_failure_schedules_retries_and_never_lowers_gc(s).await;
    record_revoke_failure_requires_revoking_at_version(s).await;
    claimed_lease_is_due_again_at_its_deadline(s).await;
    renew_extends_an_active_lease_within_its_maximum(s).await;
    renewed_lease_is_due_at_its_new_expiry(s).await;
    list_live_returns_matching_leases_that_need_action(s).await;
}

/// Runs every check of the deny lists and locks ([`DenyListStore`]) against `store`.
pub async fn run_deny_lists(store: Arc<dyn DenyListRendering>) {
    let s = store.as_ref();
    deny_lists_are_created_once_and_replaced_at_their_version(s).await;
    rendering_catches_up_only_with_the_current_version(s).await;
    concurrent_deny_list_updates_lose_no_entry(Arc::clone(&store)).await;
    try_lock_excludes_other_owners_until_unlocked(s).await;
    expired_lock_can_be_taken_over(s).await;
    concurrent_try_locks_have_one_holder(Arc::clone(&store)).await;
}

/// Checks that need to set the store's "now" exactly: `store` must have been built
/// `with_clock(clock)`. They move `clock` (to deep-past instants of their own), so nothing
/// else may use this store meanwhile; other stores on the same table are unaffected.
pub async fn run_clocked(store: Arc<dyn LeaseAdapter>, clock: Arc<ManualClock>) {
    claim_lapses_at_the_deadline_second(store.as_ref(), &clock).await;
}

/// [`run_clocked`] for the locks of a [`DenyListStore`] built `with_clock(clock)`.
pub async fn run_deny_lists_clocked(store: Arc<dyn DenyListRendering>, clock: Arc<ManualClock>) {
    lock_expires_after_its_until_second(store.as_ref(), &clock).await;
}

// ---------------------------------------------------------------------------------------------
// Builders

/// `t` without its sub-second part.
pub fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// Now, in whole seconds.
pub fn now() -> DateTime<Utc> {
    whole_seconds(Utc::now())
}

/// A random `u64` from the OS CSPRNG (unique names and time windows).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("OS random generator");
    u64::from_be_bytes(bytes)
}

/// A holder no other check (or run) uses. Both parts contain `#`, so an adapter that joins
/// issuer and subject ambiguously is caught by [`by_holder_returns_only_that_holder_newest_first`].
pub fn unique_holder(tag: &str) -> LeaseHolder {
    let n = random_u64();
    LeaseHolder {
        issuer: format!("https://issuer.example/{tag}/{n:016x}#a"),
        subject: format!("repo:example/{tag}:ref:refs/heads/main#{n:016x}"),
    }
}

/// A `Pending` lease for `holder`, created at `now` (truncated to whole seconds): expires in an
/// hour, at most 12 h, stale after 15 min, collected after 30 days, version 0.
pub fn sample_lease(now: DateTime<Utc>, holder: &LeaseHolder) -> Lease {
    let now = whole_seconds(now);
    let id = LeaseId::generate(now).expect("lease id");
    Lease {
        status: LeaseStatus::Pending,
        policy: "conformance-policy".to_owned(),
        grant: "read-only".to_owned(),
        holder: holder.clone(),
        backend: BackendRef::AwsSession {
            role_arn: "arn:aws:iam::000000000000:role/conformance".to_owned(),
            session_name: id.to_string(),
        },
        created_at: now,
        issued_at: None,
        expires_at: now + TimeDelta::hours(1),
        max_expires_at: now + TimeDelta::hours(12),
        next_action_at: now + TimeDelta::minutes(15),
        attempts: 0,
        last_error: None,
        owner: None,
        version: 0,
        gc_at: now + TimeDelta::days(30),
        id,
    }
}

/// A random whole-second instant between 1985 and 2000. `list_due` checks put their leases in
/// a short window after such a base: leases of other checks (which live around the real "now"
/// or in other random windows) then cannot interleave with them.
fn random_base() -> DateTime<Utc> {
    const START_1985: i64 = 473_385_600;
    const SPAN: u64 = 15 * 365 * 24 * 3600;
    let offset = i64::try_from(random_u64() % SPAN).expect("span fits i64");
    DateTime::from_timestamp(START_1985 + offset, 0).expect("valid timestamp")
}

/// A lease whose revoker times live in a deep-past window, while its GC time stays in the
/// future (a TTL sweeper must not delete it during the check).
fn past_lease(base: DateTime<Utc>, holder: &LeaseHolder, next_action_in: i64) -> Lease {
    let mut lease = sample_lease(base, holder);
    lease.next_action_at = base + TimeDelta::seconds(next_action_in);
    lease.gc_at = now() + TimeDelta::days(1);
    lease
}

fn activation_for(lease: &Lease, expires_in: i64) -> Activation {
    Activation {
        issued_at: lease.created_at + TimeDelta::seconds(1),
        expires_at: lease.created_at + TimeDelta::seconds(expires_in),
        gc_at: now() + TimeDelta::days(7),
    }
}

async fn create(store: &dyn LeaseAdapter, lease: &Lease) {
    store.create_pending(lease).await.unwrap_or_else(|e| panic!("create_pending({}) failed: {e}", lease.id));
}

async fn get(store: &dyn LeaseAdapter, id: &LeaseId) -> Lease {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("get({id}) failed: {e}"))
        .unwrap_or_else(|| panic!("get({id}) found nothing"))
}

async fn due(store: &dyn LeaseAdapter, now: DateTime<Utc>, limit: usize) -> Vec<Lease> {
    let batch =
        store.list_due(now, limit).await.unwrap_or_else(|e| panic!("list_due({now}, {limit}) failed: {e}"));
    assert!(batch.unreadable.is_empty(), "list_due({now}) found unreadable records: {:?}", batch.unreadable);
    let due = batch.leases;
    assert!(due.len() <= limit, "list_due({now}, {limit}) returned {} leases", due.len());
    for lease in &due {
        assert!(
            lease.status.needs_action() && lease.next_action_at <= now,
            "list_due({now}) returned lease {} ({}, next action {}) that is not due",
            lease.id,
            lease.status,
            lease.next_action_at
        );
    }
    for pair in due.windows(2) {
        assert!(
            (pair[0].next_action_at, &pair[0].id) <= (pair[1].next_action_at, &pair[1].id),
            "list_due({now}) is not oldest first: {} ({}) before {} ({})",
            pair[0].id,
            pair[0].next_action_at,
            pair[1].id,
            pair[1].next_action_at
        );
    }
    due
}

fn ids(leases: &[Lease]) -> Vec<LeaseId> {
    leases.iter().map(|l| l.id.clone()).collect()
}

/// The ids of `leases` that are in `ours`, in order.
fn only<'a>(leases: &'a [Lease], ours: &[&Lease]) -> Vec<&'a LeaseId> {
    let ours: HashSet<&LeaseId> = ours.iter().map(|l| &l.id).collect();
    leases.iter().map(|l| &l.id).filter(|id| ours.contains(id)).collect()
}

fn assert_conflict(result: Result<Lease, StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

fn assert_not_found(result: Result<Lease, StoreError>, id: &LeaseId, what: &str) {
    match result {
        Err(StoreError::NotFound(got)) => assert_eq!(&got, id, "{what}: NotFound names the id"),
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Every field written by `create_pending` comes back from `get`, for both backend kinds and
/// with the optional fields set.
pub async fn create_then_get_round_trips(store: &dyn LeaseAdapter) {
    let holder = unique_holder("round-trip");
    let mut full = sample_lease(now(), &holder);
    full.attempts = 3;
    full.last_error = Some("previous attempt: \"quoted\" ünïcode #hash".to_owned());
    full.version = 7;
    create(store, &full).await;
    assert_eq!(get(store, &full.id).await, full, "get must return exactly what was created");

    let mut token = sample_lease(now(), &holder);
    token.backend =
        BackendRef::SignedToken { audience: "https://api.example".to_owned(), key_id: "key-2026".to_owned() };
    create(store, &token).await;
    assert_eq!(get(store, &token.id).await, token, "SignedToken backend must round-trip");
}

/// `get` of an id that was never written is `Ok(None)`, not an error.
pub async fn get_of_unknown_id_is_none(store: &dyn LeaseAdapter) {
    let id = LeaseId::generate(now()).expect("lease id");
    let got = store.get(&id).await.unwrap_or_else(|e| panic!("get({id}) failed: {e}"));
    assert_eq!(got, None, "get of an unknown id");
}

/// A second `create_pending` with the same id fails with `AlreadyExists` and changes nothing.
pub async fn duplicate_create_is_already_exists(store: &dyn LeaseAdapter) {
    let lease = sample_lease(now(), &unique_holder("duplicate"));
    create(store, &lease).await;
    let again = Lease { policy: "other-policy".to_owned(), ..lease.clone() };
    match store.create_pending(&again).await {
        Err(StoreError::AlreadyExists(id)) => assert_eq!(id, lease.id),
        other => panic!("duplicate create_pending: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(get(store, &lease.id).await, lease, "a refused duplicate must not overwrite");
}

/// `create_pending` refuses a lease that is not `Pending`.
pub async fn create_requires_pending_status(store: &dyn LeaseAdapter) {
    let mut lease = sample_lease(now(), &unique_holder("not-pending"));
    lease.status = LeaseStatus::Active;
    match store.create_pending(&lease).await {
        Err(StoreError::Conflict { id, .. }) => assert_eq!(id, lease.id),
        other => panic!("create_pending of an Active lease: expected Conflict, got {other:?}"),
    }
    let stored = store.get(&lease.id).await.unwrap_or_else(|e| panic!("get failed: {e}"));
    assert_eq!(stored, None, "a refused create must not write anything");
}

/// `activate` makes the lease `Active` with the given times, due at expiry, version + 1, and
/// returns what `get` then returns.
pub async fn activate_sets_fields_and_bumps_version(store: &dyn LeaseAdapter) {
    let lease = sample_lease(now(), &unique_holder("activate"));
    create(store, &lease).await;
    let activation = activation_for(&lease, 1800);
    let active = store
        .activate(&lease.id, lease.version, activation.clone())
        .await
        .unwrap_or_else(|e| panic!("activate failed: {e}"));
    let expected = Lease {
        status: LeaseStatus::Active,
        issued_at: Some(activation.issued_at),
        expires_at: activation.expires_at,
        next_action_at: activation.expires_at,
        gc_at: activation.gc_at,
        version: lease.version + 1,
        ..lease.clone()
    };
    assert_eq!(active, expected, "activate must return the updated lease");
    assert_eq!(get(store, &lease.id).await, expected, "get after activate");
}

/// `activate` at a stale or future version is a `Conflict` and changes nothing.
pub async fn activate_with_wrong_version_conflicts(store: &dyn LeaseAdapter) {
    let mut lease = sample_lease(now(), &unique_holder("wrong-version"));
    lease.version = 5;
    create(store, &lease).await;
    for wrong in [4, 6, 0] {
        let result = store.activate(&lease.id, wrong, activation_for(&lease, 600)).await;
        assert_conflict(result, &format!("activate at version {wrong} (stored 5)"));
    }
    assert_eq!(get(store, &lease.id).await, lease, "a refused activate must not write");
}

/// Transitions of an id that does not exist are `NotFound`, not `Conflict`.
pub async fn transitions_of_missing_lease_are_not_found(store: &dyn LeaseAdapter) {
    let lease = sample_lease(now(), &unique_holder("missing"));
    let result = store.activate(&lease.id, 0, activation_for(&lease, 600)).await;
    assert_not_found(result, &lease.id, "activate of a missing lease");
    let result = store.record_issue_failure(&lease.id, 0, "boom", lease.next_action_at).await;
    assert_not_found(result, &lease.id, "record_issue_failure of a missing lease");
    let stored = store.get(&lease.id).await.unwrap_or_else(|e| panic!("get failed: {e}"));
    assert_eq!(stored, None, "a refused transition must not create the lease");
}

/// Activating twice (even with the version the first call returned) is a `Conflict`: the
/// lease is no longer `Pending`.
pub async fn activate_twice_conflicts(store: &dyn LeaseAdapter) {
    let lease = sample_lease(now(), &unique_holder("twice"));
    create(store, &lease).await;
    let first = store
        .activate(&lease.id, lease.version, activation_for(&lease, 600))
        .await
        .unwrap_or_else(|e| panic!("first activate failed: {e}"));
    let again = store.activate(&lease.id, lease.version, activation_for(&lease, 900)).await;
    assert_conflict(again, "second activate at the original version");
    let again = store.activate(&lease.id, first.version, activation_for(&lease, 900)).await;
    assert_conflict(again, "second activate at the new version (lease is Active)");
    assert_eq!(get(store, &lease.id).await, first, "refused activations must not write");
}

/// Eight tasks activate the same lease at the same version at once: exactly one wins, the
/// others get `Conflict`, and the stored lease is the winner's.
pub async fn concurrent_activations_have_one_winner(store: Arc<dyn LeaseAdapter>) {
    const TASKS: i64 = 8;
    let lease = sample_lease(now(), &unique_holder("concurrent"));
    create(store.as_ref(), &lease).await;
    let start = Arc::new(tokio::sync::Barrier::new(usize::try_from(TASKS).expect("small")));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (store, start, id) = (Arc::clone(&store), Arc::clone(&start), lease.id.clone());
        // Each contender asks for a different expiry, so the stored lease names the winner.
        let activation = activation_for(&lease, 600 + i);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            (activation.expires_at, store.activate(&id, 0, activation).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (expires_at, result) = task.await.expect("activation task panicked");
        match result {
            Ok(active) => winners.push((expires_at, active)),
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("concurrent activate: expected Ok or Conflict, got {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent activation must win: {winners:?}");
    let (expires_at, active) = winners.remove(0);
    assert_eq!(active.expires_at, expires_at, "the winner's own activation was applied");
    assert_eq!(active.version, 1, "one transition, one version bump");
    assert_eq!(get(store.as_ref(), &lease.id).await, active, "stored lease is the winner's");
}

/// `record_issue_failure` keeps the lease `Pending`, stores the error, bumps the version and
/// makes the lease due at `due_at` (and not before).
pub async fn record_issue_failure_sets_error_and_makes_due(store: &dyn LeaseAdapter) {
    let base = random_base();
    let lease = past_lease(base, &unique_holder("issue-failure"), 10_000);
    create(store, &lease).await;
    let due_at = base + TimeDelta::seconds(50);
    let failed = store
        .record_issue_failure(&lease.id, lease.version, "sts: AccessDenied", due_at)
        .await
        .unwrap_or_else(|e| panic!("record_issue_failure failed: {e}"));
    let expected = Lease {
        last_error: Some("sts: AccessDenied".to_owned()),
        next_action_at: due_at,
        version: lease.version + 1,
        ..lease.clone()
    };
    assert_eq!(failed, expected, "record_issue_failure must return the updated lease");
    assert_eq!(get(store, &lease.id).await, expected, "get after record_issue_failure");

    let before = due(store, due_at - TimeDelta::seconds(1), BIG).await;
    assert!(only(&before, &[&lease]).is_empty(), "failed lease must not be due before due_at");
    let at = due(store, due_at, BIG).await;
    assert_eq!(only(&at, &[&lease]), [&lease.id], "failed lease must be due at due_at");
    let listed = at.iter().find(|l| l.id == lease.id).expect("listed above");
    assert_eq!(listed, &expected, "list_due returns the whole, current lease");
}

/// `record_issue_failure` has the same precondition as `activate`.
pub async fn record_issue_failure_requires_pending_at_version(store: &dyn LeaseAdapter) {
    let lease = sample_lease(now(), &unique_holder("issue-failure-cond"));
    create(store, &lease).await;
    let wrong = store.record_issue_failure(&lease.id, 3, "x", lease.next_action_at).await;
    assert_conflict(wrong, "record_issue_failure at the wrong version");
    let active = store
        .activate(&lease.id, 0, activation_for(&lease, 600))
        .await
        .unwrap_or_else(|e| panic!("activate failed: {e}"));
    let late = store.record_issue_failure(&lease.id, 1, "x", lease.next_action_at).await;
    assert_conflict(late, "record_issue_failure of an Active lease");
    assert_eq!(get(store, &lease.id).await, active, "refused failures must not write");
}

/// `list_due` returns exactly the leases with `next_action_at <= now`, oldest first (ties by
/// id), and at most `limit` of them (a prefix of the unlimited answer).
pub async fn list_due_returns_due_leases_oldest_first_within_limit(store: &dyn LeaseAdapter) {
    let base = random_base();
    let holder = unique_holder("list-due");
    let a = past_lease(base, &holder, 10);
    let b = past_lease(base, &holder, 20);
    let b_tie = past_lease(base, &holder, 20);
    let c = past_lease(base, &holder, 30);
    let later = past_lease(base, &holder, 31);
    for lease in [&c, &later, &b_tie, &a, &b] {
        create(store, lease).await;
    }
    let (b1, b2) = if b.id < b_tie.id { (&b, &b_tie) } else { (&b_tie, &b) };
    let now = base + TimeDelta::seconds(30);
    let ours = [&a, &b, &b_tie, &c, &later];

    let all = due(store, now, BIG).await;
    assert_eq!(
        only(&all, &ours),
        [&a.id, &b1.id, &b2.id, &c.id],
        "list_due({now}): due leases oldest first, ties by id, nothing due later"
    );
    for limit in [1, 2, 3] {
        let limited = due(store, now, limit).await;
        // The table may be shared with concurrent writers (other suites, other tests), so
        // the full answer can change between two calls. What must hold whatever they do:
        // at most `limit`, oldest first, all due, and no lease of ours skipped in favour of
        // a later one (ties within one second may be cut either way).
        assert!(
            !limited.is_empty() && limited.len() <= limit,
            "list_due with limit {limit}: {}",
            limited.len()
        );
        assert!(
            limited.windows(2).all(|w| w[0].next_action_at <= w[1].next_action_at),
            "list_due with limit {limit} is not oldest first"
        );
        assert!(
            limited.iter().all(|l| l.next_action_at <= now),
            "list_due with limit {limit} returned a lease not due"
        );
        for returned in limited.iter().filter(|l| ours.iter().any(|o| o.id == l.id)) {
            for earlier in ours.iter().filter(|o| o.next_action_at < returned.next_action_at) {
                assert!(
                    limited.iter().any(|l| l.id == earlier.id),
                    "list_due with limit {limit} skipped {} (due earlier) for {}",
                    earlier.id,
                    returned.id
                );
            }
        }
    }
    assert!(due(store, now, 0).await.is_empty(), "limit 0 returns nothing");
    let before = due(store, base + TimeDelta::seconds(9), BIG).await;
    assert!(only(&before, &ours).is_empty(), "nothing of ours is due before the first");
}

/// Many leases due in the same second (a fleet expiring together) plus a few due earlier:
/// a limited `list_due` returns exactly `limit` leases and never skips an earlier lease of
/// ours for a later one. Sharded stores read partitions a page at a time; this makes them
/// merge several pages (the early leases land in some partitions only).
pub async fn list_due_fills_its_limit_when_many_are_due_at_once(store: &dyn LeaseAdapter) {
    let base = random_base();
    let holder = unique_holder("list-due-fill");
    let early: Vec<Lease> = (0..5).map(|i| past_lease(base, &holder, 5 + i)).collect();
    let together: Vec<Lease> = (0..40).map(|_| past_lease(base, &holder, 10)).collect();
    for lease in early.iter().chain(&together) {
        create(store, lease).await;
    }
    let now = base + TimeDelta::seconds(10);
    let ours: Vec<&Lease> = early.iter().chain(&together).collect();
    for limit in [3, 7, 20] {
        let limited = due(store, now, limit).await;
        assert_eq!(limited.len(), limit, "list_due with limit {limit} while 45 are due");
        for returned in limited.iter().filter(|l| ours.iter().any(|o| o.id == l.id)) {
            for earlier in ours.iter().filter(|o| o.next_action_at < returned.next_action_at) {
                assert!(
                    limited.iter().any(|l| l.id == earlier.id),
                    "list_due with limit {limit} skipped {} (due earlier) for {}",
                    earlier.id,
                    returned.id
                );
            }
        }
    }
    let all = due(store, now, BIG).await;
    assert_eq!(only(&all, &ours).len(), 45, "every lease of ours is listed without a limit");
}

/// An `Active` lease becomes due exactly at its expiry.
pub async fn active_lease_is_due_at_expiry_not_before(store: &dyn LeaseAdapter) {
    let base = random_base();
    let lease = past_lease(base, &unique_holder("active-due"), 10_000);
    create(store, &lease).await;
    let active = store
        .activate(&lease.id, 0, activation_for(&lease, 100))
        .await
        .unwrap_or_else(|e| panic!("activate failed: {e}"));
    let expiry = active.expires_at;
    let before = due(store, expiry - TimeDelta::seconds(1), BIG).await;
    assert!(only(&before, &[&active]).is_empty(), "Active lease due before its expiry");
    let at = due(store, expiry, BIG).await;
    assert_eq!(only(&at, &[&active]), [&active.id], "Active lease not due at its expiry");
    let found = at.iter().find(|l| l.id == active.id).expect("listed above");
    assert_eq!(found.status, LeaseStatus::Active, "listed with its current status");
    // The original (pending) deadline no longer applies once activated.
    let old = due(store, lease.next_action_at, BIG).await;
    assert_eq!(only(&old, &[&active]), [&active.id], "still due later on");
}

/// A `Pending` lease (e.g. the broker crashed mid-issue) becomes due at `next_action_at`.
pub async fn pending_lease_is_due_at_next_action(store: &dyn LeaseAdapter) {
    let base = random_base();
    let lease = past_lease(base, &unique_holder("pending-due"), 900);
    create(store, &lease).await;
    let before = due(store, lease.next_action_at - TimeDelta::seconds(1), BIG).await;
    assert!(only(&before, &[&lease]).is_empty(), "Pending lease due before next_action_at");
    let at = due(store, lease.next_action_at, BIG).await;
    assert_eq!(only(&at, &[&lease]), [&lease.id], "Pending lease not due at next_action_at");
    let found = at.iter().find(|l| l.id == lease.id).expect("listed above");
    assert_eq!(found, &lease, "list_due returns the whole lease");
}

/// `by_holder` returns only that holder's leases (an issuer/subject split elsewhere must not
/// match), newest first with ties by id, at most `limit`.
pub async fn by_holder_returns_only_that_holder_newest_first(store: &dyn LeaseAdapter) {
    let holder = unique_holder("by-holder");
    // Same "issuer#subject" text, different split: a naive '#' join would mix them up.
    let (left, right) = holder.subject.split_once('#').expect("unique_holder has a '#'");
    let confusable = LeaseHolder { issuer: format!("{}#{left}", holder.issuer), subject: right.to_owned() };
    let t = now();
    let mut mine = Vec::new();
    for age in [30, 10, 20, 10, 40] {
        let lease = sample_lease(t - TimeDelta::seconds(age), &holder);
        create(store, &lease).await;
        mine.push(lease);
    }
    let other = sample_lease(t, &confusable);
    create(store, &other).await;
    // Newest first; ties (the two aged 10 s) by id, descending.
    mine.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));

    let found = store.by_holder(&holder, BIG).await.unwrap_or_else(|e| panic!("by_holder failed: {e}"));
    assert_eq!(ids(&found), ids(&mine), "by_holder: only this holder's leases, newest first");
    assert_eq!(found, mine, "by_holder returns whole leases");
    let two = store.by_holder(&holder, 2).await.unwrap_or_else(|e| panic!("by_holder: {e}"));
    assert_eq!(ids(&two), ids(&mine[..2]), "by_holder with limit 2");
    let none = store.by_holder(&holder, 0).await.unwrap_or_else(|e| panic!("by_holder: {e}"));
    assert!(none.is_empty(), "by_holder with limit 0");
    let theirs = store.by_holder(&confusable, BIG).await.unwrap_or_else(|e| panic!("by_holder: {e}"));
    assert_eq!(ids(&theirs), std::slice::from_ref(&other.id), "the confusable holder sees only its lease");
    let stranger = unique_holder("nobody");
    let nothing = store.by_holder(&stranger, BIG).await.unwrap_or_else(|e| panic!("by_holder: {e}"));
    assert!(nothing.is_empty(), "a holder without leases gets an empty list");
}

/// Issuers, subjects and jtis of a few KiB (beyond DynamoDB's key-size limits if used raw)
/// still work.
pub async fn long_identities_and_jtis_work(store: &dyn LeaseAdapter) {
    let base = unique_holder("long");
    let holder = LeaseHolder {
        issuer: format!("{}/{}", base.issuer, "i".repeat(1500)),
        subject: format!("{}/{}", base.subject, "s".repeat(1500)),
    };
    let lease = sample_lease(now(), &holder);
    create(store, &lease).await;
    assert_eq!(get(store, &lease.id).await, lease, "long holder round-trips");
    let found = store.by_holder(&holder, BIG).await.unwrap_or_else(|e| panic!("by_holder: {e}"));
    assert_eq!(found, [lease], "by_holder with a long holder");

    let jti = "j".repeat(3000);
    let exp = now() + TimeDelta::minutes(10);
    assert_eq!(jti_outcome(store, &holder.issuer, &jti, exp).await, JtiOutcome::FirstUse);
    assert_eq!(jti_outcome(store, &holder.issuer, &jti, exp).await, JtiOutcome::Replayed);
}

async fn jti_outcome(
    store: &dyn LeaseAdapter,
    issuer: &str,
    jti: &str,
    expires_at: DateTime<Utc>,
) -> JtiOutcome {
    store
        .record_jti(issuer, jti, expires_at)
        .await
        .unwrap_or_else(|e| panic!("record_jti({issuer}, {jti}) failed: {e}"))
}

/// The first `record_jti` is `FirstUse`; any later one while the record lives is `Replayed`.
pub async fn record_jti_first_use_then_replayed(store: &dyn LeaseAdapter) {
    let issuer = unique_holder("jti").issuer;
    let exp = now() + TimeDelta::minutes(10);
    assert_eq!(jti_outcome(store, &issuer, "token-1", exp).await, JtiOutcome::FirstUse);
    assert_eq!(jti_outcome(store, &issuer, "token-1", exp).await, JtiOutcome::Replayed);
    let later = exp + TimeDelta::hours(1);
    assert_eq!(
        jti_outcome(store, &issuer, "token-1", later).await,
        JtiOutcome::Replayed,
        "a replay with a different exp is still a replay"
    );
    assert_eq!(jti_outcome(store, &issuer, "token-2", exp).await, JtiOutcome::FirstUse);
}

/// The same jti from different issuers are different tokens (including issuer/jti pairs that
/// would collide if joined naively with '#').
pub async fn record_jti_is_per_issuer(store: &dyn LeaseAdapter) {
    let issuer = unique_holder("jti-iss").issuer;
    let other = format!("{issuer}-other");
    let exp = now() + TimeDelta::minutes(10);
    assert_eq!(jti_outcome(store, &issuer, "shared", exp).await, JtiOutcome::FirstUse);
    assert_eq!(jti_outcome(store, &other, "shared", exp).await, JtiOutcome::FirstUse);
    assert_eq!(jti_outcome(store, &issuer, "x#y", exp).await, JtiOutcome::FirstUse);
    let joined = format!("{issuer}#x");
    assert_eq!(
        jti_outcome(store, &joined, "y", exp).await,
        JtiOutcome::FirstUse,
        "(iss#x, y) is not (iss, x#y)"
    );
}

async fn token_use(
    store: &dyn LeaseAdapter,
    issuer: &str,
    key: &str,
    expires_at: DateTime<Utc>,
    limit: u32,
) -> TokenUse {
    store
        .record_token_use(issuer, key, expires_at, limit)
        .await
        .unwrap_or_else(|e| panic!("record_token_use({issuer}, {key}, limit {limit}) failed: {e}"))
}

/// Uses are counted per `(issuer, key)` up to the limit given, then refused with the count;
/// a key recorded with `record_jti` counts as one use.
pub async fn token_uses_count_to_their_limit_per_key(store: &dyn LeaseAdapter) {
    let issuer = unique_holder("token-uses").issuer;
    let exp = now() + TimeDelta::minutes(10);
    for n in 1..=3 {
        assert_eq!(
            token_use(store, &issuer, "k8s-token", exp, 3).await,
            TokenUse::Counted(n),
            "use {n} of 3"
        );
    }
    assert_eq!(token_use(store, &issuer, "k8s-token", exp, 3).await, TokenUse::Exhausted(3));
    assert_eq!(token_use(store, &issuer, "k8s-token", exp, 3).await, TokenUse::Exhausted(3), "stays refused");
    assert_eq!(
        token_use(store, &issuer, "k8s-token", exp, 5).await,
        TokenUse::Counted(4),
        "a higher limit counts on"
    );
    assert_eq!(
        token_use(store, &issuer, "other-token", exp, 3).await,
        TokenUse::Counted(1),
        "keys count apart"
    );
    assert_eq!(jti_outcome(store, &issuer, "jti-once", exp).await, JtiOutcome::FirstUse);
    assert_eq!(
        token_use(store, &issuer, "jti-once", exp, 3).await,
        TokenUse::Counted(2),
        "record_jti counted once"
    );
    assert_eq!(token_use(store, &issuer, "jti-once", exp, 2).await, TokenUse::Exhausted(2));
}

/// An expired count is absent: the key starts again at one.
pub async fn expired_token_uses_start_again(store: &dyn LeaseAdapter) {
    let issuer = unique_holder("token-uses-expired").issuer;
    let past = now() - TimeDelta::minutes(2);
    assert_eq!(token_use(store, &issuer, "old", past, 2).await, TokenUse::Counted(1));
    let future = now() + TimeDelta::minutes(10);
    assert_eq!(
        token_use(store, &issuer, "old", future, 2).await,
        TokenUse::Counted(1),
        "the expired count is gone"
    );
    assert_eq!(token_use(store, &issuer, "old", future, 2).await, TokenUse::Counted(2));
    assert_eq!(token_use(store, &issuer, "old", future, 2).await, TokenUse::Exhausted(2));
}

/// Ten exchanges of one token at once against a limit of four (two broker instances racing on
/// one store look the same to it): exactly four are counted, and they are uses 1 to 4.
pub async fn concurrent_token_uses_never_pass_the_limit(store: Arc<dyn LeaseAdapter>) {
    const TASKS: usize = 10;
    let issuer = unique_holder("token-uses-race").issuer;
    let exp = now() + TimeDelta::minutes(10);
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, start, issuer) = (Arc::clone(&store), Arc::clone(&start), issuer.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store.record_token_use(&issuer, "raced", exp, 4).await
        }));
    }
    let mut counted = Vec::new();
    for task in tasks {
        match task.await.expect("task").unwrap_or_else(|e| panic!("record_token_use: {e}")) {
            TokenUse::Counted(n) => counted.push(n),
            TokenUse::Exhausted(n) => assert!(n >= 4, "refused below the limit: {n}"),
        }
    }
    counted.sort_unstable();
    assert_eq!(counted, vec![1, 2, 3, 4], "exactly the limit is counted, each use once");
}

/// A record whose expiry has passed counts as absent: the jti can be recorded again (and is
/// then guarded again).
pub async fn expired_jti_is_reusable(store: &dyn LeaseAdapter) {
    let issuer = unique_holder("jti-expired").issuer;
    let past = now() - TimeDelta::minutes(2);
    assert_eq!(jti_outcome(store, &issuer, "old", past).await, JtiOutcome::FirstUse);
    let future = now() + TimeDelta::minutes(10);
    assert_eq!(
        jti_outcome(store, &issuer, "old", future).await,
        JtiOutcome::FirstUse,
        "an expired record must not block"
    );
    assert_eq!(jti_outcome(store, &issuer, "old", future).await, JtiOutcome::Replayed);
}

// ---------------------------------------------------------------------------------------------
// Lease lifecycle: builders

/// A claim by `owner` lapsing at `deadline`.
fn claim_by(owner: &str, deadline: DateTime<Utc>) -> Claim {
    Claim { owner: owner.to_owned(), deadline }
}

/// A claim that is still live on the real clock for the whole check.
fn live_claim(owner: &str) -> Claim {
    claim_by(owner, now() + TimeDelta::hours(1))
}

/// A claim that lapsed long ago on the real clock (its revoker died).
fn lapsed_claim(owner: &str) -> Claim {
    claim_by(owner, now() - TimeDelta::hours(1))
}

fn failure(error: &str, retry_at: DateTime<Utc>, irrevocable: bool, gc_at: DateTime<Utc>) -> RevokeFailure {
    RevokeFailure { error: error.to_owned(), retry_at, irrevocable, gc_at }
}

/// Creates `lease` and activates it (expiring `expires_in` seconds after its creation).
async fn create_active(store: &dyn LeaseAdapter, lease: &Lease, expires_in: i64) -> Lease {
    create(store, lease).await;
    store
        .activate(&lease.id, lease.version, activation_for(lease, expires_in))
        .await
        .unwrap_or_else(|e| panic!("activate({}) failed: {e}", lease.id))
}

async fn claim(store: &dyn LeaseAdapter, lease: &Lease, claim: Claim) -> Lease {
    store.claim_for_revocation(&lease.id, lease.version, claim).await.unwrap_or_else(|e| {
        panic!("claim_for_revocation({}) at version {} failed: {e}", lease.id, lease.version)
    })
}

async fn revoke_failed(store: &dyn LeaseAdapter, lease: &Lease, failure: RevokeFailure) -> Lease {
    store
        .record_revoke_failure(&lease.id, lease.version, failure)
        .await
        .unwrap_or_else(|e| panic!("record_revoke_failure({}) failed: {e}", lease.id))
}

async fn revoked(store: &dyn LeaseAdapter, lease: &Lease, at: DateTime<Utc>, note: Option<&str>) -> Lease {
    store
        .mark_revoked(&lease.id, lease.version, at, note)
        .await
        .unwrap_or_else(|e| panic!("mark_revoked({}) failed: {e}", lease.id))
}

async fn live(store: &dyn LeaseAdapter, filter: &LiveFilter, limit: usize) -> Vec<Lease> {
    let found = store
        .list_live(filter, limit)
        .await
        .unwrap_or_else(|e| panic!("list_live({filter:?}, {limit}) failed: {e}"));
    assert!(found.len() <= limit, "list_live({filter:?}, {limit}) returned {} leases", found.len());
    for lease in &found {
        assert!(
            lease.status.needs_action() && filter.matches(lease),
            "list_live({filter:?}) returned lease {} ({}, policy {}, holder {:?}) that does not match",
            lease.id,
            lease.status,
            lease.policy,
            lease.holder
        );
    }
    found
}

/// The ids of `leases`, sorted (for comparisons of unordered answers).
fn id_set(leases: &[Lease]) -> Vec<LeaseId> {
    let mut ids = ids(leases);
    ids.sort();
    ids
}

fn id_set_of(leases: &[&Lease]) -> Vec<LeaseId> {
    let mut ids: Vec<LeaseId> = leases.iter().map(|l| l.id.clone()).collect();
    ids.sort();
    ids
}

/// A lock name no other check (or run) uses.
fn unique_lock(tag: &str) -> String {
    format!("conformance/{tag}/{:016x}", random_u64())
}

async fn lock(store: &dyn DenyListRendering, name: &str, owner: &str, until: DateTime<Utc>) -> bool {
    store
        .try_lock(name, owner, until)
        .await
        .unwrap_or_else(|e| panic!("try_lock({name}, {owner}) failed: {e}"))
}

async fn unlock(store: &dyn DenyListRendering, name: &str, owner: &str) {
    store.unlock(name, owner).await.unwrap_or_else(|e| panic!("unlock({name}, {owner}) failed: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Lease lifecycle: checks

/// `claim_for_revocation` works from `Pending`, `Active`, `Irrevocable`, and from `Revoking`
/// whose claim (or retry time) lapsed: status `Revoking`, the claimer as `owner`,
/// `next_action_at = deadline`, version + 1, everything else kept.
pub async fn claim_works_from_each_claimable_state(store: &dyn LeaseAdapter) {
    let holder = unique_holder("claim-states");
    let check = |before: &Lease, after: &Lease, claim: &Claim, what: &str| {
        let expected = Lease {
            status: LeaseStatus::Revoking,
            owner: Some(claim.owner.clone()),
            next_action_at: claim.deadline,
            version: before.version + 1,
            ..before.clone()
        };
        assert_eq!(after, &expected, "claim of a {what} lease");
    };

    let pending = sample_lease(now(), &holder);
    create(store, &pending).await;
    let c = live_claim("revoker-pending");
    let claimed = claim(store, &pending, c.clone()).await;
    check(&pending, &claimed, &c, "Pending");
    assert_eq!(get(store, &pending.id).await, claimed, "get after claiming a Pending lease");

    let active = create_active(store, &sample_lease(now(), &holder), 600).await;
    let c = live_claim("revoker-active");
    let claimed = claim(store, &active, c.clone()).await;
    check(&active, &claimed, &c, "Active");
    assert_eq!(get(store, &active.id).await, claimed, "get after claiming an Active lease");

    let lease = create_active(store, &sample_lease(now(), &holder), 600).await;
    let first = claim(store, &lease, live_claim("revoker-1")).await;
    let irrevocable = revoke_failed(
        store,
        &first,
        failure("backend down", now() - TimeDelta::minutes(1), true, first.gc_at),
    )
    .await;
    assert_eq!(irrevocable.status, LeaseStatus::Irrevocable);
    let c = live_claim("revoker-daily-retry");
    let claimed = claim(store, &irrevocable, c.clone()).await;
    check(&irrevocable, &claimed, &c, "Irrevocable");
    assert_eq!((claimed.attempts, claimed.last_error.as_deref()), (1, Some("backend down")), "attempts kept");

    let lease = create_active(store, &sample_lease(now(), &holder), 600).await;
    let dead = claim(store, &lease, lapsed_claim("revoker-that-died")).await;
    let c = live_claim("revoker-reclaims");
    let claimed = claim(store, &dead, c.clone()).await;
    check(&dead, &claimed, &c, "Revoking (lapsed claim)");
    assert_eq!(get(store, &lease.id).await, claimed, "get after reclaiming a lapsed claim");

    let lease = create_active(store, &sample_lease(now(), &holder), 600).await;
    let first = claim(store, &lease, live_claim("revoker-1")).await;
    let retrying =
        revoke_failed(store, &first, failure("timeout", now() - TimeDelta::minutes(1), false, first.gc_at))
            .await;
    let c = live_claim("revoker-retry");
    let claimed = claim(store, &retrying, c.clone()).await;
    check(&retrying, &claimed, &c, "Revoking (retry time passed)");
}

/// A live claim, a `Revoked` lease and a stale version all refuse the claim with `Conflict`
/// and change nothing; a `Revoked` lease refuses every other transition too.
pub async fn claim_refuses_live_claims_revoked_leases_and_stale_versions(store: &dyn LeaseAdapter) {
    let holder = unique_holder("claim-refused");
    let lease = create_active(store, &sample_lease(now(), &holder), 600).await;
    let stale = store.claim_for_revocation(&lease.id, lease.version - 1, live_claim("x")).await;
    assert_conflict(stale, "claim at a stale version");
    let ahead = store.claim_for_revocation(&lease.id, lease.version + 1, live_claim("x")).await;
    assert_conflict(ahead, "claim at a future version");
    assert_eq!(get(store, &lease.id).await, lease, "refused claims must not write");

    let claimed = claim(store, &lease, live_claim("revoker-a")).await;
    let second = store.claim_for_revocation(&lease.id, claimed.version, live_claim("revoker-b")).await;
    assert_conflict(second, "claim of a Revoking lease whose claim is live (right version)");
    assert_eq!(get(store, &lease.id).await, claimed, "a refused claim must not steal the lease");

    let done = revoked(store, &claimed, now(), None).await;
    assert_eq!(done.status, LeaseStatus::Revoked);
    let v = done.version;
    assert_conflict(
        store.claim_for_revocation(&lease.id, v, lapsed_claim("x")).await,
        "claim of a Revoked lease",
    );
    assert_conflict(store.mark_revoked(&lease.id, v, now(), None).await, "mark_revoked of a Revoked lease");
    let again = store.record_revoke_failure(&lease.id, v, failure("x", now(), false, done.gc_at)).await;
    assert_conflict(again, "record_revoke_failure of a Revoked lease");
    let renewed = store.renew(&lease.id, v, done.expires_at, done.gc_at).await;
    assert_conflict(renewed, "renew of a Revoked lease");
    assert_eq!(get(store, &lease.id).await, done, "a Revoked lease never changes again");
}

/// The lifecycle transitions of an id that does not exist are `NotFound`, not `Conflict`.
pub async fn lifecycle_transitions_of_missing_lease_are_not_found(store: &dyn LeaseAdapter) {
    let lease = sample_lease(now(), &unique_holder("missing-lifecycle"));
    let id = &lease.id;
    assert_not_found(
        store.claim_for_revocation(id, 0, live_claim("x")).await,
        id,
        "claim of a missing lease",
    );
    assert_not_found(
        store.mark_revoked(id, 0, now(), Some("x")).await,
        id,
        "mark_revoked of a missing lease",
    );
    let failed = store.record_revoke_failure(id, 0, failure("x", now(), true, lease.gc_at)).await;
    assert_not_found(failed, id, "record_revoke_failure of a missing lease");
    assert_not_found(store.renew(id, 0, lease.expires_at, lease.gc_at).await, id, "renew of a missing lease");
    let stored = store.get(id).await.unwrap_or_else(|e| panic!("get failed: {e}"));
    assert_eq!(stored, None, "a refused transition must not create the lease");
}

/// Eight revokers claim the same lease at the same version at once: exactly one wins, the
/// others get `Conflict`, and the stored owner is the winner.
pub async fn concurrent_claims_have_one_winner(store: Arc<dyn LeaseAdapter>) {
    const TASKS: usize = 8;
    let active = create_active(store.as_ref(), &sample_lease(now(), &unique_holder("claim-race")), 600).await;
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (store, start, lease) = (Arc::clone(&store), Arc::clone(&start), active.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("revoker-{i}");
            start.wait().await;
            let result = store.claim_for_revocation(&lease.id, lease.version, live_claim(&owner)).await;
            (owner, result)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (owner, result) = task.await.expect("claim task panicked");
        match result {
            Ok(claimed) => winners.push((owner, claimed)),
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("concurrent claim: expected Ok or Conflict, got {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent claim must win: {winners:?}");
    let (owner, claimed) = winners.remove(0);
    assert_eq!(claimed.owner.as_deref(), Some(owner.as_str()), "the winner's claim was applied");
    assert_eq!(claimed.version, active.version + 1, "one transition, one version bump");
    assert_eq!(get(store.as_ref(), &active.id).await, claimed, "stored lease is the winner's");
}

/// `mark_revoked`: `Revoked`, owner cleared, `next_action_at = revoked_at`, `gc_at` kept,
/// `last_error` replaced only by a note; the lease leaves `list_due` and `list_live`.
pub async fn mark_revoked_ends_the_lease_and_leaves_the_indexes(store: &dyn LeaseAdapter) {
    let base = random_base();
    let holder = unique_holder("mark-revoked");
    let lease = past_lease(base, &holder, 10);
    create(store, &lease).await;
    let failed = store
        .record_issue_failure(&lease.id, lease.version, "issue failed", base + TimeDelta::seconds(10))
        .await
        .unwrap_or_else(|e| panic!("record_issue_failure failed: {e}"));
    let claimed = claim(store, &failed, claim_by("revoker", base + TimeDelta::seconds(100))).await;
    let revoked_at = base + TimeDelta::seconds(50);
    let done = revoked(store, &claimed, revoked_at, None).await;
    let expected = Lease {
        status: LeaseStatus::Revoked,
        owner: None,
        next_action_at: revoked_at,
        version: claimed.version + 1,
        ..claimed.clone()
    };
    assert_eq!(done, expected, "mark_revoked without a note keeps last_error and gc_at");
    assert_eq!(done.last_error.as_deref(), Some("issue failed"));
    assert_eq!(get(store, &lease.id).await, expected, "get after mark_revoked");

    let forced = past_lease(base, &holder, 20);
    create(store, &forced).await;
    let claimed_forced = claim(store, &forced, claim_by("admin:ops", base + TimeDelta::seconds(100))).await;
    let forced_done = revoked(store, &claimed_forced, revoked_at, Some("forced by admin")).await;
    assert_eq!(forced_done.last_error.as_deref(), Some("forced by admin"), "the note goes to last_error");
    assert_eq!(forced_done.gc_at, forced.gc_at, "gc_at kept");

    let due_later = due(store, base + TimeDelta::days(1), BIG).await;
    assert!(only(&due_later, &[&lease, &forced]).is_empty(), "Revoked leases are never due");
    let filter = LiveFilter { holder: Some(holder.clone()), ..LiveFilter::default() };
    assert!(live(store, &filter, BIG).await.is_empty(), "Revoked leases are not live");
    let history = store.by_holder(&holder, BIG).await.unwrap_or_else(|e| panic!("by_holder: {e}"));
    assert_eq!(id_set(&history), id_set_of(&[&lease, &forced]), "Revoked leases stay in the history");
}

/// `mark_revoked` only ends a `Revoking` lease at the expected version.
pub async fn mark_revoked_requires_revoking_at_version(store: &dyn LeaseAdapter) {
    let holder = unique_holder("mark-revoked-cond");
    let pending = sample_lease(now(), &holder);
    create(store, &pending).await;
    assert_conflict(store.mark_revoked(&pending.id, 0, now(), None).await, "mark_revoked of a Pending lease");
    let active = store
        .activate(&pending.id, 0, activation_for(&pending, 600))
        .await
        .unwrap_or_else(|e| panic!("activate failed: {e}"));
    assert_conflict(store.mark_revoked(&pending.id, 1, now(), None).await, "mark_revoked of an Active lease");
    let claimed = claim(store, &active, live_claim("revoker")).await;
    let stale = store.mark_revoked(&pending.id, active.version, now(), None).await;
    assert_conflict(stale, "mark_revoked at the pre-claim version");
    assert_eq!(get(store, &pending.id).await, claimed, "refused mark_revoked must not write");
}

/// `record_revoke_failure`: back to `Revoking` (or `Irrevocable`), attempts + 1, the error,
/// owner cleared, due again at `retry_at` (not before), and `gc_at` raised but never lowered.
pub async fn record_revoke_failure_schedules_retries_and_never_lowers_gc(store: &dyn LeaseAdapter) {
    let base = random_base();
    let lease = past_lease(base, &unique_holder("revoke-failure"), 10);
    create(store, &lease).await;
    let claimed = claim(store, &lease, claim_by("revoker-1", base + TimeDelta::seconds(100))).await;
    let retry_at = base + TimeDelta::seconds(200);
    let raised_gc = lease.gc_at + TimeDelta::days(1);
    let failed =
        revoke_failed(store, &claimed, failure("db: connection refused", retry_at, false, raised_gc)).await;
    let expected = Lease {
        status: LeaseStatus::Revoking,
        attempts: claimed.attempts + 1,
        last_error: Some("db: connection refused".to_owned()),
        next_action_at: retry_at,
        owner: None,
        gc_at: raised_gc,
        version: claimed.version + 1,
        ..claimed.clone()
    };
    assert_eq!(failed, expected, "record_revoke_failure (retry)");
    assert_eq!(get(store, &lease.id).await, expected, "get after record_revoke_failure");
    let before = due(store, retry_at - TimeDelta::seconds(1), BIG).await;
    assert!(only(&before, &[&lease]).is_empty(), "a failed revocation is not due before retry_at");
    let at = due(store, retry_at, BIG).await;
    assert_eq!(only(&at, &[&lease]), [&lease.id], "a failed revocation is due at retry_at");

    // The retry time passed (deep past), so another revoker may claim it.
    let again = claim(store, &failed, claim_by("revoker-2", base + TimeDelta::seconds(250))).await;
    let final_retry = base + TimeDelta::seconds(300);
    let lower_gc = now() + TimeDelta::hours(2);
    assert!(lower_gc < raised_gc, "test setup: a lower gc_at");
    let exhausted =
        revoke_failed(store, &again, failure("db: still down", final_retry, true, lower_gc)).await;
    let expected = Lease {
        status: LeaseStatus::Irrevocable,
        attempts: claimed.attempts + 2,
        last_error: Some("db: still down".to_owned()),
        next_action_at: final_retry,
        owner: None,
        gc_at: raised_gc,
        version: again.version + 1,
        ..again.clone()
    };
    assert_eq!(exhausted, expected, "record_revoke_failure (irrevocable) must not lower gc_at");
    assert_eq!(get(store, &lease.id).await, expected, "get after the irrevocable failure");
    let before = due(store, final_retry - TimeDelta::seconds(1), BIG).await;
    assert!(only(&before, &[&lease]).is_empty(), "an Irrevocable lease is not due before its retry");
    let at = due(store, final_retry, BIG).await;
    assert_eq!(only(&at, &[&lease]), [&lease.id], "an Irrevocable lease reappears at its retry time");
    let listed = at.iter().find(|l| l.id == lease.id).expect("listed above");
    assert_eq!(listed.status, LeaseStatus::Irrevocable, "listed with its current status");
}

/// `record_revoke_failure` only applies to a `Revoking` lease at the expected version.
pub async fn record_revoke_failure_requires_revoking_at_version(store: &dyn LeaseAdapter) {
    let active = create_active(store, &sample_lease(now(), &unique_holder("revoke-failure-cond")), 600).await;
    let f = || failure("x", now(), false, active.gc_at);
    assert_conflict(
        store.record_revoke_failure(&active.id, active.version, f()).await,
        "record_revoke_failure of an Active lease",
    );
    let claimed = claim(store, &active, live_claim("revoker")).await;
    assert_conflict(
        store.record_revoke_failure(&active.id, active.version, f()).await,
        "record_revoke_failure at the pre-claim version",
    );
    let first = revoke_failed(store, &claimed, f()).await;
    assert_conflict(
        store.record_revoke_failure(&active.id, claimed.version, f()).await,
        "a second record_revoke_failure at the same version",
    );
    assert_eq!(get(store, &active.id).await, first, "refused failures must not write");
}

/// A claimed lease is due again at the claim's deadline (so a dead revoker's lease is picked up),
/// not at its old expiry.
pub async fn claimed_lease_is_due_again_at_its_deadline(store: &dyn LeaseAdapter) {
    let base = random_base();
    let lease = past_lease(base, &unique_holder("claim-due"), 10_000);
    let active = create_active(store, &lease, 100).await;
    let deadline = base + TimeDelta::seconds(500);
    let claimed = claim(store, &active, claim_by("revoker", deadline)).await;
    let at_expiry = due(store, active.expires_at, BIG).await;
    assert!(only(&at_expiry, &[&lease]).is_empty(), "a claimed lease is not due at its old expiry");
    let before = due(store, deadline - TimeDelta::seconds(1), BIG).await;
    assert!(only(&before, &[&lease]).is_empty(), "a claimed lease is not due before the deadline");
    let at = due(store, deadline, BIG).await;
    assert_eq!(only(&at, &[&lease]), [&lease.id], "a claimed lease is due again at its deadline");
    let listed = at.iter().find(|l| l.id == lease.id).expect("listed above");
    assert_eq!(listed, &claimed, "listed as claimed (status, owner, deadline)");
}

/// `renew` moves `expires_at` (and `next_action_at`) and `gc_at` of an `Active` lease, up to
/// `max_expires_at` inclusive; beyond it, or from another state or version, it is a `Conflict`.
pub async fn renew_extends_an_active_lease_within_its_maximum(store: &dyn LeaseAdapter) {
    let holder = unique_holder("renew");
    let lease = sample_lease(now(), &holder);
    let active = create_active(store, &lease, 600).await;
    let expires_at = lease.created_at + TimeDelta::hours(1);
    let gc_at = now() + TimeDelta::days(31);
    let renewed = store
        .renew(&lease.id, active.version, expires_at, gc_at)
        .await
        .unwrap_or_else(|e| panic!("renew failed: {e}"));
    let expected = Lease {
        expires_at,
        next_action_at: expires_at,
        gc_at,
        version: active.version + 1,
        ..active.clone()
    };
    assert_eq!(renewed, expected, "renew must return the updated lease");
    assert_eq!(get(store, &lease.id).await, expected, "get after renew");

    let beyond =
        store.renew(&lease.id, renewed.version, lease.max_expires_at + TimeDelta::seconds(1), gc_at).await;
    assert_conflict(beyond, "renew past max_expires_at");
    let stale = store.renew(&lease.id, active.version, expires_at, gc_at).await;
    assert_conflict(stale, "renew at a stale version");
    assert_eq!(get(store, &lease.id).await, expected, "refused renewals must not write");
    let at_max = store
        .renew(&lease.id, renewed.version, lease.max_expires_at, gc_at)
        .await
        .unwrap_or_else(|e| panic!("renew to exactly max_expires_at must succeed: {e}"));
    assert_eq!(at_max.expires_at, lease.max_expires_at);

    let pending = sample_lease(now(), &holder);
    create(store, &pending).await;
    assert_conflict(store.renew(&pending.id, 0, expires_at, gc_at).await, "renew of a Pending lease");
    let claimed = claim(store, &at_max, live_claim("revoker")).await;
    assert_conflict(
        store.renew(&lease.id, claimed.version, expires_at, gc_at).await,
        "renew of a Revoking lease",
    );
}

/// A renewed lease is due at its new expiry, not at the old one.
pub async fn renewed_lease_is_due_at_its_new_expiry(store: &dyn LeaseAdapter) {
    let base = random_base();
    let lease = past_lease(base, &unique_holder("renew-due"), 10_000);
    let active = create_active(store, &lease, 100).await;
    let new_expiry = base + TimeDelta::seconds(400);
    let renewed = store
        .renew(&lease.id, active.version, new_expiry, active.gc_at)
        .await
        .unwrap_or_else(|e| panic!("renew failed: {e}"));
    let old = due(store, active.expires_at, BIG).await;
    assert!(only(&old, &[&lease]).is_empty(), "a renewed lease is not due at its old expiry");
    let before = due(store, new_expiry - TimeDelta::seconds(1), BIG).await;
    assert!(only(&before, &[&lease]).is_empty(), "a renewed lease is not due before its new expiry");
    let at = due(store, new_expiry, BIG).await;
    assert_eq!(only(&at, &[&lease]), [&lease.id], "a renewed lease is due at its new expiry");
    assert_eq!(at.iter().find(|l| l.id == lease.id), Some(&renewed), "listed as renewed");
}

/// `list_live` returns every lease that still needs action (any status but `Revoked`) matching
/// every set field of the filter, whole and current, at most `limit`.
pub async fn list_live_returns_matching_leases_that_need_action(store: &dyn LeaseAdapter) {
    let holder = unique_holder("live");
    let other_holder = unique_holder("live-other");
    let policy = format!("conformance-live-{:016x}", random_u64());
    // One creation second for all, so they share the time part of their ids.
    let t = now();
    let ours = |holder: &LeaseHolder| Lease { policy: policy.clone(), ..sample_lease(t, holder) };

    let pending = ours(&holder);
    create(store, &pending).await;
    let mut token = ours(&holder);
    token.backend =
        BackendRef::SignedToken { audience: "https://api.example".to_owned(), key_id: "k".to_owned() };
    let active = create_active(store, &token, 600).await;
    let revoking = claim(store, &create_active(store, &ours(&holder), 600).await, live_claim("r")).await;
    let to_fail = claim(store, &create_active(store, &ours(&holder), 600).await, live_claim("r")).await;
    let irrevocable =
        revoke_failed(store, &to_fail, failure("x", t + TimeDelta::days(1), true, to_fail.gc_at)).await;
    let to_end = claim(store, &create_active(store, &ours(&holder), 600).await, live_claim("r")).await;
    let ended = revoked(store, &to_end, t, None).await;
    let other_policy = sample_lease(t, &holder);
    create(store, &other_policy).await;
    let others = ours(&other_holder);
    create(store, &others).await;

    let by_holder = LiveFilter { holder: Some(holder.clone()), ..LiveFilter::default() };
    let found = live(store, &by_holder, BIG).await;
    assert_eq!(
        id_set(&found),
        id_set_of(&[&pending, &active, &revoking, &irrevocable, &other_policy]),
        "list_live by holder: every status but Revoked"
    );
    for lease in &found {
        assert_eq!(lease, &get(store, &lease.id).await, "list_live returns whole, current leases");
    }
    let by_policy = LiveFilter { policy: Some(policy.clone()), ..LiveFilter::default() };
    assert_eq!(
        id_set(&live(store, &by_policy, BIG).await),
        id_set_of(&[&pending, &active, &revoking, &irrevocable, &others]),
        "list_live by policy"
    );
    let both =
        LiveFilter { holder: Some(holder.clone()), policy: Some(policy.clone()), ..LiveFilter::default() };
    assert_eq!(
        id_set(&live(store, &both, BIG).await),
        id_set_of(&[&pending, &active, &revoking, &irrevocable]),
        "list_live by holder and policy"
    );
    let tokens = LiveFilter { backend_kind: Some(crate::backend::BackendKind::SignedToken), ..both.clone() };
    assert_eq!(id_set(&live(store, &tokens, BIG).await), id_set_of(&[&active]), "list_live by backend kind");
    let sessions =
        LiveFilter { backend_kind: Some(crate::backend::BackendKind::AwsSession), ..by_policy.clone() };
    assert_eq!(
        id_set(&live(store, &sessions, BIG).await),
        id_set_of(&[&pending, &revoking, &irrevocable, &others]),
        "list_live by policy and backend kind"
    );
    let one = LiveFilter { id_prefix: Some(pending.id.to_string()), ..LiveFilter::default() };
    assert_eq!(id_set(&live(store, &one, BIG).await), id_set_of(&[&pending]), "list_live by a whole id");
    let gone = LiveFilter { id_prefix: Some(ended.id.to_string()), ..LiveFilter::default() };
    assert!(live(store, &gone, BIG).await.is_empty(), "a Revoked lease is not live, even by id");
    let time_part = LiveFilter { id_prefix: Some(pending.id.as_str()[..10].to_owned()), ..by_policy.clone() };
    assert_eq!(
        id_set(&live(store, &time_part, BIG).await),
        id_set_of(&[&pending, &active, &revoking, &irrevocable, &others]),
        "list_live by an id prefix (the shared time part) and policy"
    );
    let lowercase = LiveFilter { id_prefix: Some(pending.id.as_str().to_lowercase()), ..by_policy.clone() };
    assert!(live(store, &lowercase, BIG).await.is_empty(), "id prefixes match exactly (ids are upper case)");

    let two = live(store, &by_holder, 2).await;
    assert_eq!(two.len(), 2, "list_live with limit 2 returns 2 of the 5");
    assert!(live(store, &by_holder, 0).await.is_empty(), "list_live with limit 0");
    let nobody = LiveFilter { holder: Some(unique_holder("live-nobody")), ..LiveFilter::default() };
    assert!(live(store, &nobody, BIG).await.is_empty(), "a holder without leases");
    let unfiltered = live(store, &LiveFilter::default(), 3).await;
    assert!(!unfiltered.is_empty(), "an unfiltered list_live sees the live leases (at most 3)");
}

/// A lock excludes other owners until its owner unlocks it; its owner may take it again
/// (re-entrant); unlocking by anyone else changes nothing; long names work.
pub async fn try_lock_excludes_other_owners_until_unlocked(store: &dyn DenyListRendering) {
    let until = now() + TimeDelta::hours(1);
    // A name shaped like the hashed form of a long name must not collide with one.
    let hashed_looking = format!("sha256#{}", unique_lock("hash-like"));
    let long = format!("{}/{}", unique_lock("long"), "n".repeat(3000));
    for name in [unique_lock("basic"), long.clone(), format!("{long}x"), hashed_looking] {
        assert!(lock(store, &name, "a", until).await, "a free lock is taken ({} bytes)", name.len());
        assert!(lock(store, &name, "a", until + TimeDelta::minutes(5)).await, "the owner may take it again");
        assert!(!lock(store, &name, "b", until).await, "another owner is refused");
        unlock(store, &name, "b").await;
        assert!(!lock(store, &name, "b", until).await, "unlock by a non-owner is a no-op");
        unlock(store, &name, "a").await;
        assert!(lock(store, &name, "b", until).await, "after unlock another owner may take it");
        assert!(!lock(store, &name, "a", until).await, "and the first owner is now refused");
        unlock(store, &name, "b").await;
    }
    // Names are independent; unlocking something never locked is fine.
    let (x, y) = (unique_lock("x"), unique_lock("y"));
    assert!(lock(store, &x, "a", until).await);
    assert!(lock(store, &y, "b", until).await, "another name is another lock");
    unlock(store, &unique_lock("never"), "a").await;
}

/// A lock whose `until` passed may be taken over by another owner; its owner may also move
/// `until` earlier, which frees it as early.
pub async fn expired_lock_can_be_taken_over(store: &dyn DenyListRendering) {
    let name = unique_lock("expired");
    let past = now() - TimeDelta::minutes(1);
    let future = now() + TimeDelta::hours(1);
    assert!(lock(store, &name, "dead-writer", past).await, "a free lock is taken, even until a past time");
    assert!(lock(store, &name, "b", future).await, "an expired lock is taken over");
    assert!(!lock(store, &name, "dead-writer", future).await, "the old owner lost it");
    assert!(lock(store, &name, "b", past).await, "the owner moves until earlier");
    assert!(lock(store, &name, "c", future).await, "which frees it for others");
    unlock(store, &name, "b").await;
    assert!(!lock(store, &name, "b", future).await, "unlock by the previous owner did not release c's lock");
}

/// A role key no other check (or run) uses.
fn unique_role(tag: &str) -> String {
    format!("aws:{:012}:conformance-{tag}-{:x}", random_u64() % 1_000_000_000_000, random_u64())
}

fn sample_list(sessions: &[&str]) -> DenyList {
    let mut list = DenyList::default();
    for session in sessions {
        list.add(session, whole_seconds(now()) + TimeDelta::minutes(30));
    }
    list
}

/// A list is created once (a second create is `Stale`), replaced only at its current version,
/// and read back as written; a new or replaced list is pending until rendered.
pub async fn deny_lists_are_created_once_and_replaced_at_their_version(store: &dyn DenyListRendering) {
    let role = unique_role("versions");
    assert!(store.deny_list(&role).await.expect("read").is_none(), "no list before the first write");
    let first = sample_list(&["01AAAAAAAAAAAAAAAAAAAAAAAA"]);
    let created = store.put_deny_list(&role, None, &first).await.expect("create");
    assert_eq!((created.version, created.rendered_version), (1, 0));
    assert!(created.is_pending());
    assert!(
        matches!(store.put_deny_list(&role, None, &first).await, Err(StoreError::Stale { .. })),
        "a second create is refused"
    );
    let second = sample_list(&["01AAAAAAAAAAAAAAAAAAAAAAAA", "01BBBBBBBBBBBBBBBBBBBBBBBB"]);
    let replaced = store.put_deny_list(&role, Some(1), &second).await.expect("replace at version 1");
    assert_eq!(replaced.version, 2);
    assert!(
        matches!(store.put_deny_list(&role, Some(1), &first).await, Err(StoreError::Stale { .. })),
        "a write at a stale version is refused"
    );
    let read = store.deny_list(&role).await.expect("read").expect("the list");
    assert_eq!((read.role.as_str(), read.version, &read.list), (role.as_str(), 2, &second));
}

/// Marking a list rendered takes effect only at its current version; a later write makes it
/// pending again; `pending_deny_lists` lists exactly the pending ones.
pub async fn rendering_catches_up_only_with_the_current_version(store: &dyn DenyListRendering) {
    let (role, other) = (unique_role("render"), unique_role("render-other"));
    store.put_deny_list(&role, None, &sample_list(&["01AAAAAAAAAAAAAAAAAAAAAAAA"])).await.expect("create");
    store.put_deny_list(&other, None, &sample_list(&["01CCCCCCCCCCCCCCCCCCCCCCCC"])).await.expect("create");
    let pending =
        |lists: Vec<crate::denylist::StoredDenyList>, role: &str| lists.iter().any(|l| l.role == role);
    let listed = store.pending_deny_lists(BIG).await.expect("pending");
    assert!(pending(listed.clone(), &role) && pending(listed, &other), "new lists are pending");
    assert!(!store.mark_deny_list_rendered(&role, 2).await.expect("mark"), "no version 2 yet");
    assert!(store.mark_deny_list_rendered(&role, 1).await.expect("mark"), "version 1 is current");
    let read = store.deny_list(&role).await.expect("read").expect("the list");
    assert_eq!(read.rendered_version, 1);
    assert!(!read.is_pending());
    let listed = store.pending_deny_lists(BIG).await.expect("pending");
    assert!(!pending(listed.clone(), &role), "a rendered list is not pending");
    assert!(pending(listed, &other), "the other list still is");
    store
        .put_deny_list(
            &role,
            Some(1),
            &sample_list(&["01AAAAAAAAAAAAAAAAAAAAAAAA", "01BBBBBBBBBBBBBBBBBBBBBBBB"]),
        )
        .await
        .expect("replace");
    assert!(!store.mark_deny_list_rendered(&role, 1).await.expect("mark"), "version 1 is no longer current");
    let read = store.deny_list(&role).await.expect("read").expect("the list");
    assert_eq!((read.version, read.rendered_version), (2, 1), "a stale mark changes nothing");
    assert!(pending(store.pending_deny_lists(BIG).await.expect("pending"), &role), "pending again");
    assert!(!store.mark_deny_list_rendered(&unique_role("absent"), 1).await.expect("mark"), "no such list");
}

/// Eight writers add one session each to the same list at once (read, change, conditional
/// write, retry): every session is in the final list.
pub async fn concurrent_deny_list_updates_lose_no_entry(store: Arc<dyn DenyListRendering>) {
    const TASKS: usize = 8;
    let role = unique_role("race");
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let expires = whole_seconds(now()) + TimeDelta::minutes(30);
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (store, start, role) = (Arc::clone(&store), Arc::clone(&start), role.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let session = format!("01RACE{i:020}");
            denylist::update(store.as_ref(), &role, |list| list.add(&session, expires)).await
        }));
    }
    for task in tasks {
        task.await.expect("update task panicked").expect("update");
    }
    let read = store.deny_list(&role).await.expect("read").expect("the list");
    assert_eq!(read.list.sessions().len(), TASKS, "no update was lost: {:?}", read.list.sessions());
    assert!(read.version >= 1 && usize::try_from(read.version).unwrap_or(usize::MAX) <= TASKS);
}

/// Eight owners try to take the same free lock at once: exactly one gets it.
pub async fn concurrent_try_locks_have_one_holder(store: Arc<dyn DenyListRendering>) {
    const TASKS: usize = 8;
    let name = unique_lock("race");
    let until = now() + TimeDelta::hours(1);
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (store, start, name) = (Arc::clone(&store), Arc::clone(&start), name.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("writer-{i}");
            start.wait().await;
            let got = store.try_lock(&name, &owner, until).await;
            (owner, got)
        }));
    }
    let mut holders = Vec::new();
    for task in tasks {
        let (owner, got) = task.await.expect("lock task panicked");
        if got.unwrap_or_else(|e| panic!("concurrent try_lock failed: {e}")) {
            holders.push(owner);
        }
    }
    assert_eq!(holders.len(), 1, "exactly one concurrent try_lock must win: {holders:?}");
    for i in 0..TASKS {
        let owner = format!("writer-{i}");
        let again = lock(store.as_ref(), &name, &owner, until).await;
        assert_eq!(again, holders[0] == owner, "only the winner ({}) holds it afterwards", holders[0]);
    }
}

// ---------------------------------------------------------------------------------------------
// Checks on the store's clock (see `run_clocked`)

/// A `Revoking` lease can be claimed again from the second of its deadline on (whole seconds of
/// the store's clock), not before.
pub async fn claim_lapses_at_the_deadline_second(store: &dyn LeaseAdapter, clock: &ManualClock) {
    let base = random_base();
    let lease = past_lease(base, &unique_holder("claim-clock"), 10);
    create(store, &lease).await;
    let deadline = base + TimeDelta::seconds(100);
    clock.set(base);
    let claimed = claim(store, &lease, claim_by("revoker-1", deadline)).await;
    for early in [deadline - TimeDelta::seconds(1), deadline - TimeDelta::milliseconds(1)] {
        clock.set(early);
        let result =
            store.claim_for_revocation(&lease.id, claimed.version, claim_by("revoker-2", deadline)).await;
        assert_conflict(result, &format!("claim before the deadline (store clock {early})"));
    }
    clock.set(deadline);
    let reclaimed = claim(store, &claimed, claim_by("revoker-2", deadline + TimeDelta::seconds(100))).await;
    assert_eq!(reclaimed.owner.as_deref(), Some("revoker-2"), "claimed at the deadline second");

    // A deadline inside a second lapses at the start of that second (DynamoDB keeps only the
    // second; the other stores compare seconds too, so all agree).
    let odd = base + TimeDelta::seconds(300) + TimeDelta::milliseconds(500);
    clock.set(base + TimeDelta::seconds(200));
    let held = claim(store, &reclaimed, claim_by("revoker-3", odd)).await;
    clock.set(base + TimeDelta::seconds(299) + TimeDelta::milliseconds(999));
    let early = store.claim_for_revocation(&lease.id, held.version, claim_by("revoker-4", odd)).await;
    assert_conflict(early, "claim in the second before a sub-second deadline");
    clock.set(base + TimeDelta::seconds(300));
    let last = claim(store, &held, claim_by("revoker-4", odd)).await;
    assert_eq!(last.owner.as_deref(), Some("revoker-4"), "a sub-second deadline lapses at its whole second");
}

/// A lock is held through the second of its `until` and free from the next one (the store's
/// clock, whole seconds: the same rule as the replay guard).
pub async fn lock_expires_after_its_until_second(store: &dyn DenyListRendering, clock: &ManualClock) {
    let base = random_base();
    let name = unique_lock("clock");
    let until = base + TimeDelta::seconds(10);
    clock.set(base);
    assert!(lock(store, &name, "a", until).await);
    for held in [until, until + TimeDelta::milliseconds(999)] {
        clock.set(held);
        assert!(
            !lock(store, &name, "b", held + TimeDelta::minutes(1)).await,
            "held at {held} (until {until})"
        );
    }
    clock.set(until + TimeDelta::seconds(1));
    assert!(lock(store, &name, "b", until + TimeDelta::minutes(1)).await, "free after its until second");
}
