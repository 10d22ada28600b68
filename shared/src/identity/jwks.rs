//! Issuers' key sets (JWKS): where they come from, how they are fetched, and how long we trust
//! a copy.
//!
//! Fetching sits behind [`JwksSource`] so the cache can be tested without a network;
//! [`HttpJwksSource`] is the real one. [`JwksCache`] keeps one decoded key set per issuer,
//! refreshes it single-flight, rate-limits refetches so a flood of made-up `kid`s cannot turn
//! the broker into a traffic amplifier against an issuer, and keeps serving a stale set for a
//! while when the issuer is down.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{TrustedIssuer, VerifierSettings, VerifyError};
use crate::clock::Clock;

/// Largest discovery document or key set we read. Real ones are a few KiB; the cap keeps a
/// misbehaving or hostile endpoint from filling a Lambda's memory.
pub const MAX_JWKS_RESPONSE_BYTES: usize = 256 * 1024;

#[cfg(feature = "http")]
/// Redirect hops followed per request (same scheme only, transport policy on every hop).
const MAX_REDIRECTS: usize = 3;

/// The JWK spec says unpadded base64url; some issuers pad anyway, so padding is tolerated.
const JWK_BASE64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The kinds of public key the verifier can use, one per allowed algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `kty: RSA`, 2048 to 8192 bits (RS256).
    Rsa,
    /// `kty: EC`, `crv: P-256` (ES256).
    EcP256,
    /// `kty: OKP`, `crv: Ed25519` (EdDSA).
    Ed25519,
}

/// One usable verification key from an issuer's JWKS, parsed once per fetch: verifying a
/// token does not rebuild the key (for RSA that is most of what a verification costs beyond
/// the signature itself).
pub struct JwksKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The key's own `alg`, when the issuer pinned one; a token must then use exactly it.
    pub alg: Option<String>,
    /// Bound to the one algorithm of `kind`: RS256, ES256 (fixed-size `r‖s`) or EdDSA.
    pub verifying_key: ParsedPublicKey,
}

