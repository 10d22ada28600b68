//! Hot-path benchmark: the token-exchange CPU path against its floor, measured in one run.
//!
//! - floor: a bare `jsonwebtoken` ES256 verification of the same kind of token;
//! - exchange: `Broker::exchange` end to end on in-memory ports (JWT verification with a warm
//!   JWKS cache, policy evaluation, replay guard, lease writes, signing the broker token, audit);
//! - policy evaluation alone with 10, 100 and 1,000 policies loaded.
//!
//! `cargo bench -p credbroker-tests --bench exchange` prints a table with ratios. Without
//! `--bench` (as `cargo test --all-targets` runs it) it does a quick smoke run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use credbroker::audit::MemoryAuditSink;
use credbroker::broker::{Broker, BrokerPorts, BrokerSettings, ExchangeRequest};
use credbroker::clock::{Clock, SystemClock};
use credbroker::identity::testing::{TestIssuer, verifier_for};
use credbroker::identity::{IdentityVerifier, VerifierSettings};
use credbroker::issuer::Issuers;
use credbroker::issuer::token::SignedTokenIssuer;
use credbroker::keys::{KeySource, SigningKey, StaticKeys};
use credbroker::policy::{GrantRef, Policy, PolicySet, RequestContext};
use credbroker::store::memory::MemoryLeaseStore;
use serde_json::{Value, json};

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
"#
    );
    Policy::from_toml(name, &text).expect("bench policy")
}

/// Median time per operation over `rounds` rounds of `per_round` operations.
fn measure(rounds: usize, per_round: usize, mut op: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_round {
                op();
            }
            start.elapsed() / u32::try_from(per_round).expect("round size")
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, per_round) = if full { (15, 200) } else { (2, 5) };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let issuer = TestIssuer::es256(ISSUER);
    let claims = |n: usize| -> Value {
        let mut c = issuer.claims("repo:acme/app:ref:refs/heads/main", clock.now());
        c["repository"] = json!("acme/app");
        c["jti"] = json!(format!("bench-{n}"));
        c
    };

    // Floor: bare ES256 verification with a ready decoding key.
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(issuer.jwk()).expect("jwk");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["credbroker"]);
    let token = issuer.sign(&claims(0));
    let floor = measure(rounds, per_round, || {
        jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("floor verifies");
    });

    // The exchange path on in-memory ports.
    let (verifier, _source) = verifier_for(&[&issuer], &VerifierSettings::default(), Arc::clone(&clock));
    let verifier: Arc<dyn IdentityVerifier> = Arc::new(verifier);
    let mut policies = PolicySet::default();
    policies.insert(policy("ci")).expect("insert");
    let keys: Arc<dyn KeySource> = Arc::new(StaticKeys::new(
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("key")).expect("key"),
    ));
    let broker = Broker::new(
        BrokerPorts {
            verifier: Arc::clone(&verifier),
            policies: Arc::new(policies),
            store: Arc::new(MemoryLeaseStore::new()),
            issuers: Issuers::default().with(Arc::new(SignedTokenIssuer::new(keys, "https://broker.test"))),
            clock: Arc::clone(&clock),
            audit: Arc::new(MemoryAuditSink::default()),
        },
        BrokerSettings::default(),
    );
    let grant = GrantRef::parse("ci/api").expect("grant");
    let tokens: Vec<String> = (1..=rounds * per_round + 1).map(|n| issuer.sign(&claims(n))).collect();
    let mut next = tokens.iter();
    let request = |token: &str| ExchangeRequest {
        token: token.to_owned(),
        grant: grant.clone(),
        ttl: None,
        source_ip: Some("10.1.2.3".parse().expect("ip")),
        request_id: "bench".into(),
    };
    // Warm the JWKS cache outside the measurement.
    runtime.block_on(broker.exchange(request(next.next().expect("token")))).expect("warm-up exchange");
    let exchange = measure(rounds, per_round, || {
        let token = next.next().expect("enough tokens");
        runtime.block_on(broker.exchange(request(token))).expect("exchange allowed");
    });

    // Policy evaluation alone, by number of policies loaded.
    let identity = runtime.block_on(verifier.verify(&token)).expect("identity");
    let ctx = RequestContext {
        source_ip: Some("10.1.2.3".parse().expect("ip")),
        now: clock.now(),
        requested_ttl: None,
    };
    let mut evaluations = Vec::new();
    for count in [10usize, 100, 1000] {
        let mut set = PolicySet::default();
        for i in 0..count {
            set.insert(policy(&format!("p{i}"))).expect("insert");
        }
        let target = GrantRef::parse(&format!("p{}/api", count / 2)).expect("grant");
        let time = measure(rounds, per_round * 10, || {
            set.evaluate(&target, &identity, &ctx).expect("allowed");
        });
        evaluations.push((count, time));
    }

    println!("{:<34} {:>12} {:>12} {:>8}  target", "benchmark", "median", "floor", "ratio");
    let row = |name: &str, time: Duration, floor: Duration, target: &str| {
        let ratio = time.as_secs_f64() / floor.as_secs_f64();
        println!("{name:<34} {:>10.1}µs {:>10.1}µs {ratio:>7.2}x  {target}", micros(time), micros(floor));
    };
    row("jsonwebtoken ES256 verify (floor)", floor, floor, "");
    row("exchange, in-memory ports", exchange, floor, "informational");
    let base = evaluations[0].1;
    for (count, time) in &evaluations {
        row(&format!("policy evaluation, {count} policies"), *time, base, "sub-linear");
    }
    if !full {
        println!("(smoke run: pass --bench for real figures)");
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
