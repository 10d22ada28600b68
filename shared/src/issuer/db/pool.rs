//! Admin connection pools: one per (connection, database), created on first use, kept warm
//! across Lambda invocations.
//!
//! A small pool of our own rather than `sqlx::Pool`: sqlx pings every connection when it goes
//! back to the pool (a round trip per use, to catch futures cancelled mid-protocol), which on
//! 2 cores was a fifth of a low-iteration PostgreSQL mint (`docs/benchmarks.md`). Here a
//! connection goes back only when the caller says the work on it completed
//! ([`Pooled::release`]); a connection dropped any other way (an error, a cancelled request)
//! is discarded, so nothing half-used is ever reused and no ping is needed for it.
//!
//! - The admin password is read from its [`SecretSource`] on first use and again when the
//!   server refuses it (a rotation happened), at most once per [`REFRESH_INTERVAL`].
//! - A connection that sat idle longer than [`PING_IDLE_AFTER`] (e.g. across a frozen Lambda
//!   sandbox) is pinged before use and replaced if dead; recently used ones skip the round
//!   trip. One that dies under a statement anyway is handled by the caller (clean up, retry).
//! - sqlx's statement logging is off (set by the engines' connect options): the text of a
//!   `CREATE ROLE` carries the password (MySQL) or its verifier (PostgreSQL).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{ConnectOptions, Connection, Database};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::IssueError;
use crate::config::database::DatabaseConfig;
use crate::secrets::{SecretError, SecretSource};

/// Idle connections older than this are pinged before use.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(10);
/// Connections are recycled after this, so a server-side change (failover, new certificate)
/// is picked up eventually.
const MAX_LIFETIME: Duration = Duration::from_mins(30);
/// Minimum time between two reads of the admin secret after a refused login.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

type ConnectOptionsOf<DB> = <<DB as Database>::Connection as Connection>::Options;

/// How an engine builds its connect options (from the config, the connection's name, the
/// admin password and the database) and recognises a refused login.
pub(super) struct Driver<DB: Database> {
    pub options: fn(&DatabaseConfig, &str, &str, &str) -> ConnectOptionsOf<DB>,
    pub is_auth_failure: fn(&sqlx::Error) -> bool,
}

/// Every pool of one admin connection.
pub(super) struct Pools<DB: Database> {
    connection: String,
    config: DatabaseConfig,
    secret: Arc<dyn SecretSource>,
    driver: Driver<DB>,
    /// The admin password in use, and when it was last re-read after a refused login.
    password: tokio::sync::Mutex<(Option<SecretString>, Option<Instant>)>,
    by_database: Mutex<HashMap<String, Arc<ConnPool<DB>>>>,
}

impl<DB: Database> std::fmt::Debug for Pools<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("connection", &self.connection)
            .field("secret", &self.secret.describe())
            .finish_non_exhaustive()
    }
}

