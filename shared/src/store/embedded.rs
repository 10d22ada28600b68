//! Embedded lease store on [redb]: the local default for `credbroker serve`.
//!
//! One file, nine tables:
//!
//! | table        | key                                              | value                         |
//! |--------------|--------------------------------------------------|-------------------------------|
//! | `leases`     | lease id                                         | `Lease` as JSON (incl. `owner`) |
//! | `due`        | (`next_action_at` µs since epoch, lease id)      | `()`                          |
//! | `identity`   | (issuer, subject, `created_at` µs, lease id)     | `()`                          |
//! | `token_uses` | (issuer, key: the jti, or jti and grant)         | (expiry epoch s, uses)        |
//! | `jti`        | (issuer, jti), written by builds before use counts | expiry, epoch s (counts as one use) |
//! | `jti_expiry` | (expiry epoch s, issuer, key)                    | `()`                          |
//! | `locks`      | lock name                                        | (owner, held until, epoch s)  |
//! | `deny_lists` | role key (`denylist.rs`)                         | (version, rendered version, list as JSON) |
//! | `meta`       | `"format"`                                       | format version                |
//!
//! `due` holds only leases whose status needs action (the analogue of the sparse DynamoDB
//! GSI), so `list_due` reads an ordered prefix of it instead of every lease, and `list_live`
//! walks it (or, given a holder, that holder's `identity` range) instead of `leases`. Tuple keys keep
//! issuer/subject/jti unambiguous whatever characters they contain. Each transition runs in
//! one write transaction (redb serialises writers), which makes the version check and the
//! update atomic. Expired replay-guard entries count as absent; each `record_token_use` prunes a few of
//! them via `jti_expiry` so the file stays bounded. Locks are few (one per name) and are
//! overwritten in place, so they are not pruned.
//!
//! redb is synchronous: every operation runs on tokio's blocking pool. Lease GC (`gc_at`) is
//! not applied here; a local store is expected to stay small.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, Table, TableDefinition};

use crate::clock::{Clock, SystemClock};
use crate::denylist::{DenyList, DenyListRendering, DenyListStore, StoredDenyList};
use crate::lease::{
    Activation, Claim, DueBatch, DueLeases, Lease, LeaseHolder, LeaseId, LeaseStore, LiveFilter,
    RevokeFailure, StoreError, TokenUse, UnreadableLease,
};
use crate::store::rules;

const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
const DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("due");
const IDENTITY: TableDefinition<(&str, &str, i64, &str), ()> = TableDefinition::new("identity");
const JTI: TableDefinition<(&str, &str), i64> = TableDefinition::new("jti");
const TOKEN_USES: TableDefinition<(&str, &str), (i64, u32)> = TableDefinition::new("token_uses");
const JTI_EXPIRY: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("jti_expiry");
const LOCKS: TableDefinition<&str, (&str, i64)> = TableDefinition::new("locks");
const DENY_LISTS: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("deny_lists");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Bump when the layout above changes incompatibly; `open` refuses files of another format
/// rather than misreading them. Additions that older files lack and older builds ignore (the
/// `locks`, `deny_lists` and `token_uses` tables, created on open; the lease's `owner`, which
/// defaults to none) keep format 1.
const FORMAT_VERSION: u64 = 1;
const FORMAT_KEY: &str = "format";

/// How many expired replay-guard entries one `record_token_use` removes (bounded so a write never
/// turns into a long sweep).
const JTI_PRUNE_BATCH: usize = 32;

