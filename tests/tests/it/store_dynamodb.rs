//! The DynamoDB lease store against DynamoDB Local inside LocalStack.
//!
//! Needs LocalStack at `CREDBROKER_TEST_AWS_ENDPOINT` (default `http://127.0.0.1:4566`);
//! `scripts/test.sh` (or `scripts/localstack.sh start`) provides it. When it is not reachable
//! the tests fail — they never skip silently. Each test creates its own table (random suffix)
//! and deletes it at the end, also when the test fails.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ProjectionType,
    ScalarAttributeType, TimeToLiveStatus,
};
use chrono::{TimeDelta, Utc};
use credbroker::clock::ManualClock;
use credbroker::denylist::{DenyList, DenyListRendering, DenyListStore};
use credbroker::lease::{
    Claim, DueLeases, LeaseId, LeaseStatus, LeaseStore, LiveFilter, RevokeFailure, StoreError,
};
use credbroker::store::conformance;
use credbroker::store::dynamodb::{
    self, DUE_INDEX, DynamoLeaseStore, IDENTITY_INDEX, TTL_ATTRIBUTE, holder_key, jti_key, lock_key, shard_of,
};

/// A DynamoDB client for LocalStack (the shared harness checks LocalStack answers); fails the
/// test when DynamoDB itself does not.
async fn client() -> Client {
    let endpoint = credbroker_tests::aws_endpoint();
    let client = Client::new(&credbroker_tests::localstack_sdk_config().await);
    match tokio::time::timeout(Duration::from_secs(15), client.list_tables().limit(1).send()).await {
        Ok(Ok(_)) => client,
        Ok(Err(err)) => panic!(
            "LocalStack not reachable at {endpoint} (DynamoDB ListTables: {}): run scripts/test.sh",
            DisplayErrorContext(&err)
        ),
        Err(elapsed) => {
            panic!("LocalStack not reachable at {endpoint} ({elapsed} after 15 s): run scripts/test.sh")
        }
    }
}

/// Table names: `credbroker-test-<tag>-<12 random hex digits>`.
fn unique_table(tag: &str) -> String {
    credbroker_tests::unique_name(&format!("credbroker-test-{tag}"))
}

/// Creates a fresh lease table, runs `body` on it, and deletes the table whatever happened.
async fn with_table<F, Fut>(tag: &str, body: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let client = client().await;
    let table = unique_table(tag);
    let started = Instant::now();
    dynamodb::create_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("create_table({table}) failed: {e}"));
    eprintln!("[{tag}] create_table {table}: {:?}", started.elapsed());

    // Run the body as its own task so a panic in it still lets us delete the table.
    let outcome = tokio::spawn(body(client.clone(), table.clone())).await;
    if let Err(err) = client.delete_table().table_name(&table).send().await {
        eprintln!("[{tag}] could not delete table {table}: {}", DisplayErrorContext(&err));
    }
    if let Err(err) = outcome {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
        panic!("[{tag}] test body did not finish: {err}");
    }
}

/// The shared conformance suite, twice at once on one table (8 shards and 3 shards), plus the
/// checks on a store clock the test controls, all at once: checks must not depend on an empty
/// table, and a store reading fewer partitions still sees its own leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_passes_on_dynamodb() {
    with_table("conformance", |client, table| async move {
        let default = Arc::new(DynamoLeaseStore::new(client.clone(), &table));
        let three = Arc::new(DynamoLeaseStore::new(client.clone(), &table).with_shards(3));
        let clock = Arc::new(ManualClock::new(conformance::now()));
        let clocked = Arc::new(DynamoLeaseStore::new(client, &table).with_clock(clock.clone()));
        let started = Instant::now();
        tokio::join!(
            conformance::run_all(default.clone()),
            conformance::run_all(three),
            conformance::run_deny_lists(default),
            conformance::run_clocked(clocked.clone(), clock.clone()),
        );
        // Both clocked suites move the same clock: one after the other.
        conformance::run_deny_lists_clocked(clocked, clock).await;
        eprintln!(
            "[conformance] lease and deny-list suites at once, then the clocked ones: {:?}",
            started.elapsed()
        );
    })
    .await;
}

fn key_schema(elements: &[KeySchemaElement]) -> Vec<(&str, KeyType)> {
    elements.iter().map(|k| (k.attribute_name(), k.key_type().clone())).collect()
}

