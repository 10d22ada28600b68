//! Credential issuers: one adapter per backend, behind [`CredentialIssuer`].
//!
//! The broker renders a grant into an [`IssuePlan`] (everything decided, nothing secret yet),
//! writes the pending lease, then hands the plan to the issuer for its backend.

pub mod aws;
pub mod aws_revocation;
pub mod db;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::lease::{BackendRef, Lease};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuePlan {
    AwsSession(AwsSessionPlan),
    SignedToken(SignedTokenPlan),
    Database(db::DatabasePlan),
}

impl IssuePlan {
    /// The backend that serves this plan (matches [`BackendRef::kind`]).
    pub fn backend(&self) -> &'static str {
        match self {
            Self::AwsSession(_) => "aws_session",
            Self::SignedToken(_) => "signed_token",
            Self::Database(_) => "database",
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
    Database(db::DatabaseCredentials),
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
    /// The plan is for a backend this issuer does not serve (a wiring bug).
    #[error("issuer for {expected} got a plan for {got}")]
    WrongBackend { expected: &'static str, got: &'static str },
}

/// Ends (and, where the backend allows, extends) credentials recorded in leases. Separate from
/// [`CredentialIssuer`] so the revoker holds no power to issue (least privilege: it needs
/// neither signing keys nor `sts:AssumeRole`).
#[async_trait::async_trait]
pub trait CredentialRevoker: Send + Sync + std::fmt::Debug {
    /// The [`BackendRef::kind`] this revoker serves.
    fn backend(&self) -> &'static str;

    /// Ends the credential a lease recorded. Must be idempotent and safe to run concurrently
    /// (the revoker may retry, or two revokers may race): revoking something already gone is
    /// success. Called for `Pending` leases too, whose credential may never have existed.
    async fn revoke(&self, lease: &Lease) -> Result<(), IssueError>;

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

    /// Extends the credential to `expires_at` (already clamped to the lease's maximum).
    /// Backends whose credentials have a fixed lifetime refuse.
    async fn renew(&self, lease: &Lease, expires_at: DateTime<Utc>) -> Result<(), IssueError> {
        let _ = expires_at;
        Err(IssueError::Rejected(format!(
            "{} credentials cannot be extended (lease {})",
            self.backend(),
            lease.id
        )))
    }
}

/// Creates credentials from plans. Ending them is [`CredentialRevoker`]'s job (often the same
/// adapter for databases; a separate one for STS sessions and signed tokens).
#[async_trait::async_trait]
pub trait CredentialIssuer: Send + Sync + std::fmt::Debug {
    /// The `IssuePlan::backend()` this issuer serves.
    fn backend(&self) -> &'static str;

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

/// The revokers a deployment has, by backend (the revoker function's view).
#[derive(Debug, Default, Clone)]
pub struct Revokers {
    by_backend: HashMap<&'static str, Arc<dyn CredentialRevoker>>,
}

impl Revokers {
    #[must_use]
    pub fn with(mut self, revoker: Arc<dyn CredentialRevoker>) -> Self {
        self.by_backend.insert(revoker.backend(), revoker);
        self
    }

    pub fn for_backend(&self, backend: &str) -> Option<&Arc<dyn CredentialRevoker>> {
        self.by_backend.get(backend)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn CredentialRevoker>> {
        self.by_backend.values()
    }
}

/// The issuers a deployment has, by backend.
#[derive(Debug, Default, Clone)]
pub struct Issuers {
    by_backend: HashMap<&'static str, Arc<dyn CredentialIssuer>>,
}

impl Issuers {
    #[must_use]
    pub fn with(mut self, issuer: Arc<dyn CredentialIssuer>) -> Self {
        self.by_backend.insert(issuer.backend(), issuer);
        self
    }

    pub fn for_backend(&self, backend: &str) -> Option<&Arc<dyn CredentialIssuer>> {
        self.by_backend.get(backend)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn CredentialIssuer>> {
        self.by_backend.values()
    }
}
