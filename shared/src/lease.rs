//! Leases: the broker's record of every credential it hands out.
//!
//! A lease is written `Pending` *before* the backend credential exists, with everything needed
//! to revoke it already decided, so a crash at any point leaves a record the revoker can find.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// What the revoker needs to end the credential, decided before issuance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendRef {
    /// An STS session: cannot be deleted, only denied by `aws:userid` = `*:<session_name>`.
    AwsSession { role_arn: String, session_name: String },
    /// A broker-signed token: ends at its `exp`; its `jti` is the lease id.
    SignedToken { audience: String, key_id: String },
}

impl BackendRef {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AwsSession { .. } => "aws_session",
            Self::SignedToken { .. } => "signed_token",
        }
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
    /// Optimistic-concurrency counter: every transition is conditional on it.
    pub version: u64,
    /// Garbage-collection time (DynamoDB TTL); never used for revocation.
    pub gc_at: DateTime<Utc>,
}

/// Everything that changes when a pending lease becomes active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub gc_at: DateTime<Utc>,
}

/// Outcome of recording a token's `jti` in the replay guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JtiOutcome {
    FirstUse,
    Replayed,
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

    /// Leases that need action (`next_action_at <= now`, status not terminal), oldest first,
    /// at most `limit`. Served from an index; never a full scan. Leases due in the same second
    /// may come in any order when `limit` cuts between them.
    async fn list_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Lease>, StoreError>;

    /// All leases of one workload identity, newest first, at most `limit`.
    async fn by_holder(&self, holder: &LeaseHolder, limit: usize) -> Result<Vec<Lease>, StoreError>;

    /// Replay guard: records `(issuer, jti)` unless already present; the record expires with
    /// the token (`expires_at`).
    async fn record_jti(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<JtiOutcome, StoreError>;
}