/// The table `create_table` makes is the one the templates describe: on-demand, `pk` hash key,
/// GSIs `due` and `identity` (projection ALL), TTL on `ttl`. A second call is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_has_both_gsis_and_ttl_enabled() {
    with_table("schema", |client, table| async move {
        let started = Instant::now();
        dynamodb::create_table(&client, &table)
            .await
            .unwrap_or_else(|e| panic!("second create_table must be a no-op: {e}"));
        eprintln!("[schema] idempotent create_table: {:?}", started.elapsed());

        let described = client.describe_table().table_name(&table).send().await.expect("describe");
        let t = described.table().expect("table description");
        assert_eq!(
            t.billing_mode_summary().and_then(|b| b.billing_mode()),
            Some(&BillingMode::PayPerRequest),
            "on-demand billing"
        );
        assert_eq!(key_schema(t.key_schema()), [("pk", KeyType::Hash)]);
        let mut definitions: Vec<(&str, ScalarAttributeType)> = t
            .attribute_definitions()
            .iter()
            .map(|d| (d.attribute_name(), d.attribute_type().clone()))
            .collect();
        definitions.sort_by_key(|d| d.0);
        assert_eq!(
            definitions,
            [
                ("created_sk", ScalarAttributeType::S),
                ("due_at", ScalarAttributeType::N),
                ("due_pk", ScalarAttributeType::S),
                ("holder", ScalarAttributeType::S),
                ("pk", ScalarAttributeType::S),
            ]
        );
        let gsis = t.global_secondary_indexes();
        assert_eq!(gsis.len(), 2, "exactly two GSIs: {gsis:?}");
        for (name, hash, range) in [(DUE_INDEX, "due_pk", "due_at"), (IDENTITY_INDEX, "holder", "created_sk")]
        {
            let gsi = gsis
                .iter()
                .find(|g| g.index_name() == Some(name))
                .unwrap_or_else(|| panic!("GSI {name} missing: {gsis:?}"));
            assert_eq!(
                key_schema(gsi.key_schema()),
                [(hash, KeyType::Hash), (range, KeyType::Range)],
                "GSI {name} keys"
            );
            assert_eq!(
                gsi.projection().and_then(|p| p.projection_type()),
                Some(&ProjectionType::All),
                "GSI {name} projection"
            );
        }

        let ttl = client.describe_time_to_live().table_name(&table).send().await.expect("ttl");
        let ttl = ttl.time_to_live_description().expect("TTL description");
        assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled), "TTL enabled");
        assert_eq!(ttl.attribute_name(), Some(TTL_ATTRIBUTE), "TTL attribute");
    })
    .await;
}

/// `create_table` refuses an existing table of another layout instead of accepting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_table_rejects_a_foreign_table() {
    let client = client().await;
    let table = unique_table("foreign");
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("definition"),
        )
        .key_schema(
            KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().expect("key"),
        )
        .send()
        .await
        .expect("create foreign table");
    let result = dynamodb::create_table(&client, &table).await;
    let _ = client.delete_table().table_name(&table).send().await;
    match result {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("another layout"), "{msg}"),
        other => panic!("create_table on a foreign table: expected an error, got {other:?}"),
    }
}

