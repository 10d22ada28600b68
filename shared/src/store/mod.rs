//! Lease store adapters: implementations of [`LeaseStore`](crate::lease::LeaseStore).
//!
//! - [`dynamodb`]: the cloud store (single DynamoDB table, sparse `due` and `identity` GSIs).
//! - [`embedded`]: the local default for `credbroker serve` (one redb file).
//! - [`memory`]: an in-memory fake for unit tests of the core (feature `testing`).
//!
//! All three have the same semantics, pinned by one shared conformance suite
//! ([`conformance`], behind the `testing` feature) that runs against each of them.
//!
//! Semantics every adapter shares (beyond the trait docs):
//! - `create_pending` only accepts leases whose status is `Pending` (anything else is a
//!   [`StoreError::Conflict`](crate::lease::StoreError::Conflict) with `expected = "PENDING"`).
//! - `activate` sets `status = Active`, `issued_at`, `expires_at`, `gc_at`,
//!   `next_action_at = expires_at` and bumps `version` by one.
//! - `record_issue_failure` keeps the lease `Pending`, sets `last_error` and
//!   `next_action_at = due_at`, and bumps `version` by one; `attempts` is left alone (it counts
//!   revocation attempts).
//! - Both transitions fail with `NotFound` when the id is absent and `Conflict` when the lease
//!   is not `Pending` at `expected_version`.
//! - `claim_for_revocation` is allowed from `Pending`, `Active` and `Irrevocable` at any time,
//!   and from `Revoking` once `next_action_at` (the previous claim's deadline, or the retry time
//!   set by `record_revoke_failure`) is at or before the store clock's "now", compared in whole
//!   seconds. It sets `status = Revoking`, `owner`, `next_action_at = deadline`; `attempts` and
//!   `last_error` are kept.
//! - `mark_revoked` (from `Revoking`) sets `status = Revoked`, clears `owner`,
//!   `next_action_at = revoked_at`, `last_error = note` only when a note is given, and keeps
//!   `gc_at`. `record_revoke_failure` (from `Revoking`) sets `Revoking` or `Irrevocable`,
//!   `attempts + 1`, `last_error`, `next_action_at = retry_at`, clears `owner`, and sets
//!   `gc_at = max(gc_at, failure.gc_at)`. `renew` (from `Active`, only if
//!   `expires_at <= max_expires_at`) sets `expires_at = next_action_at` and `gc_at`.
//! - Every transition bumps `version` by one; each fails with `NotFound` when the id is absent
//!   and `Conflict` when the lease exists but is not in an allowed state at `expected_version`.
//! - `list_live` returns matching leases whose status is not `Revoked`, in no particular order.
//! - Locks: `try_lock` succeeds when the lock is free, expired (`until` strictly before "now",
//!   whole seconds, the store's clock: the same rule as the replay guard) or already held by the
//!   same owner (which then moves `until`, possibly earlier); `unlock` by anyone but the
//!   holder changes nothing.
//! - `list_due` orders by `(next_action_at, id)`; `by_holder` by `(created_at, id)` descending.
//! - `record_token_use` (and `record_jti`, its limit-one form): an entry whose expiry is strictly
//!   before "now" (whole seconds, the store's clock) counts as absent and starts again at one use;
//!   entries written before use counts existed count as one use.
//! - Time precision: the DynamoDB adapter stores epoch **seconds**, so sub-second parts are
//!   dropped on write (floored); the memory and embedded stores keep full precision. Callers
//!   that compare a stored lease with one they built should use whole seconds.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "local")]
pub mod embedded;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
// Shared by the adapters that hold whole values; the DynamoDB adapter states the same rules as
// condition expressions.
#[cfg_attr(not(any(test, feature = "testing", feature = "local")), allow(dead_code))]
mod rules;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