/// A [`LeaseStore`] in a single redb file.
pub struct EmbeddedLeaseStore {
    db: Arc<Database>,
    path: PathBuf,
    /// "Now" for replay-guard and lock expiry, and for lapsed revocation claims.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for EmbeddedLeaseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedLeaseStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl EmbeddedLeaseStore {
    /// Opens (or creates) the store at `path`, creating missing parent directories.
    ///
    /// Blocking (file I/O, possibly a crash-recovery pass): call it at startup, or from
    /// `spawn_blocking`. Fails if another process has the file open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| unavailable(&format!("creating directory {}", parent.display()), e))?;
        }
        let db =
            Database::create(&path).map_err(|e| unavailable(&format!("opening {}", path.display()), e))?;
        init_tables(&db, &path)?;
        Ok(Self { db: Arc::new(db), path, clock: Arc::new(SystemClock) })
    }

    /// Use `clock` as "now" (replay-guard and lock expiry, lapsed claims), e.g. a `ManualClock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the blocking pool: redb calls block on file I/O and fsync.
    async fn blocking<T, F>(&self, op: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| unavailable(&format!("embedded store {op}: worker task"), e))?
    }

    /// One conditional transition in one write transaction: `check` is the precondition (from
    /// [`rules`]), `apply` the effect.
    async fn transition<C, F>(
        &self,
        op: &'static str,
        id: &LeaseId,
        check: C,
        apply: F,
    ) -> Result<Lease, StoreError>
    where
        C: FnOnce(Option<&Lease>) -> Result<(), StoreError> + Send + 'static,
        F: FnOnce(Lease) -> Lease + Send + 'static,
    {
        let id = id.clone();
        self.blocking(op, move |db| {
            let txn = db.begin_write().map_err(|e| unavailable(op, e))?;
            let updated = {
                let mut leases = txn.open_table(LEASES).map_err(|e| unavailable(op, e))?;
                let mut due = txn.open_table(DUE).map_err(|e| unavailable(op, e))?;
                let current = load(&leases, id.as_str(), op)?;
                check(current.as_ref())?;
                let current = current.ok_or_else(|| StoreError::NotFound(id.clone()))?;
                due.remove((micros(current.next_action_at), id.as_str())).map_err(|e| unavailable(op, e))?;
                let updated = apply(current);
                put(&mut leases, &mut due, &updated, op)?;
                updated
            };
            txn.commit().map_err(|e| unavailable(op, e))?;
            Ok(updated)
        })
        .await
    }
}

fn init_tables(db: &Database, path: &Path) -> Result<(), StoreError> {
    let op = "initialising tables";
    let txn = db.begin_write().map_err(|e| unavailable(op, e))?;
    {
        // Opening a table in a write transaction creates it, so later read transactions never
        // meet a missing table.
        txn.open_table(LEASES).map_err(|e| unavailable(op, e))?;
        txn.open_table(DUE).map_err(|e| unavailable(op, e))?;
        txn.open_table(IDENTITY).map_err(|e| unavailable(op, e))?;
        txn.open_table(JTI).map_err(|e| unavailable(op, e))?;
        txn.open_table(TOKEN_USES).map_err(|e| unavailable(op, e))?;
        txn.open_table(JTI_EXPIRY).map_err(|e| unavailable(op, e))?;
        txn.open_table(LOCKS).map_err(|e| unavailable(op, e))?;
        txn.open_table(DENY_LISTS).map_err(|e| unavailable(op, e))?;
        let mut meta = txn.open_table(META).map_err(|e| unavailable(op, e))?;
        let existing = meta.get(FORMAT_KEY).map_err(|e| unavailable(op, e))?.map(|g| g.value());
        match existing {
            None => {
                meta.insert(FORMAT_KEY, FORMAT_VERSION).map_err(|e| unavailable(op, e))?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Unavailable(format!(
                    "embedded store {} has format {other}, this build reads format {FORMAT_VERSION}",
                    path.display()
                )));
            }
        }
    }
    txn.commit().map_err(|e| unavailable(op, e))
}

fn unavailable(context: &str, err: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {context}: {err}"))
}

/// Index resolution: microseconds keep the order of any realistic timestamps exact, and every
/// `DateTime<Utc>` chrono can represent fits in an `i64` of them.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn load(
    leases: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
    op: &str,
) -> Result<Option<Lease>, StoreError> {
    let Some(raw) = leases.get(id).map_err(|e| unavailable(op, e))? else {
        return Ok(None);
    };
    let lease: Lease = serde_json::from_slice(raw.value())
        .map_err(|e| StoreError::Corrupt { key: format!("leases/{id}"), detail: e.to_string() })?;
    if lease.id.as_str() != id {
        return Err(StoreError::Corrupt {
            key: format!("leases/{id}"),
            detail: format!("record holds lease {}", lease.id),
        });
    }
    Ok(Some(lease))
}

