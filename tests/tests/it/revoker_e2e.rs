//! The real revoker `bootstrap` under the Lambda runtime-API emulator, fed EventBridge
//! scheduled events, against leases in LocalStack DynamoDB and a role in LocalStack IAM.

use chrono::{TimeDelta, Utc};
use credbroker::backend::BackendRef;
use credbroker::denylist::DENY_POLICY_NAME;
use credbroker::lease::{Activation, Lease, LeaseHolder, LeaseId, LeaseStatus, LeaseStore};
use credbroker::store::dynamodb::{DynamoLeaseStore, create_table};
use credbroker_tests::lambda::{Outcome, RuntimeApi, scheduled_event};
use credbroker_tests::{aws_endpoint, create_test_role, localstack_sdk_config, unique_name};

async fn expired_lease(store: &DynamoLeaseStore, backend: BackendRef, expired_ago: TimeDelta) -> Lease {
    let now = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let created = now - TimeDelta::hours(1);
    let lease = Lease {
        id: LeaseId::generate(created).expect("id"),
        status: LeaseStatus::Pending,
        policy: "p".into(),
        grant: "g".into(),
        holder: LeaseHolder { issuer: "https://issuer.test".into(), subject: "revoker-e2e".into() },
        backend,
        created_at: created,
        issued_at: None,
        expires_at: now - expired_ago,
        max_expires_at: now + TimeDelta::hours(1),
        next_action_at: created + TimeDelta::minutes(5),
        attempts: 0,
        last_error: None,
        owner: None,
        version: 0,
        gc_at: now + TimeDelta::days(30),
    };
    store.create_pending(&lease).await.expect("create");
    let activation =
        Activation { issued_at: created, expires_at: now - expired_ago, gc_at: now + TimeDelta::days(30) };
    store.activate(&lease.id, 0, activation).await.expect("activate")
}

#[tokio::test]
async fn scheduled_revoker_ends_due_leases_once_even_when_delivered_twice() {
    let sdk = localstack_sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let iam = aws_sdk_iam::Client::new(&sdk);
    let table = unique_name("credbroker-revoker");
    create_table(&dynamo, &table).await.expect("create table");
    let role_name = unique_name("credbroker-revoker-role");
    let role_arn = create_test_role(&iam, &role_name).await;
    let store = DynamoLeaseStore::new(dynamo.clone(), table.clone());

    // 40 expired signed-token leases, and one AWS session that ended a second ago... and one
    // whose session would still be valid for an hour (revoked by the lease API, say).
    let mut leases = Vec::new();
    for _ in 0..40 {
        let backend = BackendRef::SignedToken { audience: "a".into(), key_id: "k".into() };
        leases.push(expired_lease(&store, backend, TimeDelta::seconds(1)).await);
    }
    let session =
        |name: &str| BackendRef::AwsSession { role_arn: role_arn.clone(), session_name: name.to_owned() };
    let expired_session = expired_lease(&store, session("placeholder"), TimeDelta::seconds(1)).await;
    leases.push(expired_session);

    let env = |name: &str| {
        vec![
            ("CREDBROKER_TABLE", table.clone()),
            ("CREDBROKER_AWS_ENDPOINT_URL", aws_endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ]
    };
    let (api_a, api_b) = (RuntimeApi::start().await, RuntimeApi::start().await);
    let env_a = env("revoker");
    let env_b = env("revoker");
    let as_refs =
        |env: &[(&'static str, String)]| env.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let process_a = api_a.spawn_function("revoker", &as_refs(&env_a));
    let process_b = api_b.spawn_function("revoker", &as_refs(&env_b));

    // The same scheduled event delivered twice, to two concurrent instances.
    let event = scheduled_event();
    let (a, b) = tokio::join!(api_a.invoke(event.clone()), api_b.invoke(event));
    let report = |outcome: Outcome| match outcome {
        Outcome::Response(report) => report,
        Outcome::Error(e) => panic!("revoker invocation failed: {e}"),
    };
    let (a, b) = (report(a), report(b));
    let revoked = a["revoked"].as_u64().expect("revoked") + b["revoked"].as_u64().expect("revoked");
    assert_eq!(revoked, 41, "every due lease revoked exactly once: {a} {b}");
    assert_eq!(a["failed"].as_u64().unwrap_or(0) + b["failed"].as_u64().unwrap_or(0), 0, "{a} {b}");

    for lease in &leases {
        let stored = store.get(&lease.id).await.expect("get").expect("lease");
        assert_eq!(stored.status, LeaseStatus::Revoked, "{}", lease.id);
    }
    // An expired session needs no deny entry.
    if let Some(denied) = credbroker_tests::denied_sessions(&iam, &role_name).await {
        assert!(denied.sessions.is_empty(), "{denied:?}");
    }

    // The next tick finds nothing; the logs carry the EMF metrics and one audit event per lease.
    let again = report(api_a.invoke(scheduled_event()).await);
    assert_eq!(again["examined"], 0, "{again}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let audit_revoked: usize = [&process_a, &process_b]
        .iter()
        .map(|p| p.audit_events().iter().filter(|e| e["reason"] == "revoked").count())
        .sum();
    assert_eq!(audit_revoked, 41);
    let emf =
        process_a.lines().into_iter().chain(process_b.lines()).filter(|l| l.contains("\"_aws\"")).count();
    assert!(emf >= 2, "one EMF metrics line per sweep");

    let _ = iam.delete_role_policy().role_name(&role_name).policy_name(DENY_POLICY_NAME).send().await;
    let _ = iam.delete_role().role_name(&role_name).send().await;
    dynamo.delete_table().table_name(&table).send().await.expect("delete table");
}
