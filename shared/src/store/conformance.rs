//! The lease-store conformance suite: one set of checks every [`LeaseStore`] adapter must pass.
//!
//! Run it with [`run_all`] from each adapter's tests (memory and embedded unit tests, the
//! DynamoDB integration test against LocalStack). Each check uses its own lease ids, holders,
//! issuers and — for `list_due` — its own randomly placed window of (deep past) times, so the
//! checks can share one table and run in parallel with other runs of the suite.
//!
//! Leases are built with whole-second times: the DynamoDB adapter stores epoch seconds, so
//! sub-second parts would not round-trip there.
//!
//! Checks panic with a message naming the broken rule (this module is test support).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Timelike, Utc};

use crate::lease::{
    Activation, BackendRef, JtiOutcome, Lease, LeaseHolder, LeaseId, LeaseStatus, LeaseStore, StoreError,
};

/// Large enough that leases of other checks never crowd this check's leases out of a result.
const BIG: usize = 1000;

/// Runs every check against `store`, one after the other.
pub async fn run_all(store: Arc<dyn LeaseStore>) {
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
    active_lease_is_due_at_expiry_not_before(s).await;
    pending_lease_is_due_at_next_action(s).await;
    by_holder_returns_only_that_holder_newest_first(s).await;
    long_identities_and_jtis_work(s).await;
    record_jti_first_use_then_replayed(s).await;
    record_jti_is_per_issuer(s).await;
    expired_jti_is_reusable(s).await;
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

async fn create(store: &dyn LeaseStore, lease: &Lease) {
    store.create_pending(lease).await.unwrap_or_else(|e| panic!("create_pending({}) failed: {e}", lease.id));
}

async fn get(store: &dyn LeaseStore, id: &LeaseId) -> Lease {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("get({id}) failed: {e}"))
        .unwrap_or_else(|| panic!("get({id}) found nothing"))
}

async fn due(store: &dyn LeaseStore, now: DateTime<Utc>, limit: usize) -> Vec<Lease> {
    let due =
        store.list_due(now, limit).await.unwrap_or_else(|e| panic!("list_due({now}, {limit}) failed: {e}"));
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
pub async fn create_then_get_round_trips(store: &dyn LeaseStore) {
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
pub async fn get_of_unknown_id_is_none(store: &dyn LeaseStore) {
    let id = LeaseId::generate(now()).expect("lease id");
    let got = store.get(&id).await.unwrap_or_else(|e| panic!("get({id}) failed: {e}"));
    assert_eq!(got, None, "get of an unknown id");
}

/// A second `create_pending` with the same id fails with `AlreadyExists` and changes nothing.
pub async fn duplicate_create_is_already_exists(store: &dyn LeaseStore) {
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
pub async fn create_requires_pending_status(store: &dyn LeaseStore) {
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
pub async fn activate_sets_fields_and_bumps_version(store: &dyn LeaseStore) {
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
pub async fn activate_with_wrong_version_conflicts(store: &dyn LeaseStore) {
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
pub async fn transitions_of_missing_lease_are_not_found(store: &dyn LeaseStore) {
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
pub async fn activate_twice_conflicts(store: &dyn LeaseStore) {
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
pub async fn concurrent_activations_have_one_winner(store: Arc<dyn LeaseStore>) {
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
pub async fn record_issue_failure_sets_error_and_makes_due(store: &dyn LeaseStore) {
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
pub async fn record_issue_failure_requires_pending_at_version(store: &dyn LeaseStore) {
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
pub async fn list_due_returns_due_leases_oldest_first_within_limit(store: &dyn LeaseStore) {
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

/// An `Active` lease becomes due exactly at its expiry.
pub async fn active_lease_is_due_at_expiry_not_before(store: &dyn LeaseStore) {
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
pub async fn pending_lease_is_due_at_next_action(store: &dyn LeaseStore) {
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
pub async fn by_holder_returns_only_that_holder_newest_first(store: &dyn LeaseStore) {
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
pub async fn long_identities_and_jtis_work(store: &dyn LeaseStore) {
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
    store: &dyn LeaseStore,
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
pub async fn record_jti_first_use_then_replayed(store: &dyn LeaseStore) {
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
pub async fn record_jti_is_per_issuer(store: &dyn LeaseStore) {
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

/// A record whose expiry has passed counts as absent: the jti can be recorded again (and is
/// then guarded again).
pub async fn expired_jti_is_reusable(store: &dyn LeaseStore) {
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