impl fmt::Debug for JwksKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Why a key set could not be fetched. Messages name URLs (configuration), never tokens.
#[derive(Debug, thiserror::Error)]
pub enum JwksFetchError {
    #[error("URL {url:?} is not allowed: {reason}")]
    UrlNotAllowed { url: String, reason: &'static str },
    #[error("request to {url} failed: {detail}")]
    Request { url: String, detail: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("response from {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("response from {url} is not a valid document: {detail}")]
    InvalidDocument { url: String, detail: String },
    #[error("discovery document for {expected} names issuer {found:?}")]
    IssuerMismatch { expected: String, found: String },
}

/// Where key sets come from. Object safe so tests can count fetches with a fake.
#[async_trait::async_trait]
pub trait JwksSource: Send + Sync + fmt::Debug {
    /// The current JWKS document (`{"keys": [...]}`) of `issuer`: from `jwks_url` when one is
    /// configured, otherwise through OIDC discovery on the issuer URL.
    async fn fetch(&self, issuer: &str, jwks_url: Option<&str>) -> Result<Value, JwksFetchError>;
}

/// Checks a URL against the transport policy: https only, plain http only to a loopback host
/// and only when `allow_http_loopback` (local dev mode and tests) is set.
fn check_transport(url: &Url, allow_http_loopback: bool) -> Result<(), &'static str> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if !allow_http_loopback => Err("plain http is not allowed"),
        "http" if is_loopback_host(url) => Ok(()),
        "http" => Err("plain http is allowed only to a loopback host"),
        _ => Err("only https URLs are allowed"),
    }
}

fn is_loopback_host(url: &Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    // IPv6 literals come bracketed; the URL parser has already normalised IPv4 forms.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Parses a configured or discovered URL and applies [`check_transport`].
pub(crate) fn parse_allowed_url(raw: &str, allow_http_loopback: bool) -> Result<Url, JwksFetchError> {
    let not_allowed = |reason| JwksFetchError::UrlNotAllowed { url: raw.to_owned(), reason };
    let url = Url::parse(raw).map_err(|_| not_allowed("not an absolute URL"))?;
    check_transport(&url, allow_http_loopback).map_err(not_allowed)?;
    Ok(url)
}

#[cfg(feature = "http")]
/// Fetches key sets over HTTPS with a timeout, a response size cap and a redirect policy that
/// re-applies the transport policy on every hop and never changes scheme.
#[derive(Debug)]
pub struct HttpJwksSource {
    /// Built by the first fetch, then reused (its connections persist across fetches and
    /// invocations). Building it reads the system's root certificates, which the SDK has
    /// already read for its own client at start-up: eagerly, that second read was 3.6 ms, a
    /// quarter of token-exchange's cold init (docs/benchmarks.md). The first fetch needs it
    /// anyway and is a network round trip or two; health, JWKS and discovery requests never do.
    client: tokio::sync::OnceCell<reqwest::Client>,
    http_timeout: Duration,
    allow_http_loopback: bool,
}

#[cfg(feature = "http")]
impl HttpJwksSource {
    pub fn new(settings: &VerifierSettings) -> Self {
        Self {
            client: tokio::sync::OnceCell::new(),
            http_timeout: settings.http_timeout,
            allow_http_loopback: settings.allow_http_loopback,
        }
    }

    async fn client(&self) -> Result<&reqwest::Client, reqwest::Error> {
        self.client.get_or_try_init(|| async { self.build_client() }).await
    }

    fn build_client(&self) -> Result<reqwest::Client, reqwest::Error> {
        let allow_http_loopback = self.allow_http_loopback;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let same_scheme =
                attempt.previous().first().is_none_or(|first| first.scheme() == attempt.url().scheme());
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if !same_scheme {
                attempt.error("redirect to another scheme")
            } else if let Err(reason) = check_transport(attempt.url(), allow_http_loopback) {
                attempt.error(reason)
            } else {
                attempt.follow()
            }
        });
        reqwest::Client::builder()
            .timeout(self.http_timeout)
            .connect_timeout(self.http_timeout)
            .redirect(redirects)
            .user_agent(concat!("credbroker/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    async fn get_json(&self, url: Url) -> Result<Value, JwksFetchError> {
        let shown = url.to_string();
        let request_failed =
            |e: &reqwest::Error| JwksFetchError::Request { url: shown.clone(), detail: error_chain(e) };
        let mut response = self
            .client()
            .await
            .map_err(|e| JwksFetchError::Request {
                url: shown.clone(),
                detail: format!("building the HTTP client: {}", error_chain(&e)),
            })?
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| request_failed(&e))?;
        if !response.status().is_success() {
            return Err(JwksFetchError::Status { url: shown, status: response.status().as_u16() });
        }
        let too_large = || JwksFetchError::TooLarge { url: shown.clone(), limit: MAX_JWKS_RESPONSE_BYTES };
        if response.content_length().is_some_and(|len| len > MAX_JWKS_RESPONSE_BYTES as u64) {
            return Err(too_large());
        }
        // Content-Length may be absent or lie: count what actually arrives.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| request_failed(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_RESPONSE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| JwksFetchError::InvalidDocument { url: shown.clone(), detail: e.to_string() })
    }

    /// OIDC discovery: the issuer's own document names its `jwks_uri` and must name the issuer
    /// exactly, so a misrouted or spoofed discovery endpoint cannot hand us another issuer's keys.
    async fn discover_jwks_url(&self, issuer: &str) -> Result<Url, JwksFetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let raw = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let url = parse_allowed_url(&raw, self.allow_http_loopback)?;
        let document = self.get_json(url).await?;
        let discovery: Discovery = serde_json::from_value(document)
            .map_err(|e| JwksFetchError::InvalidDocument { url: raw.clone(), detail: e.to_string() })?;
        if discovery.issuer != issuer {
            return Err(JwksFetchError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: discovery.issuer,
            });
        }
        parse_allowed_url(&discovery.jwks_uri, self.allow_http_loopback)
    }
}

#[cfg(feature = "http")]
#[async_trait::async_trait]
impl JwksSource for HttpJwksSource {
    async fn fetch(&self, issuer: &str, jwks_url: Option<&str>) -> Result<Value, JwksFetchError> {
        let url = match jwks_url {
            Some(configured) => parse_allowed_url(configured, self.allow_http_loopback)?,
            None => self.discover_jwks_url(issuer).await?,
        };
        self.get_json(url).await
    }
}

#[cfg(feature = "http")]
/// reqwest's top-level message ("error sending request") hides the cause; logs need it.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A decoded key set and when it was fetched.
#[derive(Debug)]
struct KeySet {
    keys: Vec<Arc<JwksKey>>,
    fetched_at: DateTime<Utc>,
}

