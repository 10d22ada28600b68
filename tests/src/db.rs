//! PostgreSQL and MariaDB for the database-credential tests: admin connections for set-up and
//! inspection, a broker wired with a [`DatabaseIssuer`], logins as minted users, and clean-up
//! by name prefix (each test uses its own prefix, so tests run in parallel).
//!
//! Servers come from `CREDBROKER_TEST_PG_URL` / `CREDBROKER_TEST_MYSQL_URL` (set by
//! `scripts/test.sh`); a missing server fails the test with a message saying so.
//!
//! Minted PostgreSQL roles log in to the database [`PG_AUTH_DATABASE`], where
//! `scripts/databases.sh` makes the server check SCRAM passwords (and so `VALID UNTIL`) for
//! every role but the admin: trust authentication elsewhere would prove nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use credbroker::audit::MemoryAuditSink;
use credbroker::backend::DatabaseCredentials;
use credbroker::backend::{Credential, CredentialIssuer, Issuers};
use credbroker::broker::{Broker, BrokerPorts, BrokerSettings, ExchangeRequest};
use credbroker::clock::{Clock, SystemClock};
use credbroker::config::database::DatabaseConfig;
use credbroker::identity::VerifierSettings;
use credbroker::identity::testing::{TestIssuer, verifier_for};
use credbroker::issuer::db::DatabaseIssuer;
use credbroker::lease::{Lease, LeaseId, LeaseStore};
use credbroker::policy::{GrantRef, Policy, PolicySet};
use credbroker::reason::Denial;
use credbroker::store::memory::MemoryLeaseStore;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, MySqlConnection, PgConnection};

/// Where minted PostgreSQL roles log in with their password.
pub const PG_AUTH_DATABASE: &str = "credbroker_auth";
/// `iss` of the test workload tokens.
pub const ISSUER: &str = "https://ci.example.test";

/// A database server from a `scheme://user@host:port/database` URL.
#[derive(Debug, Clone)]
pub struct Server {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
}

fn server(var: &str, default: &str) -> Server {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let (user, rest) = rest.split_once('@').unwrap_or(("root", rest));
    let user = user.split_once(':').map_or(user, |(u, _)| u);
    let (hostport, database) = rest.split_once('/').unwrap_or((rest, "test"));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, ""));
    let port = port.parse().unwrap_or(if url.starts_with("mysql") { 3306 } else { 5432 });
    Server {
        url: url.clone(),
        host: host.to_owned(),
        port,
        user: user.to_owned(),
        database: database.to_owned(),
    }
}

pub fn pg_server() -> Server {
    server("CREDBROKER_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
}

pub fn mysql_server() -> Server {
    server("CREDBROKER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
}

/// A unique, short, lower-case prefix for this test's roles, users, schemas and databases.
pub fn prefix() -> String {
    let mut random = [0u8; 3];
    aws_lc_rs::rand::fill(&mut random).expect("random");
    random.iter().fold("cb".to_owned(), |mut out, b| {
        let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{b:02x}"));
        out
    })
}

/// The test server's superuser, connected to `database`.
pub async fn pg_admin(database: &str) -> PgConnection {
    let s = pg_server();
    PgConnectOptions::new_without_pgpass()
        .host(&s.host)
        .port(s.port)
        .username(&s.user)
        .database(database)
        .disable_statement_logging()
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL not reachable as {}@{}:{}/{database} ({e}): run scripts/test.sh \
                 (scripts/databases.sh start creates database {PG_AUTH_DATABASE})",
                s.user, s.host, s.port
            )
        })
}

/// The test server's root user.
pub async fn mysql_admin() -> MySqlConnection {
    let s = mysql_server();
    MySqlConnectOptions::new()
        .host(&s.host)
        .port(s.port)
        .username(&s.user)
        .database(&s.database)
        .disable_statement_logging()
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MariaDB/MySQL not reachable as {}@{}:{} ({e}): run scripts/test.sh (scripts/databases.sh start)",
                s.user, s.host, s.port
            )
        })
}

/// Admin connection config for the PostgreSQL test server (the superuser, trusted: no
/// password, unless `extra` names another `user`), on
/// [`PG_AUTH_DATABASE`]; `extra` is more TOML (`scram_iterations = 1`, …).
pub fn pg_config(extra: &str) -> DatabaseConfig {
    let s = pg_server();
    let user = if extra.contains("user =") { String::new() } else { format!("user = \"{}\"\n", s.user) };
    config(&format!(
        "engine = \"postgres\"\nhost = \"{}\"\nport = {}\n{user}database = \"{PG_AUTH_DATABASE}\"\n\
         tls = \"disable\"\n{extra}",
        s.host, s.port
    ))
}

