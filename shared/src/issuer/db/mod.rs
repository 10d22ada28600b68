//! Dynamic database credentials: a unique PostgreSQL role or MySQL/MariaDB user per lease.
//!
//! The broker renders a database grant into a [`DatabasePlan`] (username decided, nothing
//! secret yet) and writes the lease `Pending` with that username; [`DatabaseIssuer::issue`]
//! then generates the password and creates the user; [`revoke`](DatabaseIssuer) ends its
//! sessions and drops it, idempotently. `docs/databases.md` is the operator's guide.
//!
//! - PostgreSQL (`postgres.rs`): `CREATE ROLE … LOGIN PASSWORD '<SCRAM verifier>' VALID UNTIL
//!   '<expiry + grace>'` plus grants in one transaction (one round trip).
//! - MySQL/MariaDB (`mysql.rs`): `CREATE USER … IDENTIFIED BY …` then grants; a failed grant
//!   drops the user. No server-side expiry: the revoker ends these users.

pub mod config;
mod mysql;
pub mod password;
mod pool;
mod postgres;
pub mod scram;
pub mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{Credential, CredentialIssuer, CredentialRevoker, IssueError, IssuePlan, IssuedCredential};
use crate::lease::{BackendRef, Lease};
use crate::secrets::SecretSource;
pub use config::{DatabaseConfig, TlsMode};
pub use password::PasswordPolicy;
use sql::SqlTemplate;

/// The database engines the broker mints users in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// PostgreSQL (also Aurora PostgreSQL).
    Postgres,
    /// MySQL 8 or MariaDB 10.4+ (also Aurora MySQL).
    Mysql,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }

    /// Longest user name the server accepts (PostgreSQL: NAMEDATALEN - 1; MySQL: 32).
    pub fn max_username_len(self) -> usize {
        match self {
            Self::Postgres => 63,
            Self::Mysql => 32,
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a structured grant gives the new user. Every name is validated at policy load and
/// quoted by the issuer; privilege keywords come from a fixed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// Roles to grant (`GRANT "role" TO "user"`).
    pub roles: Vec<String>,
    pub objects: Vec<ObjectPrivilege>,
}

/// `GRANT <privileges> ON <target> TO <user>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPrivilege {
    /// Upper-case keywords from the engine's list (`SELECT`, `INSERT`, …).
    pub privileges: Vec<&'static str>,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// PostgreSQL `TABLE schema.table`; MySQL `` `database`.`table` `` (the grant's database).
    Table { schema: Option<String>, name: String },
    /// PostgreSQL `SCHEMA s`.
    Schema(String),
    /// PostgreSQL `ALL TABLES IN SCHEMA s`; MySQL `` `s`.* `` (a MySQL schema is a database).
    AllTablesInSchema(String),
    /// PostgreSQL `ALL SEQUENCES IN SCHEMA s`.
    AllSequencesInSchema(String),
}

/// How the user is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation {
    /// The broker's own `CREATE` statement, then these grants.
    Privileges(Privileges),
    /// The grant's own statements (placeholders `{{name}}`, `{{password}}`,
    /// `{{expiration}}`, `{{database}}`).
    Statements(Vec<SqlTemplate>),
}

/// A database user to create: everything decided but the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabasePlan {
    pub engine: Engine,
    /// Name of the admin connection (`[databases.<name>]`).
    pub connection: String,
    pub database: String,
    /// Recorded in the pending lease before the user is created.
    pub username: String,
    /// The lease expiry (PostgreSQL adds the connection's `expiry_grace` for `VALID UNTIL`).
    pub expires_at: DateTime<Utc>,
    pub password: PasswordPolicy,
    pub creation: Arc<Creation>,
    /// The grant's revocation statements (source text, rendered at revocation). Recorded in
    /// the lease so revocation never depends on the policy still existing.
    pub revocation_statements: Vec<String>,
}

impl DatabasePlan {
    pub fn backend_ref(&self) -> BackendRef {
        BackendRef::Database {
            engine: self.engine,
            connection: self.connection.clone(),
            database: self.database.clone(),
            username: self.username.clone(),
            revocation_statements: self.revocation_statements.clone(),
        }
    }
}

/// A minted database user, handed to the caller once.
#[derive(Debug, Clone)]
pub struct DatabaseCredentials {
    pub engine: Engine,
    pub username: String,
    pub password: SecretString,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub expires_at: DateTime<Utc>,
}

/// Placeholders a revocation statement may use (no password, no expiration).
pub(crate) const REVOCATION_PLACEHOLDERS: &[sql::Placeholder] =
    &[sql::Placeholder::Name, sql::Placeholder::Database];

/// The lease fields revocation needs, borrowed from a [`BackendRef::Database`] (or a plan).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserRef<'a> {
    pub database: &'a str,
    pub username: &'a str,
    pub revocation_statements: &'a [String],
}

