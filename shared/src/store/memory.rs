//! In-memory lease store: a fake for unit tests of the core (and throwaway local runs).
//!
//! Same semantics as the durable adapters (pinned by the shared conformance suite); nothing
//! survives the process, and `list_due`/`by_holder` walk every lease (fine for tests, not
//! for production volumes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use crate::clock::{Clock, SystemClock};
use crate::lease::{Activation, JtiOutcome, Lease, LeaseHolder, LeaseId, LeaseStore, StoreError};
use crate::store::rules;

/// A [`LeaseStore`] held in a `Mutex<HashMap>`.
#[derive(Debug)]
pub struct MemoryLeaseStore {
    leases: Mutex<HashMap<LeaseId, Lease>>,
    /// `(issuer, jti)` → expiry in epoch seconds (seconds, like the DynamoDB TTL).
    jtis: Mutex<HashMap<(String, String), i64>>,
    /// Only used to decide whether a replay-guard entry has expired.
    clock: Arc<dyn Clock>,
}

impl Default for MemoryLeaseStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLeaseStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self {
            leases: Mutex::new(HashMap::new()),
            jtis: Mutex::new(HashMap::new()),
            clock: Arc::new(SystemClock),
        }
    }

    /// Use `clock` to decide when replay-guard entries expire (e.g. a `ManualClock`).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Number of leases held (test helper).
    pub fn len(&self) -> usize {
        lock(&self.leases).len()
    }

    /// Whether no lease is held (test helper).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn transition(
        &self,
        id: &LeaseId,
        expected_version: u64,
        apply: impl FnOnce(Lease) -> Lease,
    ) -> Result<Lease, StoreError> {
        let mut leases = lock(&self.leases);
        rules::check_pending(leases.get(id), id, expected_version)?;
        let current = leases.remove(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let updated = apply(current);
        leases.insert(id.clone(), updated.clone());
        Ok(updated)
    }
}

/// A panic while holding the lock cannot leave a half-written lease (every update is a single
/// `insert`), so a poisoned lock is safe to keep using.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait::async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn create_pending(&self, lease: &Lease) -> Result<(), StoreError> {
        rules::check_new(lease)?;
        let mut leases = lock(&self.leases);
        if leases.contains_key(&lease.id) {
            return Err(StoreError::AlreadyExists(lease.id.clone()));
        }
        leases.insert(lease.id.clone(), lease.clone());
        Ok(())
    }

    async fn activate(
        &self,
        id: &LeaseId,
        expected_version: u64,
        activation: Activation,
    ) -> Result<Lease, StoreError> {
        self.transition(id, expected_version, |lease| rules::activate(lease, &activation))
    }

    async fn record_issue_failure(
        &self,
        id: &LeaseId,
        expected_version: u64,
        error: &str,
        due_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.transition(id, expected_version, |lease| rules::record_issue_failure(lease, error, due_at))
    }

    async fn get(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError> {
        Ok(lock(&self.leases).get(id).cloned())
    }

    async fn list_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Lease>, StoreError> {
        let mut due: Vec<Lease> =
            lock(&self.leases).values().filter(|l| rules::is_due(l, now)).cloned().collect();
        due.sort_by(rules::due_order);
        due.truncate(limit);
        Ok(due)
    }

    async fn by_holder(&self, holder: &LeaseHolder, limit: usize) -> Result<Vec<Lease>, StoreError> {
        let mut found: Vec<Lease> =
            lock(&self.leases).values().filter(|l| &l.holder == holder).cloned().collect();
        found.sort_by(rules::newest_first);
        found.truncate(limit);
        Ok(found)
    }

    async fn record_jti(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<JtiOutcome, StoreError> {
        let now = self.clock.now();
        let mut jtis = lock(&self.jtis);
        // Lazy pruning keeps the fake bounded in long-running tests.
        jtis.retain(|_, expires| rules::jti_live(*expires, now));
        let key = (issuer.to_owned(), jti.to_owned());
        if jtis.contains_key(&key) {
            return Ok(JtiOutcome::Replayed);
        }
        jtis.insert(key, expires_at.timestamp());
        Ok(JtiOutcome::FirstUse)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryLeaseStore;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        conformance::run_all(Arc::new(MemoryLeaseStore::new())).await;
    }
}