/// Admin connection config for the MySQL test server (root, no password unless `extra` says).
pub fn mysql_config(extra: &str) -> DatabaseConfig {
    let s = mysql_server();
    let user = if extra.contains("user =") { String::new() } else { format!("user = \"{}\"\n", s.user) };
    config(&format!(
        "engine = \"mysql\"\nhost = \"{}\"\nport = {}\n{user}database = \"{}\"\ntls = \"disable\"\n{extra}",
        s.host, s.port, s.database
    ))
}

fn config(text: &str) -> DatabaseConfig {
    let config: DatabaseConfig = toml_from_str(text);
    config.validate("test").expect("valid test database config");
    config
}

fn toml_from_str(text: &str) -> DatabaseConfig {
    // The broker's own parser: [databases.<name>] tables of a config file.
    let full = format!("[databases.test]\n{text}");
    let parsed = credbroker::config::Config::from_toml_str(&full, std::path::Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("test config: {e}\n{full}"));
    parsed.databases.into_values().next().expect("one database")
}

/// Logs in as a minted PostgreSQL role with its password.
pub async fn pg_login(username: &str, password: &str) -> Result<PgConnection, sqlx::Error> {
    let s = pg_server();
    PgConnectOptions::new_without_pgpass()
        .host(&s.host)
        .port(s.port)
        .username(username)
        .password(password)
        .database(PG_AUTH_DATABASE)
        .disable_statement_logging()
        .connect()
        .await
}

/// Logs in as a minted MySQL user with its password.
pub async fn mysql_login(
    username: &str,
    password: &str,
    database: &str,
) -> Result<MySqlConnection, sqlx::Error> {
    let s = mysql_server();
    MySqlConnectOptions::new()
        .host(&s.host)
        .port(s.port)
        .username(username)
        .password(password)
        .database(database)
        .disable_statement_logging()
        .connect()
        .await
}

/// Fails the test unless PostgreSQL checks passwords for minted roles (else every login test
/// would pass vacuously).
pub async fn assert_pg_checks_passwords(username: &str) {
    let wrong = pg_login(username, "not-the-password").await;
    assert!(
        wrong.is_err(),
        "PostgreSQL accepted a wrong password for {username} on database {PG_AUTH_DATABASE}: pg_hba.conf \
         must require scram-sha-256 there (scripts/databases.sh start sets it up)"
    );
}

pub async fn pg_role_exists(name: &str) -> bool {
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("query pg_roles")
}

pub async fn mysql_user_exists(name: &str) -> bool {
    let mut admin = mysql_admin().await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = ?")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("query mysql.user");
    count > 0
}

/// The SQLSTATE of a failed statement (PostgreSQL), or the error text.
pub fn sqlstate(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => {
            db.code().map_or_else(|| db.message().to_owned(), std::borrow::Cow::into_owned)
        }
        other => other.to_string(),
    }
}

/// Drops everything a test made under its prefix, also when the test panics (runs on its own
/// runtime in a thread, so it works from `Drop`).
#[derive(Debug)]
pub struct Cleanup {
    prefix: String,
    mysql: bool,
}

