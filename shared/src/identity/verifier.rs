//! JWT verification: turns a compact JWS from a trusted issuer into an [`Identity`].
//!
//! Checks run cheapest and safest first, so a hostile token is refused before it can cost a
//! key fetch or a signature operation: size → header → algorithm allowlist → issuer trust →
//! key → signature → time and required claims. Audience matching is the policy's job.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, JwksKey, KeyKind, parse_allowed_url};
use super::{
    Identity, IdentityVerifier, TrustedIssuer, VerifierConfigError, VerifierSettings, VerifyError,
    bounded_for_display,
};
use crate::clock::Clock;

/// The only signature algorithms accepted: asymmetric, widely deployed, one per key type.
/// HMAC is excluded outright, so a public key can never be used as an HMAC secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AllowedAlg {
    Rs256,
    Es256,
    EdDsa,
}

impl AllowedAlg {
    fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn key_kind(self) -> KeyKind {
        match self {
            Self::Rs256 => KeyKind::Rsa,
            Self::Es256 => KeyKind::EcP256,
            Self::EdDsa => KeyKind::Ed25519,
        }
    }
}

/// Verifies JWTs from a fixed set of trusted issuers against their cached JWKS.
#[derive(Debug)]
pub struct JwtVerifier {
    issuers: HashMap<String, TrustedIssuer>,
    leeway: TimeDelta,
    max_token_bytes: usize,
    clock: Arc<dyn Clock>,
    jwks: Arc<JwksCache>,
}

impl JwtVerifier {
    /// Validates `settings` and every issuer's URLs against the transport policy, so that a
    /// misconfiguration fails at start-up rather than on the first token.
    pub fn new(
        issuers: Vec<TrustedIssuer>,
        settings: &VerifierSettings,
        clock: Arc<dyn Clock>,
        jwks: Arc<JwksCache>,
    ) -> Result<Self, VerifierConfigError> {
        settings.validate()?;
        let mut by_name = HashMap::with_capacity(issuers.len());
        for trusted in issuers {
            check_issuer(&trusted, settings.allow_http_loopback)?;
            if by_name.contains_key(&trusted.issuer) {
                return Err(VerifierConfigError::DuplicateIssuer(trusted.issuer));
            }
            by_name.insert(trusted.issuer.clone(), trusted);
        }
        Ok(Self {
            issuers: by_name,
            leeway: TimeDelta::from_std(settings.leeway).unwrap_or(TimeDelta::zero()),
            max_token_bytes: settings.max_token_bytes,
            clock,
            jwks,
        })
    }

    /// Whether tokens of `issuer` can be verified at all.
    pub fn trusts(&self, issuer: &str) -> bool {
        self.issuers.contains_key(issuer)
    }

    fn claims_to_identity(&self, claims: Map<String, Value>) -> Result<Identity, VerifyError> {
        let now = self.clock.now();
        let Ok(Some(expires_at)) = numeric_date(&claims, "exp") else {
            return Err(VerifyError::MissingClaim("exp"));
        };
        if now - expires_at >= self.leeway {
            return Err(VerifyError::Expired(expires_at));
        }
        if let Some(not_before) = numeric_date(&claims, "nbf")?
            && not_before - now > self.leeway
        {
            return Err(VerifyError::NotYetValid(not_before));
        }
        let issued_at = numeric_date(&claims, "iat")?;
        if let Some(issued_at) = issued_at
            && issued_at - now > self.leeway
        {
            return Err(VerifyError::IssuedInFuture(issued_at));
        }
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(VerifyError::MissingClaim("sub")),
        };
        let Some(Value::String(issuer)) = claims.get("iss") else {
            return Err(VerifyError::MissingClaim("iss"));
        };
        let issuer = issuer.clone();
        let audiences = match claims.get("aud") {
            None => Vec::new(),
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| malformed("claim aud must be a string or an array of strings"))?,
            Some(_) => return Err(malformed("claim aud must be a string or an array of strings")),
        };
        let jti = match claims.get("jti") {
            None => None,
            // An empty jti would collide in the replay guard across unrelated tokens.
            Some(Value::String(jti)) if !jti.is_empty() => Some(jti.clone()),
            Some(_) => return Err(malformed("claim jti must be a non-empty string")),
        };
        Ok(Identity { issuer, subject, audiences, claims, jti, expires_at, issued_at })
    }
}

#[async_trait::async_trait]
impl IdentityVerifier for JwtVerifier {
    async fn verify(&self, token: &str) -> Result<Identity, VerifyError> {
        if token.len() > self.max_token_bytes {
            return Err(VerifyError::TooLarge { limit: self.max_token_bytes });
        }
        let (header_part, payload_part) = split_compact(token)?;
        let header = decode_json_part(header_part, "header")?;
        let alg_name =
            header.get("alg").and_then(Value::as_str).ok_or_else(|| malformed("header has no alg"))?;
        let alg = AllowedAlg::from_header(alg_name)
            .ok_or_else(|| VerifyError::AlgorithmNotAllowed(bounded_for_display(alg_name)))?;
        if header.contains_key("crit") {
            // RFC 7515 §4.1.11: extensions we do not implement must make the token invalid.
            return Err(malformed("critical header extensions are not supported"));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(malformed("header kid must be a string")),
        };

        // Read, but do not yet trust, the payload: only to learn which issuer's keys to use.
        let unverified = decode_json_part(payload_part, "payload")?;
        let Some(Value::String(issuer)) = unverified.get("iss") else {
            return Err(VerifyError::MissingClaim("iss"));
        };
        // Never fetch anything for an issuer nobody trusts: that would let any caller make the
        // broker send requests to URLs of their choosing.
        let trusted = self
            .issuers
            .get(issuer)
            .ok_or_else(|| VerifyError::IssuerUntrusted(bounded_for_display(issuer)))?;

        let key = self.jwks.key(trusted, kid, alg.key_kind()).await?;
        check_key_fits(&key, alg)?;
        verify_signature(token, &key)?;
        self.claims_to_identity(unverified)
    }
}