/// The item layout the templates and operators rely on, read back raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_have_the_documented_layout() {
    with_table("layout", |client, table| async move {
        let store = DynamoLeaseStore::new(client.clone(), &table);
        let now = conformance::now();
        let holder = conformance::unique_holder("layout");
        let lease = conformance::sample_lease(now, &holder);
        store.create_pending(&lease).await.expect("create");
        let raw = |pk: String| {
            let (client, table) = (client.clone(), table.clone());
            async move { raw_item(&client, &table, pk).await.expect("item exists") }
        };

        let item = raw(format!("lease#{}", lease.id)).await;
        let shard = shard_of(&lease.id, 8);
        assert_eq!(s(&item["status"]), "PENDING");
        assert_eq!(s(&item["due_pk"]), format!("PENDING#{shard}"));
        assert_eq!(n(&item["due_at"]), lease.next_action_at.timestamp());
        assert_eq!(n(&item["next_action_at"]), lease.next_action_at.timestamp());
        assert_eq!(n(&item["ttl"]), lease.gc_at.timestamp());
        assert_eq!(n(&item["version"]), 0);
        assert_eq!(s(&item["holder"]), holder_key(&holder));
        assert!(s(&item["holder"]).starts_with(&format!("{}#", holder.issuer.len())));
        assert_eq!(s(&item["created_sk"]), format!("{:012}#{}", lease.created_at.timestamp(), lease.id));
        assert_eq!(s(&item["iss"]), holder.issuer);
        assert_eq!(s(&item["sub"]), holder.subject);
        assert!(s(&item["backend"]).contains("\"kind\":\"aws_session\""));
        assert!(!item.contains_key("issued_at") && !item.contains_key("last_error"));

        let activation = credbroker::lease::Activation {
            issued_at: now,
            expires_at: now + TimeDelta::minutes(30),
            gc_at: now + TimeDelta::days(2),
        };
        store.activate(&lease.id, 0, activation.clone()).await.expect("activate");
        let item = raw(format!("lease#{}", lease.id)).await;
        assert_eq!(s(&item["status"]), "ACTIVE");
        assert_eq!(s(&item["due_pk"]), format!("ACTIVE#{shard}"), "same shard after a transition");
        assert_eq!(n(&item["due_at"]), activation.expires_at.timestamp());
        assert_eq!(n(&item["ttl"]), activation.gc_at.timestamp());
        assert_eq!(n(&item["version"]), 1);
        assert!(!item.contains_key("owner"), "no owner before a claim");

        let exp = now + TimeDelta::minutes(5);
        store.record_jti("https://iss.example", "abc", exp).await.expect("jti");
        let item = raw(jti_key("https://iss.example", "abc")).await;
        assert_eq!(n(&item["ttl"]), exp.timestamp());
        assert_eq!(s(&item["iss"]), "https://iss.example");
        assert_eq!(s(&item["jti"]), "abc");
        assert!(!item.contains_key("due_pk") && !item.contains_key("holder"));
    })
    .await;
}

/// One item, read back raw (strongly consistent); `None` when absent.
async fn raw_item(client: &Client, table: &str, pk: String) -> Option<HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk))
        .consistent_read(true)
        .send()
        .await
        .expect("get_item")
        .item
}

fn s(v: &AttributeValue) -> String {
    v.as_s().expect("S").clone()
}

fn n(v: &AttributeValue) -> i64 {
    v.as_n().expect("N").parse::<i64>().expect("number")
}

/// The revoker's transitions keep the documented layout: `owner` only while claimed, the
/// `due` partition following the status, REVOKED out of `due` but still in `identity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_items_have_the_documented_layout() {
    with_table("lifecycle-layout", |client, table| async move {
        let store = DynamoLeaseStore::new(client.clone(), &table);
        let now = conformance::now();
        let lease = conformance::sample_lease(now, &conformance::unique_holder("lifecycle-layout"));
        store.create_pending(&lease).await.expect("create");
        let shard = shard_of(&lease.id, 8);
        let pk = format!("lease#{}", lease.id);
        let raw = || raw_item(&client, &table, pk.clone());
        let activation = credbroker::lease::Activation {
            issued_at: now,
            expires_at: now + TimeDelta::minutes(30),
            gc_at: now + TimeDelta::days(2),
        };
        store.activate(&lease.id, 0, activation).await.expect("activate");

        let deadline = now + TimeDelta::minutes(5);
        let claimed = store
            .claim_for_revocation(&lease.id, 1, Claim { owner: "revoker-1".into(), deadline })
            .await
            .expect("claim");
        let item = raw().await.expect("lease item");
        assert_eq!(s(&item["status"]), "REVOKING");
        assert_eq!(s(&item["owner"]), "revoker-1");
        assert_eq!(s(&item["due_pk"]), format!("REVOKING#{shard}"));
        assert_eq!(n(&item["due_at"]), deadline.timestamp());
        assert_eq!(n(&item["next_action_at"]), deadline.timestamp());
        assert_eq!(n(&item["version"]), 2);

        let retry_at = now + TimeDelta::hours(24);
        let failure = RevokeFailure {
            error: "backend down".into(),
            retry_at,
            irrevocable: true,
            gc_at: now + TimeDelta::days(40),
        };
        store.record_revoke_failure(&lease.id, claimed.version, failure).await.expect("failure");
        let item = raw().await.expect("lease item");
        assert_eq!(s(&item["status"]), "IRREVOCABLE");
        assert!(!item.contains_key("owner"), "owner removed with the claim");
        assert_eq!(s(&item["due_pk"]), format!("IRREVOCABLE#{shard}"));
        assert_eq!(n(&item["due_at"]), retry_at.timestamp());
        assert_eq!(n(&item["attempts"]), 1);
        assert_eq!(s(&item["last_error"]), "backend down");
        assert_eq!(n(&item["ttl"]), (now + TimeDelta::days(40)).timestamp());

        let reclaimed = store
            .claim_for_revocation(&lease.id, 3, Claim { owner: "revoker-2".into(), deadline })
            .await
            .expect("claim an irrevocable lease");
        let revoked_at = now + TimeDelta::minutes(1);
        store.mark_revoked(&lease.id, reclaimed.version, revoked_at, Some("forced")).await.expect("revoked");
        let item = raw().await.expect("lease item");
        assert_eq!(s(&item["status"]), "REVOKED");
        for gone in ["owner", "due_pk", "due_at"] {
            assert!(!item.contains_key(gone), "{gone} removed on REVOKED: {item:?}");
        }
        assert_eq!(n(&item["next_action_at"]), revoked_at.timestamp());
        assert_eq!(s(&item["last_error"]), "forced");
        assert_eq!(n(&item["version"]), 5);
        assert_eq!(n(&item["ttl"]), (now + TimeDelta::days(40)).timestamp(), "ttl kept on REVOKED");
        assert!(item.contains_key("holder") && item.contains_key("created_sk"), "history stays in identity");
    })
    .await;
}

