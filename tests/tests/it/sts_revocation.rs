//! STS session revocation against LocalStack IAM and DynamoDB: the deny list kept in the lease
//! table holds exactly the revoked sessions that have not expired, IAM is written from it, it
//! stays complete under concurrent writers in several processes, and it falls back to a
//! whole-role cut-off when it would overflow.

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use credbroker::backend::BackendRef;
use credbroker::backend::CredentialRevoker;
use credbroker::clock::{Clock, ManualClock};
use credbroker::denylist::{DENY_POLICY_NAME, DenyListRendering, RoleRef};
use credbroker::issuer::aws_revocation::StsSessionRevoker;
use credbroker::issuer::iam::IamRolePolicies;
use credbroker::lease::{Lease, LeaseHolder, LeaseId, LeaseStatus};
use credbroker::store::dynamodb::{DynamoLeaseStore, create_table};
use credbroker_tests::{create_test_role, denied_sessions, localstack_sdk_config, unique_name};

struct Fixture {
    iam: aws_sdk_iam::Client,
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    role_name: String,
    role_arn: String,
    store: Arc<dyn DenyListRendering>,
    clock: Arc<ManualClock>,
}

async fn fixture() -> Fixture {
    let sdk = localstack_sdk_config().await;
    let iam = aws_sdk_iam::Client::new(&sdk);
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique_name("credbroker-revocation");
    create_table(&dynamo, &table).await.expect("create table");
    let role_name = unique_name("credbroker-test-role");
    let role_arn = create_test_role(&iam, &role_name).await;
    // Whole seconds in the future, so leases built from it look like real ones.
    let clock =
        Arc::new(ManualClock::new(Utc.timestamp_opt(Utc::now().timestamp(), 0).single().expect("now")));
    let store: Arc<dyn DenyListRendering> = Arc::new(DynamoLeaseStore::new(dynamo.clone(), table.clone()));
    Fixture { iam, dynamo, table, role_name, role_arn, store, clock }
}

impl Fixture {
    fn revoker(&self, owner: &str) -> StsSessionRevoker {
        let clock: Arc<dyn Clock> = self.clock.clone();
        let iam = Arc::new(IamRolePolicies::new(self.iam.clone()));
        StsSessionRevoker::new(iam, Arc::clone(&self.store), clock, owner)
    }

    fn lease(&self, expires_in: TimeDelta) -> Lease {
        let now = self.clock.now();
        let id = LeaseId::generate(now).expect("id");
        Lease {
            backend: BackendRef::AwsSession { role_arn: self.role_arn.clone(), session_name: id.to_string() },
            id,
            status: LeaseStatus::Revoking,
            policy: "p".into(),
            grant: "g".into(),
            holder: LeaseHolder { issuer: "https://i".into(), subject: "s".into() },
            created_at: now,
            issued_at: Some(now),
            expires_at: now + expires_in,
            max_expires_at: now + expires_in,
            next_action_at: now,
            attempts: 0,
            last_error: None,
            owner: None,
            version: 1,
            gc_at: now + TimeDelta::days(30),
        }
    }

    async fn policy_sessions(&self) -> Option<Vec<String>> {
        denied_sessions(&self.iam, &self.role_name).await.map(|d| d.sessions)
    }

    async fn cleanup(self) {
        let _ = self
            .iam
            .delete_role_policy()
            .role_name(&self.role_name)
            .policy_name(DENY_POLICY_NAME)
            .send()
            .await;
        let _ = self.iam.delete_role().role_name(&self.role_name).send().await;
        let _ = self.dynamo.delete_table().table_name(&self.table).send().await;
    }
}

#[tokio::test]
async fn deny_policy_holds_exactly_the_unexpired_revoked_sessions() {
    let f = fixture().await;
    let revoker = f.revoker("test");
    let short = f.lease(TimeDelta::minutes(20));
    let long = f.lease(TimeDelta::hours(3));
    let already_expired = f.lease(TimeDelta::minutes(-1));
    for lease in [&short, &long, &already_expired] {
        revoker.revoke(lease.issued()).await.expect("revoke");
    }
    // Idempotent: revoking again changes nothing.
    revoker.revoke(short.issued()).await.expect("revoke again");
    let mut expected = vec![short.id.to_string(), long.id.to_string()];
    expected.sort();
    assert_eq!(f.policy_sessions().await, Some(expected), "an expired session needs no deny entry");

    // Two hours later the short session has expired: the next write prunes it.
    f.clock.advance(TimeDelta::hours(2));
    let later = f.lease(TimeDelta::minutes(30));
    revoker.revoke(later.issued()).await.expect("revoke");
    let mut expected = vec![long.id.to_string(), later.id.to_string()];
    expected.sort();
    assert_eq!(f.policy_sessions().await, Some(expected));
    f.cleanup().await;
}

#[tokio::test]
async fn concurrent_revokers_never_lose_an_entry() {
    let f = fixture().await;
    let leases: Vec<Lease> = (0..12).map(|_| f.lease(TimeDelta::hours(1))).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, lease) in leases.iter().cloned().enumerate() {
        let revoker = f.revoker(&format!("revoker-{}", i % 3));
        tasks.spawn(async move { revoker.revoke(lease.issued()).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("revoke");
    }
    let mut expected: Vec<String> = leases.iter().map(|l| l.id.to_string()).collect();
    expected.sort();
    assert_eq!(f.policy_sessions().await, Some(expected), "the stored list is complete and IAM holds it");
    f.cleanup().await;
}

#[tokio::test]
async fn overflow_falls_back_to_a_role_cutoff_and_admin_cutoff_works() {
    let f = fixture().await;
    let revoker = f.revoker("test").with_max_policy_chars(400);
    for _ in 0..12 {
        revoker.revoke(f.lease(TimeDelta::hours(1)).issued()).await.expect("revoke");
    }
    let denied = denied_sessions(&f.iam, &f.role_name).await.expect("policy");
    assert!(denied.cutoff.is_some(), "overflow becomes a cut-off on aws:TokenIssueTime");
    assert!(denied.sessions.len() < 12, "the entries the cut-off covers were dropped");
    let document = f.iam.get_role_policy().role_name(&f.role_name).policy_name(DENY_POLICY_NAME).send().await;
    let document = credbroker_tests::percent_decode(&document.expect("policy").policy_document);
    assert!(document.len() <= 400, "{} characters: {document}", document.len());

    let before = f.clock.now() + TimeDelta::minutes(5);
    let stored = f.revoker("admin").cut_off(&f.role_arn, before).await.expect("cut-off");
    assert_eq!(stored.list.cutoff, Some(before));
    // Twelve hours after the cut-off no live session can predate it: the next write drops it.
    f.clock.advance(TimeDelta::hours(13));
    let fresh = f.lease(TimeDelta::minutes(30));
    f.revoker("test").revoke(fresh.issued()).await.expect("revoke");
    let key = RoleRef::parse(&f.role_arn).expect("role").key();
    let after = f.store.deny_list(&key).await.expect("read").expect("the list");
    assert_eq!(after.list.cutoff, None);
    assert_eq!(after.list.sessions().into_iter().collect::<Vec<_>>(), vec![fresh.id.as_str()]);
    let denied = denied_sessions(&f.iam, &f.role_name).await.expect("policy");
    assert_eq!((denied.sessions, denied.cutoff), (vec![fresh.id.to_string()], None), "IAM follows the list");
    f.cleanup().await;
}
