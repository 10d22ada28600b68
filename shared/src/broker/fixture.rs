//! A broker on in-memory ports for unit tests of the broker and the HTTP layer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::TimeZone;
use serde_json::{Value, json};

use super::*;
use crate::audit::MemoryAuditSink;
use crate::backend::{
    AwsCredentials, Backend, BackendKind, CredentialIssuer, CredentialRevoker, IssuePlan, IssuedRef,
};
use crate::clock::ManualClock;
use crate::identity::VerifierSettings;
use crate::identity::testing::{TestIssuer, verifier_for};
use crate::issuer::token::SignedTokenIssuer;
use crate::keys::{KeySource, SigningKey, StaticKeys};
use crate::lease::{Activation, Claim, DueLeases, LeaseHolder, LiveFilter, RevokeFailure};
use crate::policy::Policy;
use crate::store::memory::MemoryLeaseStore;

pub(crate) const ISSUER: &str = "https://ci.example.test";

/// Lease administrators: one subject of the same issuer, with an admin grant.
pub(crate) fn admin_policy_text() -> String {
    format!(
        r#"
issuer = "{ISSUER}"
audience = ["credbroker"]
subject = {{ exact = "repo:acme/ops" }}

[grants.leases]
type = "admin"
"#
    )
}

pub(crate) fn policy_text() -> String {
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

pub(crate) type FailureMaker = fn(String) -> IssueError;

/// Records plans; answers with canned credentials or a canned failure.
#[derive(Debug, Default)]
pub(crate) struct FakeAwsIssuer {
    pub(crate) plans: Mutex<Vec<IssuePlan>>,
    pub(crate) revoked: Mutex<Vec<LeaseId>>,
    pub(crate) fail_with: Mutex<Option<FailureMaker>>,
}

impl Backend for FakeAwsIssuer {
    fn backend(&self) -> BackendKind {
        BackendKind::AwsSession
    }
}

#[async_trait::async_trait]
impl CredentialRevoker for FakeAwsIssuer {
    async fn revoke(&self, issued: IssuedRef<'_>) -> Result<(), IssueError> {
        self.revoked.lock().unwrap().push(LeaseId::parse(issued.lease_id).expect("a lease id"));
        match *self.fail_with.lock().unwrap() {
            Some(fail) => Err(fail("injected".into())),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl CredentialIssuer for FakeAwsIssuer {
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

pub(crate) struct Harness {
    pub(crate) broker: Broker,
    pub(crate) issuer: TestIssuer,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) store: Arc<FlakyStore>,
    pub(crate) audit: Arc<MemoryAuditSink>,
    pub(crate) aws: Arc<FakeAwsIssuer>,
    pub(crate) keys: Arc<dyn KeySource>,
}

pub(crate) fn harness_with(aws_configured: bool) -> Harness {
    harness_with_policies(aws_configured, &[])
}

/// The harness with more policies (name, TOML) beside `ci` and `admins`.
pub(crate) fn harness_with_policies(aws_configured: bool, extra: &[(&str, String)]) -> Harness {
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()));
    let issuer = TestIssuer::es256(ISSUER);
    let (verifier, _source) = verifier_for(&[&issuer], &VerifierSettings::default(), clock.clone());
    let mut policies = PolicySet::default();
    policies.insert(Policy::from_toml("ci", &policy_text()).unwrap()).unwrap();
    policies.insert(Policy::from_toml("admins", &admin_policy_text()).unwrap()).unwrap();
    for (name, text) in extra {
        policies.insert(Policy::from_toml(name, text).unwrap()).unwrap();
    }
    let store = Arc::new(FlakyStore::new(MemoryLeaseStore::new().with_clock(clock.clone())));
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

pub(crate) fn harness() -> Harness {
    harness_with(true)
}

impl Harness {
    /// A revoker over the same store and clock (signed tokens and the fake AWS backend).
    pub(crate) fn revoker(&self) -> crate::revoker::Revoker {
        crate::revoker::Revoker::new(
            crate::revoker::RevokerPorts {
                store: self.store.clone(),
                revokers: crate::backend::Revokers::default()
                    .with(Arc::new(crate::issuer::token::SignedTokenExpiry))
                    .with(self.aws.clone()),
                clock: self.clock.clone(),
                audit: self.audit.clone(),
                metrics: Arc::new(crate::metrics::MemoryMetrics::default()),
            },
            crate::revoker::RevokerSettings::default(),
        )
    }

    pub(crate) fn token(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.issuer.claims("repo:acme/app", self.clock.now());
        claims["repository"] = json!("acme/app");
        edit(&mut claims);
        self.issuer.sign(&claims)
    }

    pub(crate) fn request(token: String, grant: &str) -> ExchangeRequest {
        ExchangeRequest {
            token,
            grant: GrantRef::parse(grant).unwrap(),
            ttl: None,
            source_ip: Some("192.0.2.10".parse().unwrap()),
            request_id: "req-1".into(),
        }
    }

    pub(crate) async fn exchange(&self, token: String, grant: &str) -> Result<Exchanged, Denial> {
        self.broker.exchange(Self::request(token, grant)).await
    }

    pub(crate) fn last_audit(&self) -> AuditEvent {
        let events = self.audit.events();
        events.last().cloned().expect("an audit event")
    }
}

/// A memory store whose writes can be made to fail, to show what a store outage leaves behind.
#[derive(Debug)]
pub(crate) struct FlakyStore {
    pub(crate) inner: MemoryLeaseStore,
    pub(crate) fail_record_jti: AtomicBool,
    pub(crate) fail_activate: AtomicBool,
    /// Fails the next `mark_revoked` (a revoker crashing right after the backend call).
    pub(crate) fail_mark_revoked: AtomicBool,
}

impl FlakyStore {
    fn new(inner: MemoryLeaseStore) -> Self {
        Self {
            inner,
            fail_record_jti: AtomicBool::new(false),
            fail_activate: AtomicBool::new(false),
            fail_mark_revoked: AtomicBool::new(false),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    fn outage(flag: &AtomicBool) -> Result<(), StoreError> {
        if flag.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("injected outage".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl LeaseStore for FlakyStore {
    async fn create_pending(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.create_pending(lease).await
    }

    async fn activate(
        &self,
        id: &LeaseId,
        version: u64,
        activation: Activation,
    ) -> Result<Lease, StoreError> {
        Self::outage(&self.fail_activate)?;
        self.inner.activate(id, version, activation).await
    }

    async fn record_issue_failure(
        &self,
        id: &LeaseId,
        version: u64,
        error: &str,
        due_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.inner.record_issue_failure(id, version, error, due_at).await
    }

    async fn get(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError> {
        self.inner.get(id).await
    }

    async fn by_holder(&self, holder: &LeaseHolder, limit: usize) -> Result<Vec<Lease>, StoreError> {
        self.inner.by_holder(holder, limit).await
    }

    async fn claim_for_revocation(
        &self,
        id: &LeaseId,
        version: u64,
        claim: Claim,
    ) -> Result<Lease, StoreError> {
        self.inner.claim_for_revocation(id, version, claim).await
    }

    async fn mark_revoked(
        &self,
        id: &LeaseId,
        version: u64,
        revoked_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<Lease, StoreError> {
        if self.fail_mark_revoked.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected crash after the backend call".into()));
        }
        self.inner.mark_revoked(id, version, revoked_at, note).await
    }

    async fn record_revoke_failure(
        &self,
        id: &LeaseId,
        version: u64,
        failure: RevokeFailure,
    ) -> Result<Lease, StoreError> {
        self.inner.record_revoke_failure(id, version, failure).await
    }

    async fn renew(
        &self,
        id: &LeaseId,
        version: u64,
        expires_at: DateTime<Utc>,
        gc_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.inner.renew(id, version, expires_at, gc_at).await
    }

    async fn list_live(&self, filter: &LiveFilter, limit: usize) -> Result<Vec<Lease>, StoreError> {
        self.inner.list_live(filter, limit).await
    }

    async fn record_token_use(
        &self,
        issuer: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        limit: u32,
    ) -> Result<crate::lease::TokenUse, StoreError> {
        Self::outage(&self.fail_record_jti)?;
        self.inner.record_token_use(issuer, key, expires_at, limit).await
    }
}

#[async_trait::async_trait]
impl DueLeases for FlakyStore {
    async fn list_due(&self, now: DateTime<Utc>, limit: usize) -> Result<crate::lease::DueBatch, StoreError> {
        self.inner.list_due(now, limit).await
    }
}