impl Cleanup {
    pub fn postgres(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), mysql: false }
    }

    pub fn mysql(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), mysql: true }
    }

    async fn run(prefix: String, mysql: bool) {
        let pattern = format!("{prefix}%");
        if mysql {
            let mut admin = mysql_admin().await;
            let users: Vec<(String, String)> =
                sqlx::query_as("SELECT User, Host FROM mysql.user WHERE User LIKE ?")
                    .bind(&pattern)
                    .fetch_all(&mut admin)
                    .await
                    .unwrap_or_default();
            for (user, host) in users {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP USER IF EXISTS '{}'@'{}'",
                    user.replace('\'', "''"),
                    host.replace('\'', "''")
                )))
                .execute(&mut admin)
                .await;
            }
            let roles: Vec<String> =
                sqlx::query_scalar("SELECT User FROM mysql.user WHERE User LIKE ? AND is_role = 'Y'")
                    .bind(&pattern)
                    .fetch_all(&mut admin)
                    .await
                    .unwrap_or_default();
            for role in roles {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS `{role}`")))
                    .execute(&mut admin)
                    .await;
            }
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{prefix}_db`")))
                .execute(&mut admin)
                .await;
        } else {
            let mut admin = pg_admin(PG_AUTH_DATABASE).await;
            let _ =
                sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename LIKE $1")
                    .bind(&pattern)
                    .execute(&mut admin)
                    .await;
            let _ =
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{prefix}_s\" CASCADE")))
                    .execute(&mut admin)
                    .await;
            let roles: Vec<String> = sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolname LIKE $1")
                .bind(&pattern)
                .fetch_all(&mut admin)
                .await
                .unwrap_or_default();
            for role in roles {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP OWNED BY \"{role}\"; DROP ROLE IF EXISTS \"{role}\""
                )))
                .execute(&mut admin)
                .await;
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (prefix, mysql) = (self.prefix.clone(), self.mysql);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(Self::run(prefix, mysql));
            }
        })
        .join();
    }
}

/// A broker on in-memory ports (test issuer, memory store, memory audit) with a database
/// issuer; one policy `db` whose body (TTL, grants) the test writes.
#[derive(Debug)]
pub struct DbBroker {
    pub broker: Broker,
    pub issuer: TestIssuer,
    pub store: Arc<dyn LeaseStore>,
    pub audit: Arc<MemoryAuditSink>,
    pub db: Arc<DatabaseIssuer>,
}

/// The policy every test uses: any subject of the test issuer; `body` adds `[ttl]` and grants.
pub fn policy_text(body: &str) -> String {
    format!("issuer = \"{ISSUER}\"\naudience = [\"credbroker\"]\nsubject = {{ glob = \"*\" }}\n{body}")
}

impl DbBroker {
    pub fn new(body: &str, db: DatabaseIssuer) -> Self {
        let db = Arc::new(db);
        Self::with_parts(body, db.clone(), Arc::new(MemoryLeaseStore::new()), db)
    }

    /// With the issuer and store the test chooses (wrappers that inject crashes).
    pub fn with_parts(
        body: &str,
        issuer: Arc<dyn CredentialIssuer>,
        store: Arc<dyn LeaseStore>,
        db: Arc<DatabaseIssuer>,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let token_issuer = TestIssuer::es256(ISSUER);
        // Room for tokens carrying several 10 kB hostile claims.
        let settings = VerifierSettings { max_token_bytes: 64 * 1024, ..VerifierSettings::default() };
        let (verifier, _source) = verifier_for(&[&token_issuer], &settings, Arc::clone(&clock));
        let mut policies = PolicySet::default();
        policies.insert(Policy::from_toml("db", &policy_text(body)).expect("test policy")).expect("insert");
        let audit = Arc::new(MemoryAuditSink::default());
        let broker = Broker::new(
            BrokerPorts {
                verifier: Arc::new(verifier),
                policies: Arc::new(policies),
                store: Arc::clone(&store),
                issuers: Issuers::default().with(issuer),
                clock,
                audit: audit.clone(),
            },
            BrokerSettings::default(),
        );
        Self { broker, issuer: token_issuer, store, audit, db }
    }

    /// A fresh workload token for `subject` (fresh `jti`: no replay).
    pub fn token(&self, subject: &str) -> String {
        self.issuer.sign(&self.issuer.claims(subject, Utc::now()))
    }

    /// Exchanges a token for `grant`; returns the active lease and the credential.
    pub async fn mint(&self, grant: &str, subject: &str) -> Result<(Lease, DatabaseCredentials), Denial> {
        self.mint_ttl(grant, subject, None).await
    }

    pub async fn mint_ttl(
        &self,
        grant: &str,
        subject: &str,
        ttl: Option<Duration>,
    ) -> Result<(Lease, DatabaseCredentials), Denial> {
        let done = self
            .broker
            .exchange(ExchangeRequest {
                token: self.token(subject),
                grant: GrantRef::parse(&format!("db/{grant}")).expect("grant ref"),
                ttl,
                source_ip: None,
                request_id: "test".into(),
            })
            .await?;
        match done.credential {
            Credential::Database(creds) => Ok((done.lease, creds)),
            other => panic!("not a database credential: {other:?}"),
        }
    }

    /// The lease of the last exchange, read back from the store (what a revoker would see).
    pub async fn last_lease(&self) -> Lease {
        let id = self
            .audit
            .events()
            .iter()
            .rev()
            .find_map(|e| e.lease_id.clone())
            .expect("an audit event with a lease id");
        let id = LeaseId::parse(&id).expect("lease id");
        self.store.get(&id).await.expect("store").expect("lease stored")
    }
}
