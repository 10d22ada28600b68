//! PostgreSQL: one role per lease.
//!
//! Mint — one simple-query batch, so one round trip and one implicit transaction (a failed
//! grant rolls the role back with it):
//!
//! ```sql
//! CREATE ROLE "v_…" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
//!   PASSWORD 'SCRAM-SHA-256$<iterations>:…' VALID UNTIL '<expiry + grace>+00';
//! GRANT "app_read" TO "v_…";
//! GRANT SELECT ON TABLE "public"."orders" TO "v_…";
//! ```
//!
//! Revoke — idempotent, three round trips; concurrent revokers of one role serialise on an
//! advisory lock:
//! 1. `ALTER ROLE … NOLOGIN` (committed first, so a killed client cannot log back in),
//! 2. `pg_terminate_backend` for every session of the role (waiting until each has ended),
//! 3. revocation statements, `REASSIGN OWNED` (if configured), `DROP OWNED`, `DROP ROLE`.
//!
//! A role that does not exist is already revoked. `VALID UNTIL` is the server-side backstop
//! should the revoker be late: password logins fail after it.

use std::num::NonZeroU32;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, PgConnection, Postgres};

use super::pool::{Driver, Pools};
use super::{StepError, UserRef, connection_lost, sql_timestamp};
use crate::backend::IssueError;
use crate::backend::database::{
    Creation, DatabaseCredentials, DatabasePlan, Engine, REVOCATION_PLACEHOLDERS, Target,
};
use crate::backend::sql::{self, Placeholder, postgres::quote_ident, postgres::quote_literal};
use crate::config::database::{DatabaseConfig, TlsMode};
use crate::secrets::SecretSource;

/// How long `pg_terminate_backend` waits for each session to end (PostgreSQL 14+).
const TERMINATE_WAIT_MS: i64 = 5000;

#[derive(Debug)]
pub(super) struct PostgresAdmin {
    pools: Pools<Postgres>,
    iterations: NonZeroU32,
    grace: TimeDelta,
}

impl PostgresAdmin {
    pub(super) fn new(name: &str, config: DatabaseConfig, secret: std::sync::Arc<dyn SecretSource>) -> Self {
        let iterations = NonZeroU32::new(config.scram_iterations).unwrap_or(NonZeroU32::MIN);
        let grace = TimeDelta::from_std(config.expiry_grace).unwrap_or(TimeDelta::zero());
        let driver = Driver { options: connect_options, is_auth_failure };
        Self { pools: Pools::new(name, config, secret, driver), iterations, grace }
    }

    pub(super) async fn warm(&self) -> Result<(), IssueError> {
        self.pools.acquire(&self.pools.config().database).await.map(super::pool::Pooled::release)
    }

    pub(super) async fn issue(&self, plan: &DatabasePlan) -> Result<DatabaseCredentials, IssueError> {
        let password = plan.password.generate().map_err(|_| rng_failed())?;
        let verifier =
            scram::verifier(password.expose_secret(), self.iterations).map_err(|_| rng_failed())?;
        let secrets = [password.expose_secret(), verifier.as_str()];
        let sql = creation_sql(plan, &verifier, plan.expires_at + self.grace)
            .map_err(|e| IssueError::Rejected(format!("building CREATE ROLE for {}: {e}", plan.username)))?;
        let user = UserRef {
            database: &plan.database,
            username: &plan.username,
            revocation_statements: &plan.revocation_statements,
        };
        let mut attempt = 1;
        loop {
            let mut conn = self.pools.acquire(&plan.database).await?;
            let Err(err) = sqlx::raw_sql(AssertSqlSafe(sql.as_str())).execute(&mut *conn).await else {
                conn.release();
                break;
            };
            drop(conn); // discarded, not returned to the pool: it may be broken
            if is_duplicate_object(&err) {
                // 80 random bits make this a bug or a planted role, never bad luck: refuse, and
                // leave the role alone (it is not ours). See docs/databases.md.
                tracing::error!(username = %plan.username, "CREATE ROLE found an existing role of the same name");
                return Err(IssueError::Rejected(format!(
                    "role {} already exists (not created by this lease)",
                    plan.username
                )));
            }
            // The batch is one transaction, so a failed statement left nothing behind; but the
            // connection may have died after COMMIT, or custom statements may have committed
            // part of the work. Drop whatever exists before answering.
            let cleanup = self.revoke(user).await;
            if lost(&err) && attempt < self.pools.attempts() && cleanup.is_ok() {
                // A dead pooled connection: the role is gone again, try on another one.
                attempt += 1;
                continue;
            }
            if let Err(cleanup_err) = cleanup {
                tracing::warn!(username = %plan.username, error = %cleanup_err, "cleanup after a failed mint failed; the pending lease will end it");
            }
            return Err(classify("CREATE ROLE", &err, &secrets));
        }
        let config = self.pools.config();
        Ok(DatabaseCredentials {
            engine: Engine::Postgres,
            username: plan.username.clone(),
            password,
            host: config.host.clone(),
            port: config.port(),
            database: plan.database.clone(),
            expires_at: plan.expires_at,
        })
    }

