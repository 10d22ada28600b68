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

mod mysql;
mod pool;
mod postgres;
pub mod scram;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::backend::database::Engine;
use crate::backend::sql;
use crate::backend::{
    Backend, BackendKind, BackendRef, Credential, CredentialIssuer, CredentialRevoker, IssueError, IssuePlan,
    IssuedCredential, IssuedRef,
};
use crate::config::database::DatabaseConfig;
use crate::secrets::SecretSource;

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

    /// The admin connections, by name, with their engines (what the wiring checks grants
    /// against).
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

    fn user_ref<'a>(issued: &IssuedRef<'a>) -> Result<(UserRef<'a>, &'a str, Engine), IssueError> {
        let BackendRef::Database { engine, connection, database, username, revocation_statements } =
            issued.backend
        else {
            return Err(IssueError::WrongBackend {
                expected: BackendKind::Database,
                got: issued.backend.kind(),
            });
        };
        Ok((UserRef { database, username, revocation_statements }, connection, *engine))
    }
}

impl Backend for DatabaseIssuer {
    fn backend(&self) -> BackendKind {
        BackendKind::Database
    }
}

#[async_trait::async_trait]
impl CredentialIssuer for DatabaseIssuer {
    async fn issue(&self, plan: &IssuePlan) -> Result<Credential, IssueError> {
        let IssuePlan::Database(plan) = plan else {
            return Err(IssueError::WrongBackend { expected: BackendKind::Database, got: plan.backend() });
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
    async fn revoke(&self, issued: IssuedRef<'_>) -> Result<(), IssueError> {
        let (user, connection, engine) = Self::user_ref(&issued)?;
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

    async fn renew(&self, issued: IssuedRef<'_>, expires_at: DateTime<Utc>) -> Result<(), IssueError> {
        let (user, connection, engine) = Self::user_ref(&issued)?;
        // Never past the lease's maximum, whatever the caller asked.
        let expires_at = expires_at.min(issued.max_expires_at);
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
