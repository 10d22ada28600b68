use std::sync::Mutex;

use chrono::TimeZone;
use serde_json::{Value, json};

use super::*;
use crate::audit::MemoryAuditSink;
use crate::clock::ManualClock;
use crate::identity::VerifierSettings;
use crate::identity::testing::{TestIssuer, verifier_for};
use crate::issuer::token::SignedTokenIssuer;
use crate::issuer::{AwsCredentials, CredentialIssuer};
use crate::keys::{KeySource, SigningKey, StaticKeys};
use crate::policy::Policy;
use crate::store::memory::MemoryLeaseStore;

const ISSUER: &str = "https://ci.example.test";

fn policy_text() -> String {
    format!(
        r#"
issuer = "{ISSUER}"
audience = ["credbroker"]
subject = {{ glob = "repo:acme/*" }}

[claims]
repository = {{ glob = "*" }}

[grants.api]
type = "signed_token"
audience = "internal-api"
scopes = ["read", "write"]

[grants.deploy]
type = "aws_role"
role_arn = "arn:aws:iam::000000000000:role/deploy"
session_policy = '{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/{{{{claims.repository}}}}/*"}}]}}'
session_tags = {{ repo = "{{{{claims.repository}}}}" }}
"#
    )
}

type FailureMaker = fn(String) -> IssueError;

/// Records plans; answers with canned credentials or a canned failure.
#[derive(Debug, Default)]
struct FakeAwsIssuer {
    plans: Mutex<Vec<IssuePlan>>,
    fail_with: Mutex<Option<FailureMaker>>,
}

#[async_trait::async_trait]
impl CredentialIssuer for FakeAwsIssuer {
    fn backend(&self) -> &'static str {
        "aws_session"
    }

    async fn issue(&self, plan: &IssuePlan) -> Result<Credential, IssueError> {
        self.plans.lock().unwrap().push(plan.clone());
        if let Some(fail) = *self.fail_with.lock().unwrap() {
            return Err(fail("injected".into()));
        }
        let IssuePlan::AwsSession(p) = plan else { panic!("wrong plan") };
        Ok(Credential::Aws(AwsCredentials {
            access_key_id: "ASIAFAKE".into(),
            secret_access_key: "secret".to_owned().into(),
            session_token: "session".to_owned().into(),
            expiration: Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap() + delta(p.duration),
            assumed_role_arn: format!("arn:aws:sts::000000000000:assumed-role/deploy/{}", p.session_name),
        }))
    }
}

struct Harness {
    broker: Broker,
    issuer: TestIssuer,
    clock: Arc<ManualClock>,
    store: Arc<MemoryLeaseStore>,
    audit: Arc<MemoryAuditSink>,
    aws: Arc<FakeAwsIssuer>,
    keys: Arc<dyn KeySource>,
}

fn harness_with(aws_configured: bool) -> Harness {
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()));
    let issuer = TestIssuer::es256(ISSUER);
    let (verifier, _source) = verifier_for(&[&issuer], &VerifierSettings::default(), clock.clone());
    let mut policies = PolicySet::default();
    policies.insert(Policy::from_toml("ci", &policy_text()).unwrap()).unwrap();
    let store = Arc::new(MemoryLeaseStore::new().with_clock(clock.clone()));
    let audit = Arc::new(MemoryAuditSink::default());
    let keys: Arc<dyn KeySource> =
        Arc::new(StaticKeys::new(SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap()));
    let aws = Arc::new(FakeAwsIssuer::default());
    let mut issuers =
        Issuers::default().with(Arc::new(SignedTokenIssuer::new(keys.clone(), "https://broker.test")));
    if aws_configured {
        issuers = issuers.with(aws.clone());
    }
    let broker = Broker::new(
        BrokerPorts {
            verifier: Arc::new(verifier),
            policies: Arc::new(policies),
            store: store.clone(),
            issuers,
            clock: clock.clone(),
            audit: audit.clone(),
        },
        BrokerSettings::default(),
    );
    Harness { broker, issuer, clock, store, audit, aws, keys }
}

