//! The contract between the domain and the credential backends.
//!
//! Both sides import this module and neither imports the other: policies render grants into
//! plans ([`IssuePlan`]), the broker hands a plan to the [`CredentialIssuer`] of its
//! [`BackendKind`], a lease records the [`BackendRef`] that ends the credential, and the revoker
//! hands that to the backend's [`CredentialRevoker`]. The adapters (`crate::issuer::*`)
//! implement the two ports; nothing here knows about STS, IAM or SQL drivers.
//!
//! The contract for revokers, as for every backend: revoking something already gone is success,
//! and two revokers may race on one credential.

pub mod database;
pub mod password;
pub mod sql;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use database::{DatabaseCredentials, DatabasePlan, Engine};

/// The kinds of credential the broker issues, one adapter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// An STS session (`AssumeRole`).
    AwsSession,
    /// A broker-signed access token.
    SignedToken,
    /// A PostgreSQL role or MySQL/MariaDB user.
    Database,
}

impl BackendKind {
    pub const ALL: [Self; 3] = [Self::AwsSession, Self::SignedToken, Self::Database];

    /// The name in lease records, API views and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwsSession => "aws_session",
            Self::SignedToken => "signed_token",
            Self::Database => "database",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::AwsSession => 0,
            Self::SignedToken => 1,
            Self::Database => 2,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An STS session to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSessionPlan {
    pub role_arn: String,
    /// The lease id, so `aws:userid` = `<role-id>:<lease-id>` ties every API call to the lease.
    pub session_name: String,
    /// Compact JSON.
    pub session_policy: Option<String>,
    pub session_tags: Vec<(String, String)>,
    pub source_identity: String,
    pub duration: Duration,
}

/// A broker-signed access token to mint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTokenPlan {
    pub lease_id: String,
    pub subject: String,
    pub source_issuer: String,
    pub audience: String,
    pub scopes: Vec<String>,
    pub policy: String,
    pub grant: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A credential to create: everything decided, nothing secret yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuePlan {
    AwsSession(AwsSessionPlan),
    SignedToken(SignedTokenPlan),
    Database(DatabasePlan),
}

impl IssuePlan {
    /// The backend that serves this plan (the kind of its [`BackendRef`]).
    pub fn backend(&self) -> BackendKind {
        match self {
            Self::AwsSession(_) => BackendKind::AwsSession,
            Self::SignedToken(_) => BackendKind::SignedToken,
            Self::Database(_) => BackendKind::Database,
        }
    }

    /// What the lease must record to end this credential later.
    pub fn backend_ref(&self, key_id: &str) -> BackendRef {
        match self {
            Self::AwsSession(p) => {
                BackendRef::AwsSession { role_arn: p.role_arn.clone(), session_name: p.session_name.clone() }
            }
            Self::SignedToken(p) => {
                BackendRef::SignedToken { audience: p.audience.clone(), key_id: key_id.to_owned() }
            }
            Self::Database(p) => p.backend_ref(),
        }
    }
}

/// What the revoker needs to end the credential, decided before issuance and recorded in the
/// lease. Stored as JSON in every lease store: renaming a field or a variant is a format
/// change (`docs/architecture.md`, "Lease records").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendRef {
    /// An STS session: cannot be deleted, only denied by `aws:userid` = `*:<session_name>`.
    AwsSession { role_arn: String, session_name: String },
    /// A broker-signed token: ends at its `exp`; its `jti` is the lease id.
    SignedToken { audience: String, key_id: String },
    /// A database user (PostgreSQL role or MySQL user), named before it is created.
    Database {
        engine: Engine,
        /// The admin connection (`[databases.<name>]`) that created it.
        connection: String,
        database: String,
        username: String,
        /// The grant's revocation statements, kept here so revocation never depends on the
        /// policy still existing.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        revocation_statements: Vec<String>,
    },
}

impl BackendRef {
    /// `(location, name)` of a credential a backend can enumerate (database users), for
    /// orphan reconciliation; `None` for credentials that cannot outlive their expiry.
    pub fn credential_name(&self) -> Option<(String, String)> {
        match self {
            Self::Database { connection, username, .. } => Some((connection.clone(), username.clone())),
            Self::AwsSession { .. } | Self::SignedToken { .. } => None,
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Self::AwsSession { .. } => BackendKind::AwsSession,
            Self::SignedToken { .. } => BackendKind::SignedToken,
            Self::Database { .. } => BackendKind::Database,
        }
    }
}

/// One issued credential as a backend sees it when ending or extending it: the lease's record,
/// without the lease (adapters never depend on the domain's lease type).
#[derive(Debug, Clone, Copy)]
pub struct IssuedRef<'a> {
    /// The lease id (the STS session name, the `jti` of a signed token).
    pub lease_id: &'a str,
    pub backend: &'a BackendRef,
    /// When the credential stops working by itself.
    pub expires_at: DateTime<Utc>,
    /// Renewals never extend past this.
    pub max_expires_at: DateTime<Utc>,
    /// Whether the lease ever became active, i.e. the credential reached its caller. `false`:
    /// issuance failed or crashed before the caller received anything.
    pub delivered: bool,
}

#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: SecretString,
    pub expiration: DateTime<Utc>,
    pub assumed_role_arn: String,
}

#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// Secret material handed to the caller once; never stored, never logged.
#[derive(Debug, Clone)]
pub enum Credential {
    Aws(AwsCredentials),
    AccessToken(AccessToken),
    Database(DatabaseCredentials),
}

