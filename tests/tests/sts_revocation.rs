//! STS session revocation against LocalStack IAM: the role's deny policy holds exactly the
//! revoked leases whose sessions have not expired, stays consistent under concurrent writers
//! (DynamoDB lock), and falls back to a whole-role cut-off when it would overflow.

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use credbroker::clock::{Clock, ManualClock};
use credbroker::issuer::CredentialRevoker;
use credbroker::issuer::aws_revocation::{
    DENY_POLICY_NAME, DenyList, StsSessionRevoker, decode_policy_document,
};
use credbroker::lease::{BackendRef, Lease, LeaseHolder, LeaseId, LeaseStatus, LeaseStore};
use credbroker::store::dynamodb::{DynamoLeaseStore, create_table};
use credbroker_tests::{create_test_role, localstack_sdk_config, unique_name};

struct Fixture {
    iam: aws_sdk_iam::Client,
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    role_name: String,
    role_arn: String,
    store: Arc<dyn LeaseStore>,
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
    let store: Arc<dyn LeaseStore> = Arc::new(DynamoLeaseStore::new(dynamo.clone(), table.clone()));
    Fixture { iam, dynamo, table, role_name, role_arn, store, clock }
}

impl Fixture {
    fn revoker(&self, owner: &str) -> StsSessionRevoker {
        let clock: Arc<dyn Clock> = self.clock.clone();
        StsSessionRevoker::new(self.iam.clone(), Arc::clone(&self.store), clock, owner)
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
        let output = self
            .iam
            .get_role_policy()
            .role_name(&self.role_name)
            .policy_name(DENY_POLICY_NAME)
            .send()
            .await
            .ok()?;
        let document: serde_json::Value =
            serde_json::from_str(&decode_policy_document(&output.policy_document)).expect("policy JSON");
        let list = DenyList::from_policy(&document).expect("our policy");
        Some(list.sessions().into_iter().map(str::to_owned).collect())
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
        revoker.revoke(lease).await.expect("revoke");
    }
    // Idempotent: revoking again changes nothing.
    revoker.revoke(&short).await.expect("revoke again");
    let mut expected = vec![short.id.to_string(), long.id.to_string()];
    expected.sort();
    assert_eq!(f.policy_sessions().await, Some(expected), "an expired session needs no deny entry");

    // Two hours later the short session has expired: the next write prunes it.
    f.clock.advance(TimeDelta::hours(2));
    let later = f.lease(TimeDelta::minutes(30));
    revoker.revoke(&later).await.expect("revoke");
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
        tasks.spawn(async move { revoker.revoke(&lease).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("revoke");
    }
    let mut expected: Vec<String> = leases.iter().map(|l| l.id.to_string()).collect();
    expected.sort();
    assert_eq!(f.policy_sessions().await, Some(expected), "the role lock serialises read-modify-write");
    f.cleanup().await;
}

#[tokio::test]
async fn overflow_falls_back_to_a_role_cutoff_and_admin_cutoff_works() {
    let f = fixture().await;
    let revoker = f.revoker("test").with_max_policy_chars(400);
    for _ in 0..12 {
        revoker.revoke(&f.lease(TimeDelta::hours(1))).await.expect("revoke");
    }
    let output = f
        .iam
        .get_role_policy()
        .role_name(&f.role_name)
        .policy_name(DENY_POLICY_NAME)
        .send()
        .await
        .expect("policy");
    let document = decode_policy_document(&output.policy_document);
    let list = DenyList::from_policy(&serde_json::from_str(&document).expect("json")).expect("ours");
    assert!(list.cutoff.is_some(), "overflow becomes a cut-off on aws:TokenIssueTime");
    assert!(list.sessions().len() < 12, "the entries the cut-off covers were dropped");
    assert!(document.len() <= 400);

    let before = f.clock.now() + TimeDelta::minutes(5);
    let list = f.revoker("admin").cut_off(&f.role_arn, before).await.expect("cut-off");
    assert_eq!(list.cutoff, Some(before));
    // Twelve hours after the cut-off no live session can predate it: the next write drops it.
    f.clock.advance(TimeDelta::hours(13));
    let fresh = f.lease(TimeDelta::minutes(30));
    f.revoker("test").revoke(&fresh).await.expect("revoke");
    let after = f.revoker("test").deny_list(&f.role_arn).await.expect("read");
    assert_eq!(after.cutoff, None);
    assert_eq!(after.sessions().into_iter().collect::<Vec<_>>(), vec![fresh.id.as_str()]);
    f.cleanup().await;
}