fn harness() -> Harness {
    harness_with(true)
}

impl Harness {
    fn token(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.issuer.claims("repo:acme/app", self.clock.now());
        claims["repository"] = json!("acme/app");
        edit(&mut claims);
        self.issuer.sign(&claims)
    }

    fn request(token: String, grant: &str) -> ExchangeRequest {
        ExchangeRequest {
            token,
            grant: GrantRef::parse(grant).unwrap(),
            ttl: None,
            source_ip: Some("192.0.2.10".parse().unwrap()),
            request_id: "req-1".into(),
        }
    }

    async fn exchange(&self, token: String, grant: &str) -> Result<Exchanged, Denial> {
        self.broker.exchange(Self::request(token, grant)).await
    }

    fn last_audit(&self) -> AuditEvent {
        let events = self.audit.events();
        events.last().cloned().expect("an audit event")
    }
}

#[tokio::test]
async fn signed_token_grant_issues_verifiable_token_and_active_lease() {
    let h = harness();
    let done = h.exchange(h.token(|_| {}), "ci/api").await.unwrap();
    assert_eq!(done.lease.status, LeaseStatus::Active);
    let stored = h.store.get(&done.lease.id).await.unwrap().unwrap();
    assert_eq!(stored, done.lease);
    let Credential::AccessToken(token) = &done.credential else { panic!("expected a token") };
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(h.keys.jwks()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["internal-api"]);
    validation.validate_exp = false;
    let claims =
        jsonwebtoken::decode::<Value>(secrecy::ExposeSecret::expose_secret(&token.token), &key, &validation)
            .unwrap()
            .claims;
    assert_eq!(claims["sub"], "repo:acme/app");
    assert_eq!(claims["jti"], done.lease.id.as_str());
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["iss"], "https://broker.test");
    let event = h.last_audit();
    assert_eq!(event.decision, Decision::Allow);
    assert_eq!(event.reason, "granted");
    assert_eq!(event.lease_id.as_deref(), Some(done.lease.id.as_str()));
    assert_eq!(event.ttl_seconds, Some(15 * 60));
    assert_eq!(h.audit.events().len(), 1, "exactly one event per decision");
}

#[tokio::test]
async fn aws_grant_renders_plan_from_claims_with_escaping() {
    let h = harness();
    let hostile = "acme/app\"],\"Effect\":\"Allow";
    let done = h.exchange(h.token(|c| c["repository"] = json!(hostile)), "ci/deploy").await;
    // The hostile value cannot be a session tag value (quotes): refused, nothing issued.
    assert_eq!(done.unwrap_err().reason, ReasonCode::ClaimUnusable("session_tags.repo".into()));
    assert!(h.aws.plans.lock().unwrap().is_empty());

    let done = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap();
    let plans = h.aws.plans.lock().unwrap().clone();
    let IssuePlan::AwsSession(plan) = &plans[0] else { panic!("expected an AWS plan") };
    assert_eq!(plan.session_name, done.lease.id.as_str());
    assert_eq!(plan.duration, crate::policy::AWS_MIN_TTL);
    assert_eq!(plan.session_tags, vec![("repo".to_owned(), "acme/app".to_owned())]);
    assert_eq!(plan.source_identity, source_identity("repo:acme/app"));
    let policy: Value = serde_json::from_str(plan.session_policy.as_deref().unwrap()).unwrap();
    assert_eq!(policy["Statement"][0]["Resource"], "arn:aws:s3:::b/acme/app/*");
    assert!(
        matches!(done.lease.backend, crate::lease::BackendRef::AwsSession { ref session_name, .. } if session_name == done.lease.id.as_str())
    );
}

#[tokio::test]
async fn session_policy_escapes_claim_values() {
    let h = harness();
    // Allowed in a tag value, but must stay inside the JSON string of the session policy.
    let tricky = "acme/a=b+c@d";
    h.exchange(h.token(|c| c["repository"] = json!(tricky)), "ci/deploy").await.unwrap();
    let plans = h.aws.plans.lock().unwrap().clone();
    let IssuePlan::AwsSession(plan) = &plans[0] else { panic!() };
    let policy: Value = serde_json::from_str(plan.session_policy.as_deref().unwrap()).unwrap();
    assert_eq!(policy["Statement"][0]["Resource"], format!("arn:aws:s3:::b/{tricky}/*"));
}

