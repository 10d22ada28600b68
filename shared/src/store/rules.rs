//! Transition rules shared by the adapters that hold whole `Lease` values (memory, embedded),
//! so their semantics cannot drift apart. The DynamoDB adapter expresses the same rules as
//! condition and update expressions.
//!
//! Each transition is a precondition (`check_*`: `NotFound` when absent, `Conflict` when not in
//! the required state at the expected version) and an effect (a pure `Lease -> Lease`); the
//! adapters run both inside one critical section (mutex, write transaction).

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use crate::denylist::{DenyList, StoredDenyList};
use crate::lease::{Activation, Claim, Lease, LeaseId, LeaseStatus, LiveFilter, RevokeFailure, StoreError};

/// The `expected` text of a [`StoreError::Conflict`] for a transition out of `Pending`.
pub(crate) fn pending_at(version: u64) -> String {
    format!("PENDING at version {version}")
}

/// `create_pending` accepts only `Pending` leases: anything else would skip the state machine.
pub(crate) fn check_new(lease: &Lease) -> Result<(), StoreError> {
    if lease.status == LeaseStatus::Pending {
        Ok(())
    } else {
        Err(StoreError::Conflict { id: lease.id.clone(), expected: "PENDING".to_owned() })
    }
}

/// The precondition of `activate` and `record_issue_failure`.
pub(crate) fn check_pending(
    current: Option<&Lease>,
    id: &LeaseId,
    expected_version: u64,
) -> Result<(), StoreError> {
    check(
        current,
        id,
        expected_version,
        |lease| lease.status == LeaseStatus::Pending,
        || pending_at(expected_version),
    )
}

/// `Pending` → `Active`; the revoker next looks at it when it expires.
pub(crate) fn activate(mut lease: Lease, activation: &Activation) -> Lease {
    lease.status = LeaseStatus::Active;
    lease.issued_at = Some(activation.issued_at);
    lease.expires_at = activation.expires_at;
    lease.next_action_at = activation.expires_at;
    lease.gc_at = activation.gc_at;
    lease.version += 1;
    lease
}

/// Stays `Pending`, remembers why, and becomes due for cleanup at `due_at`.
pub(crate) fn record_issue_failure(mut lease: Lease, error: &str, due_at: DateTime<Utc>) -> Lease {
    lease.last_error = Some(error.to_owned());
    lease.next_action_at = due_at;
    lease.version += 1;
    lease
}

/// The `expected` text of a [`StoreError::Conflict`] for `claim_for_revocation`.
pub(crate) fn claimable_at(version: u64) -> String {
    format!("PENDING, ACTIVE, IRREVOCABLE or REVOKING with a lapsed claim, at version {version}")
}

/// The `expected` text of a [`StoreError::Conflict`] for a transition out of `Revoking`.
pub(crate) fn revoking_at(version: u64) -> String {
    format!("REVOKING at version {version}")
}

/// The `expected` text of a [`StoreError::Conflict`] for `renew`.
pub(crate) fn renewable_at(version: u64, expires_at: DateTime<Utc>) -> String {
    format!("ACTIVE at version {version} with max_expires_at >= {expires_at}")
}

/// Whether the claim (or retry time) of a `Revoking` lease has lapsed at `now`, so another
/// revoker may claim it. Whole seconds, like the DynamoDB condition `#next_action_at <= :now`
/// on epoch seconds: a claim whose deadline falls in the current second has lapsed.
pub(crate) fn claim_lapsed(lease: &Lease, now: DateTime<Utc>) -> bool {
    lease.next_action_at.timestamp() <= now.timestamp()
}

/// `lease` exists, is at `expected_version` and `allowed` accepts it; otherwise `NotFound` or
/// a `Conflict` carrying `expected`.
fn check(
    current: Option<&Lease>,
    id: &LeaseId,
    expected_version: u64,
    allowed: impl FnOnce(&Lease) -> bool,
    expected: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    match current {
        None => Err(StoreError::NotFound(id.clone())),
        Some(lease) if lease.version == expected_version && allowed(lease) => Ok(()),
        Some(_) => Err(StoreError::Conflict { id: id.clone(), expected: expected() }),
    }
}

/// The precondition of `claim_for_revocation`: any status but `Revoked`, and a `Revoking`
/// lease only once its claim (or retry time) has lapsed at `now` (the store's clock).
pub(crate) fn check_claimable(
    current: Option<&Lease>,
    id: &LeaseId,
    expected_version: u64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    check(
        current,
        id,
        expected_version,
        |lease| match lease.status {
            LeaseStatus::Pending | LeaseStatus::Active | LeaseStatus::Irrevocable => true,
            LeaseStatus::Revoking => claim_lapsed(lease, now),
            LeaseStatus::Revoked => false,
        },
        || claimable_at(expected_version),
    )
}

/// The precondition of `mark_revoked` and `record_revoke_failure`.
pub(crate) fn check_revoking(
    current: Option<&Lease>,
    id: &LeaseId,
    expected_version: u64,
) -> Result<(), StoreError> {
    check(
        current,
        id,
        expected_version,
        |lease| lease.status == LeaseStatus::Revoking,
        || revoking_at(expected_version),
    )
}