/// Deny-list items: `denylist#<role key>`, the list as JSON, version and rendered version; in the
/// `due` index under `DENYLIST` exactly while IAM is behind, where `pending_deny_lists` finds
/// them; a lease sweep (`list_due`) never sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_list_items_have_the_documented_layout() {
    with_table("deny-list-layout", |client, table| async move {
        let store = DynamoLeaseStore::new(client.clone(), &table).with_shards(1);
        let mut list = DenyList::default();
        list.add("01AAAAAAAAAAAAAAAAAAAAAAAA", conformance::now() + TimeDelta::minutes(30));
        let role = "aws:123456789012:deploy";
        store.put_deny_list(role, None, &list).await.expect("create");
        let item = raw_item(&client, &table, format!("denylist#{role}")).await.expect("deny-list item");
        assert_eq!(s(&item["role"]), role);
        assert_eq!(serde_json::from_str::<DenyList>(&s(&item["list"])).expect("list JSON"), list);
        assert_eq!((n(&item["version"]), n(&item["rendered"])), (1, 0));
        assert_eq!(s(&item["due_pk"]), "DENYLIST", "pending: in the due index");
        assert!(n(&item["ttl"]) > conformance::now().timestamp() + 86_400, "kept past every session");
        let pending = store.pending_deny_lists(10).await.expect("pending");
        assert_eq!(pending.iter().map(|p| p.role.as_str()).collect::<Vec<_>>(), vec![role]);
        assert!(
            store
                .list_due(conformance::now() + TimeDelta::days(1), 100)
                .await
                .expect("due")
                .leases
                .is_empty()
        );
        assert!(store.mark_deny_list_rendered(role, 1).await.expect("mark"));
        let item = raw_item(&client, &table, format!("denylist#{role}")).await.expect("deny-list item");
        assert_eq!(n(&item["rendered"]), 1);
        assert!(!item.contains_key("due_pk") && !item.contains_key("due_at"), "rendered: out of the index");
        assert!(store.pending_deny_lists(10).await.expect("pending").is_empty());
    })
    .await;
}

/// Lock items: `lock#<name>`, owner, until, a TTL a day later, in no GSI; unlock deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_items_have_the_documented_layout() {
    with_table("lock-layout", |client, table| async move {
        let store = DynamoLeaseStore::new(client.clone(), &table);
        let now = conformance::now();
        let until = now + TimeDelta::minutes(2);
        assert!(store.try_lock("deny-policy/role-a", "writer-1", until).await.expect("lock"));
        let item = raw_item(&client, &table, lock_key("deny-policy/role-a")).await.expect("lock item");
        assert_eq!(s(&item["pk"]), "lock#deny-policy/role-a");
        assert_eq!(s(&item["name"]), "deny-policy/role-a");
        assert_eq!(s(&item["owner"]), "writer-1");
        assert_eq!(n(&item["until"]), until.timestamp());
        assert_eq!(n(&item["ttl"]), (until + TimeDelta::days(1)).timestamp());
        assert!(!item.contains_key("due_pk") && !item.contains_key("holder"), "locks are in no GSI");
        assert!(lock_key(&"n".repeat(2000)).starts_with("lock#sha256#"));
        store.unlock("deny-policy/role-a", "writer-1").await.expect("unlock");
        let gone = raw_item(&client, &table, lock_key("deny-policy/role-a")).await;
        assert!(gone.is_none(), "unlock deletes the lock item");
    })
    .await;
}

