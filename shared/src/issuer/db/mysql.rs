//! MySQL 8 and MariaDB 10.4+: one user per lease.
//!
//! Mint (DDL is not transactional in MySQL, so statement by statement; a failure after
//! `CREATE USER` drops the user before the caller hears of it):
//!
//! ```sql
//! CREATE USER 'v_…'@'%' IDENTIFIED BY '<password>';
//! GRANT SELECT ON `app`.`orders` TO 'v_…'@'%';
//! GRANT `app_read` TO 'v_…'@'%';  SET DEFAULT ROLE `app_read` FOR 'v_…'@'%';   -- MariaDB
//! ```
//!
//! Revoke — idempotent and safe to run concurrently:
//! 1. `ALTER USER … ACCOUNT LOCK` (no new sessions; "no such user" means already revoked),
//! 2. `KILL CONNECTION` for each of the user's sessions (`information_schema.PROCESSLIST`),
//! 3. revocation statements, then `DROP USER IF EXISTS` (which also removes its grants).
//!
//! MySQL has no `VALID UNTIL`: the revoker is the only expiry (`docs/databases.md` explains
//! why no `CREATE EVENT` backstop).

use secrecy::ExposeSecret;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, MySql, MySqlConnection};
use tokio::sync::OnceCell;

use super::pool::{Driver, Pooled, Pools};
use super::{StepError, UserRef, connection_lost, sql_timestamp};
use crate::backend::IssueError;
use crate::backend::database::{
    Creation, DatabaseCredentials, DatabasePlan, Engine, REVOCATION_PLACEHOLDERS, Target,
};
use crate::backend::sql::{self, Placeholder, mysql::account, mysql::quote_ident, mysql::quote_literal};
use crate::config::database::{DatabaseConfig, TlsMode};
use crate::secrets::SecretSource;

/// MySQL error numbers the issuer reacts to.
const ER_NO_SUCH_THREAD: u16 = 1094;
const ER_CANNOT_USER: u16 = 1396;
const ER_NONEXISTING_GRANT: u16 = 1141;
const ER_ACCESS_DENIED: u16 = 1045;

#[derive(Debug)]
pub(super) struct MysqlAdmin {
    pools: Pools<MySql>,
    /// `SET DEFAULT ROLE` differs between MariaDB (`FOR`) and MySQL (`TO`).
    mariadb: OnceCell<bool>,
}

impl MysqlAdmin {
    pub(super) fn new(name: &str, config: DatabaseConfig, secret: std::sync::Arc<dyn SecretSource>) -> Self {
        let driver = Driver { options: connect_options, is_auth_failure };
        Self { pools: Pools::new(name, config, secret, driver), mariadb: OnceCell::new() }
    }

    /// MySQL users are global: one pool, on the connection's own database.
    async fn conn(&self) -> Result<Pooled<MySql>, IssueError> {
        self.pools.acquire(&self.pools.config().database).await
    }

    pub(super) async fn warm(&self) -> Result<(), IssueError> {
        self.conn().await.map(Pooled::release)
    }