impl Credential {
    /// When the credential really stops working (what the lease records).
    pub fn expires_at(&self) -> DateTime<Utc> {
        match self {
            Self::Aws(c) => c.expiration,
            Self::AccessToken(t) => t.expires_at,
            Self::Database(c) => c.expires_at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Try again later (network, throttling, backend down).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend refused (permissions, policy size, invalid input): retrying will not help.
    #[error("backend rejected the request: {0}")]
    Rejected(String),
    /// The plan or lease is for a backend this adapter does not serve (a wiring bug).
    #[error("adapter for {expected} got {got}")]
    WrongBackend { expected: BackendKind, got: BackendKind },
}

/// An adapter of one backend kind (what registries key it by).
pub trait Backend {
    fn backend(&self) -> BackendKind;
}

/// Ends (and, where the backend allows, extends) credentials recorded in leases. Separate from
/// [`CredentialIssuer`] so the revoker holds no power to issue (least privilege: it needs
/// neither signing keys nor `sts:AssumeRole`).
#[async_trait::async_trait]
pub trait CredentialRevoker: Backend + Send + Sync + fmt::Debug {
    /// Ends the credential a lease recorded. Must be idempotent and safe to run concurrently
    /// (the revoker may retry, or two revokers may race): revoking something already gone is
    /// success. Called for leases that never became active too, whose credential may never
    /// have existed.
    async fn revoke(&self, issued: IssuedRef<'_>) -> Result<(), IssueError>;

    /// Credentials this backend holds that look like the broker's (e.g. database users with
    /// the broker's name prefix), for orphan reconciliation. `None`: the backend cannot
    /// enumerate (STS sessions, signed tokens), so it cannot have orphans worth hunting.
    async fn list_issued(&self) -> Result<Option<Vec<IssuedCredential>>, IssueError> {
        Ok(None)
    }

    /// Removes a credential `list_issued` found and no live lease names.
    async fn remove_orphan(&self, credential: &IssuedCredential) -> Result<(), IssueError> {
        Err(IssueError::Rejected(format!("{} cannot remove {}", self.backend(), credential.name)))
    }

    /// Finishes work this backend keeps beyond single revocations (STS: deny lists the lease
    /// API changed, or whose policy write failed). The revoker calls it at the start of every
    /// sweep; it returns what failed (retried next sweep).
    async fn catch_up(&self) -> Vec<String> {
        Vec::new()
    }

    /// Extends the credential to `expires_at` (already clamped to the lease's maximum).
    /// Backends whose credentials have a fixed lifetime refuse.
    async fn renew(&self, issued: IssuedRef<'_>, expires_at: DateTime<Utc>) -> Result<(), IssueError> {
        let _ = expires_at;
        Err(IssueError::Rejected(format!(
            "{} credentials cannot be extended (lease {})",
            self.backend(),
            issued.lease_id
        )))
    }
}

/// Creates credentials from plans. Ending them is [`CredentialRevoker`]'s job (often the same
/// adapter for databases; a separate one for STS sessions and signed tokens).
#[async_trait::async_trait]
pub trait CredentialIssuer: Backend + Send + Sync + fmt::Debug {
    /// Key id to record for signed credentials (empty for backends without one).
    fn key_id(&self) -> String {
        String::new()
    }

    /// Creates the credential. `plan.backend()` equals `self.backend()`.
    async fn issue(&self, plan: &IssuePlan) -> Result<Credential, IssueError>;

    /// Gets ready for the first request where that is worth doing at start-up (Lambda init):
    /// reads secrets, opens connections. Failures are logged; the work is redone on use.
    async fn warm(&self) {}
}

/// A credential found in a backend by [`CredentialRevoker::list_issued`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredential {
    /// Which admin connection (or account, …) holds it.
    pub location: String,
    /// The name a lease would record (e.g. the database username).
    pub name: String,
    /// When it was created, if the backend (or the name) tells.
    pub created_at: Option<DateTime<Utc>>,
}

/// The adapters a process holds, at most one per backend kind.
#[derive(Debug)]
pub struct ByBackend<T: ?Sized> {
    slots: [Option<Arc<T>>; 3],
}

/// The issuers of a process (the API functions' view).
pub type Issuers = ByBackend<dyn CredentialIssuer>;
/// The revokers of a process (the revoker function's view, and the lease API's).
pub type Revokers = ByBackend<dyn CredentialRevoker>;

impl<T: ?Sized> Default for ByBackend<T> {
    fn default() -> Self {
        Self { slots: [None, None, None] }
    }
}

impl<T: ?Sized> Clone for ByBackend<T> {
    fn clone(&self) -> Self {
        Self { slots: self.slots.clone() }
    }
}

impl<T: ?Sized + Backend> ByBackend<T> {
    /// Adds `adapter` under its own kind (replacing one of the same kind).
    #[must_use]
    pub fn with(mut self, adapter: Arc<T>) -> Self {
        let slot = adapter.backend().index();
        self.slots[slot] = Some(adapter);
        self
    }

    pub fn get(&self, kind: BackendKind) -> Option<&Arc<T>> {
        self.slots[kind.index()].as_ref()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<T>> {
        self.slots.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Named(BackendKind);
    impl Backend for Named {
        fn backend(&self) -> BackendKind {
            self.0
        }
    }

    #[test]
    fn registry_holds_one_adapter_per_kind() {
        let registry = ByBackend::default()
            .with(Arc::new(Named(BackendKind::Database)))
            .with(Arc::new(Named(BackendKind::SignedToken)));
        assert!(registry.get(BackendKind::AwsSession).is_none());
        assert_eq!(registry.get(BackendKind::Database).map(|a| a.0), Some(BackendKind::Database));
        assert_eq!(registry.all().count(), 2);
    }

    #[test]
    fn kinds_serialise_as_their_names() {
        for kind in BackendKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
