//! Hot-path benchmark: the token-exchange CPU path against its floor, measured in one run.
//!
//! The workload token is RS256, like GitHub Actions' and most Kubernetes issuers'.
//!
//! - floor: a bare `jsonwebtoken` RS256 verification of the same kind of token; for the
//!   broker-signed grant, that verification plus one `jsonwebtoken` EdDSA signature of a token
//!   like the broker's (the least work that grant can take);
//! - exchange: `POST /v1/token` through the router, as Lambda runs it (with the client address
//!   and request id its adapter takes from API Gateway), on in-memory ports (JWT verification
//!   with a warm JWKS cache, policy evaluation, session policy templating, replay guard, lease
//!   writes, the credential, audit, the JSON response): once for an AWS session (STS faked in
//!   memory) and once for a broker-signed token;
//! - policy evaluation alone with 10, 100 and 1,000 policies loaded.
//!
//! Floors and subjects take turns in rounds of the same length (`measure_interleaved`), and
//! each figure is the median of its rounds.
//!
//! `cargo bench -p credbroker-tests --bench exchange` prints a table with ratios. Without
//! `--bench` (as `cargo test --all-targets` runs it) it does a quick smoke run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use chrono::{TimeDelta, Utc};
use credbroker::audit::MemoryAuditSink;
use credbroker::backend::{
    AwsCredentials, Backend, BackendKind, Credential, CredentialIssuer, IssueError, IssuePlan, Issuers,
    Revokers,
};
use credbroker::broker::leases::LeaseService;
use credbroker::broker::{Broker, BrokerPorts, BrokerSettings, ExchangeRequest};
use credbroker::clock::{Clock, SystemClock};
use credbroker::http::{
    ClientAddr, FrontRequestId, HttpSettings, TokenState, exchange_routes, finish, lease_routes,
};
use credbroker::identity::testing::{TestIssuer, verifier_for};
use credbroker::identity::{IdentityVerifier, VerifierSettings};
use credbroker::issuer::token::SignedTokenIssuer;
use credbroker::keys::{KeySource, SigningKey, StaticKeys};
use credbroker::metrics::MemoryMetrics;
use credbroker::policy::{GrantRef, Policy, PolicySet, RequestContext};
use credbroker::revoker::{Revoker, RevokerPorts, RevokerSettings};
use credbroker::store::memory::MemoryLeaseStore;
use credbroker_tests::bench::{Row, Target, report};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ISSUER: &str = "https://ci.example.test";

fn policy(name: &str) -> Policy {
    let text = format!(
        r#"
issuer = "{ISSUER}"
audience = ["credbroker"]
subject = {{ glob = "repo:acme/*:ref:refs/heads/main" }}
[claims]
repository = {{ regex = "acme/[a-z-]+" }}
[conditions]
source_cidrs = ["10.0.0.0/8", "192.0.2.0/24"]
[grants.api]
type = "signed_token"
audience = "internal-api"
scopes = ["read"]
[grants.deploy]
type = "aws_role"
role_arn = "arn:aws:iam::000000000000:role/deploy"
session_policy = '{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::artifacts/{{{{claims.repository}}}}/*"}}]}}'
session_tags = {{ repo = "{{{{claims.repository}}}}" }}
"#
    );
    Policy::from_toml(name, &text).expect("bench policy")
}

/// STS answered from memory: what the real issuer returns, without the network.
#[derive(Debug)]
struct InMemorySts;

impl Backend for InMemorySts {
    fn backend(&self) -> BackendKind {
        BackendKind::AwsSession
    }
}

#[async_trait::async_trait]
impl CredentialIssuer for InMemorySts {
    async fn issue(&self, plan: &IssuePlan) -> Result<Credential, IssueError> {
        let IssuePlan::AwsSession(plan) = plan else {
            return Err(IssueError::Rejected("not an AWS session plan".into()));
        };
        Ok(Credential::Aws(AwsCredentials {
            access_key_id: "ASIAEXAMPLEEXAMPLE00".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned().into(),
            session_token: "IQoJb3JpZ2luX2VjEXAMPLE".repeat(20).into(),
            expiration: Utc::now() + TimeDelta::from_std(plan.duration).unwrap_or(TimeDelta::zero()),
            assumed_role_arn: format!("arn:aws:sts::000000000000:assumed-role/deploy/{}", plan.session_name),
        }))
    }
}