    pub(super) async fn issue(&self, plan: &DatabasePlan) -> Result<DatabaseCredentials, IssueError> {
        let password = plan
            .password
            .generate()
            .map_err(|_| IssueError::Unavailable("random number generator failed".into()))?;
        let secrets = [password.expose_secret()];
        let mut conn = self.conn().await?;
        let mariadb = *self
            .mariadb
            .get_or_try_init(|| async {
                let version: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(&mut *conn).await?;
                Ok::<_, sqlx::Error>(version.contains("MariaDB"))
            })
            .await
            .map_err(|e| classify("reading the server version", &e, &[]))?;
        let statements = self
            .creation_statements(plan, password.expose_secret(), mariadb)
            .map_err(|e| IssueError::Rejected(format!("building CREATE USER for {}: {e}", plan.username)))?;
        let user = UserRef {
            database: &plan.database,
            username: &plan.username,
            revocation_statements: &plan.revocation_statements,
        };
        let mut attempt = 1;
        'attempt: loop {
            for (i, statement) in statements.iter().enumerate() {
                let Err(err) = sqlx::raw_sql(AssertSqlSafe(statement.as_str())).execute(&mut *conn).await
                else {
                    continue;
                };
                drop(conn); // discarded, not returned to the pool: it may be broken
                if i == 0 && error_number(&err) == Some(ER_CANNOT_USER) {
                    // 80 random bits make this a bug or a planted user, never bad luck: refuse
                    // and leave the user alone (it is not ours). See docs/databases.md.
                    tracing::error!(username = %plan.username, "CREATE USER found an existing user of the same name");
                    return Err(IssueError::Rejected(format!(
                        "user {} already exists (not created by this lease)",
                        plan.username
                    )));
                }
                // Statements before this one took effect: drop the user before answering.
                let cleanup = self.revoke(user).await;
                if lost(&err) && attempt < self.pools.attempts() && cleanup.is_ok() {
                    attempt += 1;
                    conn = self.conn().await?;
                    continue 'attempt;
                }
                if let Err(cleanup_err) = cleanup {
                    tracing::warn!(username = %plan.username, error = %cleanup_err, "cleanup after a failed mint failed; the pending lease will end it");
                }
                return Err(classify("CREATE USER", &err, &secrets));
            }
            break;
        }
        conn.release();
        let config = self.pools.config();
        Ok(DatabaseCredentials {
            engine: Engine::Mysql,
            username: plan.username.clone(),
            password,
            host: config.host.clone(),
            port: config.port(),
            database: plan.database.clone(),
            expires_at: plan.expires_at,
        })
    }

    fn creation_statements(
        &self,
        plan: &DatabasePlan,
        password: &str,
        mariadb: bool,
    ) -> Result<Vec<String>, sql::QuoteError> {
        let acct = account(&plan.username, &self.pools.config().user_host)?;
        let password = quote_literal(password)?;
        let mut statements = Vec::new();
        match plan.creation.as_ref() {
            Creation::Privileges(privileges) => {
                statements.push(format!("CREATE USER {acct} IDENTIFIED BY {password}"));
                for object in &privileges.objects {
                    let target = match &object.target {
                        Target::Table { schema, name } => {
                            format!(
                                "{}.{}",
                                quote_ident(schema.as_deref().unwrap_or(&plan.database))?,
                                quote_ident(name)?
                            )
                        }
                        Target::AllTablesInSchema(schema) => format!("{}.*", quote_ident(schema)?),
                        // Refused at policy load for MySQL grants.
                        Target::Schema(_) | Target::AllSequencesInSchema(_) => continue,
                    };
                    statements.push(format!("GRANT {} ON {target} TO {acct}", object.privileges.join(", ")));
                }
                for role in &privileges.roles {
                    let role = quote_ident(role)?;
                    statements.push(format!("GRANT {role} TO {acct}"));
                    statements.push(if mariadb {
                        format!("SET DEFAULT ROLE {role} FOR {acct}")
                    } else {
                        format!("SET DEFAULT ROLE {role} TO {acct}")
                    });
                }
            }
            Creation::Statements(templates) => {
                let until = quote_literal(&sql_timestamp(plan.expires_at))?;
                let database = quote_ident(&plan.database)?;
                for template in templates {
                    statements.push(template.render(|p| {
                        Ok::<_, sql::QuoteError>(match p {
                            Placeholder::Name => acct.clone(),
                            Placeholder::Password => password.clone(),
                            Placeholder::Expiration => until.clone(),
                            Placeholder::Database => database.clone(),
                        })
                    })?);
                }
            }
        }
        Ok(statements)
    }

    /// Idempotent; retried on a dead pooled connection (every step is safe to repeat).
    pub(super) async fn revoke(&self, user: UserRef<'_>) -> Result<(), IssueError> {
        let mut attempt = 1;
        loop {
            let mut conn = self.conn().await?;
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
                    return Err(classify(&format!("revoking user {}", user.username), &err, &[]));
                }
            }
        }
    }

    async fn revoke_inner(&self, conn: &mut MySqlConnection, user: UserRef<'_>) -> Result<(), StepError> {
        let acct = account(user.username, &self.pools.config().user_host)?;

        // 1. No new sessions. "Operation failed" here means there is no such user: done.
        match sqlx::raw_sql(AssertSqlSafe(format!("ALTER USER {acct} ACCOUNT LOCK")))
            .execute(&mut *conn)
            .await
        {
            Err(err) if error_number(&err) == Some(ER_CANNOT_USER) => return Ok(()),
            other => other.map(drop)?,
        }

        // 2. End its sessions (a session that ended meanwhile is fine).
        kill_sessions(conn, user.username).await?;

        // 3. Extra statements, then the user and its grants.
        for source in user.revocation_statements {
            let statement = sql::SqlTemplate::parse(source, REVOCATION_PLACEHOLDERS)
                .map_err(|e| sqlx::Error::InvalidArgument(format!("revocation statement: {e}")))?;
            let rendered = statement.render(|p| match p {
                Placeholder::Database => quote_ident(user.database),
                _ => Ok(acct.clone()),
            })?;
            match sqlx::raw_sql(AssertSqlSafe(rendered)).execute(&mut *conn).await {
                // Another revoker dropped the user meanwhile.
                Err(err) if matches!(error_number(&err), Some(ER_CANNOT_USER | ER_NONEXISTING_GRANT)) => {}
                other => other.map(drop)?,
            }
        }
        sqlx::raw_sql(AssertSqlSafe(format!("DROP USER IF EXISTS {acct}"))).execute(&mut *conn).await?;
        Ok(())
    }

    /// Nothing to extend server-side: MySQL users have no expiry; the lease's does.
    #[allow(clippy::unused_async)] // same shape as the PostgreSQL admin
    pub(super) async fn renew(&self, _user: UserRef<'_>) -> Result<(), IssueError> {
        Ok(())
    }
}

