//! Leases: the broker's record of every credential it hands out.
//!
//! A lease is written `Pending` *before* the backend credential exists, with everything needed
//! to revoke it already decided, so a crash at any point leaves a record the revoker can find.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{BackendKind, BackendRef, IssuedRef};

/// Lease identifier: a ULID (26 Crockford base32 characters). It doubles as the STS
/// `RoleSessionName`, so it must stay within `[\w+=,.@-]{2,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct LeaseId(String);

impl From<LeaseId> for String {
    fn from(id: LeaseId) -> Self {
        id.0
    }
}

impl TryFrom<String> for LeaseId {
    type Error = String;

    /// Every store reads ids back through this, so all of them refuse the same malformed ids.
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw).ok_or_else(|| format!("{raw:?} is not a lease id (ULID)"))
    }
}

impl LeaseId {
    /// A new, time-ordered, unguessable id (48-bit millisecond time + 80 random bits from the
    /// OS CSPRNG).
    pub fn generate(now: DateTime<Utc>) -> Result<Self, aws_lc_rs::error::Unspecified> {
        let mut random = [0u8; 16];
        aws_lc_rs::rand::fill(&mut random)?;
        let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        Ok(Self(ulid::Ulid::from_parts(millis, u128::from_be_bytes(random)).to_string()))
    }

    /// Accepts an id from outside (URL path, store) only if it has the shape we generate.
    pub fn parse(raw: &str) -> Option<Self> {
        ulid::Ulid::from_string(raw).ok().map(|u| Self(u.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LeaseStatus {
    /// Written before the backend credential is created.
    Pending,
    /// The credential exists and is in the caller's hands until `expires_at`.
    Active,
    /// A revoker has claimed it and is ending the credential.
    Revoking,
    /// Ended; kept until `ttl` for audit history.
    Revoked,
    /// Revocation attempts were exhausted; alarmed and still retried daily.
    Irrevocable,
}

impl LeaseStatus {
    pub const ALL: [Self; 5] =
        [Self::Pending, Self::Active, Self::Revoking, Self::Revoked, Self::Irrevocable];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Active => "ACTIVE",
            Self::Revoking => "REVOKING",
            Self::Revoked => "REVOKED",
            Self::Irrevocable => "IRREVOCABLE",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether a lease in this state still needs action from the revoker at some point.
    /// Terminal leases drop out of the `due` index.
    pub fn needs_action(self) -> bool {
        !matches!(self, Self::Revoked)
    }
}

impl fmt::Display for LeaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The workload identity a lease was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    pub issuer: String,
    pub subject: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub status: LeaseStatus,
    pub policy: String,
    pub grant: String,
    pub holder: LeaseHolder,
    pub backend: BackendRef,
    pub created_at: DateTime<Utc>,
    /// Set when the lease becomes active.
    pub issued_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// Renewals may never extend past this.
    pub max_expires_at: DateTime<Utc>,
    /// When the revoker should next look at this lease (expiry for `Active`, staleness
    /// deadline for `Pending`, retry time for `Revoking`/`Irrevocable`).
    pub next_action_at: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Who holds the revocation claim while `Revoking`.
    #[serde(default)]
    pub owner: Option<String>,
    /// Optimistic-concurrency counter: every transition is conditional on it.
    pub version: u64,
    /// Garbage-collection time (DynamoDB TTL); never used for revocation.
    pub gc_at: DateTime<Utc>,
}

impl Lease {
    /// The credential as its backend sees it when ending or extending it.
    pub fn issued(&self) -> IssuedRef<'_> {
        IssuedRef {
            lease_id: self.id.as_str(),
            backend: &self.backend,
            expires_at: self.expires_at,
            max_expires_at: self.max_expires_at,
            delivered: self.issued_at.is_some(),
        }
    }
}

/// Everything that changes when a pending lease becomes active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub gc_at: DateTime<Utc>,
}

/// A revoker's claim on a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Who claimed it (revoker invocation id, or `admin:<subject>`), for operators.
    pub owner: String,
    /// When the claim lapses; the lease is due again then.
    pub deadline: DateTime<Utc>,
}

