//! The database part of the contract: engines, the plan of one database user, and what the
//! caller receives. Policies build plans (`crate::policy::database`); the sqlx adapter
//! (`crate::issuer::db`) executes them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::BackendRef;
use super::password::PasswordPolicy;
use super::sql::{Placeholder, SqlTemplate};

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
pub const REVOCATION_PLACEHOLDERS: &[Placeholder] = &[Placeholder::Name, Placeholder::Database];