/// The precondition of `renew`: `Active`, and the new expiry within `max_expires_at`.
pub(crate) fn check_renewable(
    current: Option<&Lease>,
    id: &LeaseId,
    expected_version: u64,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    check(
        current,
        id,
        expected_version,
        |lease| lease.status == LeaseStatus::Active && expires_at <= lease.max_expires_at,
        || renewable_at(expected_version, expires_at),
    )
}

/// → `Revoking`, owned by the claimer until `deadline` (then due again, so a dead claimer's
/// lease is picked up by the next revoker).
pub(crate) fn claim(mut lease: Lease, claim: &Claim) -> Lease {
    lease.status = LeaseStatus::Revoking;
    lease.owner = Some(claim.owner.clone());
    lease.next_action_at = claim.deadline;
    lease.version += 1;
    lease
}

/// `Revoking` → `Revoked` (terminal: leaves the due index). `gc_at` is kept.
pub(crate) fn mark_revoked(mut lease: Lease, revoked_at: DateTime<Utc>, note: Option<&str>) -> Lease {
    lease.status = LeaseStatus::Revoked;
    lease.owner = None;
    if let Some(note) = note {
        lease.last_error = Some(note.to_owned());
    }
    lease.next_action_at = revoked_at;
    lease.version += 1;
    lease
}

/// `Revoking` → `Revoking` (retry at `retry_at`) or `Irrevocable`; the claim is released and
/// `gc_at` only ever moves later.
pub(crate) fn record_revoke_failure(mut lease: Lease, failure: &RevokeFailure) -> Lease {
    lease.status = if failure.irrevocable { LeaseStatus::Irrevocable } else { LeaseStatus::Revoking };
    lease.attempts = lease.attempts.saturating_add(1);
    lease.last_error = Some(failure.error.clone());
    lease.next_action_at = failure.retry_at;
    lease.owner = None;
    lease.gc_at = lease.gc_at.max(failure.gc_at);
    lease.version += 1;
    lease
}

/// `Active` → `Active` with a new expiry (the revoker next looks at it then).
pub(crate) fn renew(mut lease: Lease, expires_at: DateTime<Utc>, gc_at: DateTime<Utc>) -> Lease {
    lease.expires_at = expires_at;
    lease.next_action_at = expires_at;
    lease.gc_at = gc_at;
    lease.version += 1;
    lease
}

/// Whether `list_live` returns this lease for `filter`.
pub(crate) fn is_live_match(lease: &Lease, filter: &LiveFilter) -> bool {
    lease.status.needs_action() && filter.matches(lease)
}

/// Whether `list_due` must return this lease at `now`.
pub(crate) fn is_due(lease: &Lease, now: DateTime<Utc>) -> bool {
    lease.status.needs_action() && lease.next_action_at <= now
}

/// `list_due` order: oldest action time first; the id breaks ties so the order is total.
pub(crate) fn due_order(a: &Lease, b: &Lease) -> Ordering {
    (a.next_action_at, &a.id).cmp(&(b.next_action_at, &b.id))
}

/// `by_holder` order: newest first; the id breaks ties so the order is total.
pub(crate) fn newest_first(a: &Lease, b: &Lease) -> Ordering {
    (b.created_at, &b.id).cmp(&(a.created_at, &a.id))
}

/// Whether a replay-guard entry expiring at `expires_secs` still blocks the jti at `now`.
/// Same rule as the DynamoDB condition `#ttl < :now` (an entry expiring this very second
/// still counts).
pub(crate) fn jti_live(expires_secs: i64, now: DateTime<Utc>) -> bool {
    expires_secs >= now.timestamp()
}

/// Whether a lock held until `until_secs` (epoch seconds) still excludes other owners at
/// `now`. Same rule as the DynamoDB condition `#until < :now` (a lock held until this very
/// second is still held).
pub(crate) fn lock_held(until_secs: i64, now: DateTime<Utc>) -> bool {
    until_secs >= now.timestamp()
}

/// Whether `owner` may take (or extend) a lock currently held by `holder` until `until_secs`:
/// free, expired, or already theirs (re-entrant).
pub(crate) fn may_lock(current: Option<(&str, i64)>, owner: &str, now: DateTime<Utc>) -> bool {
    current.is_none_or(|(holder, until_secs)| holder == owner || !lock_held(until_secs, now))
}

/// `put_deny_list`: the stored list after writing `list` where `current` stands, or `Stale`
/// when `current` is not at `expected_version` (`None`: must not exist yet).
pub(crate) fn put_deny_list(
    current: Option<&StoredDenyList>,
    role: &str,
    expected_version: Option<u64>,
    list: &DenyList,
) -> Result<StoredDenyList, StoreError> {
    let stale =
        || StoreError::Stale { key: format!("deny list {role}"), expected: format!("{expected_version:?}") };
    match (current, expected_version) {
        (None, None) => {
            Ok(StoredDenyList { role: role.to_owned(), list: list.clone(), version: 1, rendered_version: 0 })
        }
        (Some(current), Some(expected)) if current.version == expected => Ok(StoredDenyList {
            role: role.to_owned(),
            list: list.clone(),
            version: expected.saturating_add(1),
            rendered_version: current.rendered_version,
        }),
        _ => Err(stale()),
    }
}

/// `mark_deny_list_rendered`: takes effect only while `version` is the stored version.
pub(crate) fn mark_rendered(current: &mut StoredDenyList, version: u64) -> bool {
    if current.version != version {
        return false;
    }
    current.rendered_version = version;
    true
}