fn check_issuer(trusted: &TrustedIssuer, allow_http_loopback: bool) -> Result<(), VerifierConfigError> {
    let invalid =
        |reason: String| VerifierConfigError::InvalidIssuer { issuer: trusted.issuer.clone(), reason };
    if trusted.issuer.is_empty() {
        return Err(invalid("issuer is empty".to_owned()));
    }
    // Without a jwks_url the issuer itself is fetched from (discovery), so it must be a URL the
    // transport policy allows; with one, only that URL is ever fetched.
    let fetched = trusted.jwks_url.as_deref().unwrap_or(&trusted.issuer);
    parse_allowed_url(fetched, allow_http_loopback).map_err(|e| invalid(e.to_string()))?;
    Ok(())
}

/// A key pinned to another algorithm, or of another type than the header's algorithm needs,
/// must not be tried: that is how algorithm-confusion attacks begin.
fn check_key_fits(key: &JwksKey, alg: AllowedAlg) -> Result<(), VerifyError> {
    let alg_matches = key.alg.as_deref().is_none_or(|pinned| pinned == alg.name());
    if key.kind == alg.key_kind() && alg_matches {
        return Ok(());
    }
    let kid = key.kid.as_deref().map_or_else(|| "(none)".to_owned(), bounded_for_display);
    Err(VerifyError::AlgorithmNotAllowed(format!("{} with key {kid}", alg.name())))
}

/// Checks the JWS signature over `<header>.<payload>` with the issuer's parsed key, whose
/// algorithm [`check_key_fits`] has matched to the header's. The payload was decoded before;
/// once this passes it is trusted. Time checks use our Clock, the audience is the policy's.
fn verify_signature(token: &str, key: &JwksKey) -> Result<(), VerifyError> {
    let (signing_input, signature) =
        token.rsplit_once('.').ok_or_else(|| malformed("token is not a compact JWS"))?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed("signature is not base64url"))?;
    key.verifying_key
        .verify_sig(signing_input.as_bytes(), &signature)
        .map_err(|_| bad_signature("signature does not match the issuer's key"))
}

/// Header and payload of a compact JWS; the signature may be empty here (an `alg: none` token
/// must reach the algorithm check to be named as such).
fn split_compact(token: &str) -> Result<(&str, &str), VerifyError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(_signature), None)
            if !header.is_empty() && !payload.is_empty() =>
        {
            Ok((header, payload))
        }
        _ => Err(malformed("token is not a compact JWS (three dot-separated parts)")),
    }
}

fn decode_json_part(part: &str, what: &str) -> Result<Map<String, Value>, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| VerifyError::Malformed(format!("{what} is not base64url")))?;
    let object: UniqueKeys = serde_json::from_slice(&bytes).map_err(|e| {
        let problem = if e.to_string().starts_with(DUPLICATE_KEY) {
            "repeats a member"
        } else {
            "is not a JSON object"
        };
        VerifyError::Malformed(format!("{what} {problem}"))
    })?;
    Ok(object.0)
}

const DUPLICATE_KEY: &str = "duplicate member";

/// A JSON object whose top-level members are unique: when a token repeats `exp` or `sub`,
/// parsers disagree about which one counts, so such a token is refused outright.
struct UniqueKeys(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueKeys;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<UniqueKeys, A::Error> {
                let mut map = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!("{DUPLICATE_KEY} {key:?}")));
                    }
                    map.insert(key, value);
                }
                Ok(UniqueKeys(map))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional). Absent → `None`; present
/// but not a representable date → `Malformed`.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<DateTime<Utc>>, VerifyError> {
    let Some(value) = claims.get(name) else { return Ok(None) };
    let seconds = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            let float = n.as_f64()?.floor();
            // Beyond ±10^15 s no date is representable anyway; the bound makes the cast exact.
            #[expect(clippy::cast_possible_truncation, reason = "range checked just before")]
            (float.abs() < 1e15).then_some(float as i64)
        }),
        _ => None,
    };
    seconds
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map(Some)
        .ok_or_else(|| VerifyError::Malformed(format!("claim {name} is not a NumericDate")))
}

fn malformed(why: &str) -> VerifyError {
    VerifyError::Malformed(why.to_owned())
}

fn bad_signature(why: &str) -> VerifyError {
    VerifyError::BadSignature(why.to_owned())
}

#[cfg(test)]
mod tests;
