//! Database credentials against the real PostgreSQL server that `scripts/test.sh` starts: a
//! minted role can do exactly what its grant says, revocation ends its sessions and logins,
//! `VALID UNTIL` refuses it after expiry without any revocation, revocation is idempotent and
//! safe to race, and failures leave no role behind.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use credbroker::backend::BackendRef;
use credbroker::backend::CredentialRevoker;
use credbroker::issuer::db::DatabaseIssuer;
use credbroker::lease::LeaseStatus;
use credbroker::reason::ReasonCode;
use credbroker::secrets::StaticSecret;
use credbroker_tests::db::{
    Cleanup, DbBroker, PG_AUTH_DATABASE, assert_pg_checks_passwords, pg_admin, pg_config, pg_login,
    pg_role_exists, prefix, sqlstate,
};
use secrecy::ExposeSecret;
use sqlx::{AssertSqlSafe, Connection};

/// Schema `<p>_s` with tables `readable`, `writable`, `secret`, and a role `<p>_read` that may
/// read `readable`.
async fn fixture(p: &str) {
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA {p}_s;
         CREATE TABLE {p}_s.readable (id int); INSERT INTO {p}_s.readable VALUES (1), (2);
         CREATE TABLE {p}_s.writable (id int);
         CREATE TABLE {p}_s.secret (id int); INSERT INTO {p}_s.secret VALUES (42);
         CREATE ROLE {p}_read NOLOGIN;
         GRANT USAGE ON SCHEMA {p}_s TO {p}_read;
         GRANT SELECT ON {p}_s.readable TO {p}_read;"
    )))
    .execute(&mut admin)
    .await
    .expect("fixture");
}

fn issuer(name: &str, extra: &str) -> DatabaseIssuer {
    DatabaseIssuer::new().with_connection(name, pg_config(extra), Arc::new(StaticSecret::empty()))
}

/// A policy body with one structured grant `reader` on connection `main`.
fn reader_policy(p: &str, ttl: &str) -> String {
    format!(
        r#"
[ttl]
default = "{ttl}"
max = "1h"

[grants.reader]
type = "database"
engine = "postgres"
connection = "main"
database = "{PG_AUTH_DATABASE}"
username = "{p}_{{{{sub:6}}}}_{{{{random}}}}"
roles = ["{p}_read"]
privileges = [{{ allow = ["SELECT", "INSERT"], tables = ["{p}_s.writable"] }}]
"#
    )
}

async fn verifier_of(username: &str) -> (String, Option<chrono::DateTime<Utc>>) {
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    let (verifier, until): (String, Option<i64>) = sqlx::query_as(
        "SELECT rolpassword, extract(epoch FROM rolvaliduntil)::bigint FROM pg_authid WHERE rolname = $1",
    )
    .bind(username)
    .fetch_one(&mut admin)
    .await
    .expect("pg_authid row");
    (verifier, until.and_then(|t| chrono::DateTime::from_timestamp(t, 0)))
}

#[tokio::test]
async fn minted_role_can_do_exactly_what_was_granted_then_revocation_ends_it() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    fixture(&p).await;
    let broker = DbBroker::new(&reader_policy(&p, "10m"), issuer("main", ""));

    let (lease, creds) = broker.mint("reader", "repo:acme/app").await.expect("minted");
    assert_eq!(lease.status, LeaseStatus::Active);
    let BackendRef::Database { username, database, connection, .. } = &lease.backend else {
        panic!("database lease: {:?}", lease.backend)
    };
    assert_eq!(
        (username, database.as_str(), connection.as_str()),
        (&creds.username, PG_AUTH_DATABASE, "main")
    );
    assert!(creds.username.starts_with(&format!("{p}_repoac_")), "{}", creds.username);
    assert_eq!(creds.password.expose_secret().len(), 32);
    assert_eq!(creds.expires_at, lease.expires_at);

    // The stored password is a SCRAM verifier with the configured iteration count, and the
    // role expires with the lease plus the default 1-minute grace.
    let (verifier, valid_until) = verifier_of(&creds.username).await;
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert_eq!(valid_until, Some(lease.expires_at + TimeDelta::minutes(1)));

    assert_pg_checks_passwords(&creds.username).await;
    let mut session =
        pg_login(&creds.username, creds.password.expose_secret()).await.expect("login with the password");
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {p}_s.readable")))
        .fetch_one(&mut session)
        .await
        .expect("granted through the role");
    assert_eq!(rows, 2);
    sqlx::raw_sql(AssertSqlSafe(format!("INSERT INTO {p}_s.writable VALUES (7)")))
        .execute(&mut session)
        .await
        .expect("INSERT granted");

    let denied = [
        ("read an ungranted table", format!("SELECT * FROM {p}_s.secret")),
        ("write the read-only table", format!("INSERT INTO {p}_s.readable VALUES (3)")),
        ("update without UPDATE", format!("UPDATE {p}_s.writable SET id = 8")),
        ("create in the schema", format!("CREATE TABLE {p}_s.mine (id int)")),
        ("create in public", "CREATE TABLE public.mine (id int)".to_owned()),
        ("drop a table", format!("DROP TABLE {p}_s.readable")),
        ("create a role", format!("CREATE ROLE {p}_evil")),
        ("grant itself more", format!("GRANT SELECT ON {p}_s.secret TO CURRENT_USER")),
    ];
    for (what, statement) in denied {
        let err = sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut session).await.expect_err(what);
        assert_eq!(sqlstate(&err), "42501", "{what}: {err}"); // insufficient_privilege
    }

    // Revocation ends the open session and refuses new logins.
    broker.db.revoke(lease.issued()).await.expect("revoked");
    let after = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut session).await;
    assert!(after.is_err(), "the open session must be gone after revocation");
    assert!(
        pg_login(&creds.username, creds.password.expose_secret()).await.is_err(),
        "no login after revoke"
    );
    assert!(!pg_role_exists(&creds.username).await);
    // Objects survive; the fixture role lost a member, nothing else.
    assert!(pg_role_exists(&format!("{p}_read")).await);
}