impl KeySet {
    /// Decodes every usable key; a key we cannot or must not use is skipped (and logged), never
    /// a reason to reject the whole set, since issuers publish encryption keys and new key types
    /// alongside the ones we verify with.
    fn parse(issuer: &str, document: &Value, fetched_at: DateTime<Utc>) -> Result<Self, String> {
        let entries =
            document.get("keys").and_then(Value::as_array).ok_or("document has no \"keys\" array")?;
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            match decode_jwk(entry) {
                Ok(key) => keys.push(Arc::new(key)),
                Err(SkipKey::NotForSignatures) => {}
                Err(SkipKey::Unusable(reason)) => {
                    let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("(none)");
                    tracing::warn!(issuer, kid, reason, "skipping JWKS key");
                }
            }
        }
        Ok(Self { keys, fetched_at })
    }

    /// With a `kid`: the key of that id (of the wanted kind if the id is reused across kinds;
    /// the verifier rejects a kind mismatch). Without one: the only key of the wanted kind.
    fn find(&self, kid: Option<&str>, wanted: KeyKind) -> Option<Arc<JwksKey>> {
        if let Some(kid) = kid {
            let mut same_id = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
            let first = same_id.next()?;
            if first.kind == wanted {
                return Some(Arc::clone(first));
            }
            return Some(Arc::clone(same_id.find(|k| k.kind == wanted).unwrap_or(first)));
        }
        let mut of_kind = self.keys.iter().filter(|k| k.kind == wanted);
        match (of_kind.next(), of_kind.next()) {
            (Some(only), None) => Some(Arc::clone(only)),
            _ => None,
        }
    }
}

enum SkipKey {
    /// `use: enc` or `key_ops` without `verify`: expected in mixed sets, not worth a warning.
    NotForSignatures,
    Unusable(&'static str),
}

fn decode_jwk(entry: &Value) -> Result<JwksKey, SkipKey> {
    #[derive(Deserialize)]
    struct RawJwk {
        kty: String,
        #[serde(rename = "use")]
        key_use: Option<String>,
        key_ops: Option<Vec<String>>,
        alg: Option<String>,
        kid: Option<String>,
        crv: Option<String>,
        n: Option<String>,
        e: Option<String>,
        x: Option<String>,
        y: Option<String>,
        d: Option<serde::de::IgnoredAny>,
    }
    let raw = RawJwk::deserialize(entry).map_err(|_| SkipKey::Unusable("malformed JWK"))?;
    if raw.key_use.as_deref().is_some_and(|u| u != "sig")
        || raw.key_ops.as_ref().is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return Err(SkipKey::NotForSignatures);
    }
    if raw.d.is_some() {
        // A published private key is compromised: nothing it signs proves anything.
        return Err(SkipKey::Unusable("JWK contains private key material"));
    }
    let field = |value: Option<&String>| -> Result<Vec<u8>, SkipKey> {
        let value = value.ok_or(SkipKey::Unusable("missing key parameter"))?;
        JWK_BASE64.decode(value).map_err(|_| SkipKey::Unusable("key parameter is not base64url"))
    };
    let rejected = |_| SkipKey::Unusable("key parameters do not form a valid key");
    let (kind, verifying_key) = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => {
            let n = field(raw.n.as_ref())?;
            let e = field(raw.e.as_ref())?;
            let n = strip_leading_zeros(&n);
            // Same bounds aws-lc applies when verifying RS256; checking here keeps such keys out
            // of the set instead of failing every token signed with them.
            if !(256..=1024).contains(&n.len()) || e.is_empty() {
                return Err(SkipKey::Unusable("RSA key must be 2048 to 8192 bits"));
            }
            let components = RsaPublicKeyComponents { n, e: e.as_slice() };
            (KeyKind::Rsa, components.to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256).map_err(rejected)?)
        }
        ("EC", Some("P-256")) => {
            let x = field(raw.x.as_ref())?;
            let y = field(raw.y.as_ref())?;
            if x.len() != 32 || y.len() != 32 {
                return Err(SkipKey::Unusable("P-256 coordinates must be 32 bytes"));
            }
            // The uncompressed SEC1 point; JWS ES256 signatures are the fixed-size `r‖s`.
            let point = [&[0x04][..], &x, &y].concat();
            (KeyKind::EcP256, ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).map_err(rejected)?)
        }
        ("OKP", Some("Ed25519")) => {
            let x = field(raw.x.as_ref())?;
            if x.len() != 32 {
                return Err(SkipKey::Unusable("Ed25519 key must be 32 bytes"));
            }
            (KeyKind::Ed25519, ParsedPublicKey::new(&ED25519, x).map_err(rejected)?)
        }
        _ => return Err(SkipKey::Unusable("unsupported key type or curve")),
    };
    Ok(JwksKey { kid: raw.kid, kind, alg: raw.alg, verifying_key })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Per-issuer state. Readers take the `keys` lock only long enough to clone an `Arc`, so a slow
