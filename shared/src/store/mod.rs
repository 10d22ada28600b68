//! Lease store adapters: implementations of [`LeaseStore`](crate::lease::LeaseStore).
//!
//! - [`dynamodb`]: the cloud store (single DynamoDB table, sparse `due` and `identity` GSIs).
//! - [`embedded`]: the local default for `credbroker serve` (one redb file).
//! - [`memory`]: an in-memory fake for unit tests of the core.
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
//! - `list_due` orders by `(next_action_at, id)`; `by_holder` by `(created_at, id)` descending.
//! - `record_jti`: an entry whose expiry is strictly before "now" (whole seconds, the store's
//!   clock) counts as absent and is overwritten.
//! - Time precision: the DynamoDB adapter stores epoch **seconds**, so sub-second parts are
//!   dropped on write (floored); the memory and embedded stores keep full precision. Callers
//!   that compare a stored lease with one they built should use whole seconds.

pub mod dynamodb;
pub mod embedded;
pub mod memory;
mod rules;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

pub use dynamodb::DynamoLeaseStore;
pub use embedded::EmbeddedLeaseStore;
pub use memory::MemoryLeaseStore;