#[derive(Debug)]
enum Admin {
    Postgres(postgres::PostgresAdmin),
    Mysql(mysql::MysqlAdmin),
}

impl Admin {
    fn engine(&self) -> Engine {
        match self {
            Self::Postgres(_) => Engine::Postgres,
            Self::Mysql(_) => Engine::Mysql,
        }
    }
}

/// The `database` backend: every configured admin connection, by name.
#[derive(Debug, Default)]
pub struct DatabaseIssuer {
    connections: HashMap<String, Admin>,
}

impl DatabaseIssuer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an admin connection. Nothing connects until first use (or [`Self::warm_connections`]).
    #[must_use]
    pub fn with_connection(
        mut self,
        name: impl Into<String>,
        config: DatabaseConfig,
        password: Arc<dyn SecretSource>,
    ) -> Self {
        let name = name.into();
        let admin = match config.engine {
            Engine::Postgres => Admin::Postgres(postgres::PostgresAdmin::new(&name, config, password)),
            Engine::Mysql => Admin::Mysql(mysql::MysqlAdmin::new(&name, config, password)),
        };
        self.connections.insert(name, admin);
        self
    }

    /// The issuer for the broker config's `[databases]`, or `None` when there are none.
    /// Secrets Manager needs the `[aws]` SDK configuration; Lambda (`lambda = true`) accepts
    /// nothing else, since file and environment secrets would sit in the function's package
    /// or configuration.
    pub fn from_config(
        databases: &std::collections::BTreeMap<String, DatabaseConfig>,
        sdk: Option<&aws_config::SdkConfig>,
        lambda: bool,
    ) -> Result<Option<Self>, String> {
        if databases.is_empty() {
            return Ok(None);
        }
        let mut issuer = Self::new();
        for (name, config) in databases {
            let secret: Arc<dyn SecretSource> = match (
                &config.password_secret_arn,
                &config.password_file,
                &config.password_env,
            ) {
                (Some(arn), _, _) => {
                    let sdk = sdk.ok_or_else(|| {
                        format!(
                            "databases.{name}.password_secret_arn needs an [aws] section (Secrets Manager)"
                        )
                    })?;
                    Arc::new(crate::secrets::SecretsManagerSecret::new(
                        aws_sdk_secretsmanager::Client::new(sdk),
                        arn,
                    ))
                }
                (None, _, _) if lambda => {
                    return Err(format!(
                        "databases.{name}: in Lambda the admin password must come from password_secret_arn"
                    ));
                }
                (None, Some(file), _) => Arc::new(crate::secrets::FileSecret::new(file)),
                (None, None, Some(var)) => Arc::new(crate::secrets::EnvSecret::new(var)),
                // Trust or peer authentication (local servers).
                (None, None, None) => Arc::new(crate::secrets::StaticSecret::empty()),
            };
            issuer = issuer.with_connection(name, config.clone(), secret);
        }
        Ok(Some(issuer))
    }

    /// Checks every database grant against the configured connections: a grant naming a
    /// connection of another engine is a configuration error; one naming no connection answers
    /// 503 (`backend_unavailable`), like AWS grants without `[aws]`.
    pub fn check_grants(&self, policies: &crate::policy::PolicySet) -> Result<(), String> {
        for policy in policies.policies() {
            for (grant_name, grant) in &policy.grants {
                let crate::policy::Grant::Database(grant) = grant else { continue };
                match self.connections.get(&grant.connection) {
                    Some(admin) if admin.engine() != grant.engine => {
                        return Err(format!(
                            "policy {}, grant {grant_name}: connection {:?} is {}, the grant says {}",
                            policy.name,
                            grant.connection,
                            admin.engine(),
                            grant.engine
                        ));
                    }
                    Some(_) => {}
                    None => tracing::warn!(
                        policy = %policy.name,
                        grant = %grant_name,
                        connection = %grant.connection,
                        "database grant names an unconfigured connection: it will answer 503"
                    ),
                }
            }
        }
        Ok(())
    }

    pub fn connection_names(&self) -> impl Iterator<Item = (&str, Engine)> {
        self.connections.iter().map(|(name, admin)| (name.as_str(), admin.engine()))
    }

    /// Reads every admin secret and opens one connection per admin connection, so the first
    /// request does not pay for it (Lambda init). Failures are returned, not fatal: the
    /// connection is retried on use.
    pub async fn warm_connections(&self) -> Vec<(String, IssueError)> {
        let mut failures = Vec::new();
        for (name, admin) in &self.connections {
            let result = match admin {
                Admin::Postgres(pg) => pg.warm().await,
                Admin::Mysql(my) => my.warm().await,
            };
            if let Err(err) = result {
                failures.push((name.clone(), err));
            }
        }
        failures
    }

    fn admin(&self, connection: &str, engine: Engine) -> Result<&Admin, IssueError> {
        let admin = self.connections.get(connection).ok_or_else(|| {
            IssueError::Unavailable(format!("no database connection {connection:?} is configured"))
        })?;
        if admin.engine() == engine {
            Ok(admin)
        } else {
            Err(IssueError::Rejected(format!(
                "database connection {connection:?} is {}, the grant wants {engine}",
                admin.engine()
            )))
        }
    }

    fn user_ref(lease: &Lease) -> Result<(UserRef<'_>, &str, Engine), IssueError> {
        let BackendRef::Database { engine, connection, database, username, revocation_statements } =
            &lease.backend
        else {
            return Err(IssueError::WrongBackend { expected: "database", got: lease.backend.kind() });
        };
        Ok((UserRef { database, username, revocation_statements }, connection, *engine))
    }
}

