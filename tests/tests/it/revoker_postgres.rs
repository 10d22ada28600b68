//! The lease lifecycle's promise on real components: 1,000 database users whose leases expire
//! at once (leases in LocalStack DynamoDB, users in the real PostgreSQL) are all ended by the
//! revoker — two revokers at once plus a duplicated delivery — with no user left in `pg_roles`
//! and no lease revoked twice.

use std::sync::Arc;
use std::time::Duration;

use credbroker::audit::MemoryAuditSink;
use credbroker::backend::Revokers;
use credbroker::clock::SystemClock;
use credbroker::issuer::db::DatabaseIssuer;
use credbroker::lease::{LeaseStatus, LeaseStore};
use credbroker::metrics::MemoryMetrics;
use credbroker::revoker::{Revoker, RevokerPorts, RevokerSettings};
use credbroker::secrets::StaticSecret;
use credbroker::store::dynamodb::{DynamoLeaseStore, create_table};
use credbroker_tests::db::{Cleanup, DbBroker, PG_AUTH_DATABASE, pg_admin, pg_config, prefix};
use credbroker_tests::{localstack_sdk_config, unique_name};

const LEASES: usize = 1000;

async fn roles_with_prefix(p: &str) -> i64 {
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1")
        .bind(format!("{p}%"))
        .fetch_one(&mut admin)
        .await
        .expect("count roles")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_expired_database_leases_end_with_no_user_left() {
    let sdk = localstack_sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique_name("credbroker-revoke-pg");
    create_table(&dynamo, &table).await.expect("create table");
    let store = Arc::new(DynamoLeaseStore::new(dynamo.clone(), table.clone()));
    let leases: Arc<dyn LeaseStore> = store.clone();

    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    // Low SCRAM iterations: these passwords are random, and the test is about revocation.
    let db = Arc::new(DatabaseIssuer::new().with_connection(
        "main",
        pg_config("scram_iterations = 1\npool_size = 8"),
        Arc::new(StaticSecret::empty()),
    ));
    let policy = format!(
        r#"
[ttl]
default = "3s"
max = "1h"

[grants.worker]
type = "database"
engine = "postgres"
connection = "main"
database = "{PG_AUTH_DATABASE}"
username = "{p}_{{{{random}}}}"
"#
    );
    let broker = DbBroker::with_parts(&policy, db.clone(), Arc::clone(&leases), db.clone());

    // Mint concurrently (8 at a time) so the leases expire together.
    let broker = Arc::new(broker);
    let mut minted = Vec::with_capacity(LEASES);
    for chunk in 0..LEASES / 8 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let broker = Arc::clone(&broker);
            tasks.spawn(async move { broker.mint("worker", &format!("worker-{chunk}-{i}")).await });
        }
        while let Some(result) = tasks.join_next().await {
            let (lease, _) = result.expect("task").expect("minted");
            minted.push(lease);
        }
    }
    assert_eq!(roles_with_prefix(&p).await, i64::try_from(LEASES).expect("count"));

    let latest = minted.iter().map(|l| l.expires_at).max().expect("leases");
    let wait = (latest - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1);
    tokio::time::sleep(wait).await;

    let audit = Arc::new(MemoryAuditSink::default());
    let metrics = Arc::new(MemoryMetrics::default());
    let revoker = Revoker::new(
        RevokerPorts {
            store: Arc::clone(&leases),
            revokers: Revokers::default().with(db.clone()),
            clock: Arc::new(SystemClock),
            audit: audit.clone(),
            metrics: metrics.clone(),
        },
        RevokerSettings { concurrency: 8, ..RevokerSettings::default() },
    );
    let deadline = tokio::time::Instant::now() + Duration::from_mins(10);
    let (a, b, c) = tokio::join!(
        revoker.sweep(&*store, "revoker-a", deadline),
        revoker.sweep(&*store, "revoker-b", deadline),
        revoker.sweep(&*store, "revoker-a", deadline), // the same schedule event delivered twice
    );
    let reports = [a.expect("sweep a"), b.expect("sweep b"), c.expect("sweep c")];
    let total_revoked: usize = reports.iter().map(|r| r.revoked).sum();
    let total_failed: usize = reports.iter().map(|r| r.failed).sum();
    assert_eq!((total_revoked, total_failed), (LEASES, 0), "{reports:?}");
    assert_eq!(roles_with_prefix(&p).await, 0, "no user left in pg_roles");
    for lease in &minted {
        let stored = store.get(&lease.id).await.expect("get").expect("lease");
        assert_eq!(stored.status, LeaseStatus::Revoked, "{}", lease.id);
    }
    let revoked_events = audit.events().iter().filter(|e| e.reason == "revoked").count();
    assert_eq!(revoked_events, LEASES, "exactly one revocation per lease");
    assert_eq!(metrics.get("LeasesRevoked"), LEASES as u64);

    dynamo.delete_table().table_name(&table).send().await.expect("delete table");
}

#[tokio::test]
async fn orphan_reconciliation_drops_old_unleased_roles_only() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    let config = pg_config(&format!("scram_iterations = 1\norphan_prefix = \"{p}_\""));
    let db = DatabaseIssuer::new().with_connection("main", config, Arc::new(StaticSecret::empty()));
    let policy = format!(
        "[ttl]\ndefault = \"10m\"\nmax = \"1h\"\n\n[grants.worker]\ntype = \"database\"\nengine = \"postgres\"\n\
         connection = \"main\"\ndatabase = \"{PG_AUTH_DATABASE}\"\nusername = \"{p}_{{{{random}}}}\"\n"
    );
    let broker = DbBroker::new(&policy, db);
    let (leased, _) = broker.mint("worker", "leased-workload").await.expect("minted");

    // Roles no lease names: one whose validity ended two hours ago, one still valid.
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    let (old, young) = (format!("{p}_orphan_old"), format!("{p}_orphan_young"));
    let ended = (chrono::Utc::now() - chrono::TimeDelta::hours(2)).format("%Y-%m-%d %H:%M:%S+00");
    let valid = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).format("%Y-%m-%d %H:%M:%S+00");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE \"{old}\" LOGIN VALID UNTIL '{ended}'; CREATE ROLE \"{young}\" LOGIN VALID UNTIL '{valid}';"
    )))
    .execute(&mut admin)
    .await
    .expect("orphans");

    let revoker = Revoker::new(
        RevokerPorts {
            store: Arc::clone(&broker.store),
            revokers: Revokers::default().with(broker.db.clone()),
            clock: Arc::new(SystemClock),
            audit: Arc::new(MemoryAuditSink::default()),
            metrics: Arc::new(MemoryMetrics::default()),
        },
        RevokerSettings::default(),
    );
    let report = revoker.reconcile_orphans(Duration::from_hours(1)).await.expect("reconcile");
    let mut orphans = report.orphans.clone();
    orphans.sort();
    assert_eq!(orphans, vec![format!("main/{old}"), format!("main/{young}")], "{report:?}");
    assert_eq!((report.removed, report.too_young), (1, 1), "{report:?}");
    let exists = |name: String| async move {
        let mut admin = pg_admin(PG_AUTH_DATABASE).await;
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_roles WHERE rolname = $1")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .expect("count")
            == 1
    };
    let credbroker::backend::BackendRef::Database { username, .. } = &leased.backend else {
        panic!("database lease")
    };
    assert!(!exists(old).await, "an old unleased role is dropped");
    assert!(exists(young).await, "a young one is left for later");
    assert!(exists(username.clone()).await, "a leased user is never an orphan");
}