/// `list_due` (and `list_live` without a holder) read the sparse `due` index, not the table: a
/// lease item without `due_pk` is invisible to them however overdue, and a malformed item in the index is reported as corrupt
/// instead of panicking or being skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_due_reads_only_the_due_index_and_passes_over_unreadable_records() {
    with_table("due-index", |client, table| async move {
        let store = DynamoLeaseStore::new(client.clone(), &table).with_shards(1);
        let base = chrono::DateTime::from_timestamp(1_000_000_000, 0).expect("time");
        let holder = conformance::unique_holder("due-index");
        let mut hidden = conformance::sample_lease(base, &holder);
        hidden.next_action_at = base;
        // Keep TTL in the future: LocalStack may be told to delete expired items.
        hidden.gc_at = conformance::now() + TimeDelta::days(1);
        store.create_pending(&hidden).await.expect("create");
        // Strip the index attributes, as a terminal lease would have them.
        client
            .update_item()
            .table_name(&table)
            .key("pk", AttributeValue::S(format!("lease#{}", hidden.id)))
            .update_expression("REMOVE due_pk, due_at")
            .send()
            .await
            .expect("remove index keys");
        let due = store.list_due(base + TimeDelta::days(1), 100).await.expect("list_due").leases;
        assert!(due.iter().all(|l| l.id != hidden.id), "lease without due_pk was listed");
        let live = store.list_live(&LiveFilter::default(), 100).await.expect("list_live");
        assert!(live.iter().all(|l| l.id != hidden.id), "list_live must read the due index, not scan");
        assert_eq!(store.get(&hidden.id).await.expect("get").map(|l| l.status), Some(LeaseStatus::Pending));

        let visible = {
            let mut lease = conformance::sample_lease(base, &holder);
            lease.next_action_at = base;
            lease.gc_at = conformance::now() + TimeDelta::days(1);
            store.create_pending(&lease).await.expect("create");
            lease
        };
        let due = store.list_due(base + TimeDelta::days(1), 100).await.expect("list_due").leases;
        assert_eq!(due.iter().map(|l| &l.id).collect::<Vec<_>>(), [&visible.id]);
        let live = store.list_live(&LiveFilter::default(), 100).await.expect("list_live");
        assert_eq!(live.iter().map(|l| &l.id).collect::<Vec<_>>(), [&visible.id], "list_live sees it");

        client
            .update_item()
            .table_name(&table)
            .key("pk", AttributeValue::S(format!("lease#{}", visible.id)))
            .update_expression("REMOVE version")
            .send()
            .await
            .expect("corrupt the item");
        // One record this version cannot read (a newer version's, or damaged) must not stop
        // every other revocation: it is passed over and reported, and the leases due after it
        // are still listed; `limit` counts only leases.
        let behind = {
            let mut lease = conformance::sample_lease(base, &holder);
            lease.next_action_at = base + TimeDelta::seconds(5);
            lease.gc_at = conformance::now() + TimeDelta::days(1);
            store.create_pending(&lease).await.expect("create");
            lease
        };
        for limit in [1, 100] {
            let due = store
                .list_due(base + TimeDelta::days(1), limit)
                .await
                .expect("an unreadable record does not fail list_due");
            assert_eq!(due.leases.iter().map(|l| &l.id).collect::<Vec<_>>(), [&behind.id], "limit {limit}");
            assert_eq!(due.unreadable.len(), 1, "limit {limit}: {:?}", due.unreadable);
            assert_eq!(due.unreadable[0].key, format!("lease#{}", visible.id));
            assert!(due.unreadable[0].detail.contains("version"), "{:?}", due.unreadable[0]);
        }
    })
    .await;
}

/// A missing table is `Unavailable` (with the table named), not a panic or `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_is_unavailable() {
    let client = client().await;
    let table = unique_table("missing");
    let store = DynamoLeaseStore::new(client, &table);
    let id = LeaseId::generate(Utc::now()).expect("id");
    match store.get(&id).await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains(&table), "{msg}"),
        other => panic!("get on a missing table: expected Unavailable, got {other:?}"),
    }
}