#[tokio::test]
async fn valid_until_refuses_login_after_expiry_plus_grace_without_any_revocation() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    fixture(&p).await;
    let broker = DbBroker::new(&reader_policy(&p, "2s"), issuer("main", "expiry_grace = \"1s\""));

    let (lease, creds) = broker.mint("reader", "repo:acme/app").await.expect("minted");
    let mut first =
        pg_login(&creds.username, creds.password.expose_secret()).await.expect("login before expiry");
    let valid_until = lease.expires_at + TimeDelta::seconds(1);
    let wait = (valid_until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(1500);
    tokio::time::sleep(wait).await;

    let err = pg_login(&creds.username, creds.password.expose_secret()).await.expect_err("expired");
    assert_eq!(sqlstate(&err), "28P01", "PostgreSQL reports an expired role as a failed login: {err}");
    assert!(pg_role_exists(&creds.username).await, "nothing revoked it: the server refused it by itself");
    // VALID UNTIL only gates logins: ending live sessions is the revoker's job.
    let still: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut first).await.expect("existing session");
    assert_eq!(still, 1);
    broker.db.revoke(lease.issued()).await.expect("revoked");
    assert!(sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut first).await.is_err());
}

#[tokio::test]
async fn low_iteration_verifiers_log_in_too() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    fixture(&p).await;
    let broker = DbBroker::new(&reader_policy(&p, "10m"), issuer("main", "scram_iterations = 1"));
    let (lease, creds) = broker.mint("reader", "svc").await.expect("minted");
    let (verifier, _) = verifier_of(&creds.username).await;
    assert!(verifier.starts_with("SCRAM-SHA-256$1:"), "{verifier}");
    assert_pg_checks_passwords(&creds.username).await;
    let mut session = pg_login(&creds.username, creds.password.expose_secret()).await.expect("login");
    session.ping().await.expect("alive");
    broker.db.revoke(lease.issued()).await.expect("revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_is_idempotent_and_safe_to_race() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    fixture(&p).await;
    let broker = DbBroker::new(&reader_policy(&p, "10m"), issuer("main", "pool_size = 8"));
    let (lease, creds) = broker.mint("reader", "svc").await.expect("minted");
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(pg_login(&creds.username, creds.password.expose_secret()).await.expect("login"));
    }

    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (db, lease) = (broker.db.clone(), lease.clone());
        racers.spawn(async move { db.revoke(lease.issued()).await });
    }
    while let Some(result) = racers.join_next().await {
        result.expect("task").expect("every concurrent revoke succeeds");
    }
    assert!(!pg_role_exists(&creds.username).await);
    for mut session in sessions {
        assert!(sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut session).await.is_err());
    }
    broker.db.revoke(lease.issued()).await.expect("revoking again is success");

    // A lease whose role was never created (crash before CREATE) revokes cleanly too.
    let mut never = lease.clone();
    if let BackendRef::Database { username, .. } = &mut never.backend {
        *username = format!("{p}_never_created");
    }
    broker.db.revoke(never.issued()).await.expect("nothing to revoke is success");
}

