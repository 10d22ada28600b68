//! Broker-signed access tokens (RFC 9068 style JWTs, `typ: at+jwt`).

use std::sync::Arc;

use secrecy::SecretString;
use serde::Serialize;

use crate::backend::{
    AccessToken, Backend, BackendKind, Credential, CredentialIssuer, CredentialRevoker, IssueError,
    IssuePlan, IssuedRef,
};
use crate::keys::KeySource;

#[derive(Debug)]
pub struct SignedTokenIssuer {
    keys: Arc<dyn KeySource>,
    /// `iss` of the tokens: the broker's public URL (where its JWKS is served).
    issuer: String,
}

impl SignedTokenIssuer {
    pub fn new(keys: Arc<dyn KeySource>, issuer: impl Into<String>) -> Self {
        Self { keys, issuer: issuer.into() }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    /// The lease id: lets a resource server deny a revoked lease.
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// RFC 9068 requires `client_id`: the workload identity's issuer + subject is the client.
    client_id: &'a str,
    credbroker: Provenance<'a>,
}

#[derive(Serialize)]
struct Provenance<'a> {
    policy: &'a str,
    grant: &'a str,
    /// The issuer of the workload token that was exchanged.
    src_iss: &'a str,
}

/// Signed tokens cannot be recalled: they end at their `exp` (kept short by policy), so
/// revoking one only ends its lease. Resource servers that must honour early revocation check
/// the lease (`jti`). Holds no key: this is what the revoker function wires in.
#[derive(Debug, Default, Clone, Copy)]
pub struct SignedTokenExpiry;

impl Backend for SignedTokenExpiry {
    fn backend(&self) -> BackendKind {
        BackendKind::SignedToken
    }
}

#[async_trait::async_trait]
impl CredentialRevoker for SignedTokenExpiry {
    async fn revoke(&self, _issued: IssuedRef<'_>) -> Result<(), IssueError> {
        Ok(())
    }
}

impl Backend for SignedTokenIssuer {
    fn backend(&self) -> BackendKind {
        BackendKind::SignedToken
    }
}

#[async_trait::async_trait]
impl CredentialIssuer for SignedTokenIssuer {
    fn key_id(&self) -> String {
        self.keys.signing_key().kid().to_owned()
    }

    async fn issue(&self, plan: &IssuePlan) -> Result<Credential, IssueError> {
        let IssuePlan::SignedToken(plan) = plan else {
            return Err(IssueError::WrongBackend { expected: BackendKind::SignedToken, got: plan.backend() });
        };
        let scope = (!plan.scopes.is_empty()).then(|| plan.scopes.join(" "));
        let claims = Claims {
            iss: &self.issuer,
            sub: &plan.subject,
            aud: &plan.audience,
            iat: plan.issued_at.timestamp(),
            nbf: plan.issued_at.timestamp(),
            exp: plan.expires_at.timestamp(),
            jti: &plan.lease_id,
            scope,
            client_id: &plan.subject,
            credbroker: Provenance { policy: &plan.policy, grant: &plan.grant, src_iss: &plan.source_issuer },
        };
        let token = self
            .keys
            .signing_key()
            .sign("at+jwt", &claims)
            .map_err(|e| IssueError::Rejected(e.to_string()))?;
        Ok(Credential::AccessToken(AccessToken {
            token: SecretString::from(token),
            expires_at: plan.expires_at,
        }))
    }
}