#[tokio::test]
async fn verification_and_replay_reasons_are_audited_without_leases() {
    let h = harness();
    let valid = h.token(|_| {});
    let tampered = {
        let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        let mut claims: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1]).unwrap(),
        )
        .unwrap();
        claims["sub"] = json!("repo:acme/admin");
        parts[1] =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims.to_string());
        parts.join(".")
    };
    let expired = h.token(|c| c["exp"] = json!(h.clock.now().timestamp() - 3600));
    let wrong_aud = h.token(|c| c["aud"] = json!("sts.amazonaws.com"));
    let cases = [
        ("tampered payload", tampered, ReasonCode::InvalidSignature),
        ("expired", expired, ReasonCode::TokenExpired),
        ("wrong audience", wrong_aud, ReasonCode::AudienceMismatch),
        ("not a JWT", "garbage".to_owned(), ReasonCode::MalformedToken),
    ];
    for (name, token, reason) in cases {
        let denial = h.exchange(token, "ci/api").await.unwrap_err();
        assert_eq!(denial.reason, reason, "{name}");
        let event = h.last_audit();
        assert_eq!(event.reason, reason.as_str(), "{name}");
        assert_eq!(event.decision, Decision::Deny);
        assert!(event.lease_id.is_none(), "{name}: no lease for a refused token");
    }
    assert!(h.store.is_empty());

    h.exchange(valid.clone(), "ci/api").await.unwrap();
    let replay = h.exchange(valid, "ci/api").await.unwrap_err();
    assert_eq!(replay.reason, ReasonCode::ReplayedToken);
    assert_eq!(h.store.len(), 1, "only the first use made a lease");
}

#[tokio::test]
async fn backend_failure_leaves_a_due_pending_lease_and_no_credential() {
    for (fail, reason) in [
        (IssueError::Unavailable as FailureMaker, ReasonCode::BackendUnavailable),
        (IssueError::Rejected as FailureMaker, ReasonCode::BackendRejected),
    ] {
        let h = harness();
        *h.aws.fail_with.lock().unwrap() = Some(fail);
        let denial = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap_err();
        assert_eq!(denial.reason, reason);
        let event = h.last_audit();
        let lease_id = LeaseId::parse(event.lease_id.as_deref().unwrap()).unwrap();
        let lease = h.store.get(&lease_id).await.unwrap().unwrap();
        assert_eq!(lease.status, LeaseStatus::Pending, "the revoker decides, idempotently");
        assert!(lease.last_error.as_deref().unwrap().contains("injected"));
        let due = h.store.list_due(h.clock.now(), 10).await.unwrap();
        assert_eq!(due.iter().map(|l| &l.id).collect::<Vec<_>>(), vec![&lease_id]);
    }
}

#[tokio::test]
async fn unconfigured_backend_is_unavailable_before_any_lease() {
    let h = harness_with(false);
    let denial = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap_err();
    assert_eq!(denial.reason, ReasonCode::BackendUnavailable);
    assert!(h.store.is_empty());
}

#[test]
fn source_identity_fits_sts_rules() {
    let cases = [("clean stays as is", "alice@example.com", "alice@example.com")];
    for (name, raw, expected) in cases {
        assert_eq!(source_identity(raw), expected, "{name}");
    }
    assert!(source_identity("a").starts_with("a-"), "too short gets a hash suffix");
    let github = source_identity("repo:acme/app:ref:refs/heads/main");
    assert!(github.starts_with("repo_acme_app_ref_refs_heads_main-"), "{github}");
    assert_ne!(
        github,
        source_identity("repo_acme/app:ref:refs/heads/main"),
        "substitution keeps values distinct"
    );
    let long = source_identity(&"x/".repeat(100));
    assert_eq!(long.len(), 64);
    for value in [github, long] {
        assert!(value.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)), "{value}");
    }
}
