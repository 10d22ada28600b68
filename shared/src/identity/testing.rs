//! Test support shared with other modules and crates (feature `testing`): issuers that sign
//! real tokens, and an in-memory JWKS source that counts fetches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::verifier::JwtVerifier;
use super::{TrustedIssuer, VerifierSettings};
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
