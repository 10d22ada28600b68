//! Credential issuers: one adapter per backend, behind [`CredentialIssuer`].
//!
//! The broker renders a grant into an [`IssuePlan`] (everything decided, nothing secret yet),
//! writes the pending lease, then hands the plan to the issuer for its backend.

pub mod aws;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::lease::BackendRef;

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
}

impl IssuePlan {
    /// The backend that serves this plan (matches [`BackendRef::kind`]).
    pub fn backend(&self) -> &'static str {
        match self {
            Self::AwsSession(_) => "aws_session",
            Self::SignedToken(_) => "signed_token",
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
}

impl Credential {
    /// When the credential really stops working (what the lease records).
    pub fn expires_at(&self) -> DateTime<Utc> {
        match self {
            Self::Aws(c) => c.expiration,
            Self::AccessToken(t) => t.expires_at,
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

#[async_trait::async_trait]
pub trait CredentialIssuer: Send + Sync + std::fmt::Debug {
    /// The `IssuePlan::backend()` this issuer serves.
    fn backend(&self) -> &'static str;
    /// Key id to record for signed credentials (empty for backends without one).
    fn key_id(&self) -> String {
        String::new()
    }
    async fn issue(&self, plan: &IssuePlan) -> Result<Credential, IssueError>;
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
}
