//! Crashes at the two dangerous points of a mint, on the real servers: between the `Pending`
//! lease write and `CREATE`, and between `CREATE` and the lease becoming `Active`. A crash is a
//! panic inside the exchange task (nothing after it runs: no failure record, no clean-up), so
//! the store holds exactly what a dead process leaves. The test then does what the revoker does
//! with a stale pending lease — `revoke(lease)` from the stored record alone — and shows that
//! no user survives: the lease always names the user before it can exist.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use credbroker::backend::BackendRef;
use credbroker::backend::{Credential, CredentialIssuer, CredentialRevoker, IssueError, IssuePlan};
use credbroker::issuer::db::DatabaseIssuer;
use credbroker::lease::{DueLeases, Lease, LeaseStatus};
use credbroker::secrets::StaticSecret;
use credbroker::store::memory::MemoryLeaseStore;
use credbroker_tests::db::{
    Cleanup, DbBroker, PG_AUTH_DATABASE, mysql_admin, mysql_config, mysql_user_exists, pg_admin, pg_config,
    pg_role_exists, prefix,
};
use sqlx::AssertSqlSafe;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashPoint {
    /// The process dies after the pending lease is written, before `CREATE` runs.
    BeforeCreate,
    /// The process dies after `CREATE` (and the grants) committed, before `activate`.
    AfterCreate,
}

/// Wraps the real issuer and "kills the process" at the crash point.
#[derive(Debug)]
struct Crashing {
    inner: Arc<DatabaseIssuer>,
    at: CrashPoint,
}

impl credbroker::backend::Backend for Crashing {
    fn backend(&self) -> credbroker::backend::BackendKind {
        credbroker::backend::BackendKind::Database
    }
}

#[async_trait::async_trait]
impl CredentialIssuer for Crashing {
    async fn issue(&self, plan: &IssuePlan) -> Result<Credential, IssueError> {
        assert!(self.at != CrashPoint::BeforeCreate, "injected crash before CREATE");
        let credential = self.inner.issue(plan).await?;
        drop(credential);
        panic!("injected crash after CREATE, before the lease is activated");
    }
}

/// Runs one exchange that crashes; returns the pending lease the revoker would find once it
/// is stale.
async fn crash(broker: &DbBroker, store: &MemoryLeaseStore) -> Lease {
    let outcome = {
        let (broker, token) = (broker.broker.clone(), broker.token("repo:acme/app"));
        tokio::spawn(async move {
            broker
                .exchange(credbroker::broker::ExchangeRequest {
                    token,
                    grant: credbroker::policy::GrantRef::parse("db/crash").expect("grant"),
                    ttl: None,
                    source_ip: None,
                    request_id: "crash".into(),
                })
                .await
        })
        .await
    };
    assert!(outcome.is_err_and(|e| e.is_panic()), "the exchange must have crashed");
    // After pending_grace (5 minutes) the revoker lists it as due.
    let due = store.list_due(Utc::now() + TimeDelta::minutes(6), 10).await.expect("list_due").leases;
    assert_eq!(due.len(), 1, "exactly the crashed lease is due");
    let lease = due.into_iter().next().expect("lease");
    assert_eq!(lease.status, LeaseStatus::Pending);
    assert_eq!(lease.attempts, 0);
    assert!(lease.last_error.is_none(), "a crash records nothing");
    lease
}

fn grant(engine: &str, p: &str, database: &str, privileges: &str) -> String {
    format!(
        r#"
[grants.crash]
type = "database"
engine = "{engine}"
connection = "main"
database = "{database}"
username = "{p}_{{{{random}}}}"
privileges = [{privileges}]
"#
    )
}

async fn scenario(engine: &str, at: CrashPoint) {
    let p = prefix();
    let _cleanup = if engine == "postgres" { Cleanup::postgres(&p) } else { Cleanup::mysql(&p) };
    let (db, body) = if engine == "postgres" {
        let mut admin = pg_admin(PG_AUTH_DATABASE).await;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {p}_s; CREATE TABLE {p}_s.t (id int)")))
            .execute(&mut admin)
            .await
            .expect("fixture");
        (
            DatabaseIssuer::new().with_connection("main", pg_config(""), Arc::new(StaticSecret::empty())),
            grant(
                engine,
                &p,
                PG_AUTH_DATABASE,
                &format!("{{ allow = [\"SELECT\"], tables = [\"{p}_s.t\"] }}"),
            ),
        )
    } else {
        let mut admin = mysql_admin().await;
        for statement in [format!("CREATE DATABASE {p}_db"), format!("CREATE TABLE {p}_db.t (id int)")] {
            sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut admin).await.expect("fixture");
        }
        (
            DatabaseIssuer::new().with_connection("main", mysql_config(""), Arc::new(StaticSecret::empty())),
            grant(engine, &p, &format!("{p}_db"), "{ allow = [\"SELECT\"], tables = [\"t\"] }"),
        )
    };
    let db = Arc::new(db);
    let store = Arc::new(MemoryLeaseStore::new());
    let broker =
        DbBroker::with_parts(&body, Arc::new(Crashing { inner: db.clone(), at }), store.clone(), db.clone());

    let lease = crash(&broker, &store).await;
    let BackendRef::Database { username, connection, database, .. } = &lease.backend else {
        panic!("database lease: {:?}", lease.backend)
    };
    assert!(username.starts_with(&format!("{p}_")), "the lease names the user: {username}");
    assert_eq!(connection, "main");
    assert!(!database.is_empty());
    let exists = |name: String| async move {
        if engine == "postgres" { pg_role_exists(&name).await } else { mysql_user_exists(&name).await }
    };
    assert_eq!(
        exists(username.clone()).await,
        at == CrashPoint::AfterCreate,
        "user exists only if CREATE ran"
    );

    // The revoker's view: the stored lease alone is enough to end whatever exists.
    db.revoke(lease.issued()).await.expect("revoke from the stored lease");
    assert!(!exists(username.clone()).await, "no orphan: the user is gone");
    db.revoke(lease.issued()).await.expect("and again: idempotent");
}

#[tokio::test]
async fn postgres_crash_between_pending_and_create_leaves_nothing_to_orphan() {
    scenario("postgres", CrashPoint::BeforeCreate).await;
}

#[tokio::test]
async fn postgres_crash_between_create_and_active_is_cleaned_up_from_the_lease() {
    scenario("postgres", CrashPoint::AfterCreate).await;
}

#[tokio::test]
async fn mysql_crash_between_pending_and_create_leaves_nothing_to_orphan() {
    scenario("mysql", CrashPoint::BeforeCreate).await;
}

#[tokio::test]
async fn mysql_crash_between_create_and_active_is_cleaned_up_from_the_lease() {
    scenario("mysql", CrashPoint::AfterCreate).await;
}
