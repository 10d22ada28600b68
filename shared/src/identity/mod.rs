//! Workload identity: verify a JWT presented by a workload against its issuer's JWKS.

mod jwks;
mod verifier;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub use jwks::{
    HttpJwksSource, JwksCache, JwksFetchError, JwksKey, JwksSource, KeyKind, MAX_JWKS_RESPONSE_BYTES,
};
#[cfg(any(test, feature = "testing"))]
pub use verifier::testing;
pub use verifier::{JwtVerifier, TrustedIssuer, VerifierConfigError, VerifierSettings};

/// A verified workload identity. Only produced by an [`IdentityVerifier`].
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// Every claim of the token, including the registered ones.
    pub claims: Map<String, Value>,
    pub jti: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
}

impl Identity {
    /// A claim as a string for pattern matching and templating: strings as they are, numbers
    /// and booleans in their JSON form; arrays, objects and null have no string form.
    pub fn claim_str(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Why a token was not accepted. The variants map 1:1 to reason codes.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("token is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("issuer {0:?} is not trusted by any policy")]
    IssuerUntrusted(String),
    #[error("no key {kid:?} in the JWKS of {issuer}")]
    UnknownKey { issuer: String, kid: String },
    #[error("signature verification failed: {0}")]
    BadSignature(String),
    #[error("token expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("token not valid before {0}")]
    NotYetValid(DateTime<Utc>),
    #[error("token issued in the future ({0})")]
    IssuedInFuture(DateTime<Utc>),
    #[error("required claim {0} missing or of the wrong type")]
    MissingClaim(&'static str),
    #[error("JWKS of {issuer} unavailable: {detail}")]
    JwksUnavailable { issuer: String, detail: String },
}

#[async_trait::async_trait]
pub trait IdentityVerifier: Send + Sync + std::fmt::Debug {
    async fn verify(&self, token: &str) -> Result<Identity, VerifyError>;
}