#[async_trait::async_trait]
impl CredentialIssuer for DatabaseIssuer {
    fn backend(&self) -> &'static str {
        "database"
    }

    async fn issue(&self, plan: &IssuePlan) -> Result<Credential, IssueError> {
        let IssuePlan::Database(plan) = plan else {
            return Err(IssueError::WrongBackend { expected: "database", got: plan.backend() });
        };
        let credentials = match self.admin(&plan.connection, plan.engine)? {
            Admin::Postgres(pg) => pg.issue(plan).await?,
            Admin::Mysql(my) => my.issue(plan).await?,
        };
        Ok(Credential::Database(credentials))
    }

    async fn warm(&self) {
        for (connection, err) in self.warm_connections().await {
            tracing::warn!(%connection, error = %err, "could not open a database admin connection at start-up");
        }
    }
}

/// Revocation and renewal go through the same admin connections.
#[async_trait::async_trait]
impl CredentialRevoker for DatabaseIssuer {
    fn backend(&self) -> &'static str {
        "database"
    }

    async fn revoke(&self, lease: &Lease) -> Result<(), IssueError> {
        let (user, connection, engine) = Self::user_ref(lease)?;
        match self.admin(connection, engine)? {
            Admin::Postgres(pg) => pg.revoke(user).await,
            Admin::Mysql(my) => my.revoke(user).await,
        }
    }

    /// PostgreSQL connections with an `orphan_prefix`; `created_at` carries the role's
    /// `VALID UNTIL`, so the reconciler's age threshold counts from when the role stopped
    /// working, never from an unknown creation time. MySQL keeps no such time: not listed.
    async fn list_issued(&self) -> Result<Option<Vec<IssuedCredential>>, IssueError> {
        let mut found = None;
        for (name, admin) in &self.connections {
            let Admin::Postgres(pg) = admin else { continue };
            if let Some(roles) = pg.list_prefixed().await? {
                let list = found.get_or_insert_with(Vec::new);
                list.extend(roles.into_iter().map(|(role, valid_until)| IssuedCredential {
                    location: name.clone(),
                    name: role,
                    created_at: valid_until,
                }));
            }
        }
        Ok(found)
    }

    async fn remove_orphan(&self, credential: &IssuedCredential) -> Result<(), IssueError> {
        let Admin::Postgres(pg) = self.admin(&credential.location, Engine::Postgres)? else {
            return Err(IssueError::Rejected(format!(
                "{} is not a PostgreSQL connection",
                credential.location
            )));
        };
        let database = pg.admin_database();
        pg.revoke(UserRef { database: &database, username: &credential.name, revocation_statements: &[] })
            .await
    }

    async fn renew(&self, lease: &Lease, expires_at: DateTime<Utc>) -> Result<(), IssueError> {
        let (user, connection, engine) = Self::user_ref(lease)?;
        // Never past the lease's maximum, whatever the caller asked.
        let expires_at = expires_at.min(lease.max_expires_at);
        match self.admin(connection, engine)? {
            Admin::Postgres(pg) => pg.renew(user, expires_at).await,
            Admin::Mysql(my) => my.renew(user).await,
        }
    }
}

/// A failed step of a multi-statement operation: a statement, or getting a connection (whose
/// error the pool has already classified and retried).
#[derive(Debug)]
pub(crate) enum StepError {
    Sql(sqlx::Error),
    Pool(IssueError),
}

impl From<sqlx::Error> for StepError {
    fn from(err: sqlx::Error) -> Self {
        Self::Sql(err)
    }
}

impl From<IssueError> for StepError {
    fn from(err: IssueError) -> Self {
        Self::Pool(err)
    }
}

impl From<sql::QuoteError> for StepError {
    fn from(err: sql::QuoteError) -> Self {
        Self::Sql(sqlx::Error::InvalidArgument(err.to_string()))
    }
}

/// Timestamps in SQL: UTC, whole seconds.
pub(crate) fn sql_timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Whether the statement may have run before the error (the connection broke mid-flight), so
/// a user may exist that the caller must clean up.
pub(crate) fn connection_lost(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_)
    )
}