/// refresh (holding `refresh`) never delays tokens whose key is already cached.
#[derive(Debug, Default)]
struct IssuerSlot {
    keys: RwLock<Option<Arc<KeySet>>>,
    refresh: tokio::sync::Mutex<RefreshState>,
}

#[derive(Debug, Default)]
struct RefreshState {
    last_attempt: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl IssuerSlot {
    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn replace(&self, set: Arc<KeySet>) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(set);
    }
}

/// Per-issuer cache of decoded key sets.
///
/// - A set is fresh for `cache_ttl`; then the next request refreshes it.
/// - Refreshes are single-flight per issuer: concurrent callers wait for one fetch.
/// - An issuer is fetched at most once per `min_refetch_interval`, whatever the reason (expiry,
///   an unknown `kid`, a failed fetch). This bounds what `kid`-spraying or a down issuer can
///   cause, at the price that a key rotated in within that interval is seen a little later.
/// - When a refresh fails, the previous set keeps serving for `stale_grace` past its TTL.
#[derive(Debug)]
pub struct JwksCache {
    source: Arc<dyn JwksSource>,
    clock: Arc<dyn Clock>,
    ttl: TimeDelta,
    min_refetch_interval: TimeDelta,
    /// Oldest a set may be and still serve when refreshing it fails: TTL + stale grace.
    max_stale_age: TimeDelta,
    issuers: Mutex<HashMap<String, Arc<IssuerSlot>>>,
}

impl JwksCache {
    /// A cache over any source; timings come from `settings`.
    pub fn new(source: Arc<dyn JwksSource>, clock: Arc<dyn Clock>, settings: &VerifierSettings) -> Self {
        let delta = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        let ttl = delta(settings.cache_ttl);
        Self {
            source,
            clock,
            ttl,
            min_refetch_interval: delta(settings.min_refetch_interval),
            max_stale_age: ttl.checked_add(&delta(settings.stale_grace)).unwrap_or(TimeDelta::MAX),
            issuers: Mutex::new(HashMap::new()),
        }
    }

    /// A cache over [`HttpJwksSource`], the production setup.
    #[cfg(feature = "http")]
    pub fn http(settings: &VerifierSettings, clock: Arc<dyn Clock>) -> Self {
        Self::new(Arc::new(HttpJwksSource::new(settings)), clock, settings)
    }

    /// The key a token of `issuer` names by `kid` (or, without a `kid`, the issuer's only key of
    /// `wanted` kind), refreshing the issuer's set when needed and allowed.
    ///
    /// Callers must only pass issuers they trust: this fetches from whatever `issuer` says.
    pub async fn key(
        &self,
        issuer: &TrustedIssuer,
        kid: Option<&str>,
        wanted: KeyKind,
    ) -> Result<Arc<JwksKey>, VerifyError> {
        let slot = self.slot(&issuer.issuer);
        if let Some(set) = slot.current().filter(|set| self.is_fresh(set, self.clock.now()))
            && let Some(key) = set.find(kid, wanted)
        {
            return Ok(key);
        }

        let mut state = slot.refresh.lock().await;
        // Another caller may have refreshed while we waited for the lock.
        let now = self.clock.now();
        let current = slot.current();
        if let Some(set) = current.as_ref().filter(|set| self.is_fresh(set, now))
            && let Some(key) = set.find(kid, wanted)
        {
            return Ok(key);
        }

        let may_fetch = state.last_attempt.is_none_or(|last| now - last >= self.min_refetch_interval);
        if may_fetch {
            state.last_attempt = Some(now);
            match self.fetch(issuer, now).await {
                Ok(set) => {
                    state.last_error = None;
                    slot.replace(Arc::clone(&set));
                    return set.find(kid, wanted).ok_or_else(|| unknown_key(issuer, kid));
                }
                Err(detail) => {
                    // Logged once per attempt (at most once per interval), not per request.
                    let keeping_previous_set =
                        current.as_ref().is_some_and(|set| now - set.fetched_at < self.max_stale_age);
                    tracing::warn!(
                        issuer = %issuer.issuer,
                        error = %detail,
                        keeping_previous_set,
                        "JWKS refresh failed"
                    );
                    state.last_error = Some(detail);
                }
            }
        }

        match current {
            Some(set) if now - set.fetched_at < self.max_stale_age => {
                set.find(kid, wanted).ok_or_else(|| unknown_key(issuer, kid))
            }
            _ => Err(VerifyError::JwksUnavailable {
                issuer: issuer.issuer.clone(),
                detail: state.last_error.clone().unwrap_or_else(|| "refresh rate-limited".to_owned()),
            }),
        }
    }