/// `undefined_object` from a revocation statement (here: revoking a role that does not exist)
/// is a failure while the minted role still exists, not "already dropped": the lease stays due
/// and the role keeps its data until the statement is fixed.
#[tokio::test]
async fn failing_revocation_statement_is_an_error_and_keeps_the_role() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    fixture(&p).await;
    let broker = DbBroker::new(&reader_policy(&p, "10m"), issuer("main", ""));
    let (mut lease, creds) = broker.mint("reader", "svc").await.expect("minted");
    if let BackendRef::Database { revocation_statements, .. } = &mut lease.backend {
        *revocation_statements = vec![format!("REVOKE {p}_no_such_role FROM {{{{name}}}}")];
    }
    let error = broker.db.revoke(lease.issued()).await.expect_err("the statement fails");
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert!(pg_role_exists(&creds.username).await, "the role is still there, and the error says so");
    assert!(
        pg_login(&creds.username, creds.password.expose_secret()).await.is_err(),
        "step 1 (NOLOGIN) committed before the failing step"
    );
}

#[tokio::test]
async fn renew_extends_valid_until_but_never_past_the_lease_maximum() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    fixture(&p).await;
    let broker = DbBroker::new(&reader_policy(&p, "10m"), issuer("main", "expiry_grace = \"30s\""));
    let (lease, creds) = broker.mint("reader", "svc").await.expect("minted");
    assert_eq!(lease.max_expires_at, lease.created_at + TimeDelta::hours(1));

    let later = lease.expires_at + TimeDelta::minutes(20);
    broker.db.renew(lease.issued(), later).await.expect("renewed");
    assert_eq!(verifier_of(&creds.username).await.1, Some(later + TimeDelta::seconds(30)));

    broker.db.renew(lease.issued(), lease.created_at + TimeDelta::hours(5)).await.expect("renewed, clamped");
    assert_eq!(verifier_of(&creds.username).await.1, Some(lease.max_expires_at + TimeDelta::seconds(30)));

    broker.db.revoke(lease.issued()).await.expect("revoked");
    let err = broker.db.renew(lease.issued(), later).await.expect_err("nothing to renew");
    assert!(err.to_string().contains("no longer exists"), "{err}");
}

/// A grant that fails half-way leaves no role, and the caller gets an error; the lease is due
/// for the revoker at once and names the role it would have been.
#[tokio::test]
async fn failing_grant_drops_the_role_and_answers_an_error() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    fixture(&p).await;
    let body = format!(
        r#"
[grants.broken]
type = "database"
engine = "postgres"
connection = "main"
database = "{PG_AUTH_DATABASE}"
username = "{p}_{{{{random}}}}"
roles = ["{p}_read"]
privileges = [{{ allow = ["SELECT"], tables = ["{p}_s.no_such_table"] }}]

[grants.custom]
type = "database"
engine = "postgres"
connection = "main"
database = "{PG_AUTH_DATABASE}"
username = "{p}_{{{{random}}}}"
creation_statements = [
  "CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}} VALID UNTIL {{{{expiration}}}}",
  "GRANT {p}_no_such_role TO {{{{name}}}}",
]
"#
    );
    let broker = DbBroker::new(&body, issuer("main", ""));
    for grant in ["broken", "custom"] {
        let denial = broker.mint(grant, "svc").await.expect_err("grant fails");
        assert_eq!(denial.reason, ReasonCode::BackendRejected, "{grant}: {}", denial.detail);
        let lease = broker.last_lease().await;
        let BackendRef::Database { username, .. } = &lease.backend else { panic!("database lease") };
        assert!(username.starts_with(&p));
        assert!(!pg_role_exists(username).await, "{grant}: no role left behind");
        assert_eq!(lease.status, LeaseStatus::Pending);
        assert!(lease.last_error.is_some() && lease.next_action_at <= Utc::now(), "{grant}: due for cleanup");
        broker.db.revoke(lease.issued()).await.expect("the revoker's pass is a no-op");
    }
}

#[tokio::test]
async fn unreachable_database_answers_backend_unavailable_and_leaves_the_lease_due() {
    let p = prefix();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }; // closed again: nothing listens there
    let db = DatabaseIssuer::new().with_connection(
        "main",
        unreachable_config(port),
        Arc::new(StaticSecret::empty()),
    );
    let broker = DbBroker::new(&reader_policy(&p, "10m"), db);
    let started = std::time::Instant::now();
    let denial = broker.mint("reader", "svc").await.expect_err("no database");
    assert_eq!(denial.reason, ReasonCode::BackendUnavailable, "{}", denial.detail);
    assert_eq!(denial.reason.http().0.as_u16(), 503);
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by connect_timeout");
    let lease = broker.last_lease().await;
    assert_eq!(lease.status, LeaseStatus::Pending);
    assert!(lease.next_action_at <= Utc::now(), "due for cleanup at once");
    let err = broker.db.revoke(lease.issued()).await.expect_err("the revoker retries later");
    assert!(matches!(err, credbroker::backend::IssueError::Unavailable(_)), "{err}");
}

