//! Workload identity: verify a JWT presented by a workload against its issuer's JWKS.

//!
//! The types here are what the domain sees (a verified [`Identity`], the [`IdentityVerifier`]
//! port, which issuers are trusted and how); `jwks` fetches and caches key sets, `verifier`
//! checks tokens against them.

mod jwks;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod verifier;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

#[cfg(feature = "http")]
pub use jwks::HttpJwksSource;
pub use jwks::{JwksCache, JwksFetchError, JwksKey, JwksSource, KeyKind, MAX_JWKS_RESPONSE_BYTES};
pub use verifier::JwtVerifier;

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

/// An issuer whose tokens may be verified, and optionally where its JWKS lives (skipping OIDC
/// discovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// Compared byte for byte with the token's `iss`.
    pub issuer: String,
    pub jwks_url: Option<String>,
}

/// Tunables of token verification and JWKS fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierSettings {
    /// Clock skew tolerated on `exp`, `nbf` and `iat`; at most [`Self::MAX_LEEWAY`].
    pub leeway: Duration,
    /// Tokens longer than this are refused before any parsing.
    pub max_token_bytes: usize,
    /// How long a fetched key set is used without refetching.
    pub cache_ttl: Duration,
    /// An issuer's JWKS is fetched at most once per this interval (unknown `kid`, failures).
    pub min_refetch_interval: Duration,
    /// How long past `cache_ttl` a key set keeps serving while its issuer cannot be reached.
    pub stale_grace: Duration,
    /// Timeout of each discovery or JWKS request.
    pub http_timeout: Duration,
    /// Permit plain `http://` to loopback hosts (local dev mode and tests only).
    pub allow_http_loopback: bool,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        Self {
            leeway: Duration::from_secs(30),
            max_token_bytes: 16 * 1024,
            cache_ttl: Duration::from_mins(10),
            min_refetch_interval: Duration::from_secs(30),
            stale_grace: Duration::from_hours(1),
            http_timeout: Duration::from_secs(5),
            allow_http_loopback: false,
        }
    }
}

impl VerifierSettings {
    /// Larger skew would let an expired token live on noticeably; fix the clocks instead.
    pub const MAX_LEEWAY: Duration = Duration::from_mins(1);

    pub fn validate(&self) -> Result<(), VerifierConfigError> {
        if self.leeway > Self::MAX_LEEWAY {
            return Err(VerifierConfigError::LeewayTooLarge(self.leeway));
        }
        if self.max_token_bytes == 0 {
            return Err(VerifierConfigError::ZeroTokenLimit);
        }
        Ok(())
    }
}

/// A verifier configuration that cannot work; reported at load time, never per request.
#[derive(Debug, thiserror::Error)]
pub enum VerifierConfigError {
    #[error("leeway {0:?} exceeds the maximum of 60 s")]
    LeewayTooLarge(Duration),
    #[error("max_token_bytes must be greater than zero")]
    ZeroTokenLimit,
    #[error("trusted issuer {issuer:?}: {reason}")]
    InvalidIssuer { issuer: String, reason: String },
    #[error("issuer {0:?} is listed twice")]
    DuplicateIssuer(String),
}

/// Token-supplied text (alg, kid, iss) in an error or log line: bounded in length, control
/// characters replaced, so a token cannot flood or forge log lines.
pub(crate) fn bounded_for_display(text: &str) -> String {
    const MAX_CHARS: usize = 128;
    let mut shown: String =
        text.chars().take(MAX_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        shown.push('…');
    }
    shown
}