/// Median time per operation of each of `ops` over `rounds` rounds of `per_round` calls.
///
/// The operations take turns round by round, so a change in the machine's load (other
/// tenants, LocalStack and the databases of the same bench run) hits floor and subject alike
/// instead of whichever happened to run during it: measured one after the other, the same
/// binary gave 1.25× and 1.68× against a floor that had drifted from 26 to 45 µs.
fn measure_interleaved<const N: usize>(
    rounds: usize,
    per_round: usize,
    mut ops: [&mut dyn FnMut(); N],
) -> [Duration; N] {
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for _ in 0..rounds {
        for (op, samples) in ops.iter_mut().zip(&mut samples) {
            let start = Instant::now();
            for _ in 0..per_round {
                op();
            }
            samples.push(start.elapsed() / u32::try_from(per_round).expect("round size"));
        }
    }
    samples.map(|mut samples| {
        samples.sort();
        samples[samples.len() / 2]
    })
}

#[allow(clippy::too_many_lines)] // one straight-line bench: setup, floors, paths, report
fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, per_round) = if full { (15, 200) } else { (2, 5) };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let issuer = TestIssuer::rs256(ISSUER);
    let claims = |n: usize| -> Value {
        let mut c = issuer.claims("repo:acme/app:ref:refs/heads/main", clock.now());
        c["repository"] = json!("acme/app");
        c["jti"] = json!(format!("bench-{n}"));
        c
    };

    // Floors: bare RS256 verification with a ready decoding key; plus an EdDSA signature of
    // a token like the broker's for the signed-token grant.
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(issuer.jwk()).expect("jwk");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["credbroker"]);
    let token = issuer.sign(&claims(0));
    let ed_key = jsonwebtoken::EncodingKey::from_ed_der(&SigningKey::generate_pkcs8().expect("key"));
    let ed_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    let broker_claims = json!({
        "iss": "https://broker.test", "sub": "repo:acme/app:ref:refs/heads/main", "aud": "internal-api",
        "scope": "read", "iat": 1_764_000_000, "exp": 1_764_003_600, "jti": "01JBENCHBENCHBENCHBENCHBENC",
    });

    // The exchange path: the HTTP router on in-memory ports.
    let (verifier, _source) = verifier_for(&[&issuer], &VerifierSettings::default(), Arc::clone(&clock));
    let verifier: Arc<dyn IdentityVerifier> = Arc::new(verifier);
    let mut policies = PolicySet::default();
    policies.insert(policy("ci")).expect("insert");
    let keys: Arc<dyn KeySource> = Arc::new(StaticKeys::new(
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("key")).expect("key"),
    ));
    let store = Arc::new(MemoryLeaseStore::new());
    let broker = Broker::new(
        BrokerPorts {
            verifier: Arc::clone(&verifier),
            policies: Arc::new(policies),
            store: store.clone(),
            issuers: Issuers::default()
                .with(Arc::new(SignedTokenIssuer::new(Arc::clone(&keys), "https://broker.test")))
                .with(Arc::new(InMemorySts)),
            clock: Arc::clone(&clock),
            audit: Arc::new(MemoryAuditSink::default()),
        },
        BrokerSettings::default(),
    );
    let revoker = Revoker::new(
        RevokerPorts {
            store,
            revokers: Revokers::default(),
            clock: Arc::clone(&clock),
            audit: Arc::new(MemoryAuditSink::default()),
            metrics: Arc::new(MemoryMetrics::default()),
        },
        RevokerSettings::default(),
    );
    // The token-exchange function's router, as `app::exchange` assembles it.
    let leases = LeaseService::new(broker.clone(), revoker, None);
    let routes = exchange_routes(TokenState {
        broker: broker.clone(),
        keys,
        public_url: "https://broker.test".into(),
    })
    .merge(lease_routes(leases));
    let app = finish(routes, HttpSettings::default());
    let mut serial = 0;
    let mut exchange = |grant: &str| {
        serial += 1;
        let body = json!({ "token": issuer.sign(&claims(serial)), "grant": grant, "ttl": "15m" }).to_string();
        let mut request = http::Request::post("/v1/token")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request");
        // What the Lambda adapter lifts from API Gateway's request context (`run_lambda`).
        request.extensions_mut().insert(ClientAddr("10.1.2.3".parse().expect("ip")));
        request.extensions_mut().insert(FrontRequestId(format!("c6af9ac6-7b61-11e6-9a41-{serial:012x}")));
        request
    };
    let run = |request: http::Request<Body>| {
        runtime.block_on(async {
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), 200, "exchange allowed");
            axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body")
        })
    };
    // Signing the workload tokens is the caller's work: done before the clock starts. One token
    // per call (the replay guard refuses a token twice), plus one warm-up call per grant, which
    // fills the JWKS cache.
    let calls = rounds * per_round;
    let mut aws_requests = (0..=calls).map(|_| exchange("ci/deploy")).collect::<Vec<_>>().into_iter();
    let mut signed_requests = (0..=calls).map(|_| exchange("ci/api")).collect::<Vec<_>>().into_iter();
    run(aws_requests.next().expect("warm-up request"));
    run(signed_requests.next().expect("warm-up request"));
    let verify_tokens: Vec<String> = (0..calls).map(|n| issuer.sign(&claims(n))).collect();
    let mut verify_tokens = verify_tokens.iter();
    let direct_tokens: Vec<String> = (0..calls).map(|n| issuer.sign(&claims(1_000_000 + n))).collect();
    let mut direct_tokens = direct_tokens.iter();

    // Floors: bare RS256 verification with a ready decoding key; plus an EdDSA signature of a
    // token like the broker's for the signed-token grant. Then the exchange through HTTP, and
    // where its time goes: the broker's own verification, and the exchange without HTTP.
    let [verify_floor, sign_floor, aws, signed, broker_verify, direct] = measure_interleaved(
        rounds,
        per_round,
        [
            &mut || {
                jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("floor verifies");
            },
            &mut || {
                jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("floor verifies");
                jsonwebtoken::encode(&ed_header, &broker_claims, &ed_key).expect("floor signs");
            },
            &mut || {
                run(aws_requests.next().expect("enough requests"));
            },
            &mut || {
                run(signed_requests.next().expect("enough requests"));
            },
            &mut || {
                let token = verify_tokens.next().expect("enough tokens");
                runtime.block_on(verifier.verify(token)).expect("verifies");
            },
            &mut || {
                let request = ExchangeRequest {
                    token: direct_tokens.next().expect("enough tokens").clone(),
                    grant: GrantRef::parse("ci/deploy").expect("grant"),
                    ttl: None,
                    source_ip: Some("10.1.2.3".parse().expect("ip")),
                    request_id: "bench".into(),
                };
                runtime.block_on(broker.exchange(request)).expect("exchange allowed");
            },
        ],
    );

    // Policy evaluation alone, by number of policies loaded.
    let identity = runtime.block_on(verifier.verify(&token)).expect("identity");
    let ctx = RequestContext {
        source_ip: Some("10.1.2.3".parse().expect("ip")),
        now: clock.now(),
        requested_ttl: None,
    };
    let sets: Vec<(usize, PolicySet, GrantRef)> = [10usize, 100, 1000]
        .into_iter()
        .map(|count| {
            let mut set = PolicySet::default();
            for i in 0..count {
                set.insert(policy(&format!("p{i}"))).expect("insert");
            }
            (count, set, GrantRef::parse(&format!("p{}/api", count / 2)).expect("grant"))
        })
        .collect();
    let (identity, ctx) = (&identity, &ctx);
    let mut evaluate = sets.iter().map(|(_, set, target)| {
        move || {
            set.evaluate(target, identity, ctx).expect("allowed");
        }
    });
    let mut next = || evaluate.next().expect("three policy sets");
    let (mut ten, mut hundred, mut thousand) = (next(), next(), next());
    let evaluations = measure_interleaved(rounds, per_round * 10, [&mut ten, &mut hundred, &mut thousand]);

    let row = |name: &str, time: Duration, floor: Duration, target: Target| {
        let mut row = Row::new(name, micros(time), Some(micros(floor)), "µs", target);
        row.smoke = !full;
        report(&row);
    };
    row("jsonwebtoken RS256 verify (floor)", verify_floor, verify_floor, Target::None);
    row("RS256 verify + EdDSA sign (floor)", sign_floor, sign_floor, Target::None);
    row("JwtVerifier::verify (RS256)", broker_verify, verify_floor, Target::None);
    row("Broker::exchange → AWS session, no HTTP", direct, verify_floor, Target::None);
    row("exchange → AWS session", aws, verify_floor, Target::MaxRatio(1.5));
    row("exchange → broker-signed token", signed, sign_floor, Target::MaxRatio(1.5));
    for ((count, _, _), time) in sets.iter().zip(evaluations).skip(1) {
        // Flat (policies are looked up by name); linear growth would be count/10 ×.
        row(
            &format!("policy evaluation, {count} vs 10 policies"),
            time,
            evaluations[0],
            Target::MaxRatio(2.0),
        );
    }
    if !full {
        println!("(smoke run: pass --bench for real figures)");
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
