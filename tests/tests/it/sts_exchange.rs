//! STS grants against LocalStack, in process: real JWKS over HTTP, real DynamoDB lease store,
//! real STS, with an SDK interceptor recording exactly what was sent to STS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sts::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sts::config::{ConfigBag, Intercept, RuntimeComponents};
use credbroker::audit::MemoryAuditSink;
use credbroker::backend::BackendRef;
use credbroker::backend::{Credential, Issuers};
use credbroker::broker::{Broker, BrokerPorts, BrokerSettings, ExchangeRequest};
use credbroker::clock::{Clock, SystemClock};
use credbroker::identity::{JwksCache, JwtVerifier, VerifierSettings};
use credbroker::issuer::aws::StsIssuer;
use credbroker::lease::{LeaseStatus, LeaseStore};
use credbroker::policy::{GrantRef, Policy, PolicySet};
use credbroker::store::dynamodb::{DynamoLeaseStore, create_table};
use credbroker_tests::oidc::OidcServer;
use credbroker_tests::{localstack_sdk_config, unique_name};
use serde_json::{Value, json};

/// The form parameters of one STS request, in order.
type FormParams = Vec<(String, String)>;

/// Records the form parameters of every STS request as sent on the wire.
#[derive(Debug, Default, Clone)]
struct RecordStsRequests(Arc<Mutex<Vec<FormParams>>>);

impl Intercept for RecordStsRequests {
    fn name(&self) -> &'static str {
        "RecordStsRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let body = context.request().body().bytes().unwrap_or_default();
        let params: FormParams = serde_urlencoded::from_bytes(body)?;
        self.0.lock().expect("lock").push(params);
        Ok(())
    }
}

const SESSION_POLICY_TEMPLATE: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":"arn:aws:s3:::builds/{{claims.project}}/{{sub}}/*"}]}"#;

fn policy_text(issuer: &str) -> String {
    format!(
        r#"
issuer = "{issuer}"
audience = ["credbroker"]
subject = {{ glob = "system:serviceaccount:*" }}

[claims]
project = {{ glob = "*" }}
team = {{ regex = "[a-z]+" }}

[grants.deploy]
type = "aws_role"
role_arn = "arn:aws:iam::000000000000:role/credbroker-test"
session_policy = '{SESSION_POLICY_TEMPLATE}'
session_tags = {{ team = "{{{{claims.team}}}}" }}
"#
    )
}

#[tokio::test]
async fn sts_grant_sends_rendered_session_policy_and_names_the_session_after_the_lease() {
    let sdk = localstack_sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique_name("credbroker-sts");
    create_table(&dynamo, &table).await.expect("create table");

    let oidc = OidcServer::start().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let settings = VerifierSettings { allow_http_loopback: true, ..VerifierSettings::default() };
    let jwks = Arc::new(JwksCache::http(&settings, Arc::clone(&clock)));
    let verifier =
        JwtVerifier::new(vec![oidc.issuer.trusted()], &settings, Arc::clone(&clock), jwks).expect("verifier");
    let mut policies = PolicySet::default();
    policies.insert(Policy::from_toml("k8s", &policy_text(&oidc.url())).expect("policy")).expect("insert");

    let recorder = RecordStsRequests::default();
    let sts_config = aws_sdk_sts::config::Builder::from(&sdk).interceptor(recorder.clone()).build();
    let store = Arc::new(DynamoLeaseStore::new(dynamo.clone(), table.clone()));
    let audit = Arc::new(MemoryAuditSink::default());
    let broker = Broker::new(
        BrokerPorts {
            verifier: Arc::new(verifier),
            policies: Arc::new(policies),
            store: store.clone(),
            issuers: Issuers::default()
                .with(Arc::new(StsIssuer::new(aws_sdk_sts::Client::from_conf(sts_config)))),
            clock: Arc::clone(&clock),
            audit: audit.clone(),
        },
        BrokerSettings::default(),
    );

    // A claim value that needs JSON escaping inside the session policy.
    let project = r#"acme "blue" \ pipeline"#;
    let mut claims = oidc.issuer.claims("system:serviceaccount:ci:builder", clock.now());
    claims["project"] = json!(project);
    claims["team"] = json!("platform");
    let token = oidc.issuer.sign(&claims);
    let done = broker
        .exchange(ExchangeRequest {
            token,
            grant: GrantRef::parse("k8s/deploy").expect("grant"),
            ttl: Some(Duration::from_mins(30)),
            source_ip: None,
            request_id: "sts-test".into(),
        })
        .await
        .unwrap_or_else(|denial| panic!("exchange denied: {denial:?}; audit: {:?}", audit.events()));

    let lease_id = done.lease.id.as_str();
    let Credential::Aws(creds) = &done.credential else { panic!("expected AWS credentials") };
    assert!(
        creds.assumed_role_arn.ends_with(&format!("/{lease_id}")),
        "AssumedRoleUser.Arn {} ends with the lease id {lease_id}",
        creds.assumed_role_arn
    );
    assert!(creds.access_key_id.starts_with("ASIA") || !creds.access_key_id.is_empty());

    // What went over the wire to STS.
    let sent = recorder.0.lock().expect("lock").clone();
    let assume = sent
        .iter()
        .find(|params| params.iter().any(|(k, v)| k == "Action" && v == "AssumeRole"))
        .expect("an AssumeRole request");
    let param = |name: &str| assume.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let expected_policy: Value = serde_json::from_str(
        &SESSION_POLICY_TEMPLATE
            .replace("{{claims.project}}", r#"acme \"blue\" \\ pipeline"#)
            .replace("{{sub}}", "system:serviceaccount:ci:builder"),
    )
    .expect("expected policy is JSON");
    let sent_policy: Value =
        serde_json::from_str(&param("Policy").expect("Policy sent")).expect("sent policy is JSON");
    assert_eq!(sent_policy, expected_policy, "session policy sent to STS equals the rendered template");
    assert_eq!(
        sent_policy["Statement"][0]["Resource"],
        format!("arn:aws:s3:::builds/{project}/system:serviceaccount:ci:builder/*")
    );
    assert_eq!(param("RoleSessionName").as_deref(), Some(lease_id));
    assert_eq!(param("DurationSeconds").as_deref(), Some("1800"));
    assert_eq!(param("Tags.member.1.Key").as_deref(), Some("team"));
    assert_eq!(param("Tags.member.1.Value").as_deref(), Some("platform"));
    let source_identity = param("SourceIdentity").expect("SourceIdentity sent");
    assert!(source_identity.starts_with("system_serviceaccount_ci_builder-"), "{source_identity}");

    // The lease in DynamoDB is active, names the session, and expires with the credentials.
    let lease = store.get(&done.lease.id).await.expect("get").expect("lease stored");
    assert_eq!(lease.status, LeaseStatus::Active);
    assert_eq!(lease.expires_at, creds.expiration);
    assert_eq!(
        lease.backend,
        BackendRef::AwsSession {
            role_arn: "arn:aws:iam::000000000000:role/credbroker-test".into(),
            session_name: lease_id.to_owned()
        }
    );
    let events = audit.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "granted");

    dynamo.delete_table().table_name(&table).send().await.expect("delete table");
}
