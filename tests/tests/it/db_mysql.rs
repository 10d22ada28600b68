//! Database credentials against the real MariaDB server that `scripts/test.sh` starts: a
//! minted user can do exactly what its grant says, revocation kills its sessions and drops it
//! (idempotently, also when raced), a grant failing half-way drops the user, and the admin
//! connection survives killed sessions and a rotated admin password.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use credbroker::backend::BackendRef;
use credbroker::backend::CredentialRevoker;
use credbroker::issuer::db::DatabaseIssuer;
use credbroker::lease::LeaseStatus;
use credbroker::reason::ReasonCode;
use credbroker::secrets::{SecretError, SecretSource, StaticSecret};
use credbroker_tests::db::{
    Cleanup, DbBroker, mysql_admin, mysql_config, mysql_login, mysql_user_exists, prefix,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::MySqlDatabaseError;
use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

/// Database `<p>_db` with tables `readable`, `writable`, `secret`; role `<p>_role` may read
/// `readable`.
async fn fixture(p: &str) {
    let mut admin = mysql_admin().await;
    for statement in [
        format!("CREATE DATABASE {p}_db"),
        format!("CREATE TABLE {p}_db.readable (id int)"),
        format!("INSERT INTO {p}_db.readable VALUES (1), (2)"),
        format!("CREATE TABLE {p}_db.writable (id int)"),
        format!("CREATE TABLE {p}_db.secret (id int)"),
        format!("CREATE ROLE {p}_role"),
        format!("GRANT SELECT ON {p}_db.readable TO {p}_role"),
    ] {
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut admin).await.expect("fixture");
    }
}

fn policy(p: &str) -> String {
    format!(
        r#"
[grants.reader]
type = "database"
engine = "mysql"
connection = "main"
database = "{p}_db"
username = "{p}_{{{{sub:4}}}}_{{{{random}}}}"
roles = ["{p}_role"]
privileges = [{{ allow = ["SELECT", "INSERT"], tables = ["writable"] }}]
"#
    )
}

fn error_number(err: &sqlx::Error) -> Option<u16> {
    match err {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<MySqlDatabaseError>().map(MySqlDatabaseError::number)
        }
        _ => None,
    }
}

async fn alive(session: &mut MySqlConnection) -> bool {
    sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(session).await.is_ok()
}

#[tokio::test]
async fn minted_user_can_do_exactly_what_was_granted_then_revocation_ends_it() {
    let p = prefix();
    let _cleanup = Cleanup::mysql(&p);
    fixture(&p).await;
    let db = DatabaseIssuer::new().with_connection("main", mysql_config(""), Arc::new(StaticSecret::empty()));
    let broker = DbBroker::new(&policy(&p), db);

    let (lease, creds) = broker.mint("reader", "repo:acme/app").await.expect("minted");
    assert_eq!(lease.status, LeaseStatus::Active);
    assert!(
        creds.username.len() <= 32 && creds.username.starts_with(&format!("{p}_repo_")),
        "{}",
        creds.username
    );
    assert_eq!(creds.database, format!("{p}_db"));
    assert!(mysql_login(&creds.username, "wrong-password", &creds.database).await.is_err());

    let mut session =
        mysql_login(&creds.username, creds.password.expose_secret(), &creds.database).await.expect("login");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM readable")
        .fetch_one(&mut session)
        .await
        .expect("granted through the default role");
    assert_eq!(rows, 2);
    sqlx::raw_sql("INSERT INTO writable VALUES (7)").execute(&mut session).await.expect("INSERT granted");
    let denied = [
        ("read an ungranted table", "SELECT * FROM secret"),
        ("write the read-only table", "INSERT INTO readable VALUES (3)"),
        ("update without UPDATE", "UPDATE writable SET id = 8"),
        ("create a table", "CREATE TABLE mine (id int)"),
        ("drop a table", "DROP TABLE readable"),
        ("create a user", "CREATE USER evil@'%'"),
        ("read another database", "SELECT * FROM mysql.user"),
    ];
    for (what, statement) in denied {
        let err = sqlx::raw_sql(statement).execute(&mut session).await.expect_err(what);
        assert!(
            matches!(error_number(&err), Some(1142 | 1044 | 1227 | 1143)),
            "{what}: expected a privilege error, got {err}"
        );
    }

    broker.db.revoke(lease.issued()).await.expect("revoked");
    assert!(!alive(&mut session).await, "the open session must be gone after revocation");
    assert!(mysql_login(&creds.username, creds.password.expose_secret(), &creds.database).await.is_err());
    assert!(!mysql_user_exists(&creds.username).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_is_idempotent_and_safe_to_race() {
    let p = prefix();
    let _cleanup = Cleanup::mysql(&p);
    fixture(&p).await;
    let db = DatabaseIssuer::new().with_connection(
        "main",
        mysql_config("pool_size = 8"),
        Arc::new(StaticSecret::empty()),
    );
    let broker = DbBroker::new(&policy(&p), db);
    let (lease, creds) = broker.mint("reader", "svc").await.expect("minted");
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(
            mysql_login(&creds.username, creds.password.expose_secret(), &creds.database)
                .await
                .expect("login"),
        );
    }
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (db, lease) = (broker.db.clone(), lease.clone());
        racers.spawn(async move { db.revoke(lease.issued()).await });
    }
    while let Some(result) = racers.join_next().await {
        result.expect("task").expect("every concurrent revoke succeeds");
    }
    assert!(!mysql_user_exists(&creds.username).await);
    for mut session in sessions {
        assert!(!alive(&mut session).await);
    }
    broker.db.revoke(lease.issued()).await.expect("revoking again is success");
}