impl<DB: Database> Pools<DB> {
    pub(super) fn new(
        connection: &str,
        config: DatabaseConfig,
        secret: Arc<dyn SecretSource>,
        driver: Driver<DB>,
    ) -> Self {
        Self {
            connection: connection.to_owned(),
            config,
            secret,
            driver,
            password: tokio::sync::Mutex::new((None, None)),
            by_database: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn config(&self) -> &DatabaseConfig {
        &self.config
    }

    /// How many times to try an operation that failed because its connection died: enough
    /// to get past every pooled connection (each dead one is discarded as it fails).
    pub(super) fn attempts(&self) -> u32 {
        self.config.pool_size + 1
    }

    /// A connection to `database`: an idle one (pinged if it idled long), else a new one,
    /// re-reading the admin secret once if the server refuses it.
    pub(super) async fn acquire(&self, database: &str) -> Result<Pooled<DB>, IssueError> {
        let pool = self.pool(database).await?;
        let permit =
            tokio::time::timeout(self.config.connect_timeout, Arc::clone(&pool.permits).acquire_owned())
                .await
                .map_err(|_| {
                    IssueError::Unavailable(format!(
                        "database connection {}: all {} admin connections busy",
                        self.connection, self.config.pool_size
                    ))
                })?
                .map_err(|_| IssueError::Unavailable("connection pool closed".into()))?;
        while let Some(mut idle) = pool.pop_idle() {
            if idle.born.elapsed() > MAX_LIFETIME {
                tokio::spawn(idle.conn.close());
                continue;
            }
            if idle.since.elapsed() > PING_IDLE_AFTER && idle.conn.ping().await.is_err() {
                continue; // dead: dropped
            }
            return Ok(Pooled { conn: Some(idle.conn), born: idle.born, pool, _permit: permit });
        }
        let conn = match pool.connect(self.config.connect_timeout).await {
            Ok(conn) => conn,
            Err(err) if (self.driver.is_auth_failure)(&err) && self.refresh_password().await? => {
                tracing::warn!(connection = %self.connection, "admin login refused; re-read the admin secret");
                pool.connect(self.config.connect_timeout).await.map_err(|e| self.unavailable(&e))?
            }
            Err(err) => return Err(self.unavailable(&err)),
        };
        Ok(Pooled { conn: Some(conn), born: Instant::now(), pool, _permit: permit })
    }

    fn unavailable(&self, err: &sqlx::Error) -> IssueError {
        IssueError::Unavailable(format!("database connection {}: {err}", self.connection))
    }

    async fn pool(&self, database: &str) -> Result<Arc<ConnPool<DB>>, IssueError> {
        if let Some(pool) = self.lock_pools().get(database) {
            return Ok(Arc::clone(pool));
        }
        let password = self.current_password().await?;
        let options =
            (self.driver.options)(&self.config, &self.connection, password.expose_secret(), database);
        let mut pools = self.lock_pools();
        // Another task may have created it meanwhile: keep the first.
        let pool = pools.entry(database.to_owned()).or_insert_with(|| {
            Arc::new(ConnPool {
                options: Mutex::new(Arc::new(options)),
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(self.config.pool_size as usize)),
            })
        });
        Ok(Arc::clone(pool))
    }

    fn lock_pools(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ConnPool<DB>>>> {
        self.by_database.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn current_password(&self) -> Result<SecretString, IssueError> {
        let mut slot = self.password.lock().await;
        if let Some(password) = slot.0.as_ref() {
            return Ok(password.clone());
        }
        let password = self.secret.fetch().await.map_err(secret_error)?;
        slot.0 = Some(password.clone());
        Ok(password)
    }

    /// Re-reads the secret (unless that was done moments ago: a wrong password must not turn
    /// every request into a Secrets Manager call) and points every pool at it. Returns
    /// whether the password changed, i.e. whether a retry can help.
    async fn refresh_password(&self) -> Result<bool, IssueError> {
        let mut slot = self.password.lock().await;
        if slot.1.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
            return Ok(false);
        }
        slot.1 = Some(Instant::now());
        let fresh = self.secret.fetch().await.map_err(secret_error)?;
        let changed = slot.0.as_ref().is_none_or(|old| old.expose_secret() != fresh.expose_secret());
        slot.0 = Some(fresh.clone());
        drop(slot);
        if changed {
            for (database, pool) in self.lock_pools().iter() {
                let options =
                    (self.driver.options)(&self.config, &self.connection, fresh.expose_secret(), database);
                *pool.options.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(options);
            }
        }
        Ok(changed)
    }
}

/// The connections of one database.
struct ConnPool<DB: Database> {
    options: Mutex<Arc<ConnectOptionsOf<DB>>>,
    /// Most recently used last (popped first: the warmest connection).
    idle: Mutex<Vec<Idle<DB::Connection>>>,
    /// At most `pool_size` connections exist (each checked-out connection holds a permit).
    permits: Arc<Semaphore>,
}

struct Idle<C> {
    conn: C,
    since: Instant,
    born: Instant,
}

impl<DB: Database> ConnPool<DB> {
    fn pop_idle(&self) -> Option<Idle<DB::Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    async fn connect(&self, timeout: Duration) -> Result<DB::Connection, sqlx::Error> {
        let options = Arc::clone(&self.options.lock().unwrap_or_else(PoisonError::into_inner));
        tokio::time::timeout(timeout, options.connect()).await.unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }
}

/// A checked-out connection. Call [`Pooled::release`] once the work on it completed; dropped
/// any other way it is discarded (it may be broken or mid-protocol).
pub(super) struct Pooled<DB: Database> {
    conn: Option<DB::Connection>,
    born: Instant,
    pool: Arc<ConnPool<DB>>,
    _permit: OwnedSemaphorePermit,
}

impl<DB: Database> Pooled<DB> {
    /// Returns the connection to the pool for the next caller.
    pub(super) fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            let idle = Idle { conn, since: Instant::now(), born: self.born };
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push(idle);
        }
    }
}

impl<DB: Database> Deref for Pooled<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        self.conn.as_ref().unwrap_or_else(|| unreachable!("present until release or drop"))
    }
}

impl<DB: Database> DerefMut for Pooled<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.conn.as_mut().unwrap_or_else(|| unreachable!("present until release or drop"))
    }
}

impl<DB: Database> std::fmt::Debug for Pooled<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled").field("born", &self.born).finish_non_exhaustive()
    }
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(secret_error)`
fn secret_error(err: SecretError) -> IssueError {
    // Either way the caller gets 503: the broker, not the request, is misconfigured or cut off.
    IssueError::Unavailable(format!("admin password: {err}"))
}