    async fn fetch(&self, issuer: &TrustedIssuer, now: DateTime<Utc>) -> Result<Arc<KeySet>, String> {
        let document =
            self.source.fetch(&issuer.issuer, issuer.jwks_url.as_deref()).await.map_err(|e| e.to_string())?;
        let set = KeySet::parse(&issuer.issuer, &document, now)?;
        tracing::debug!(issuer = %issuer.issuer, keys = set.keys.len(), "JWKS fetched");
        Ok(Arc::new(set))
    }

    fn is_fresh(&self, set: &KeySet, now: DateTime<Utc>) -> bool {
        now - set.fetched_at < self.ttl
    }

    fn slot(&self, issuer: &str) -> Arc<IssuerSlot> {
        let mut issuers = self.issuers.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(issuers.entry(issuer.to_owned()).or_default())
    }
}

fn unknown_key(issuer: &TrustedIssuer, kid: Option<&str>) -> VerifyError {
    VerifyError::UnknownKey {
        issuer: issuer.issuer.clone(),
        kid: kid.map_or_else(|| "(none)".to_owned(), super::bounded_for_display),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;
    use serde_json::{Value, json};

    use super::*;
    use crate::clock::ManualClock;
    use crate::identity::testing::{StaticJwksSource, TestIssuer};
    use crate::reason::ReasonCode;

    const ISSUER: &str = "https://issuer.test";

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
    }

    fn trusted(issuer: &str) -> TrustedIssuer {
        TrustedIssuer { issuer: issuer.to_owned(), jwks_url: None }
    }

    struct Fixture {
        clock: Arc<ManualClock>,
        source: Arc<StaticJwksSource>,
        cache: JwksCache,
        issuer: TestIssuer,
    }

    impl Fixture {
        fn new() -> Self {
            let clock = Arc::new(ManualClock::new(start()));
            let source = Arc::new(StaticJwksSource::new());
            let issuer = TestIssuer::es256(ISSUER);
            source.add(&issuer);
            let cache = JwksCache::new(source.clone(), clock.clone(), &VerifierSettings::default());
            Self { clock, source, cache, issuer }
        }

        async fn lookup(&self, kid: &str) -> Result<Arc<JwksKey>, VerifyError> {
            self.cache.key(&trusted(ISSUER), Some(kid), KeyKind::EcP256).await
        }

        fn advance(&self, seconds: i64) {
            self.clock.advance(TimeDelta::seconds(seconds));
        }
    }

    fn reason(result: Result<Arc<JwksKey>, VerifyError>) -> ReasonCode {
        ReasonCode::from(&result.expect_err("lookup should fail"))
    }

    #[tokio::test]
    async fn fresh_set_is_reused_until_its_ttl_ends() {
        let f = Fixture::new();
        let kid = f.issuer.kid().to_owned();
        f.lookup(&kid).await.expect("first lookup fetches");
        f.advance(10 * 60 - 1);
        f.lookup(&kid).await.expect("still fresh");
        assert_eq!(f.source.fetch_count(), 1);
        f.advance(1);
        f.lookup(&kid).await.expect("refreshed");
        assert_eq!(f.source.fetch_count(), 2);
    }

    #[tokio::test]
    async fn unknown_kid_refetch_is_rate_limited_per_issuer() {
        let f = Fixture::new();
        f.lookup(f.issuer.kid()).await.expect("warm");
        // Within the interval of the initial fetch: no refetch at all.
        assert_eq!(reason(f.lookup("spray-0").await), ReasonCode::UnknownKey);
        assert_eq!(f.source.fetch_count(), 1);
        f.advance(30);
        for n in 1..=10 {
            assert_eq!(reason(f.lookup(&format!("spray-{n}")).await), ReasonCode::UnknownKey);
        }
        assert_eq!(f.source.fetch_count(), 2, "10 unknown kids → 1 refetch");
        f.advance(30);
        assert_eq!(reason(f.lookup("spray-11").await), ReasonCode::UnknownKey);
        assert_eq!(f.source.fetch_count(), 3, "next interval allows one more");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_on_a_cold_cache_share_one_fetch() {
        let f = Arc::new(Fixture::new());
        f.source.set_delay(Some(Duration::from_secs(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let f = Arc::clone(&f);
            tasks.spawn(async move { f.lookup(f.issuer.kid()).await.map(|_| ()) });
        }
        while let Some(result) = tasks.join_next().await {
            result.expect("task completes").expect("key found");
        }
        assert_eq!(f.source.fetch_count(), 1);
    }

    #[tokio::test]
    async fn stale_set_serves_through_an_outage_until_the_grace_ends() {
        let f = Fixture::new();
        let kid = f.issuer.kid().to_owned();
        f.lookup(&kid).await.expect("warm");
        f.source.set_failing(true);
        f.advance(10 * 60);
        f.lookup(&kid).await.expect("stale set serves");
        f.advance(60 * 60 - 1);
        f.lookup(&kid).await.expect("still within TTL + grace");
        f.advance(1);
        assert_eq!(reason(f.lookup(&kid).await), ReasonCode::JwksUnavailable);
        f.source.set_failing(false);
        f.advance(30);
        f.lookup(&kid).await.expect("recovers once the issuer is back");
    }

    #[tokio::test]
    async fn cold_cache_with_a_failing_issuer_is_unavailable_and_backs_off() {
        let f = Fixture::new();
        f.source.set_failing(true);
        let kid = f.issuer.kid().to_owned();
        for _ in 0..5 {
            assert_eq!(reason(f.lookup(&kid).await), ReasonCode::JwksUnavailable);
        }
        assert_eq!(f.source.fetch_count(), 1, "failures are retried at most once per interval");
        f.source.set_failing(false);
        f.advance(30);
        f.lookup(&kid).await.expect("retry after the interval succeeds");
    }

    #[tokio::test]
    async fn a_document_without_keys_does_not_replace_a_good_set() {
        let f = Fixture::new();
        let kid = f.issuer.kid().to_owned();
        f.lookup(&kid).await.expect("warm");
        f.source.set(ISSUER, json!({"error": "maintenance"}));
        f.advance(10 * 60);
        f.lookup(&kid).await.expect("previous set still serves");
        assert_eq!(f.source.fetch_count(), 2);
    }

    #[test]
    fn odd_keys_are_skipped_without_failing_the_set() {
        let good = TestIssuer::es256(ISSUER);
        let rsa = TestIssuer::rs256(ISSUER);
        let with = |mut jwk: Value, field: &str, value: Value| {
            jwk[field] = value;
            jwk
        };
        let mut short_rsa = rsa.jwk();
        short_rsa["n"] = json!(JWK_BASE64.encode([0xff_u8; 128]));
        let odd = [
            ("encryption key", with(rsa.jwk(), "use", json!("enc"))),
            ("key_ops without verify", with(rsa.jwk(), "key_ops", json!(["encrypt"]))),
            ("symmetric key", json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"})),
            ("P-384 curve", with(good.jwk(), "crv", json!("P-384"))),
            ("X25519 curve", json!({"kty": "OKP", "crv": "X25519", "x": JWK_BASE64.encode([1_u8; 32])})),
            ("short EC coordinate", with(good.jwk(), "x", json!(JWK_BASE64.encode([1_u8; 31])))),
            ("1024-bit RSA", short_rsa),
            ("private key published", with(good.jwk(), "d", json!("AAAA"))),
            ("kid is a number", with(good.jwk(), "kid", json!(5))),
            ("not base64url", with(rsa.jwk(), "n", json!("***"))),
            ("not an object", json!("key")),
        ];
        let mut keys: Vec<Value> = odd.iter().map(|(_, jwk)| jwk.clone()).collect();
        keys.push(good.jwk());
        let set = KeySet::parse(ISSUER, &json!({ "keys": keys }), start()).expect("set parses");
        let kinds: Vec<_> = set.keys.iter().map(|k| (k.kid.clone(), k.kind)).collect();
        assert_eq!(kinds, vec![(Some(good.kid().to_owned()), KeyKind::EcP256)], "only the good key");
        assert!(KeySet::parse(ISSUER, &json!({"keys": {}}), start()).is_err());
    }

    #[test]
    fn keys_are_chosen_by_kid_then_by_kind() {
        let es = TestIssuer::es256(ISSUER);
        let es2 = TestIssuer::es256(ISSUER);
        let ed = TestIssuer::eddsa(ISSUER).with_kid(es.kid());
        let both = json!({"keys": [ed.jwk(), es.jwk()]});
        let set = KeySet::parse(ISSUER, &both, start()).expect("parses");
        let found = set.find(Some(es.kid()), KeyKind::EcP256).expect("kid reused across kinds");
        assert_eq!(found.kind, KeyKind::EcP256);
        assert_eq!(set.find(None, KeyKind::EcP256).map(|k| k.kind), Some(KeyKind::EcP256));
        let two = json!({"keys": [es.jwk(), es2.jwk()]});
        let set = KeySet::parse(ISSUER, &two, start()).expect("parses");
        assert!(set.find(None, KeyKind::EcP256).is_none(), "no kid and two candidates");
        assert!(set.find(None, KeyKind::Rsa).is_none(), "no key of that kind");
    }

    #[test]
    fn transport_policy() {
        let cases = [
            ("https://issuer.test", false, true),
            ("https://issuer.test", true, true),
            ("http://127.0.0.1:8080", true, true),
            ("http://127.9.9.9", true, true),
            ("http://127.1", true, true),
            ("http://[::1]:8080", true, true),
            ("http://localhost:8080", true, true),
            ("http://LOCALHOST", true, true),
            ("http://127.0.0.1:8080", false, false),
            ("http://localhost.attacker.test", true, false),
            ("http://127.0.0.1.nip.io", true, false),
            ("http://10.0.0.1", true, false),
            ("http://[::ffff:127.0.0.1]", true, false),
            ("http://169.254.169.254/latest/meta-data", true, false),
            ("ftp://issuer.test", true, false),
            ("file:///etc/passwd", true, false),
            ("issuer.test", true, false),
        ];
        for (url, allow_http_loopback, allowed) in cases {
            let result = parse_allowed_url(url, allow_http_loopback);
            assert_eq!(result.is_ok(), allowed, "{url} (loopback http allowed: {allow_http_loopback})");
        }
    }

    // HTTP source against a real local server.

    fn dev_settings() -> VerifierSettings {
        VerifierSettings {
            allow_http_loopback: true,
            http_timeout: Duration::from_secs(2),
            ..VerifierSettings::default()
        }
    }

    async fn bind() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        (listener, base)
    }

    fn serve(listener: tokio::net::TcpListener, router: Router) {
        tokio::spawn(async move { axum::serve(listener, router).await });
    }

    /// An issuer at `base` whose discovery document names `discovered_issuer`.
    fn oidc_router(discovered_issuer: &str, jwks_uri: &str, jwks: Value) -> Router {
        let discovery = json!({"issuer": discovered_issuer, "jwks_uri": jwks_uri});
        Router::new()
            .route("/.well-known/openid-configuration", get(move || async move { axum::Json(discovery) }))
            .route("/keys", get(move || async move { axum::Json(jwks) }))
    }

    async fn http_fetch(issuer: &str, jwks_url: Option<&str>) -> Result<Value, JwksFetchError> {
        let source = HttpJwksSource::new(&dev_settings());
        source.fetch(issuer, jwks_url).await
    }

    #[tokio::test]
    async fn discovery_leads_to_the_issuers_jwks() {
        let (listener, base) = bind().await;
        let issuer = TestIssuer::es256(&base);
        serve(listener, oidc_router(&base, &format!("{base}/keys"), issuer.jwks()));
        assert_eq!(http_fetch(&base, None).await.expect("fetch"), issuer.jwks());
    }

    #[tokio::test]
    async fn issuer_with_trailing_slash_discovers_under_the_trimmed_path() {
        let (listener, base) = bind().await;
        let with_slash = format!("{base}/");
        serve(listener, oidc_router(&with_slash, &format!("{base}/keys"), json!({"keys": []})));
        http_fetch(&with_slash, None).await.expect("discovery issuer matches exactly");
    }

    #[tokio::test]
    async fn discovery_naming_another_issuer_is_rejected() {
        let (listener, base) = bind().await;
        serve(
            listener,
            oidc_router("https://accounts.attacker.test", &format!("{base}/keys"), json!({"keys": []})),
        );
        let err = http_fetch(&base, None).await.expect_err("issuer mismatch");
        assert!(matches!(err, JwksFetchError::IssuerMismatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn discovered_jwks_uri_must_pass_the_transport_policy() {
        let (listener, base) = bind().await;
        serve(listener, oidc_router(&base, "http://keys.attacker.test/keys", json!({"keys": []})));
        let err = http_fetch(&base, None).await.expect_err("plain http jwks_uri");
        assert!(matches!(err, JwksFetchError::UrlNotAllowed { .. }), "{err}");
    }

    #[tokio::test]
    async fn configured_jwks_url_skips_discovery() {
        let (listener, base) = bind().await;
        let jwks = json!({"keys": []});
        let keys_only = Router::new().route(
            "/keys",
            get({
                let jwks = jwks.clone();
                move || async move { axum::Json(jwks) }
            }),
        );
        serve(listener, keys_only);
        let fetched = http_fetch("not-even-a-url", Some(&format!("{base}/keys"))).await.expect("fetch");
        assert_eq!(fetched, jwks);
    }

    #[tokio::test]
    async fn plain_http_is_refused_before_connecting() {
        // 192.0.2.0/24 is TEST-NET-1: nothing answers there, so only a refusal is fast.
        let err = http_fetch("http://192.0.2.1", None).await.expect_err("non-loopback http");
        assert!(matches!(err, JwksFetchError::UrlNotAllowed { .. }), "{err}");
        let strict = HttpJwksSource::new(&VerifierSettings::default());
        let err = strict.fetch("http://127.0.0.1:9", None).await.expect_err("dev flag off");
        assert!(matches!(err, JwksFetchError::UrlNotAllowed { .. }), "{err}");
    }

    #[tokio::test]
    async fn oversize_responses_are_refused() {
        let (listener, base) = bind().await;
        let huge = "x".repeat(MAX_JWKS_RESPONSE_BYTES + 1);
        serve(listener, Router::new().route("/keys", get(move || async move { huge })));
        let err = http_fetch("x", Some(&format!("{base}/keys"))).await.expect_err("declared too large");
        assert!(matches!(err, JwksFetchError::TooLarge { .. }), "{err}");

        // No Content-Length: the body is counted as it arrives.
        let (listener, base) = bind().await;
        let mut response = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        response.extend(std::iter::repeat_n(b' ', MAX_JWKS_RESPONSE_BYTES + 1));
        tokio::spawn(async move {
            if let Ok((stream, _)) = listener.accept().await {
                read_request_raw(&stream).await;
                write_all_raw(&stream, &response).await;
            }
        });
        let err = http_fetch("x", Some(&format!("{base}/keys"))).await.expect_err("streamed too large");
        assert!(matches!(err, JwksFetchError::TooLarge { .. }), "{err}");
    }

    /// Reads up to the end of the request head (the client sends no body).
    async fn read_request_raw(stream: &tokio::net::TcpStream) {
        let mut request = Vec::new();
        let mut buf = [0_u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(read) => request.extend_from_slice(&buf[..read]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }

    /// Raw socket I/O without tokio's io-util feature, which the crate does not enable.
    async fn write_all_raw(stream: &tokio::net::TcpStream, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if stream.writable().await.is_err() {
                return;
            }
            match stream.try_write(bytes) {
                Ok(written) => bytes = &bytes[written..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }

    #[tokio::test]
    async fn error_status_is_a_failed_fetch() {
        let (listener, base) = bind().await;
        serve(listener, Router::new());
        let err = http_fetch(&base, None).await.expect_err("404 discovery");
        assert!(matches!(err, JwksFetchError::Status { status: 404, .. }), "{err}");
    }

    #[tokio::test]
    async fn redirects_keep_scheme_and_transport_policy() {
        let (listener, base) = bind().await;
        let jwks = json!({"keys": []});
        let router = Router::new()
            .route(
                "/to-https",
                get(|| async { Redirect::temporary("https://localhost:9/keys").into_response() }),
            )
            .route("/to-remote-http", get(|| async { Redirect::temporary("http://192.0.2.1/keys") }))
            .route("/moved", get(|| async { Redirect::permanent("/keys") }))
            .route("/keys", get(move || async move { axum::Json(jwks) }));
        serve(listener, router);
        let err = http_fetch("x", Some(&format!("{base}/to-https"))).await.expect_err("scheme change");
        assert!(
            matches!(&err, JwksFetchError::Request { detail, .. } if detail.contains("another scheme")),
            "{err}"
        );
        let err = http_fetch("x", Some(&format!("{base}/to-remote-http"))).await.expect_err("off loopback");
        assert!(
            matches!(&err, JwksFetchError::Request { detail, .. } if detail.contains("loopback")),
            "{err}"
        );
        http_fetch("x", Some(&format!("{base}/moved"))).await.expect("same-origin redirect followed");
    }
}