/// `CREATE USER` succeeded, the `GRANT` after it failed: the user is dropped before the caller
/// hears of it.
#[tokio::test]
async fn failing_grant_drops_the_user_and_answers_an_error() {
    let p = prefix();
    let _cleanup = Cleanup::mysql(&p);
    fixture(&p).await;
    let body = policy(&p).replace("tables = [\"writable\"]", "tables = [\"no_such_table\"]");
    let db = DatabaseIssuer::new().with_connection("main", mysql_config(""), Arc::new(StaticSecret::empty()));
    let broker = DbBroker::new(&body, db);
    let denial = broker.mint("reader", "svc").await.expect_err("grant fails");
    assert_eq!(denial.reason, ReasonCode::BackendRejected, "{}", denial.detail);
    let lease = broker.last_lease().await;
    let BackendRef::Database { username, .. } = &lease.backend else { panic!("database lease") };
    assert!(!mysql_user_exists(username).await, "no user left behind");
    assert!(lease.last_error.is_some() && lease.next_action_at <= Utc::now(), "due for cleanup");
    broker.db.revoke(lease.issued()).await.expect("the revoker's pass is a no-op");
}

#[tokio::test]
async fn unreachable_database_answers_backend_unavailable() {
    let p = prefix();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut config = mysql_config("connect_timeout = \"1s\"");
    config.port = Some(port);
    let broker = DbBroker::new(
        &policy(&p),
        DatabaseIssuer::new().with_connection("main", config, Arc::new(StaticSecret::empty())),
    );
    let denial = broker.mint("reader", "svc").await.expect_err("no database");
    assert_eq!(denial.reason, ReasonCode::BackendUnavailable, "{}", denial.detail);
    let lease = broker.last_lease().await;
    assert_eq!(lease.status, LeaseStatus::Pending);
    assert!(lease.next_action_at <= Utc::now());
}

async fn kill_sessions_of(root: &mut MySqlConnection, user: &str) -> usize {
    let ids: Vec<u64> =
        sqlx::query_scalar("SELECT CAST(ID AS UNSIGNED) FROM information_schema.PROCESSLIST WHERE USER = ?")
            .bind(user)
            .fetch_all(&mut *root)
            .await
            .expect("processlist");
    for id in &ids {
        let _ = sqlx::raw_sql(AssertSqlSafe(format!("KILL CONNECTION {id}"))).execute(&mut *root).await;
    }
    ids.len()
}

/// A secret the test can rotate.
#[derive(Debug)]
struct Rotating(Mutex<String>);

#[async_trait::async_trait]
impl SecretSource for Rotating {
    async fn fetch(&self) -> Result<SecretString, SecretError> {
        Ok(SecretString::from(self.0.lock().expect("lock").clone()))
    }
    fn describe(&self) -> String {
        "test secret".into()
    }
}

