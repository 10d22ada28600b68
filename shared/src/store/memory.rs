//! In-memory lease store: a fake for unit tests of the core (and throwaway local runs).
//!
//! Same semantics as the durable adapters (pinned by the shared conformance suite); nothing
//! survives the process, and `list_due`/`by_holder` walk every lease (fine for tests, not
//! for production volumes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use crate::clock::{Clock, SystemClock};
use crate::denylist::{DenyList, DenyListRendering, DenyListStore, StoredDenyList};
use crate::lease::{
    Activation, Claim, DueBatch, DueLeases, Lease, LeaseHolder, LeaseId, LeaseStore, LiveFilter,
    RevokeFailure, StoreError, TokenUse,
};
use crate::store::rules;

/// A [`LeaseStore`] held in a `Mutex<HashMap>`.
#[derive(Debug)]
pub struct MemoryLeaseStore {
    leases: Mutex<HashMap<LeaseId, Lease>>,
    /// `(issuer, key)` → (expiry in epoch seconds, like the DynamoDB TTL; uses).
    jtis: Mutex<Jtis>,
    /// Advisory locks: name → (owner, held until, epoch seconds).
    locks: Mutex<HashMap<String, (String, i64)>>,
    /// Deny lists of STS sessions, by role key.
    deny_lists: Mutex<HashMap<String, StoredDenyList>>,
    /// "Now" for replay-guard and lock expiry, and for lapsed revocation claims.
    clock: Arc<dyn Clock>,
}

/// Replay-guard entries: `(issuer, key)` → (expiry in epoch seconds, uses).
#[derive(Debug)]
struct Jtis {
    seen: HashMap<(String, String), (i64, u32)>,
    /// Expired entries are dropped when the map reaches this size.
    prune_at: usize,
}

impl Jtis {
    const MIN_PRUNE_AT: usize = 1024;
}

