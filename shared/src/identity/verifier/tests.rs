use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::*;
use crate::clock::ManualClock;
use crate::identity::testing::{StaticJwksSource, TestIssuer};
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
    let lines: Vec<&str> =
        body.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).expect("base64 is ASCII")).collect();
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
        let err =
            fixture.verify(&case.token).await.err().unwrap_or_else(|| panic!("accepted: {}", case.attack));
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
    let header_only = |signer: &TestIssuer, alg: Value| signer.sign_with_header(&json!({"alg": alg}), &good);
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
        case("exp as a string", signed(with(good.clone(), "exp", json!("tomorrow"))), MissingClaim("exp"), 1),
        case(
            "exp beyond any date",
            signed(with(good.clone(), "exp", json!(i64::MAX))),
            MissingClaim("exp"),
            1,
        ),
        case("exp as a huge float", signed(with(good.clone(), "exp", json!(1e300))), MissingClaim("exp"), 1),
        case(
            "duplicate exp (parsers disagree which wins)",
            keys.es.sign_parts(es_header(&keys, &json!({})).to_string().as_bytes(), duplicate_exp.as_bytes()),
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
        ("zero token limit", VerifierSettings { max_token_bytes: 0, ..Default::default() }, vec![], false),
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
            vec![TrustedIssuer { issuer: ISSUER.into(), jwks_url: Some("http://issuer.test/jwks".into()) }],
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