    /// The database the admin connection logs into (where orphan roles are revoked from).
    pub(super) fn admin_database(&self) -> String {
        self.pools.config().database.clone()
    }

    /// Roles named `<orphan_prefix>…` with their `VALID UNTIL` (the latest moment their lease
    /// could have ended, plus grace): the candidates of orphan reconciliation.
    pub(super) async fn list_prefixed(
        &self,
    ) -> Result<Option<Vec<(String, Option<DateTime<Utc>>)>>, IssueError> {
        let config = self.pools.config();
        let Some(prefix) = config.orphan_prefix.clone().filter(|p| !p.is_empty()) else { return Ok(None) };
        let database = config.database.clone();
        let pattern = format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let mut conn = self.pools.acquire(&database).await?;
        // Epoch seconds: `infinity` (no expiry) and NULL both mean "no age known".
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT rolname, CASE WHEN rolvaliduntil IS NULL OR rolvaliduntil = 'infinity' THEN NULL \
             ELSE extract(epoch FROM rolvaliduntil)::bigint END FROM pg_roles WHERE rolname LIKE $1 ESCAPE '\\'",
        )
        .bind(pattern)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify("listing roles", &e, &[]))?;
        let rows = rows
            .into_iter()
            .map(|(name, until)| (name, until.and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))))
            .collect();
        conn.release();
        Ok(Some(rows))
    }

    /// Idempotent; retried on a dead pooled connection (every step is safe to repeat).
    pub(super) async fn revoke(&self, user: UserRef<'_>) -> Result<(), IssueError> {
        let mut attempt = 1;
        loop {
            let mut conn = self.pools.acquire(user.database).await?;
            match self.revoke_inner(&mut conn, user).await {
                Ok(()) => {
                    conn.release();
                    return Ok(());
                }
                Err(StepError::Pool(err)) => return Err(err),
                Err(StepError::Sql(err)) if lost(&err) && attempt < self.pools.attempts() => {
                    attempt += 1;
                }
                Err(StepError::Sql(err)) => {
                    return Err(classify(&format!("revoking role {}", user.username), &err, &[]));
                }
            }
        }
    }

    /// Three round trips. Steps 1 and 3 are each one simple-query batch, which PostgreSQL runs
    /// as one implicit transaction: the advisory lock taken by its first statement is held
    /// until the batch commits, and a failing statement rolls the whole batch back.
    async fn revoke_inner(&self, conn: &mut PgConnection, user: UserRef<'_>) -> Result<(), StepError> {
        let ident = quote_ident(user.username)?;
        let lock = advisory_lock_sql(user.username)?;

        // 1. No new sessions, committed before anyone is killed. `ALTER ROLE` of a role that
        //    does not exist fails with undefined_object: it is already revoked.
        match sqlx::raw_sql(AssertSqlSafe(format!("{lock};\nALTER ROLE {ident} NOLOGIN")))
            .execute(&mut *conn)
            .await
        {
            Err(err) if is_undefined_object(&err) => return Ok(()),
            result => result?,
        };

        // 2. End the sessions that exist.
        let terminate = if conn.server_version_num().is_some_and(|v| v >= 140_000) {
            "SELECT count(pg_terminate_backend(pid, $2)) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid()"
        } else {
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid() AND $2 > 0"
        };
        sqlx::query(terminate).bind(user.username).bind(TERMINATE_WAIT_MS).execute(&mut *conn).await?;

        // 3. Drop it with everything it owns or was granted. DROP OWNED needs the privileges
        //    of the role: a CREATEROLE admin grants them to itself (harmless for a superuser,
        //    and the membership goes with the role).
        let mut batch = vec![lock, format!("GRANT {ident} TO CURRENT_USER")];
        for source in user.revocation_statements {
            let statement = sql::SqlTemplate::parse(source, REVOCATION_PLACEHOLDERS)
                .map_err(|e| sqlx::Error::InvalidArgument(format!("revocation statement: {e}")))?;
            batch.push(statement.render(|p| match p {
                Placeholder::Database => quote_ident(user.database),
                _ => Ok(ident.clone()),
            })?);
        }
        if let Some(heir) = &self.pools.config().reassign_owned_to {
            batch.push(format!("REASSIGN OWNED BY {ident} TO {}", quote_ident(heir)?));
        }
        batch.push(format!("DROP OWNED BY {ident}"));
        batch.push(format!("DROP ROLE {ident}"));
        match sqlx::raw_sql(AssertSqlSafe(batch.join(";\n"))).execute(&mut *conn).await {
            Ok(_) => Ok(()),
            // Another revoker dropped the role between steps 1 and 3 — or a revocation
            // statement names an object that does not exist, and the role is still there.
            Err(err) if is_undefined_object(&err) => {
                if role_exists(conn, user.username).await? {
                    Err(StepError::Sql(err))
                } else {
                    Ok(())
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    /// `VALID UNTIL` = `expires_at` (already capped at the lease's maximum) + grace.
    pub(super) async fn renew(&self, user: UserRef<'_>, expires_at: DateTime<Utc>) -> Result<(), IssueError> {
        let context = format!("renewing role {}", user.username);
        let ident =
            quote_ident(user.username).map_err(|e| IssueError::Rejected(format!("{context}: {e}")))?;
        let until = quote_literal(&format!("{}+00", sql_timestamp(expires_at + self.grace)))
            .map_err(|e| IssueError::Rejected(format!("{context}: {e}")))?;
        let lock =
            advisory_lock_sql(user.username).map_err(|e| IssueError::Rejected(format!("{context}: {e}")))?;
        let mut conn = self.pools.acquire(user.database).await?;
        // One implicit transaction under the role's lock, like the revoke steps.
        let result = sqlx::raw_sql(AssertSqlSafe(format!("{lock};\nALTER ROLE {ident} VALID UNTIL {until}")))
            .execute(&mut *conn)
            .await;
        match result {
            Ok(_) => {
                conn.release();
                Ok(())
            }
            Err(err) if is_undefined_object(&err) => {
                conn.release();
                Err(IssueError::Rejected(format!("{context}: the role no longer exists")))
            }
            Err(err) => Err(classify(&context, &err, &[])),
        }
    }
}

use super::scram;

/// The statement taking the per-role advisory lock (held until the transaction ends), which
/// serialises concurrent revokers and renewers of one role.
fn advisory_lock_sql(username: &str) -> Result<String, sql::QuoteError> {
    let key = quote_literal(&format!("credbroker:{username}"))?;
    Ok(format!("SELECT pg_advisory_xact_lock(hashtextextended({key}, 0))"))
}

async fn role_exists(conn: &mut PgConnection, username: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(username)
        .fetch_one(&mut *conn)
        .await
}

/// The mint batch (see the module docs).
fn creation_sql(
    plan: &DatabasePlan,
    verifier: &str,
    valid_until: DateTime<Utc>,
) -> Result<String, sql::QuoteError> {
    let user = quote_ident(&plan.username)?;
    let password = quote_literal(verifier)?;
    let until = quote_literal(&format!("{}+00", sql_timestamp(valid_until)))?;
    let mut statements = Vec::new();
    match plan.creation.as_ref() {
        Creation::Privileges(privileges) => {
            statements.push(format!(
                "CREATE ROLE {user} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS PASSWORD {password} VALID UNTIL {until}"
            ));
            if !privileges.roles.is_empty() {
                let roles = privileges.roles.iter().map(|r| quote_ident(r)).collect::<Result<Vec<_>, _>>()?;
                statements.push(format!("GRANT {} TO {user}", roles.join(", ")));
            }
            for object in &privileges.objects {
                let target = match &object.target {
                    Target::Table { schema: Some(schema), name } => {
                        format!("TABLE {}.{}", quote_ident(schema)?, quote_ident(name)?)
                    }
                    Target::Table { schema: None, name } => format!("TABLE {}", quote_ident(name)?),
                    Target::Schema(schema) => format!("SCHEMA {}", quote_ident(schema)?),
                    Target::AllTablesInSchema(schema) => {
                        format!("ALL TABLES IN SCHEMA {}", quote_ident(schema)?)
                    }
                    Target::AllSequencesInSchema(schema) => {
                        format!("ALL SEQUENCES IN SCHEMA {}", quote_ident(schema)?)
                    }
                };
                statements.push(format!("GRANT {} ON {target} TO {user}", object.privileges.join(", ")));
            }
        }
        Creation::Statements(templates) => {
            let database = quote_ident(&plan.database)?;
            for template in templates {
                statements.push(template.render(|p| {
                    Ok::<_, sql::QuoteError>(match p {
                        Placeholder::Name => user.clone(),
                        Placeholder::Password => password.clone(),
                        Placeholder::Expiration => until.clone(),
                        Placeholder::Database => database.clone(),
                    })
                })?);
            }
        }
    }
    Ok(statements.join(";\n"))
}

fn connect_options(config: &DatabaseConfig, name: &str, password: &str, database: &str) -> PgConnectOptions {
    let mut options = PgConnectOptions::new_without_pgpass()
        .host(&config.host)
        .port(config.port())
        .username(&config.user)
        .database(database)
        // Operators (and tests) find the broker's sessions by it in pg_stat_activity.
        .application_name(&format!("credbroker:{name}"))
        .ssl_mode(match config.tls {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        })
        // Statement text carries role verifiers: never log it.
        .disable_statement_logging();
    if !password.is_empty() {
        options = options.password(password);
    }
    if let Some(ca) = &config.ca_file {
        options = options.ssl_root_cert(ca);
    }
    options
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(std::borrow::Cow::into_owned),
        _ => None,
    }
}

/// The connection broke: I/O errors, and the server ending the session (`57P01`
/// admin_shutdown when a DBA or failover terminates it, `57P02`, class `08`).
fn lost(err: &sqlx::Error) -> bool {
    connection_lost(err) || sqlstate(err).is_some_and(|c| c == "57P01" || c == "57P02" || c.starts_with("08"))
}

fn is_auth_failure(err: &sqlx::Error) -> bool {
    sqlstate(err).is_some_and(|c| c.starts_with("28"))
}

fn is_duplicate_object(err: &sqlx::Error) -> bool {
    sqlstate(err).as_deref() == Some("42710")
}

fn is_undefined_object(err: &sqlx::Error) -> bool {
    sqlstate(err).as_deref() == Some("42704")
}

/// Retrying helps for connection trouble, resource shortage, shutdowns, serialization
/// failures, lock timeouts and refused admin logins (until the secret is fixed or rotated).
fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(_) => sqlstate(err).is_some_and(|c| {
            ["08", "53", "57", "40", "28", "58"].iter().any(|class| c.starts_with(class)) || c == "55P03"
        }),
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => false,
        _ => true,
    }
}

pub(super) fn classify(context: &str, err: &sqlx::Error, secrets: &[&str]) -> IssueError {
    let message = sql::redact(&format!("{context}: {err}"), secrets);
    if is_transient(err) { IssueError::Unavailable(message) } else { IssueError::Rejected(message) }
}

fn rng_failed() -> IssueError {
    IssueError::Unavailable("random number generator failed".into())
}