impl Default for Jtis {
    fn default() -> Self {
        Self { seen: HashMap::new(), prune_at: Self::MIN_PRUNE_AT }
    }
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
            jtis: Mutex::new(Jtis::default()),
            locks: Mutex::new(HashMap::new()),
            deny_lists: Mutex::new(HashMap::new()),
            clock: Arc::new(SystemClock),
        }
    }

    /// Use `clock` as "now" (replay-guard and lock expiry, lapsed claims), e.g. a `ManualClock`.
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

    /// One conditional transition under the lock: `check` is the precondition (from
    /// [`rules`]), `apply` the effect.
    fn transition(
        &self,
        id: &LeaseId,
        check: impl FnOnce(Option<&Lease>) -> Result<(), StoreError>,
        apply: impl FnOnce(Lease) -> Lease,
    ) -> Result<Lease, StoreError> {
        let mut leases = lock(&self.leases);
        check(leases.get(id))?;
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
        self.transition(
            id,
            |current| rules::check_pending(current, id, expected_version),
            |lease| rules::activate(lease, &activation),
        )
    }

    async fn record_issue_failure(
        &self,
        id: &LeaseId,
        expected_version: u64,
        error: &str,
        due_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.transition(
            id,
            |current| rules::check_pending(current, id, expected_version),
            |lease| rules::record_issue_failure(lease, error, due_at),
        )
    }

    async fn get(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError> {
        Ok(lock(&self.leases).get(id).cloned())
    }

    async fn by_holder(&self, holder: &LeaseHolder, limit: usize) -> Result<Vec<Lease>, StoreError> {
        let mut found: Vec<Lease> =
            lock(&self.leases).values().filter(|l| &l.holder == holder).cloned().collect();
        found.sort_by(rules::newest_first);
        found.truncate(limit);
        Ok(found)
    }

    async fn claim_for_revocation(
        &self,
        id: &LeaseId,
        expected_version: u64,
        claim: Claim,
    ) -> Result<Lease, StoreError> {
        let now = self.clock.now();
        self.transition(
            id,
            |current| rules::check_claimable(current, id, expected_version, now),
            |lease| rules::claim(lease, &claim),
        )
    }

    async fn mark_revoked(
        &self,
        id: &LeaseId,
        expected_version: u64,
        revoked_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<Lease, StoreError> {
        self.transition(
            id,
            |current| rules::check_revoking(current, id, expected_version),
            |lease| rules::mark_revoked(lease, revoked_at, note),
        )
    }

    async fn record_revoke_failure(
        &self,
        id: &LeaseId,
        expected_version: u64,
        failure: RevokeFailure,
    ) -> Result<Lease, StoreError> {
        self.transition(
            id,
            |current| rules::check_revoking(current, id, expected_version),
            |lease| rules::record_revoke_failure(lease, &failure),
        )
    }

    async fn renew(
        &self,
        id: &LeaseId,
        expected_version: u64,
        expires_at: DateTime<Utc>,
        gc_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.transition(
            id,
            |current| rules::check_renewable(current, id, expected_version, expires_at),
            |lease| rules::renew(lease, expires_at, gc_at),
        )
    }

    async fn list_live(&self, filter: &LiveFilter, limit: usize) -> Result<Vec<Lease>, StoreError> {
        Ok(lock(&self.leases)
            .values()
            .filter(|l| rules::is_live_match(l, filter))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn record_token_use(
        &self,
        issuer: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        limit: u32,
    ) -> Result<TokenUse, StoreError> {
        let now = self.clock.now();
        let mut jtis = lock(&self.jtis);
        let entry = (issuer.to_owned(), key.to_owned());
        let uses = match jtis.seen.get(&entry) {
            Some((expires, uses)) if rules::jti_live(*expires, now) => *uses,
            _ => 0,
        };
        if uses >= limit {
            return Ok(TokenUse::Exhausted(uses));
        }
        jtis.seen.insert(entry, (expires_at.timestamp(), uses + 1));
        // Pruning keeps the fake bounded in long-running tests; doing it only when the map has
        // doubled keeps each call O(1) on average (the exchange benchmark records thousands).
        if jtis.seen.len() >= jtis.prune_at {
            jtis.seen.retain(|_, (expires, _)| rules::jti_live(*expires, now));
            jtis.prune_at = (jtis.seen.len() * 2).max(Jtis::MIN_PRUNE_AT);
        }
        Ok(TokenUse::Counted(uses + 1))
    }
}

#[async_trait::async_trait]
impl DueLeases for MemoryLeaseStore {
    async fn list_due(&self, now: DateTime<Utc>, limit: usize) -> Result<DueBatch, StoreError> {
        // Leases held as values: nothing here can be unreadable.
        let mut due: Vec<Lease> =
            lock(&self.leases).values().filter(|l| rules::is_due(l, now)).cloned().collect();
        due.sort_by(rules::due_order);
        due.truncate(limit);
        Ok(DueBatch { leases: due, unreadable: Vec::new() })
    }
}

#[async_trait::async_trait]
impl DenyListStore for MemoryLeaseStore {
    async fn deny_list(&self, role: &str) -> Result<Option<StoredDenyList>, StoreError> {
        Ok(lock(&self.deny_lists).get(role).cloned())
    }

    async fn put_deny_list(
        &self,
        role: &str,
        expected_version: Option<u64>,
        list: &DenyList,
    ) -> Result<StoredDenyList, StoreError> {
        let mut lists = lock(&self.deny_lists);
        let stored = rules::put_deny_list(lists.get(role), role, expected_version, list)?;
        lists.insert(role.to_owned(), stored.clone());
        Ok(stored)
    }
}

#[async_trait::async_trait]
impl DenyListRendering for MemoryLeaseStore {
    async fn pending_deny_lists(&self, limit: usize) -> Result<Vec<StoredDenyList>, StoreError> {
        Ok(lock(&self.deny_lists).values().filter(|l| l.is_pending()).take(limit).cloned().collect())
    }

    async fn mark_deny_list_rendered(&self, role: &str, version: u64) -> Result<bool, StoreError> {
        Ok(lock(&self.deny_lists).get_mut(role).is_some_and(|stored| rules::mark_rendered(stored, version)))
    }

    async fn try_lock(&self, name: &str, owner: &str, until: DateTime<Utc>) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut locks = lock(&self.locks);
        let current = locks.get(name).map(|(holder, until)| (holder.as_str(), *until));
        if !rules::may_lock(current, owner, now) {
            return Ok(false);
        }
        locks.insert(name.to_owned(), (owner.to_owned(), until.timestamp()));
        Ok(true)
    }

    async fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut locks = lock(&self.locks);
        if locks.get(name).is_some_and(|(holder, _)| holder == owner) {
            locks.remove(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryLeaseStore;
    use crate::clock::ManualClock;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        let store = Arc::new(MemoryLeaseStore::new());
        conformance::run_all(store.clone()).await;
        conformance::run_deny_lists(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_suite_on_the_store_clock() {
        let clock = Arc::new(ManualClock::new(conformance::now()));
        let store = Arc::new(MemoryLeaseStore::new().with_clock(clock.clone()));
        conformance::run_clocked(store.clone(), clock.clone()).await;
        conformance::run_deny_lists_clocked(store, clock).await;
    }
}