fn unreachable_config(port: u16) -> credbroker::config::database::DatabaseConfig {
    let mut config = pg_config("connect_timeout = \"1s\"");
    config.port = Some(port);
    config
}

/// Admin connections killed behind the pool's back (failover, idle timeout, a DBA) are
/// replaced without the caller noticing.
#[tokio::test]
async fn dead_admin_connections_are_replaced_transparently() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    fixture(&p).await;
    let connection = format!("{p}-conn");
    let body =
        reader_policy(&p, "10m").replace("connection = \"main\"", &format!("connection = \"{connection}\""));
    let broker = DbBroker::new(&body, issuer(&connection, "pool_size = 2"));
    let (first, _) = broker.mint("reader", "svc").await.expect("first mint");

    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(format!("credbroker:{connection}"))
    .fetch_one(&mut admin)
    .await
    .expect("terminate");
    assert!(killed >= 1, "the pool's connection was found by its application_name");

    let (second, creds) = broker.mint("reader", "svc").await.expect("mint after the kill");
    let mut session = pg_login(&creds.username, creds.password.expose_secret()).await.expect("login");
    session.ping().await.expect("alive");
    for lease in [first, second] {
        broker.db.revoke(lease.issued()).await.expect("revoked");
    }
}

/// The usual managed-database set-up (RDS and friends give no superuser): an admin role with
/// CREATEROLE, `pg_signal_backend`, ADMIN OPTION on the roles it hands out and GRANT OPTION on
/// the objects, logging in with a password. The broker mints, and revokes despite not being
/// a member of the minted role (it grants itself membership before `DROP OWNED`).
#[tokio::test]
async fn a_non_superuser_admin_can_mint_and_revoke() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    fixture(&p).await;
    let admin = format!("{p}_admin");
    let mut root = pg_admin(PG_AUTH_DATABASE).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE ROLE {admin} LOGIN CREATEROLE PASSWORD 'Admin-Password-1';
         GRANT pg_signal_backend TO {admin};
         GRANT {p}_read TO {admin} WITH ADMIN OPTION;
         GRANT USAGE ON SCHEMA {p}_s TO {admin} WITH GRANT OPTION;
         GRANT SELECT, INSERT ON {p}_s.writable TO {admin} WITH GRANT OPTION;"
    )))
    .execute(&mut root)
    .await
    .expect("admin role");
    let db = DatabaseIssuer::new().with_connection(
        "main",
        pg_config(&format!("user = \"{admin}\"")),
        Arc::new(StaticSecret::new("Admin-Password-1")),
    );
    let broker = DbBroker::new(&reader_policy(&p, "10m"), db);
    let (lease, creds) = broker.mint("reader", "svc").await.expect("minted by a non-superuser");
    let mut session = pg_login(&creds.username, creds.password.expose_secret()).await.expect("login");
    sqlx::raw_sql(AssertSqlSafe(format!("INSERT INTO {p}_s.writable VALUES (1)")))
        .execute(&mut session)
        .await
        .expect("granted");
    broker.db.revoke(lease.issued()).await.expect("revoked by a non-superuser");
    assert!(!pg_role_exists(&creds.username).await);
    assert!(sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut session).await.is_err(), "session ended");
}

/// A name that already exists (impossible by chance: 80 random bits; so planted, or a bug) is
/// refused without touching the existing role.
#[tokio::test]
async fn an_existing_role_of_the_same_name_is_refused_and_left_alone() {
    use credbroker::backend::{CredentialIssuer, IssuePlan};
    use credbroker::policy::database::{PlanInputs, compile};

    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    let spec = toml_grant(&format!(
        "engine = \"postgres\"\nconnection = \"main\"\ndatabase = \"{PG_AUTH_DATABASE}\"\nusername = \"{p}_{{{{random}}}}\""
    ));
    let now = Utc::now();
    let plan = compile(spec).expect("grant").plan(&PlanInputs {
        policy: "db",
        grant: "g",
        subject: "svc",
        lease_id: "01KAXB3J8Z7Q4M2N6P8R0T2V4W",
        now,
        expires_at: now + TimeDelta::minutes(5),
    });
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE ROLE \"{}\" LOGIN", plan.username)))
        .execute(&mut admin)
        .await
        .expect("planted role");
    let db = issuer("main", "");
    let err = db.issue(&IssuePlan::Database(plan.clone())).await.expect_err("collision refused");
    assert!(
        matches!(err, credbroker::backend::IssueError::Rejected(ref m) if m.contains("already exists")),
        "{err}"
    );
    assert!(pg_role_exists(&plan.username).await, "the existing role is not ours to drop");
}

fn toml_grant(text: &str) -> credbroker::policy::database::DatabaseGrantSpec {
    toml::from_str(text).expect("grant spec")
}