/// A failed revocation attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeFailure {
    pub error: String,
    pub retry_at: DateTime<Utc>,
    /// Attempts are exhausted: the lease becomes `Irrevocable` (alarmed, still retried).
    pub irrevocable: bool,
    pub gc_at: DateTime<Utc>,
}

/// Which live leases [`LeaseStore::list_live`] returns; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveFilter {
    pub id_prefix: Option<String>,
    pub holder: Option<LeaseHolder>,
    pub policy: Option<String>,
    pub backend_kind: Option<BackendKind>,
}

impl LiveFilter {
    pub fn matches(&self, lease: &Lease) -> bool {
        self.id_prefix.as_deref().is_none_or(|p| lease.id.as_str().starts_with(p))
            && self.holder.as_ref().is_none_or(|h| *h == lease.holder)
            && self.policy.as_deref().is_none_or(|p| p == lease.policy)
            && self.backend_kind.is_none_or(|k| k == lease.backend.kind())
    }
}

/// Outcome of recording a token's `jti` in the replay guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JtiOutcome {
    FirstUse,
    Replayed,
}

/// Outcome of counting one use of a token in the replay guard ([`LeaseStore::record_token_use`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// Counted: this is use number `n` (1 for the first).
    Counted(u32),
    /// Refused: the token has been used `n` times already, the limit.
    Exhausted(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lease {0} already exists")]
    AlreadyExists(LeaseId),
    #[error("lease {0} not found")]
    NotFound(LeaseId),
    /// The conditional write lost: another writer changed the lease, or it is not in the
    /// expected state.
    #[error("lease {id} changed concurrently or is not in the expected state (expected {expected})")]
    Conflict { id: LeaseId, expected: String },
    /// A conditional write of an item other than a lease lost (e.g. a deny list changed since
    /// it was read): read it again and retry.
    #[error("{key} changed concurrently (expected version {expected})")]
    Stale { key: String, expected: String },
    #[error("lease store unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt lease record {key}: {detail}")]
    Corrupt { key: String, detail: String },
}

