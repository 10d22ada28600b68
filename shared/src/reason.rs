//! Stable reason codes: the one vocabulary shared by HTTP error bodies and audit events.
//!
//! Codes are part of the public API: never rename one, only add.

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;

use crate::identity::VerifyError;

/// A refusal: the reason code goes to the caller, the detail only to the audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: ReasonCode,
    pub detail: String,
}

impl Denial {
    pub fn new(reason: ReasonCode, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasonCode {
    /// Allowed.
    Granted,
    // Request shape
    InvalidRequest,
    UnsupportedGrantType,
    UnsupportedTokenType,
    UnknownGrant,
    // Token verification
    TokenTooLarge,
    MalformedToken,
    AlgorithmNotAllowed,
    IssuerUntrusted,
    UnknownKey,
    InvalidSignature,
    TokenExpired,
    TokenNotYetValid,
    MissingClaim(&'static str),
    ReplayedToken,
    // Policy
    AudienceMismatch,
    SubjectMismatch,
    /// Carries the claim name from the policy (never a value from the token).
    ClaimMismatch(String),
    SourceIpDenied,
    OutsideTimeWindow,
    TtlExceedsMax,
    /// A claim value cannot be used where the grant puts it (session tag, source identity).
    ClaimUnusable(String),
    // Lease API
    /// No `Authorization: Bearer` token on an endpoint that needs one.
    MissingToken,
    /// No such lease, or not the caller's (the two are not told apart).
    LeaseNotFound,
    /// The named grant is not an admin grant.
    NotAdmin,
    /// The lease's backend cannot extend credentials, or the lease is not active.
    LeaseNotRenewable,
    /// The lease changed while the request ran; retry.
    LeaseConflict,
    // Dependencies
    JwksUnavailable,
    BackendUnavailable,
    BackendRejected,
    StoreUnavailable,
    Internal,
}

impl ReasonCode {
    pub fn as_str(&self) -> Cow<'static, str> {
        let fixed = match self {
            Self::Granted => "granted",
            Self::InvalidRequest => "invalid_request",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::UnknownGrant => "unknown_grant",
            Self::TokenTooLarge => "token_too_large",
            Self::MalformedToken => "malformed_token",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::IssuerUntrusted => "issuer_untrusted",
            Self::UnknownKey => "unknown_key",
            Self::InvalidSignature => "invalid_signature",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::MissingClaim(name) => return Cow::Owned(format!("missing_claim:{name}")),
            Self::ReplayedToken => "replayed_token",
            Self::AudienceMismatch => "audience_mismatch",
            Self::SubjectMismatch => "subject_mismatch",
            Self::ClaimMismatch(name) => return Cow::Owned(format!("claim_mismatch:{name}")),
            Self::SourceIpDenied => "source_ip_denied",
            Self::OutsideTimeWindow => "outside_time_window",
            Self::TtlExceedsMax => "ttl_exceeds_max",
            Self::ClaimUnusable(name) => return Cow::Owned(format!("claim_unusable:{name}")),
            Self::MissingToken => "missing_token",
            Self::LeaseNotFound => "lease_not_found",
            Self::NotAdmin => "not_admin",
            Self::LeaseNotRenewable => "lease_not_renewable",
            Self::LeaseConflict => "lease_conflict",
            Self::JwksUnavailable => "jwks_unavailable",
            Self::BackendUnavailable => "backend_unavailable",
            Self::BackendRejected => "backend_rejected",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "internal_error",
        };
        Cow::Borrowed(fixed)
    }

    /// The HTTP status a caller sees for this reason, and the short `error` word beside it.
    pub fn http(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Granted => (StatusCode::OK, "ok"),
            Self::InvalidRequest | Self::UnknownGrant | Self::UnsupportedTokenType => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            Self::UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
            Self::TokenTooLarge
            | Self::MalformedToken
            | Self::AlgorithmNotAllowed
            | Self::IssuerUntrusted
            | Self::UnknownKey
            | Self::InvalidSignature
            | Self::TokenExpired
            | Self::TokenNotYetValid
            | Self::MissingClaim(_)
            | Self::ReplayedToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::MissingToken => (StatusCode::UNAUTHORIZED, "invalid_request"),
            Self::LeaseNotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::LeaseNotRenewable | Self::LeaseConflict => (StatusCode::CONFLICT, "conflict"),
            Self::AudienceMismatch
            | Self::SubjectMismatch
            | Self::ClaimMismatch(_)
            | Self::SourceIpDenied
            | Self::OutsideTimeWindow
            | Self::TtlExceedsMax
            | Self::ClaimUnusable(_)
            | Self::NotAdmin => (StatusCode::FORBIDDEN, "access_denied"),
            Self::JwksUnavailable | Self::BackendUnavailable | Self::StoreUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
            Self::BackendRejected | Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl From<&VerifyError> for ReasonCode {
    fn from(err: &VerifyError) -> Self {
        match err {
            VerifyError::TooLarge { .. } => Self::TokenTooLarge,
            VerifyError::Malformed(_) => Self::MalformedToken,
            VerifyError::AlgorithmNotAllowed(_) => Self::AlgorithmNotAllowed,
            VerifyError::IssuerUntrusted(_) => Self::IssuerUntrusted,
            VerifyError::UnknownKey { .. } => Self::UnknownKey,
            VerifyError::BadSignature(_) => Self::InvalidSignature,
            VerifyError::Expired(_) => Self::TokenExpired,
            VerifyError::NotYetValid(_) | VerifyError::IssuedInFuture(_) => Self::TokenNotYetValid,
            VerifyError::MissingClaim(name) => Self::MissingClaim(name),
            VerifyError::JwksUnavailable { .. } => Self::JwksUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    /// The public contract: code string, HTTP status and `error` word for every reason.
    #[test]
    fn every_reason_code_has_its_string_and_status() {
        let cases: &[(ReasonCode, &str, u16, &str)] = &[
            (ReasonCode::Granted, "granted", 200, "ok"),
            (ReasonCode::InvalidRequest, "invalid_request", 400, "invalid_request"),
            (ReasonCode::UnsupportedGrantType, "unsupported_grant_type", 400, "unsupported_grant_type"),
            (ReasonCode::UnsupportedTokenType, "unsupported_token_type", 400, "invalid_request"),
            (ReasonCode::UnknownGrant, "unknown_grant", 400, "invalid_request"),
            (ReasonCode::TokenTooLarge, "token_too_large", 401, "invalid_token"),
            (ReasonCode::MalformedToken, "malformed_token", 401, "invalid_token"),
            (ReasonCode::AlgorithmNotAllowed, "algorithm_not_allowed", 401, "invalid_token"),
            (ReasonCode::IssuerUntrusted, "issuer_untrusted", 401, "invalid_token"),
            (ReasonCode::UnknownKey, "unknown_key", 401, "invalid_token"),
            (ReasonCode::InvalidSignature, "invalid_signature", 401, "invalid_token"),
            (ReasonCode::TokenExpired, "token_expired", 401, "invalid_token"),
            (ReasonCode::TokenNotYetValid, "token_not_yet_valid", 401, "invalid_token"),
            (ReasonCode::MissingClaim("sub"), "missing_claim:sub", 401, "invalid_token"),
            (ReasonCode::ReplayedToken, "replayed_token", 401, "invalid_token"),
            (ReasonCode::AudienceMismatch, "audience_mismatch", 403, "access_denied"),
            (ReasonCode::SubjectMismatch, "subject_mismatch", 403, "access_denied"),
            (ReasonCode::ClaimMismatch("repo".into()), "claim_mismatch:repo", 403, "access_denied"),
            (ReasonCode::SourceIpDenied, "source_ip_denied", 403, "access_denied"),
            (ReasonCode::OutsideTimeWindow, "outside_time_window", 403, "access_denied"),
            (ReasonCode::TtlExceedsMax, "ttl_exceeds_max", 403, "access_denied"),
            (
                ReasonCode::ClaimUnusable("session_tags.x".into()),
                "claim_unusable:session_tags.x",
                403,
                "access_denied",
            ),
            (ReasonCode::MissingToken, "missing_token", 401, "invalid_request"),
            (ReasonCode::LeaseNotFound, "lease_not_found", 404, "not_found"),
            (ReasonCode::NotAdmin, "not_admin", 403, "access_denied"),
            (ReasonCode::LeaseNotRenewable, "lease_not_renewable", 409, "conflict"),
            (ReasonCode::LeaseConflict, "lease_conflict", 409, "conflict"),
            (ReasonCode::JwksUnavailable, "jwks_unavailable", 503, "temporarily_unavailable"),
            (ReasonCode::BackendUnavailable, "backend_unavailable", 503, "temporarily_unavailable"),
            (ReasonCode::StoreUnavailable, "store_unavailable", 503, "temporarily_unavailable"),
            (ReasonCode::BackendRejected, "backend_rejected", 500, "server_error"),
            (ReasonCode::Internal, "internal_error", 500, "server_error"),
        ];
        for (reason, code, status, error) in cases {
            assert_eq!(reason.as_str(), *code);
            assert_eq!(reason.http(), (StatusCode::from_u16(*status).unwrap(), *error), "{code}");
        }
    }

    #[test]
    fn verification_errors_map_to_their_reason() {
        let now = Utc::now();
        let cases = [
            (VerifyError::TooLarge { limit: 1 }, "token_too_large"),
            (VerifyError::Malformed("x".into()), "malformed_token"),
            (VerifyError::AlgorithmNotAllowed("HS256".into()), "algorithm_not_allowed"),
            (VerifyError::IssuerUntrusted("x".into()), "issuer_untrusted"),
            (VerifyError::UnknownKey { issuer: "i".into(), kid: "k".into() }, "unknown_key"),
            (VerifyError::BadSignature("x".into()), "invalid_signature"),
            (VerifyError::Expired(now), "token_expired"),
            (VerifyError::NotYetValid(now), "token_not_yet_valid"),
            (VerifyError::IssuedInFuture(now), "token_not_yet_valid"),
            (VerifyError::MissingClaim("exp"), "missing_claim:exp"),
            (VerifyError::JwksUnavailable { issuer: "i".into(), detail: "d".into() }, "jwks_unavailable"),
        ];
        for (err, code) in cases {
            assert_eq!(ReasonCode::from(&err).as_str(), code);
        }
    }
}