/// A dedicated admin user with a password: its pooled sessions are killed behind the pool's
/// back, then its password is rotated; both times the next mint just works.
#[tokio::test]
async fn admin_sessions_killed_or_password_rotated_are_handled_transparently() {
    let p = prefix();
    let _cleanup = Cleanup::mysql(&p);
    fixture(&p).await;
    let admin_user = format!("{p}_admin");
    let mut root = mysql_admin().await;
    for statement in [
        format!("CREATE USER {admin_user}@'%' IDENTIFIED BY 'first-Password-1'"),
        format!("GRANT ALL PRIVILEGES ON *.* TO {admin_user}@'%' WITH GRANT OPTION"),
        // Granting a role needs its ADMIN OPTION (MariaDB): see docs/databases.md.
        format!("GRANT {p}_role TO {admin_user}@'%' WITH ADMIN OPTION"),
    ] {
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut root).await.expect("admin user");
    }
    let secret = Arc::new(Rotating(Mutex::new("first-Password-1".into())));
    let config = mysql_config(&format!("user = \"{admin_user}\"\npool_size = 2"));
    let broker =
        DbBroker::new(&policy(&p), DatabaseIssuer::new().with_connection("main", config, secret.clone()));
    let (first, _) = broker.mint("reader", "svc").await.expect("first mint");

    assert!(kill_sessions_of(&mut root, &admin_user).await >= 1);
    let (second, _) = broker.mint("reader", "svc").await.expect("mint after the kill");

    // Rotation: the secret store and the server change; the pooled sessions end.
    *secret.0.lock().expect("lock") = "second-Password-2".into();
    sqlx::raw_sql(AssertSqlSafe(format!("ALTER USER {admin_user}@'%' IDENTIFIED BY 'second-Password-2'")))
        .execute(&mut root)
        .await
        .expect("rotate");
    kill_sessions_of(&mut root, &admin_user).await;
    let (third, creds) = broker.mint("reader", "svc").await.expect("mint after the rotation");
    let mut session =
        mysql_login(&creds.username, creds.password.expose_secret(), &creds.database).await.expect("login");
    session.ping().await.expect("alive");
    for lease in [first, second, third] {
        broker.db.revoke(lease.issued()).await.expect("revoked");
    }
}

/// A name that already exists is refused without touching the existing user.
#[tokio::test]
async fn an_existing_user_of_the_same_name_is_refused_and_left_alone() {
    use credbroker::backend::{CredentialIssuer, IssuePlan};
    use credbroker::policy::database::{DatabaseGrantSpec, PlanInputs, compile};

    let p = prefix();
    let _cleanup = Cleanup::mysql(&p);
    let spec: DatabaseGrantSpec = toml::from_str(&format!(
        "engine = \"mysql\"\nconnection = \"main\"\ndatabase = \"test\"\nusername = \"{p}_{{{{random}}}}\""
    ))
    .expect("grant spec");
    let now = Utc::now();
    let plan = compile(spec).expect("grant").plan(&PlanInputs {
        policy: "db",
        grant: "g",
        subject: "svc",
        lease_id: "01KAXB3J8Z7Q4M2N6P8R0T2V4W",
        now,
        expires_at: now + chrono::TimeDelta::minutes(5),
    });
    let mut root = mysql_admin().await;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE USER '{}'@'%' IDENTIFIED BY 'planted-1'", plan.username)))
        .execute(&mut root)
        .await
        .expect("planted user");
    let db = DatabaseIssuer::new().with_connection("main", mysql_config(""), Arc::new(StaticSecret::empty()));
    let err = db.issue(&IssuePlan::Database(plan.clone())).await.expect_err("collision refused");
    assert!(
        matches!(err, credbroker::backend::IssueError::Rejected(ref m) if m.contains("already exists")),
        "{err}"
    );
    assert!(mysql_user_exists(&plan.username).await, "the existing user is not ours to drop");
    assert!(
        mysql_login(&plan.username, "planted-1", "information_schema").await.is_ok(),
        "and its password is unchanged"
    );
}
