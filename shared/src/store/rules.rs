//! Transition rules shared by the adapters that hold whole `Lease` values (memory, embedded),
//! so their semantics cannot drift apart. The DynamoDB adapter expresses the same rules as
//! condition and update expressions.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use crate::lease::{Activation, Lease, LeaseId, LeaseStatus, StoreError};

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
    match current {
        None => Err(StoreError::NotFound(id.clone())),
        Some(lease) if lease.status == LeaseStatus::Pending && lease.version == expected_version => Ok(()),
        Some(_) => Err(StoreError::Conflict { id: id.clone(), expected: pending_at(expected_version) }),
    }
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