/// Writes the lease and its `due` entry (only while its status needs action). The caller has
/// removed any previous `due` entry; `identity` never changes after creation.
fn put(
    leases: &mut Table<'_, &'static str, &'static [u8]>,
    due: &mut Table<'_, (i64, &'static str), ()>,
    lease: &Lease,
    op: &str,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec(lease)
        .map_err(|e| unavailable(&format!("{op}: encoding lease {}", lease.id), e))?;
    leases.insert(lease.id.as_str(), json.as_slice()).map_err(|e| unavailable(op, e))?;
    if lease.status.needs_action() {
        due.insert((micros(lease.next_action_at), lease.id.as_str()), ()).map_err(|e| unavailable(op, e))?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl LeaseStore for EmbeddedLeaseStore {
    async fn create_pending(&self, lease: &Lease) -> Result<(), StoreError> {
        rules::check_new(lease)?;
        let lease = lease.clone();
        self.blocking("create_pending", move |db| {
            let op = "create_pending";
            let txn = db.begin_write().map_err(|e| unavailable(op, e))?;
            {
                let mut leases = txn.open_table(LEASES).map_err(|e| unavailable(op, e))?;
                if leases.get(lease.id.as_str()).map_err(|e| unavailable(op, e))?.is_some() {
                    return Err(StoreError::AlreadyExists(lease.id.clone()));
                }
                let mut due = txn.open_table(DUE).map_err(|e| unavailable(op, e))?;
                put(&mut leases, &mut due, &lease, op)?;
                let mut identity = txn.open_table(IDENTITY).map_err(|e| unavailable(op, e))?;
                identity
                    .insert(
                        (
                            lease.holder.issuer.as_str(),
                            lease.holder.subject.as_str(),
                            micros(lease.created_at),
                            lease.id.as_str(),
                        ),
                        (),
                    )
                    .map_err(|e| unavailable(op, e))?;
            }
            txn.commit().map_err(|e| unavailable(op, e))
        })
        .await
    }

    async fn activate(
        &self,
        id: &LeaseId,
        expected_version: u64,
        activation: Activation,
    ) -> Result<Lease, StoreError> {
        let check_id = id.clone();
        self.transition(
            "activate",
            id,
            move |current| rules::check_pending(current, &check_id, expected_version),
            move |lease| rules::activate(lease, &activation),
        )
        .await
    }

    async fn record_issue_failure(
        &self,
        id: &LeaseId,
        expected_version: u64,
        error: &str,
        due_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let (error, check_id) = (error.to_owned(), id.clone());
        self.transition(
            "record_issue_failure",
            id,
            move |current| rules::check_pending(current, &check_id, expected_version),
            move |lease| rules::record_issue_failure(lease, &error, due_at),
        )
        .await
    }

    async fn get(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError> {
        let id = id.clone();
        self.blocking("get", move |db| {
            let op = "get";
            let txn = db.begin_read().map_err(|e| unavailable(op, e))?;
            let leases = txn.open_table(LEASES).map_err(|e| unavailable(op, e))?;
            load(&leases, id.as_str(), op)
        })
        .await
    }

    async fn by_holder(&self, holder: &LeaseHolder, limit: usize) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let holder = holder.clone();
        self.blocking("by_holder", move |db| {
            let op = "by_holder";
            let txn = db.begin_read().map_err(|e| unavailable(op, e))?;
            let identity = txn.open_table(IDENTITY).map_err(|e| unavailable(op, e))?;
            let leases = txn.open_table(LEASES).map_err(|e| unavailable(op, e))?;
            let (iss, sub) = (holder.issuer.as_str(), holder.subject.as_str());
            // `sub + "\0"` is the smallest string after `sub`, so this range is exactly the
            // holder's entries, whatever the ids look like.
            let next_sub = format!("{sub}\0");
            let range = (iss, sub, i64::MIN, "")..(iss, next_sub.as_str(), i64::MIN, "");
            let mut found = Vec::new();
            for entry in identity.range(range).map_err(|e| unavailable(op, e))?.rev() {
                let (key, _) = entry.map_err(|e| unavailable(op, e))?;
                let (_, _, _, id) = key.value();
                let lease = load(&leases, id, op)?.ok_or_else(|| StoreError::Corrupt {
                    key: format!("identity/{id}"),
                    detail: "index entry without a lease".to_owned(),
                })?;
                found.push(lease);
                if found.len() == limit {
                    break;
                }
            }
            found.sort_by(rules::newest_first);
            Ok(found)
        })
        .await
    }

    async fn claim_for_revocation(
        &self,
        id: &LeaseId,
        expected_version: u64,
        claim: Claim,
    ) -> Result<Lease, StoreError> {
        let (now, check_id) = (self.clock.now(), id.clone());
        self.transition(
            "claim_for_revocation",
            id,
            move |current| rules::check_claimable(current, &check_id, expected_version, now),
            move |lease| rules::claim(lease, &claim),
        )
        .await
    }

    async fn mark_revoked(
        &self,
        id: &LeaseId,
        expected_version: u64,
        revoked_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<Lease, StoreError> {
        let (note, check_id) = (note.map(str::to_owned), id.clone());
        self.transition(
            "mark_revoked",
            id,
            move |current| rules::check_revoking(current, &check_id, expected_version),
            move |lease| rules::mark_revoked(lease, revoked_at, note.as_deref()),
        )
        .await
    }

    async fn record_revoke_failure(
        &self,
        id: &LeaseId,
        expected_version: u64,
        failure: RevokeFailure,
    ) -> Result<Lease, StoreError> {
        let check_id = id.clone();
        self.transition(
            "record_revoke_failure",
            id,
            move |current| rules::check_revoking(current, &check_id, expected_version),
            move |lease| rules::record_revoke_failure(lease, &failure),
        )
        .await
    }

    async fn renew(
        &self,
        id: &LeaseId,
        expected_version: u64,
        expires_at: DateTime<Utc>,
        gc_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let check_id = id.clone();
        self.transition(
            "renew",
            id,
            move |current| rules::check_renewable(current, &check_id, expected_version, expires_at),
            move |lease| rules::renew(lease, expires_at, gc_at),
        )
        .await
    }

    async fn list_live(&self, filter: &LiveFilter, limit: usize) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = filter.clone();
        self.blocking("list_live", move |db| {
            let op = "list_live";
            let txn = db.begin_read().map_err(|e| unavailable(op, e))?;
            let leases = txn.open_table(LEASES).map_err(|e| unavailable(op, e))?;
            let mut found = Vec::new();
            let mut consider = |id: &str, index: &str| -> Result<bool, StoreError> {
                let lease = load(&leases, id, op)?.ok_or_else(|| StoreError::Corrupt {
                    key: format!("{index}/{id}"),
                    detail: "index entry without a lease".to_owned(),
                })?;
                if rules::is_live_match(&lease, &filter) {
                    found.push(lease);
                }
                Ok(found.len() < limit)
            };
            if let Some(holder) = &filter.holder {
                // A holder's own range is far smaller than every live lease.
                let identity = txn.open_table(IDENTITY).map_err(|e| unavailable(op, e))?;
                let next_sub = format!("{}\0", holder.subject);
                let (iss, sub) = (holder.issuer.as_str(), holder.subject.as_str());
                let range = (iss, sub, i64::MIN, "")..(iss, next_sub.as_str(), i64::MIN, "");
                for entry in identity.range(range).map_err(|e| unavailable(op, e))? {
                    let (key, _) = entry.map_err(|e| unavailable(op, e))?;
                    if !consider(key.value().3, "identity")? {
                        break;
                    }
                }
            } else {
                let due = txn.open_table(DUE).map_err(|e| unavailable(op, e))?;
                for entry in due.iter().map_err(|e| unavailable(op, e))? {
                    let (key, _) = entry.map_err(|e| unavailable(op, e))?;
                    if !consider(key.value().1, "due")? {
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    async fn record_token_use(
        &self,
        issuer: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        limit: u32,
    ) -> Result<TokenUse, StoreError> {
        let (issuer, key) = (issuer.to_owned(), key.to_owned());
        let now = self.clock.now();
        self.blocking("record_token_use", move |db| {
            let op = "record_token_use";
            let txn = db.begin_write().map_err(|e| unavailable(op, e))?;
            let counted = {
                let mut counts = txn.open_table(TOKEN_USES).map_err(|e| unavailable(op, e))?;
                let mut legacy = txn.open_table(JTI).map_err(|e| unavailable(op, e))?;
                let mut expiry = txn.open_table(JTI_EXPIRY).map_err(|e| unavailable(op, e))?;
                let entry = (issuer.as_str(), key.as_str());
                // Entries written before use counts existed (format 1's `jti` table) count once.
                let existing = match counts.get(entry).map_err(|e| unavailable(op, e))?.map(|g| g.value()) {
                    Some(found) => Some(found),
                    None => legacy.get(entry).map_err(|e| unavailable(op, e))?.map(|g| (g.value(), 1)),
                };
                let used = match existing {
                    Some((old_expiry, used)) if rules::jti_live(old_expiry, now) => used,
                    Some((old_expiry, _)) => {
                        expiry.remove((old_expiry, entry.0, entry.1)).map_err(|e| unavailable(op, e))?;
                        0
                    }
                    None => 0,
                };
                if used >= limit {
                    Err(used)
                } else {
                    let exp = expires_at.timestamp();
                    legacy.remove(entry).map_err(|e| unavailable(op, e))?;
                    counts.insert(entry, (exp, used + 1)).map_err(|e| unavailable(op, e))?;
                    expiry.insert((exp, entry.0, entry.1), ()).map_err(|e| unavailable(op, e))?;
                    prune_jtis(&mut counts, &mut legacy, &mut expiry, now, op)?;
                    Ok(used + 1)
                }
            };
            match counted {
                Ok(n) => {
                    txn.commit().map_err(|e| unavailable(op, e))?;
                    Ok(TokenUse::Counted(n))
                }
                Err(used) => {
                    txn.abort().map_err(|e| unavailable(op, e))?;
                    Ok(TokenUse::Exhausted(used))
                }
            }
        })
        .await
    }
}

#[async_trait::async_trait]
impl DueLeases for EmbeddedLeaseStore {
    async fn list_due(&self, now: DateTime<Utc>, limit: usize) -> Result<DueBatch, StoreError> {
        if limit == 0 {
            return Ok(DueBatch::default());
        }
        self.blocking("list_due", move |db| {
            let op = "list_due";
            let txn = db.begin_read().map_err(|e| unavailable(op, e))?;
            let due = txn.open_table(DUE).map_err(|e| unavailable(op, e))?;
            let leases = txn.open_table(LEASES).map_err(|e| unavailable(op, e))?;
            // Every key whose microsecond is <= now's; the exact check below handles the
            // sub-microsecond remainder.
            let end = (micros(now).saturating_add(1), "");
            let mut found = DueBatch::default();
            for entry in due.range(..end).map_err(|e| unavailable(op, e))? {
                let (key, _) = entry.map_err(|e| unavailable(op, e))?;
                let (_, id) = key.value();
                let loaded = load(&leases, id, op).and_then(|lease| {
                    lease.ok_or_else(|| StoreError::Corrupt {
                        key: format!("due/{id}"),
                        detail: "index entry without a lease".to_owned(),
                    })
                });
                let lease = match loaded {
                    Ok(lease) => lease,
                    Err(error) => {
                        found.unreadable.push(UnreadableLease::from_error(error)?);
                        continue;
                    }
                };
                if rules::is_due(&lease, now) {
                    found.leases.push(lease);
                    if found.leases.len() == limit {
                        break;
                    }
                }
            }
            found.leases.sort_by(rules::due_order);
            Ok(found)
        })
        .await
    }
}

#[async_trait::async_trait]
impl DenyListStore for EmbeddedLeaseStore {
    async fn deny_list(&self, role: &str) -> Result<Option<StoredDenyList>, StoreError> {
        let role = role.to_owned();
        self.blocking("deny_list", move |db| {
            let op = "deny_list";
            let txn = db.begin_read().map_err(|e| unavailable(op, e))?;
            let lists = txn.open_table(DENY_LISTS).map_err(|e| unavailable(op, e))?;
            load_deny_list(&lists, &role, op)
        })
        .await
    }

    async fn put_deny_list(
        &self,
        role: &str,
        expected_version: Option<u64>,
        list: &DenyList,
    ) -> Result<StoredDenyList, StoreError> {
        let (role, list) = (role.to_owned(), list.clone());
        self.blocking("put_deny_list", move |db| {
            let op = "put_deny_list";
            let txn = db.begin_write().map_err(|e| unavailable(op, e))?;
            let stored = {
                let mut lists = txn.open_table(DENY_LISTS).map_err(|e| unavailable(op, e))?;
                let current = load_deny_list(&lists, &role, op)?;
                let stored = rules::put_deny_list(current.as_ref(), &role, expected_version, &list)?;
                save_deny_list(&mut lists, &stored, op)?;
                stored
            };
            txn.commit().map_err(|e| unavailable(op, e))?;
            Ok(stored)
        })
        .await
    }
}

#[async_trait::async_trait]
impl DenyListRendering for EmbeddedLeaseStore {
    async fn pending_deny_lists(&self, limit: usize) -> Result<Vec<StoredDenyList>, StoreError> {
        self.blocking("pending_deny_lists", move |db| {
            let op = "pending_deny_lists";
            let txn = db.begin_read().map_err(|e| unavailable(op, e))?;
            let lists = txn.open_table(DENY_LISTS).map_err(|e| unavailable(op, e))?;
            let mut pending = Vec::new();
            // A handful of roles: reading them all is cheaper than keeping an index.
            for entry in lists.iter().map_err(|e| unavailable(op, e))? {
                let (key, _) = entry.map_err(|e| unavailable(op, e))?;
                if let Some(stored) =
                    load_deny_list(&lists, key.value(), op)?.filter(StoredDenyList::is_pending)
                {
                    pending.push(stored);
                    if pending.len() == limit {
                        break;
                    }
                }
            }
            Ok(pending)
        })
        .await
    }

    async fn mark_deny_list_rendered(&self, role: &str, version: u64) -> Result<bool, StoreError> {
        let role = role.to_owned();
        self.blocking("mark_deny_list_rendered", move |db| {
            let op = "mark_deny_list_rendered";
            let txn = db.begin_write().map_err(|e| unavailable(op, e))?;
            let marked = {
                let mut lists = txn.open_table(DENY_LISTS).map_err(|e| unavailable(op, e))?;
                let mut stored = load_deny_list(&lists, &role, op)?;
                let marked = stored.as_mut().is_some_and(|stored| rules::mark_rendered(stored, version));
                if let (true, Some(stored)) = (marked, &stored) {
                    save_deny_list(&mut lists, stored, op)?;
                }
                marked
            };
            txn.commit().map_err(|e| unavailable(op, e))?;
            Ok(marked)
        })
        .await
    }

    async fn try_lock(&self, name: &str, owner: &str, until: DateTime<Utc>) -> Result<bool, StoreError> {
        let (name, owner, now) = (name.to_owned(), owner.to_owned(), self.clock.now());
        self.blocking("try_lock", move |db| {
            let op = "try_lock";
            let txn = db.begin_write().map_err(|e| unavailable(op, e))?;
            {
                let mut locks = txn.open_table(LOCKS).map_err(|e| unavailable(op, e))?;
                let current = locks.get(name.as_str()).map_err(|e| unavailable(op, e))?.map(|g| {
                    let (holder, until) = g.value();
                    (holder.to_owned(), until)
                });
                if !rules::may_lock(current.as_ref().map(|(h, u)| (h.as_str(), *u)), &owner, now) {
                    drop(locks);
                    txn.abort().map_err(|e| unavailable(op, e))?;
                    return Ok(false);
                }
                locks
                    .insert(name.as_str(), (owner.as_str(), until.timestamp()))
                    .map_err(|e| unavailable(op, e))?;
            }
            txn.commit().map_err(|e| unavailable(op, e))?;
            Ok(true)
        })
        .await
    }

    async fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.blocking("unlock", move |db| {
            let op = "unlock";
            let txn = db.begin_write().map_err(|e| unavailable(op, e))?;
            {
                let mut locks = txn.open_table(LOCKS).map_err(|e| unavailable(op, e))?;
                let held_by_owner = locks
                    .get(name.as_str())
                    .map_err(|e| unavailable(op, e))?
                    .is_some_and(|g| g.value().0 == owner);
                if held_by_owner {
                    locks.remove(name.as_str()).map_err(|e| unavailable(op, e))?;
                }
            }
            txn.commit().map_err(|e| unavailable(op, e))
        })
        .await
    }
}

/// A deny list as stored: `(version, rendered_version, list JSON)`.
fn load_deny_list(
    lists: &impl ReadableTable<&'static str, (u64, u64, &'static [u8])>,
    role: &str,
    op: &str,
) -> Result<Option<StoredDenyList>, StoreError> {
    let Some(raw) = lists.get(role).map_err(|e| unavailable(op, e))? else {
        return Ok(None);
    };
    let (version, rendered_version, json) = raw.value();
    let list = serde_json::from_slice(json)
        .map_err(|e| StoreError::Corrupt { key: format!("deny_lists/{role}"), detail: e.to_string() })?;
    Ok(Some(StoredDenyList { role: role.to_owned(), list, version, rendered_version }))
}

fn save_deny_list(
    lists: &mut Table<'_, &'static str, (u64, u64, &'static [u8])>,
    stored: &StoredDenyList,
    op: &str,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec(&stored.list).map_err(|e| unavailable(op, e))?;
    lists
        .insert(stored.role.as_str(), (stored.version, stored.rendered_version, json.as_slice()))
        .map_err(|e| unavailable(op, e))?;
    Ok(())
}

/// Removes up to [`JTI_PRUNE_BATCH`] entries that expired before `now`.
fn prune_jtis(
    counts: &mut Table<'_, (&'static str, &'static str), (i64, u32)>,
    legacy: &mut Table<'_, (&'static str, &'static str), i64>,
    expiry: &mut Table<'_, (i64, &'static str, &'static str), ()>,
    now: DateTime<Utc>,
    op: &str,
) -> Result<(), StoreError> {
    let mut expired = Vec::new();
    for entry in expiry.range(..(now.timestamp(), "", "")).map_err(|e| unavailable(op, e))? {
        let (key, _) = entry.map_err(|e| unavailable(op, e))?;
        let (exp, iss, jti) = key.value();
        expired.push((exp, iss.to_owned(), jti.to_owned()));
        if expired.len() == JTI_PRUNE_BATCH {
            break;
        }
    }
    for (exp, iss, jti) in &expired {
        expiry.remove((*exp, iss.as_str(), jti.as_str())).map_err(|e| unavailable(op, e))?;
        counts.remove((iss.as_str(), jti.as_str())).map_err(|e| unavailable(op, e))?;
        legacy.remove((iss.as_str(), jti.as_str())).map_err(|e| unavailable(op, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::EmbeddedLeaseStore;
    use crate::clock::ManualClock;
    use crate::lease::LeaseStore;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            EmbeddedLeaseStore::open(dir.path().join("nested/dir/leases.redb")).expect("open embedded store");
        let store = Arc::new(store);
        conformance::run_all(store.clone()).await;
        conformance::run_deny_lists(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_suite_on_the_store_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(conformance::now()));
        let store = EmbeddedLeaseStore::open(dir.path().join("leases.redb")).expect("open embedded store");
        let store = Arc::new(store.with_clock(clock.clone()));
        conformance::run_clocked(store.clone(), clock.clone()).await;
        conformance::run_deny_lists_clocked(store, clock).await;
    }

    #[tokio::test]
    async fn leases_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leases.redb");
        let now = conformance::whole_seconds(chrono::Utc::now());
        let lease = conformance::sample_lease(now, &conformance::unique_holder("reopen"));
        {
            let store = EmbeddedLeaseStore::open(&path).expect("open");
            store.create_pending(&lease).await.expect("create");
        }
        let store = EmbeddedLeaseStore::open(&path).expect("reopen");
        assert_eq!(store.get(&lease.id).await.expect("get"), Some(lease));
    }

    #[test]
    fn refuses_a_second_opener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leases.redb");
        let _first = EmbeddedLeaseStore::open(&path).expect("open");
        let second = EmbeddedLeaseStore::open(&path);
        assert!(
            matches!(second, Err(crate::lease::StoreError::Unavailable(_))),
            "a second open of the same file must fail cleanly, got {second:?}"
        );
    }
}
