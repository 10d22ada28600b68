//! JWT verification: turns a compact JWS from a trusted issuer into an [`Identity`].
//!
//! Checks run cheapest and safest first, so a hostile token is refused before it can cost a
//! key fetch or a signature operation: size → header → algorithm allowlist → issuer trust →
//! key → signature → time and required claims. Audience matching is the policy's job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, JwksKey, KeyKind, parse_allowed_url};
use super::{Identity, IdentityVerifier, VerifyError};
use crate::clock::Clock;

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

/// Test support shared with other modules and crates (feature `testing`): issuers that sign
/// real tokens, and an in-memory JWKS source that counts fetches.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
        RsaKeyPair,
    };
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use chrono::{DateTime, TimeDelta, Utc};
    use serde_json::{Value, json};

    use super::{JwtVerifier, TrustedIssuer, VerifierSettings};
    use crate::clock::Clock;
    use crate::identity::jwks::{JwksCache, JwksFetchError, JwksSource};

    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    enum SigningKey {
        Rsa(RsaKeyPair),
        Ec(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    /// An issuer with a freshly generated key pair that signs tokens with arbitrary claims.
    pub struct TestIssuer {
        issuer: String,
        kid: String,
        key: SigningKey,
    }

    impl std::fmt::Debug for TestIssuer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TestIssuer")
                .field("issuer", &self.issuer)
                .field("kid", &self.kid)
                .field("alg", &self.alg())
                .finish_non_exhaustive()
        }
    }

    impl TestIssuer {
        /// RSA 2048 / RS256.
        pub fn rs256(issuer: impl Into<String>) -> Self {
            let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate RSA key");
            Self::with_key(issuer.into(), SigningKey::Rsa(key))
        }

        /// P-256 / ES256.
        pub fn es256(issuer: impl Into<String>) -> Self {
            let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate P-256 key");
            Self::with_key(issuer.into(), SigningKey::Ec(key))
        }

        /// Ed25519 / EdDSA.
        pub fn eddsa(issuer: impl Into<String>) -> Self {
            let key = Ed25519KeyPair::generate().expect("generate Ed25519 key");
            Self::with_key(issuer.into(), SigningKey::Ed(key))
        }

        fn with_key(issuer: String, key: SigningKey) -> Self {
            let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let alg = match key {
                SigningKey::Rsa(_) => "rs256",
                SigningKey::Ec(_) => "es256",
                SigningKey::Ed(_) => "eddsa",
            };
            Self { issuer, kid: format!("test-{alg}-{n}"), key }
        }

        /// Same key, another `kid` (e.g. to impersonate another issuer's key id).
        #[must_use]
        pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
            self.kid = kid.into();
            self
        }

        pub fn issuer(&self) -> &str {
            &self.issuer
        }

        pub fn kid(&self) -> &str {
            &self.kid
        }

        /// The JWS `alg` this issuer signs with.
        pub fn alg(&self) -> &'static str {
            match self.key {
                SigningKey::Rsa(_) => "RS256",
                SigningKey::Ec(_) => "ES256",
                SigningKey::Ed(_) => "EdDSA",
            }
        }

        /// The public key as a JWK (`use: sig`, with `kid` and `alg`).
        pub fn jwk(&self) -> Value {
            let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
            let mut jwk = match &self.key {
                SigningKey::Rsa(key) => {
                    let components = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
                    json!({"kty": "RSA", "n": b64(&components.n), "e": b64(&components.e)})
                }
                SigningKey::Ec(key) => {
                    let point = key.public_key().as_ref();
                    json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
                }
                SigningKey::Ed(key) => {
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().as_ref())})
                }
            };
            jwk["use"] = json!("sig");
            jwk["kid"] = json!(self.kid);
            jwk["alg"] = json!(self.alg());
            jwk
        }

        /// `{"keys": [jwk]}`.
        pub fn jwks(&self) -> Value {
            json!({ "keys": [self.jwk()] })
        }

        /// Public key bytes an attacker could obtain (for HMAC-confusion tests): RSA as DER
        /// SubjectPublicKeyInfo, P-256 as the SEC1 point, Ed25519 as the raw 32 bytes.
        pub fn public_key_der(&self) -> Vec<u8> {
            match &self.key {
                SigningKey::Rsa(key) => {
                    key.public_key().as_der().expect("encode RSA public key").as_ref().to_vec()
                }
                SigningKey::Ec(key) => key.public_key().as_ref().to_vec(),
                SigningKey::Ed(key) => key.public_key().as_ref().to_vec(),
            }
        }

        /// Typical claims for `subject`, valid for 5 minutes from `now`; edit the value to taste.
        pub fn claims(&self, subject: &str, now: DateTime<Utc>) -> Value {
            let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            json!({
                "iss": self.issuer,
                "sub": subject,
                "aud": "credbroker",
                "iat": now.timestamp(),
                "exp": (now + TimeDelta::minutes(5)).timestamp(),
                "jti": format!("jti-{n}"),
            })
        }

        /// A token with header `{"alg", "typ": "JWT", "kid"}` and the given claims.
        pub fn sign(&self, claims: &Value) -> String {
            let header = json!({ "alg": self.alg(), "typ": "JWT", "kid": self.kid });
            self.sign_with_header(&header, claims)
        }

        /// A token with any header (it is signed with this issuer's key whatever `alg` says).
        pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
            self.sign_parts(header.to_string().as_bytes(), claims.to_string().as_bytes())
        }

        /// A token from raw header and payload bytes (e.g. not JSON, or with duplicate keys),
        /// signed with this issuer's key.
        pub fn sign_parts(&self, header: &[u8], payload: &[u8]) -> String {
            let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
            let signature = self.sign_bytes(message.as_bytes());
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
        }

        fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
            match &self.key {
                SigningKey::Rsa(key) => {
                    let mut signature = vec![0; key.public_modulus_len()];
                    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut signature)
                        .expect("RSA signing");
                    signature
                }
                SigningKey::Ec(key) => {
                    key.sign(&SystemRandom::new(), message).expect("ECDSA signing").as_ref().to_vec()
                }
                SigningKey::Ed(key) => key.sign(message).as_ref().to_vec(),
            }
        }

        /// This issuer as a [`TrustedIssuer`] (discovery, no `jwks_url`).
        pub fn trusted(&self) -> TrustedIssuer {
            TrustedIssuer { issuer: self.issuer.clone(), jwks_url: None }
        }
    }

    /// An in-memory [`JwksSource`]: serves the key sets it was given, counts fetches, and can
    /// be made to fail or to answer slowly.
    #[derive(Debug, Default)]
    pub struct StaticJwksSource {
        sets: Mutex<HashMap<String, Value>>,
        fetched: Mutex<Vec<String>>,
        fetches: AtomicUsize,
        failing: AtomicBool,
        delay: Mutex<Option<Duration>>,
    }

    impl StaticJwksSource {
        pub fn new() -> Self {
            Self::default()
        }

        /// Serves `issuer`'s JWKS from now on.
        pub fn add(&self, issuer: &TestIssuer) {
            self.set(issuer.issuer(), issuer.jwks());
        }

        /// Serves `jwks` for `issuer` from now on (replacing what was there).
        pub fn set(&self, issuer: &str, jwks: Value) {
            lock(&self.sets).insert(issuer.to_owned(), jwks);
        }

        /// Total fetches so far (failed ones included).
        pub fn fetch_count(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        /// Issuers fetched, in order.
        pub fn fetched_issuers(&self) -> Vec<String> {
            lock(&self.fetched).clone()
        }

        pub fn set_failing(&self, failing: bool) {
            self.failing.store(failing, Ordering::SeqCst);
        }

        /// Every fetch sleeps this long first (tokio time, so paused-clock tests stay instant).
        pub fn set_delay(&self, delay: Option<Duration>) {
            *lock(&self.delay) = delay;
        }
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[async_trait::async_trait]
    impl JwksSource for StaticJwksSource {
        async fn fetch(&self, issuer: &str, _jwks_url: Option<&str>) -> Result<Value, JwksFetchError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            lock(&self.fetched).push(issuer.to_owned());
            let delay = *lock(&self.delay);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let unavailable = || JwksFetchError::Status { url: format!("{issuer}/jwks"), status: 503 };
            if self.failing.load(Ordering::SeqCst) {
                return Err(unavailable());
            }
            lock(&self.sets).get(issuer).cloned().ok_or_else(unavailable)
        }
    }

    /// A verifier trusting `issuers`, their keys served by a [`StaticJwksSource`] (returned so
    /// tests can count fetches or rotate keys).
    pub fn verifier_for(
        issuers: &[&TestIssuer],
        settings: &VerifierSettings,
        clock: Arc<dyn Clock>,
    ) -> (JwtVerifier, Arc<StaticJwksSource>) {
        let source = Arc::new(StaticJwksSource::new());
        for issuer in issuers {
            source.add(issuer);
        }
        let cache = JwksCache::new(source.clone(), Arc::clone(&clock), settings);
        let trusted = issuers.iter().map(|i| i.trusted()).collect();
        let verifier = JwtVerifier::new(trusted, settings, clock, Arc::new(cache))
            .expect("test verifier settings are valid");
        (verifier, source)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use aws_lc_rs::hmac;
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use chrono::{DateTime, TimeDelta, Utc};
    use serde_json::{Value, json};

    use super::testing::{StaticJwksSource, TestIssuer};
    use super::*;
    use crate::clock::ManualClock;
    use crate::reason::ReasonCode;

    const ISSUER: &str = "https://issuer.test";
    const ATTACKER: &str = "https://attacker.test";

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
    }

    /// The trusted issuer publishes one key of each kind, plus a copy of the RSA key pinned to
    /// PS256 (to test that a key's own `alg` is honoured).
    struct Keys {
        es: TestIssuer,
        rsa: TestIssuer,
        ed: TestIssuer,
        /// Not trusted; hosts its own JWKS so a wrongful fetch would succeed (and show).
        attacker: TestIssuer,
    }

    impl Keys {
        fn new() -> Self {
            Self {
                es: TestIssuer::es256(ISSUER),
                rsa: TestIssuer::rs256(ISSUER),
                ed: TestIssuer::eddsa(ISSUER),
                attacker: TestIssuer::es256(ATTACKER),
            }
        }

        fn jwks(&self) -> Value {
            let mut pinned = self.rsa.jwk();
            pinned["kid"] = json!("rsa-pinned-ps256");
            pinned["alg"] = json!("PS256");
            json!({ "keys": [self.es.jwk(), self.rsa.jwk(), self.ed.jwk(), pinned] })
        }
    }

    struct Fixture {
        clock: Arc<ManualClock>,
        source: Arc<StaticJwksSource>,
        verifier: Arc<JwtVerifier>,
    }

    impl Fixture {
        fn new(keys: &Keys) -> Self {
            Self::with_settings(keys, &VerifierSettings::default())
        }

        fn with_settings(keys: &Keys, settings: &VerifierSettings) -> Self {
            let clock = Arc::new(ManualClock::new(start()));
            let source = Arc::new(StaticJwksSource::new());
            source.set(ISSUER, keys.jwks());
            source.add(&keys.attacker);
            let cache = JwksCache::new(source.clone(), clock.clone(), settings);
            let trusted = vec![TrustedIssuer { issuer: ISSUER.to_owned(), jwks_url: None }];
            let verifier = JwtVerifier::new(trusted, settings, clock.clone(), Arc::new(cache))
                .expect("valid verifier settings");
            Self { clock, source, verifier: Arc::new(verifier) }
        }

        async fn verify(&self, token: &str) -> Result<Identity, VerifyError> {
            self.verifier.verify(token).await
        }

        fn advance(&self, seconds: i64) {
            self.clock.advance(TimeDelta::seconds(seconds));
        }
    }

    fn claims(keys: &Keys) -> Value {
        keys.es.claims("workload-a", start())
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn without(mut claims: Value, name: &str) -> Value {
        claims.as_object_mut().expect("claims are an object").remove(name);
        claims
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An HMAC-signed token whose secret is whatever the attacker chose.
    fn hmac_token(alg: &str, kid: &str, secret: &[u8], claims: &Value) -> String {
        let algorithm = match alg {
            "HS256" => hmac::HMAC_SHA256,
            "HS384" => hmac::HMAC_SHA384,
            _ => hmac::HMAC_SHA512,
        };
        let header = json!({ "alg": alg, "typ": "JWT", "kid": kid });
        let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let tag = hmac::sign(&hmac::Key::new(algorithm, secret), message.as_bytes());
        format!("{message}.{}", b64(tag.as_ref()))
    }

    fn pem(der: &[u8]) -> Vec<u8> {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
            .collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n")).into_bytes()
    }

    fn unsigned(header: &Value, claims: &Value) -> String {
        format!("{}.{}.", b64(header.to_string()), b64(claims.to_string()))
    }

    #[tokio::test]
    async fn valid_tokens_of_every_allowed_algorithm_verify() {
        let keys = Keys::new();
        for signer in [&keys.rsa, &keys.es, &keys.ed] {
            let fixture = Fixture::new(&keys);
            let claims = with(signer.claims("workload-a", start()), "team", json!("payments"));
            let identity = fixture
                .verify(&signer.sign(&claims))
                .await
                .unwrap_or_else(|e| panic!("{} token refused: {e}", signer.alg()));
            assert_eq!(identity.issuer, ISSUER);
            assert_eq!(identity.subject, "workload-a");
            assert_eq!(identity.audiences, vec!["credbroker".to_owned()]);
            assert_eq!(identity.jti.as_deref(), claims["jti"].as_str());
            assert_eq!(identity.expires_at, start() + TimeDelta::minutes(5));
            assert_eq!(identity.issued_at, Some(start()));
            assert_eq!(identity.claim_str("team").as_deref(), Some("payments"));
        }
    }

    #[tokio::test]
    async fn audience_forms_and_optional_claims_are_read_as_given() {
        let keys = Keys::new();
        let fixture = Fixture::new(&keys);
        let cases: [(&str, Value, Vec<&str>); 3] = [
            ("aud as a string", with(claims(&keys), "aud", json!("a")), vec!["a"]),
            ("aud as an array", with(claims(&keys), "aud", json!(["a", "b"])), vec!["a", "b"]),
            ("aud absent", without(claims(&keys), "aud"), vec![]),
        ];
        for (case, claims, expected) in cases {
            let identity = fixture.verify(&keys.es.sign(&claims)).await.expect(case);
            assert_eq!(identity.audiences, expected, "{case}");
        }
        let minimal = json!({"iss": ISSUER, "sub": "s", "exp": start().timestamp() + 60});
        let identity = fixture.verify(&keys.es.sign(&minimal)).await.expect("minimal claims");
        assert_eq!((identity.jti, identity.issued_at), (None, None));
    }

    #[tokio::test]
    async fn token_without_kid_uses_the_only_key_of_its_type() {
        let keys = Keys::new();
        let fixture = Fixture::new(&keys);
        let token = keys.ed.sign_with_header(&json!({"alg": "EdDSA"}), &claims(&keys));
        fixture.verify(&token).await.expect("single Ed25519 key is unambiguous");
    }

    struct Case {
        attack: &'static str,
        token: String,
        expected: ReasonCode,
        /// JWKS fetches the attempt may cause on a cold cache.
        fetches: usize,
    }

    fn case(attack: &'static str, token: String, expected: ReasonCode, fetches: usize) -> Case {
        Case { attack, token, expected, fetches }
    }

    /// Each case runs on a fresh verifier with a cold cache, so `fetches` is exact.
    async fn assert_refused(keys: &Keys, cases: Vec<Case>) {
        for case in cases {
            let fixture = Fixture::new(keys);
            let err = fixture
                .verify(&case.token)
                .await
                .err()
                .unwrap_or_else(|| panic!("accepted: {}", case.attack));
            assert_eq!(ReasonCode::from(&err), case.expected, "{}: {err}", case.attack);
            assert_eq!(fixture.source.fetch_count(), case.fetches, "fetches for: {}", case.attack);
            assert!(
                !fixture.source.fetched_issuers().iter().any(|i| i == ATTACKER),
                "fetched the attacker's JWKS for: {}",
                case.attack
            );
            let message = err.to_string();
            let quotes_token = case.token.split('.').any(|part| part.len() > 8 && message.contains(part));
            assert!(!quotes_token, "error quotes the token: {}", case.attack);
        }
    }

    /// A header for the trusted ES256 key with `extra` fields merged in (overriding).
    fn es_header(keys: &Keys, extra: &Value) -> Value {
        let mut header = json!({"alg": "ES256", "typ": "JWT", "kid": keys.es.kid()});
        if let (Some(header), Some(extra)) = (header.as_object_mut(), extra.as_object()) {
            header.extend(extra.clone());
        }
        header
    }

    #[tokio::test]
    async fn algorithm_attacks_are_refused_before_any_key_lookup() {
        use ReasonCode::{AlgorithmNotAllowed, MalformedToken};
        let keys = Keys::new();
        let good = claims(&keys);
        let rsa_der = keys.rsa.public_key_der();
        let header_only =
            |signer: &TestIssuer, alg: Value| signer.sign_with_header(&json!({"alg": alg}), &good);
        let cases = vec![
            case("alg none, unsigned", unsigned(&json!({"alg": "none"}), &good), AlgorithmNotAllowed, 0),
            case("alg None, case variant", unsigned(&json!({"alg": "None"}), &good), AlgorithmNotAllowed, 0),
            case(
                "alg none naming a real kid",
                unsigned(&es_header(&keys, &json!({"alg": "none"})), &good),
                AlgorithmNotAllowed,
                0,
            ),
            case(
                "HS256 keyed with the RSA public key (DER)",
                hmac_token("HS256", keys.rsa.kid(), &rsa_der, &good),
                AlgorithmNotAllowed,
                0,
            ),
            case(
                "HS256 keyed with the RSA public key (PEM)",
                hmac_token("HS256", keys.rsa.kid(), &pem(&rsa_der), &good),
                AlgorithmNotAllowed,
                0,
            ),
            case("HS384", hmac_token("HS384", keys.rsa.kid(), b"guess", &good), AlgorithmNotAllowed, 0),
            case("HS512", hmac_token("HS512", keys.rsa.kid(), b"guess", &good), AlgorithmNotAllowed, 0),
            case("RS512, not allowlisted", header_only(&keys.rsa, json!("RS512")), AlgorithmNotAllowed, 0),
            case("PS256, not allowlisted", header_only(&keys.rsa, json!("PS256")), AlgorithmNotAllowed, 0),
            case("ES384, not allowlisted", header_only(&keys.es, json!("ES384")), AlgorithmNotAllowed, 0),
            case("JWE algorithm RSA-OAEP", header_only(&keys.es, json!("RSA-OAEP")), AlgorithmNotAllowed, 0),
            case("alg not a string", header_only(&keys.es, json!(256)), MalformedToken, 0),
            case(
                "alg missing",
                keys.es.sign_with_header(&json!({"kid": keys.es.kid()}), &good),
                MalformedToken,
                0,
            ),
        ];
        assert_refused(&keys, cases).await;
    }

    #[tokio::test]
    async fn malformed_tokens_are_refused_before_any_key_lookup() {
        use ReasonCode::{MalformedToken, TokenTooLarge};
        let keys = Keys::new();
        let good = claims(&keys);
        let valid = keys.es.sign(&good);
        let (valid_head, _) = valid.rsplit_once('.').expect("three parts");
        let (_, valid_rest) = valid.split_once('.').expect("three parts");
        let es = |extra: Value| es_header(&keys, &extra).to_string().into_bytes();
        let cases = vec![
            case("empty token", String::new(), MalformedToken, 0),
            case("two segments", valid_head.to_owned(), MalformedToken, 0),
            case("four segments", format!("{valid}.extra"), MalformedToken, 0),
            case("header not base64url", format!("!!.{valid_rest}"), MalformedToken, 0),
            case(
                "header not a JSON object",
                keys.es.sign_parts(b"[\"ES256\"]", good.to_string().as_bytes()),
                MalformedToken,
                0,
            ),
            case("payload not JSON", keys.es.sign_parts(&es(json!({})), b"sub=admin"), MalformedToken, 0),
            case(
                "critical header extension",
                keys.es.sign_parts(&es(json!({"crit": ["b64"], "b64": false})), good.to_string().as_bytes()),
                MalformedToken,
                0,
            ),
            case(
                "kid not a string",
                keys.es.sign_parts(&es(json!({"kid": 7})), good.to_string().as_bytes()),
                MalformedToken,
                0,
            ),
            case(
                "oversize token",
                keys.es.sign(&with(good.clone(), "pad", json!("x".repeat(17 * 1024)))),
                TokenTooLarge,
                0,
            ),
        ];
        assert_refused(&keys, cases).await;
    }

    #[tokio::test]
    async fn untrusted_issuers_never_cause_a_fetch() {
        use ReasonCode::{IssuerUntrusted, MissingClaim};
        let keys = Keys::new();
        let good = claims(&keys);
        let cases = vec![
            case(
                "untrusted issuer with its own valid JWKS",
                keys.attacker.sign(&with(good.clone(), "iss", json!(ATTACKER))),
                IssuerUntrusted,
                0,
            ),
            case(
                "trusted issuer with a trailing slash",
                keys.es.sign(&with(good.clone(), "iss", json!(format!("{ISSUER}/")))),
                IssuerUntrusted,
                0,
            ),
            case(
                "trusted issuer in another case",
                keys.es.sign(&with(good.clone(), "iss", json!(ISSUER.to_uppercase()))),
                IssuerUntrusted,
                0,
            ),
            case(
                "iss as an array",
                keys.es.sign(&with(good.clone(), "iss", json!([ISSUER]))),
                MissingClaim("iss"),
                0,
            ),
            case("iss missing", keys.es.sign(&without(good.clone(), "iss")), MissingClaim("iss"), 0),
        ];
        assert_refused(&keys, cases).await;
    }

    #[tokio::test]
    async fn forged_signatures_and_key_confusion_are_refused() {
        use ReasonCode::{AlgorithmNotAllowed, InvalidSignature, MalformedToken, UnknownKey};
        let keys = Keys::new();
        let good = claims(&keys);
        let valid = keys.es.sign(&good);
        let (valid_head, valid_sig) = valid.rsplit_once('.').expect("three parts");
        let impostor = TestIssuer::es256(ISSUER).with_kid(keys.es.kid());
        let tampered = {
            let parts: Vec<&str> = valid.split('.').collect();
            let forged = b64(with(good.clone(), "sub", json!("admin")).to_string());
            format!("{}.{forged}.{}", parts[0], parts[2])
        };
        let attacker_with = |extra: Value| keys.attacker.sign_with_header(&es_header(&keys, &extra), &good);
        let cases = vec![
            case("tampered payload", tampered, InvalidSignature, 1),
            case("signed by another key under the real kid", impostor.sign(&good), InvalidSignature, 1),
            case("truncated signature", format!("{valid_head}.{}", &valid_sig[..20]), InvalidSignature, 1),
            case("empty signature, allowed alg", format!("{valid_head}."), InvalidSignature, 1),
            case("signature not base64url", format!("{valid_head}.%%%"), MalformedToken, 1),
            case(
                "embedded jwk header carrying the attacker's key",
                attacker_with(json!({"jwk": keys.attacker.jwk()})),
                InvalidSignature,
                1,
            ),
            case(
                "jku header pointing at the attacker's JWKS",
                attacker_with(json!({"jku": format!("{ATTACKER}/jwks")})),
                InvalidSignature,
                1,
            ),
            case(
                "x5u header pointing at the attacker",
                attacker_with(json!({"x5u": format!("{ATTACKER}/cert.pem")})),
                InvalidSignature,
                1,
            ),
            case(
                "ES256 header naming the RSA key",
                keys.es.sign_with_header(&json!({"alg": "ES256", "kid": keys.rsa.kid()}), &good),
                AlgorithmNotAllowed,
                1,
            ),
            case(
                "RS256 with a key pinned to PS256",
                keys.rsa.sign_with_header(&json!({"alg": "RS256", "kid": "rsa-pinned-ps256"}), &good),
                AlgorithmNotAllowed,
                1,
            ),
            case(
                "unknown kid",
                keys.es.sign_with_header(&es_header(&keys, &json!({"kid": "nope"})), &good),
                UnknownKey,
                1,
            ),
        ];
        assert_refused(&keys, cases).await;
    }

    #[tokio::test]
    async fn missing_or_mistyped_claims_are_refused() {
        use ReasonCode::{MalformedToken, MissingClaim};
        let keys = Keys::new();
        let good = claims(&keys);
        let signed = |claims: Value| keys.es.sign(&claims);
        let duplicate_exp =
            format!(r#"{{"iss":"{ISSUER}","sub":"s","exp":1,"exp":{}}}"#, start().timestamp() + 60);
        let cases = vec![
            case("exp missing", signed(without(good.clone(), "exp")), MissingClaim("exp"), 1),
            case(
                "exp as a string",
                signed(with(good.clone(), "exp", json!("tomorrow"))),
                MissingClaim("exp"),
                1,
            ),
            case(
                "exp beyond any date",
                signed(with(good.clone(), "exp", json!(i64::MAX))),
                MissingClaim("exp"),
                1,
            ),
            case(
                "exp as a huge float",
                signed(with(good.clone(), "exp", json!(1e300))),
                MissingClaim("exp"),
                1,
            ),
            case(
                "duplicate exp (parsers disagree which wins)",
                keys.es.sign_parts(
                    es_header(&keys, &json!({})).to_string().as_bytes(),
                    duplicate_exp.as_bytes(),
                ),
                MalformedToken,
                0, // refused while reading the payload, before any key is looked up
            ),
            case("nbf as a string", signed(with(good.clone(), "nbf", json!("now"))), MalformedToken, 1),
            case("sub missing", signed(without(good.clone(), "sub")), MissingClaim("sub"), 1),
            case("sub empty", signed(with(good.clone(), "sub", json!(""))), MissingClaim("sub"), 1),
            case("sub as a number", signed(with(good.clone(), "sub", json!(42))), MissingClaim("sub"), 1),
            case("aud as a number", signed(with(good.clone(), "aud", json!(1))), MalformedToken, 1),
            case(
                "aud array with an object",
                signed(with(good.clone(), "aud", json!(["a", {}]))),
                MalformedToken,
                1,
            ),
            case("jti as a number", signed(with(good.clone(), "jti", json!(1))), MalformedToken, 1),
            case(
                "jti empty (would collide in the replay guard)",
                signed(with(good.clone(), "jti", json!(""))),
                MalformedToken,
                1,
            ),
        ];
        assert_refused(&keys, cases).await;
    }

    #[tokio::test]
    async fn time_claims_honour_leeway_exactly_at_the_boundary() {
        use ReasonCode::{TokenExpired, TokenNotYetValid};
        let keys = Keys::new();
        let fixture = Fixture::new(&keys);
        let now = start().timestamp();
        let leeway = 30; // the default
        let cases: Vec<(&str, Value, Option<ReasonCode>)> = vec![
            ("exp exactly leeway ago", with(claims(&keys), "exp", json!(now - leeway)), Some(TokenExpired)),
            ("exp 1 s inside leeway", with(claims(&keys), "exp", json!(now - leeway + 1)), None),
            (
                "exp long past (replayed old token)",
                with(claims(&keys), "exp", json!(now - 86_400)),
                Some(TokenExpired),
            ),
            ("nbf exactly leeway ahead", with(claims(&keys), "nbf", json!(now + leeway)), None),
            (
                "nbf 1 s beyond leeway",
                with(claims(&keys), "nbf", json!(now + leeway + 1)),
                Some(TokenNotYetValid),
            ),
            ("iat exactly leeway ahead", with(claims(&keys), "iat", json!(now + leeway)), None),
            (
                "iat 1 s beyond leeway (pre-minted token)",
                with(claims(&keys), "iat", json!(now + leeway + 1)),
                Some(TokenNotYetValid),
            ),
            ("iat far in the past is fine", with(claims(&keys), "iat", json!(now - 86_400)), None),
        ];
        for (case, claims, expected) in cases {
            let result = fixture.verify(&keys.es.sign(&claims)).await;
            match (result, expected) {
                (Ok(_), None) => {}
                (Err(err), Some(expected)) => assert_eq!(ReasonCode::from(&err), expected, "{case}"),
                (result, expected) => panic!("{case}: got {result:?}, expected {expected:?}"),
            }
        }
        let err = fixture
            .verify(&keys.es.sign(&with(claims(&keys), "iat", json!(now + 31))))
            .await
            .expect_err("future iat");
        assert!(matches!(err, VerifyError::IssuedInFuture(at) if at.timestamp() == now + 31));
    }

    #[tokio::test]
    async fn expiry_follows_the_injected_clock() {
        let keys = Keys::new();
        let fixture = Fixture::new(&keys);
        let token = keys.es.sign(&claims(&keys)); // exp = start + 5 min
        fixture.verify(&token).await.expect("fresh token");
        fixture.advance(5 * 60 + 29);
        fixture.verify(&token).await.expect("within leeway after exp");
        fixture.advance(1);
        let err = fixture.verify(&token).await.expect_err("past exp + leeway");
        assert_eq!(ReasonCode::from(&err), ReasonCode::TokenExpired);
    }

    #[tokio::test]
    async fn unknown_kid_refetches_once_then_is_unknown() {
        let keys = Keys::new();
        let fixture = Fixture::new(&keys);
        fixture.verify(&keys.es.sign(&claims(&keys))).await.expect("warms the cache");
        fixture.advance(31);
        let rotated = TestIssuer::es256(ISSUER);
        for _ in 0..3 {
            let err = fixture.verify(&rotated.sign(&claims(&keys))).await.expect_err("unknown kid");
            assert_eq!(ReasonCode::from(&err), ReasonCode::UnknownKey);
        }
        assert_eq!(fixture.source.fetch_count(), 2, "one initial fetch, one refetch");
    }

    #[tokio::test]
    async fn rotated_key_is_picked_up_by_the_refetch() {
        let keys = Keys::new();
        let fixture = Fixture::new(&keys);
        fixture.verify(&keys.es.sign(&claims(&keys))).await.expect("warms the cache");
        let rotated = TestIssuer::es256(ISSUER);
        fixture.source.set(ISSUER, rotated.jwks());
        fixture.advance(31);
        fixture.verify(&rotated.sign(&claims(&keys))).await.expect("new key after refetch");
        assert_eq!(fixture.source.fetch_count(), 2);
    }

    #[tokio::test]
    async fn kid_spraying_causes_at_most_one_refetch_per_interval() {
        let keys = Keys::new();
        let fixture = Fixture::new(&keys);
        fixture.verify(&keys.es.sign(&claims(&keys))).await.expect("warms the cache");
        fixture.advance(31);
        for n in 0..10 {
            let header = json!({"alg": "ES256", "kid": format!("spray-{n}")});
            let err = fixture
                .verify(&keys.es.sign_with_header(&header, &claims(&keys)))
                .await
                .expect_err("sprayed kid");
            assert_eq!(ReasonCode::from(&err), ReasonCode::UnknownKey);
        }
        assert_eq!(fixture.source.fetch_count(), 2, "10 unknown kids → 1 refetch");
        fixture.verify(&keys.es.sign(&claims(&keys))).await.expect("known kid still served");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_verifies_on_a_cold_cache_fetch_once() {
        let keys = Keys::new();
        let fixture = Fixture::new(&keys);
        fixture.source.set_delay(Some(Duration::from_millis(200)));
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..16 {
            let verifier = Arc::clone(&fixture.verifier);
            let token = keys.es.sign(&keys.es.claims(&format!("workload-{n}"), start()));
            tasks.spawn(async move { verifier.verify(&token).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.expect("task completes").expect("token verifies");
        }
        assert_eq!(fixture.source.fetch_count(), 1);
    }

    #[tokio::test]
    async fn stale_keys_keep_serving_while_the_issuer_is_down() {
        let keys = Keys::new();
        let fixture = Fixture::new(&keys);
        fixture.verify(&keys.es.sign(&claims(&keys))).await.expect("warms the cache");
        fixture.source.set_failing(true);
        fixture.advance(11 * 60);
        let token = keys.es.sign(&keys.es.claims("workload-a", fixture.clock.now()));
        fixture.verify(&token).await.expect("stale set serves");
        assert_eq!(fixture.source.fetch_count(), 2, "refresh was attempted");
    }

    #[test]
    fn settings_are_validated_at_construction() {
        let https = |issuer: &str| TrustedIssuer { issuer: issuer.to_owned(), jwks_url: None };
        let cases: Vec<(&str, VerifierSettings, Vec<TrustedIssuer>, bool)> = vec![
            ("defaults", VerifierSettings::default(), vec![https(ISSUER)], true),
            (
                "leeway at the 60 s maximum",
                VerifierSettings { leeway: Duration::from_mins(1), ..Default::default() },
                vec![],
                true,
            ),
            (
                "leeway above 60 s",
                VerifierSettings { leeway: Duration::from_secs(61), ..Default::default() },
                vec![],
                false,
            ),
            (
                "zero token limit",
                VerifierSettings { max_token_bytes: 0, ..Default::default() },
                vec![],
                false,
            ),
            ("http issuer", VerifierSettings::default(), vec![https("http://issuer.test")], false),
            (
                "http loopback issuer without the dev flag",
                VerifierSettings::default(),
                vec![https("http://127.0.0.1:8080")],
                false,
            ),
            (
                "http loopback issuer in dev mode",
                VerifierSettings { allow_http_loopback: true, ..Default::default() },
                vec![https("http://127.0.0.1:8080")],
                true,
            ),
            (
                "http non-loopback issuer in dev mode",
                VerifierSettings { allow_http_loopback: true, ..Default::default() },
                vec![https("http://10.0.0.1")],
                false,
            ),
            (
                "non-URL issuer with an https jwks_url",
                VerifierSettings::default(),
                vec![TrustedIssuer {
                    issuer: "kubernetes/serviceaccount".into(),
                    jwks_url: Some("https://k8s.test/openid/v1/jwks".into()),
                }],
                true,
            ),
            (
                "https issuer with an http jwks_url",
                VerifierSettings::default(),
                vec![TrustedIssuer {
                    issuer: ISSUER.into(),
                    jwks_url: Some("http://issuer.test/jwks".into()),
                }],
                false,
            ),
            ("non-URL issuer without jwks_url", VerifierSettings::default(), vec![https("issuer")], false),
            (
                "empty issuer",
                VerifierSettings::default(),
                vec![TrustedIssuer { issuer: String::new(), jwks_url: Some("https://x.test/jwks".into()) }],
                false,
            ),
            ("duplicate issuer", VerifierSettings::default(), vec![https(ISSUER), https(ISSUER)], false),
        ];
        for (case, settings, issuers, ok) in cases {
            let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start()));
            let cache = Arc::new(JwksCache::new(Arc::new(StaticJwksSource::new()), clock.clone(), &settings));
            let result = JwtVerifier::new(issuers, &settings, clock, cache);
            assert_eq!(result.is_ok(), ok, "{case}: {result:?}");
        }
    }

    #[test]
    fn token_text_in_errors_is_bounded_and_printable() {
        let shown = bounded_for_display(&format!("evil\n{}", "a".repeat(500)));
        assert!(shown.starts_with("evil?a"));
        assert!(shown.ends_with('…'));
        assert_eq!(shown.chars().count(), 129);
    }
}