async fn kill_sessions(conn: &mut MySqlConnection, username: &str) -> Result<(), sqlx::Error> {
    let ids: Vec<u64> = sqlx::query_scalar(
        "SELECT CAST(ID AS UNSIGNED) FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()",
    )
    .bind(username)
    .fetch_all(&mut *conn)
    .await?;
    for id in ids {
        match sqlx::raw_sql(AssertSqlSafe(format!("KILL CONNECTION {id}"))).execute(&mut *conn).await {
            Err(err) if error_number(&err) == Some(ER_NO_SUCH_THREAD) => {}
            other => other.map(drop)?,
        }
    }
    Ok(())
}

fn connect_options(
    config: &DatabaseConfig,
    _name: &str,
    password: &str,
    database: &str,
) -> MySqlConnectOptions {
    let mut options = MySqlConnectOptions::new()
        .host(&config.host)
        .port(config.port())
        .username(&config.user)
        .database(database)
        .ssl_mode(match config.tls {
            TlsMode::Disable => MySqlSslMode::Disabled,
            TlsMode::Require => MySqlSslMode::Required,
            TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        })
        // `CREATE USER … IDENTIFIED BY '<password>'`: never log statement text.
        .disable_statement_logging();
    if !password.is_empty() {
        options = options.password(password);
    }
    if let Some(ca) = &config.ca_file {
        options = options.ssl_ca(ca);
    }
    options
}

fn error_number(err: &sqlx::Error) -> Option<u16> {
    match err {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<MySqlDatabaseError>().map(MySqlDatabaseError::number)
        }
        _ => None,
    }
}

/// The connection broke: I/O errors, server shutdown (1053), connection killed (1927).
fn lost(err: &sqlx::Error) -> bool {
    connection_lost(err) || matches!(error_number(err), Some(1053 | 1927))
}

fn is_auth_failure(err: &sqlx::Error) -> bool {
    error_number(err) == Some(ER_ACCESS_DENIED)
}

/// Retrying helps for connection trouble, too many connections, lock waits, deadlocks,
/// shutdowns, interrupted queries and refused admin logins.
fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(_) => {
            matches!(error_number(err), Some(1040 | 1045 | 1053 | 1205 | 1213 | 1317 | 1927 | 2002..=2013))
        }
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => false,
        _ => true,
    }
}

fn classify(context: &str, err: &sqlx::Error, secrets: &[&str]) -> IssueError {
    let message = sql::redact(&format!("{context}: {err}"), secrets);
    if is_transient(err) { IssueError::Unavailable(message) } else { IssueError::Rejected(message) }
}
