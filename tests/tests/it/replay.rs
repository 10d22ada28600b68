//! Replay modes on the DynamoDB store in LocalStack, with two broker instances sharing one
//! table (two Lambda sandboxes): the count of a token's exchanges is the table's, not an
//! instance's.

use std::sync::Arc;

use credbroker::audit::MemoryAuditSink;
use credbroker::backend::Issuers;
use credbroker::broker::{Broker, BrokerPorts, BrokerSettings, ExchangeRequest};
use credbroker::clock::{Clock, SystemClock};
use credbroker::identity::{JwksCache, JwtVerifier, VerifierSettings};
use credbroker::issuer::token::SignedTokenIssuer;
use credbroker::keys::{SigningKey, StaticKeys};
use credbroker::policy::{GrantRef, Policy, PolicySet};
use credbroker::reason::ReasonCode;
use credbroker::store::dynamodb::{DynamoLeaseStore, create_table};
use credbroker_tests::oidc::OidcServer;
use credbroker_tests::{localstack_sdk_config, unique_name};
use serde_json::json;

fn policy(issuer: &str, subject: &str, replay: &str) -> String {
    format!(
        r#"
issuer = "{issuer}"
audience = ["credbroker"]
subject = {{ glob = "{subject}" }}
{replay}
[grants.ledger]
type = "signed_token"
audience = "https://ledger.internal"

[grants.reports]
type = "signed_token"
audience = "https://reports.internal"
"#
    )
}

struct Brokers {
    a: Broker,
    b: Broker,
    oidc: OidcServer,
    clock: Arc<dyn Clock>,
}

async fn two_brokers(table: &str) -> Brokers {
    let sdk = localstack_sdk_config().await;
    let oidc = OidcServer::start().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = Arc::new(StaticKeys::new(
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("key")).expect("key"),
    ));
    let issuer = oidc.url();
    let instance = || {
        let settings = VerifierSettings { allow_http_loopback: true, ..VerifierSettings::default() };
        let jwks = Arc::new(JwksCache::http(&settings, Arc::clone(&clock)));
        let verifier = JwtVerifier::new(vec![oidc.issuer.trusted()], &settings, Arc::clone(&clock), jwks)
            .expect("verifier");
        let mut policies = PolicySet::default();
        for (name, subject, replay) in [
            ("k8s", "system:serviceaccount:billing:*", "[replay]\nmode = \"until_expiry\"\nmax_uses = 3"),
            ("gitlab", "project_path:acme/*", "[replay]\nmode = \"once_per_grant\""),
            ("gha", "repo:acme/*", "[replay]\nmode = \"once\""),
        ] {
            policies
                .insert(Policy::from_toml(name, &policy(&issuer, subject, replay)).expect("policy"))
                .expect("insert");
        }
        Broker::new(
            BrokerPorts {
                verifier: Arc::new(verifier),
                policies: Arc::new(policies),
                store: Arc::new(DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(&sdk), table)),
                issuers: Issuers::default()
                    .with(Arc::new(SignedTokenIssuer::new(keys.clone(), "https://broker.test"))),
                clock: Arc::clone(&clock),
                audit: Arc::new(MemoryAuditSink::default()),
            },
            BrokerSettings::default(),
        )
    };
    let (a, b) = (instance(), instance());
    Brokers { a, b, oidc, clock }
}

fn request(token: &str, grant: &str) -> ExchangeRequest {
    ExchangeRequest {
        token: token.to_owned(),
        grant: GrantRef::parse(grant).expect("grant"),
        ttl: None,
        source_ip: None,
        request_id: "replay-test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_modes_hold_across_two_broker_instances_on_dynamodb() {
    let sdk = localstack_sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique_name("credbroker-replay");
    create_table(&dynamo, &table).await.expect("create table");
    let brokers = two_brokers(&table).await;
    let (a, b) = (&brokers.a, &brokers.b);

    // Kubernetes: list `aud`, the pod under `kubernetes.io`, a jti; `until_expiry`, 3 uses.
    let mut claims =
        brokers.oidc.issuer.claims("system:serviceaccount:billing:ledger-sync", brokers.clock.now());
    claims["aud"] = json!(["credbroker", "https://kubernetes.default.svc"]);
    claims["kubernetes.io"] = json!({ "namespace": "billing", "serviceaccount": { "name": "ledger-sync" } });
    let k8s = brokers.oidc.issuer.sign(&claims);
    a.exchange(request(&k8s, "k8s/ledger")).await.expect("use 1, instance a");
    b.exchange(request(&k8s, "k8s/reports")).await.expect("use 2, instance b");
    a.exchange(request(&k8s, "k8s/ledger")).await.expect("use 3, instance a");
    let refused = b.exchange(request(&k8s, "k8s/ledger")).await.expect_err("use 4");
    assert_eq!(refused.reason, ReasonCode::ReplayedToken, "{}", refused.detail);

    // GitLab: one job token, each grant once, whichever instance.
    let gitlab = brokers.oidc.issuer.sign(
        &brokers.oidc.issuer.claims("project_path:acme/app:ref_type:branch:ref:main", brokers.clock.now()),
    );
    a.exchange(request(&gitlab, "gitlab/ledger")).await.expect("ledger once");
    b.exchange(request(&gitlab, "gitlab/reports")).await.expect("reports once, on the other instance");
    let refused = b.exchange(request(&gitlab, "gitlab/ledger")).await.expect_err("ledger twice");
    assert_eq!(refused.reason, ReasonCode::ReplayedToken);

    // GitHub: once, whatever the grant or the instance.
    let github = brokers
        .oidc
        .issuer
        .sign(&brokers.oidc.issuer.claims("repo:acme/app:ref:refs/heads/main", brokers.clock.now()));
    b.exchange(request(&github, "gha/ledger")).await.expect("first");
    let refused = a.exchange(request(&github, "gha/reports")).await.expect_err("second");
    assert_eq!(refused.reason, ReasonCode::ReplayedToken);

    // Both instances at once on a fresh Kubernetes token: never more than its 3 uses.
    let raced = brokers
        .oidc
        .issuer
        .sign(&brokers.oidc.issuer.claims("system:serviceaccount:billing:x", brokers.clock.now()));
    let attempts: Vec<_> = (0..8).map(|i| if i % 2 == 0 { a.clone() } else { b.clone() }).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for broker in attempts {
        let raced = raced.clone();
        tasks.spawn(async move { broker.exchange(request(&raced, "k8s/ledger")).await.is_ok() });
    }
    let mut granted = 0;
    while let Some(ok) = tasks.join_next().await {
        granted += usize::from(ok.expect("task"));
    }
    assert_eq!(granted, 3, "exactly max_uses exchanges across both instances");
    dynamo.delete_table().table_name(&table).send().await.expect("delete table");
}