/// The lease store port. Every transition is a conditional write; adapters must make
/// concurrent callers safe (one wins, the other gets [`StoreError::Conflict`]).
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + fmt::Debug {
    /// Insert a new `Pending` lease; fails with `AlreadyExists` if the id is taken.
    async fn create_pending(&self, lease: &Lease) -> Result<(), StoreError>;

    /// `Pending` (at `expected_version`) → `Active`. Returns the updated lease.
    async fn activate(
        &self,
        id: &LeaseId,
        expected_version: u64,
        activation: Activation,
    ) -> Result<Lease, StoreError>;

    /// Record why issuance failed and make the pending lease due for cleanup at `due_at`
    /// (the backend may or may not hold a credential: the revoker decides, idempotently).
    async fn record_issue_failure(
        &self,
        id: &LeaseId,
        expected_version: u64,
        error: &str,
        due_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError>;

    async fn get(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError>;

    /// All leases of one workload identity, newest first, at most `limit`.
    async fn by_holder(&self, holder: &LeaseHolder, limit: usize) -> Result<Vec<Lease>, StoreError>;

    /// Claims a due lease for revocation: `Pending` | `Active` | `Revoking` (a claim whose
    /// deadline passed: its revoker died) | `Irrevocable` → `Revoking`, conditional on
    /// `expected_version`, setting `owner` and `next_action_at = deadline` (so the lease is due
    /// again if this claimer dies). Fails with `Conflict` if the lease changed or is `Revoked`.
    /// A `Revoking` lease is claimable once its `next_action_at` (the previous deadline, or the
    /// retry time of [`Self::record_revoke_failure`]) is at or before the store's clock, in
    /// whole seconds; the other states are claimable at any time (the caller decides what is due).
    async fn claim_for_revocation(
        &self,
        id: &LeaseId,
        expected_version: u64,
        claim: Claim,
    ) -> Result<Lease, StoreError>;

    /// `Revoking` (at `expected_version`) → `Revoked`: leaves the `due` index for good. `note`
    /// (e.g. "forced by admin") goes to `last_error` when given. Clears `owner`, sets
    /// `next_action_at = revoked_at`, keeps `gc_at`.
    async fn mark_revoked(
        &self,
        id: &LeaseId,
        expected_version: u64,
        revoked_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<Lease, StoreError>;

    /// A revocation attempt failed: `Revoking` (at `expected_version`) → `Revoking` again
    /// (or `Irrevocable` when `failure.irrevocable`), `attempts + 1`, `last_error`,
    /// `next_action_at = failure.retry_at`, owner cleared, `gc_at` pushed to at least
    /// `failure.gc_at` (a lease must never be garbage-collected while it still needs action).
    /// The store keeps the later of the stored and the given `gc_at`, so a caller may pass
    /// just `retry_at + retention`.
    async fn record_revoke_failure(
        &self,
        id: &LeaseId,
        expected_version: u64,
        failure: RevokeFailure,
    ) -> Result<Lease, StoreError>;

    /// `Active` (at `expected_version`) lease extended: `expires_at` and `next_action_at` =
    /// `expires_at`, `gc_at` = `gc_at`. Refused with `Conflict` unless the lease is `Active` and
    /// `expires_at <= max_expires_at`.
    async fn renew(
        &self,
        id: &LeaseId,
        expected_version: u64,
        expires_at: DateTime<Utc>,
        gc_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError>;

    /// Every lease that still needs action (any status but `Revoked`) matching `filter`, at
    /// most `limit`, in no particular order. Served from the `due` index, or the holder's
    /// `identity` index range when `filter.holder` is set (never a table scan): admin bulk
    /// revocation and orphan reconciliation use it.
    async fn list_live(&self, filter: &LiveFilter, limit: usize) -> Result<Vec<Lease>, StoreError>;

    /// Replay guard: counts one use of the token `(issuer, key)` (the `jti`, or the `jti` with a
    /// grant for per-grant modes), unless it has been used `limit` times already. The count
    /// expires with the token (`expires_at`): an entry whose expiry is strictly before the
    /// store's clock (whole seconds) counts as absent. Atomic: concurrent callers never count
    /// past `limit` between them.
    async fn record_token_use(
        &self,
        issuer: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        limit: u32,
    ) -> Result<TokenUse, StoreError>;

    /// [`Self::record_token_use`] with a limit of one: the first use, or a replay.
    async fn record_jti(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<JtiOutcome, StoreError> {
        Ok(match self.record_token_use(issuer, jti, expires_at, 1).await? {
            TokenUse::Counted(_) => JtiOutcome::FirstUse,
            TokenUse::Exhausted(_) => JtiOutcome::Replayed,
        })
    }
}

/// The revoker's sweep: the leases that need action. A port of its own because only the
/// revoker function (and local mode) sweeps; the API functions end one lease at a time, by
/// id, and their binaries do not carry this query. Every lease-store adapter implements it.
#[async_trait::async_trait]
pub trait DueLeases: Send + Sync + fmt::Debug {
    /// Leases that need action (`next_action_at <= now`, status not terminal), oldest first,
    /// at most `limit`, and the due records among them that cannot be read. Served from an
    /// index; never a full scan. Leases due in the same second may come in any order when
    /// `limit` cuts between them. An unreadable record never fails the call nor counts
    /// towards `limit`: one record (of a newer version, or damaged) must not stop every other
    /// revocation.
    async fn list_due(&self, now: DateTime<Utc>, limit: usize) -> Result<DueBatch, StoreError>;
}

/// What [`DueLeases::list_due`] read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DueBatch {
    pub leases: Vec<Lease>,
    /// Due records this version cannot read. They are left exactly as they are (a version
    /// that reads them ends them) and reported on every sweep until then
    /// (`docs/architecture.md`, "Lease records").
    pub unreadable: Vec<UnreadableLease>,
}

/// A due lease record that does not parse: its store key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableLease {
    pub key: String,
    pub detail: String,
}

impl UnreadableLease {
    /// The record behind a [`StoreError::Corrupt`]; any other error is not about one record.
    pub fn from_error(error: StoreError) -> Result<Self, StoreError> {
        match error {
            StoreError::Corrupt { key, detail } => Ok(Self { key, detail }),
            other => Err(other),
        }
    }
}
