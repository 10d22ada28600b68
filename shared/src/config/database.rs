//! `[databases.<name>]`: the admin connections database grants refer to by name.
//!
//! Parsed strictly with the rest of the broker config (`config/mod.rs`) and validated at load
//! time. The admin password is never in this file: it comes from Secrets Manager (cloud) or,
//! in local mode, from a file or an environment variable (`docs/databases.md`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::backend::Engine;

/// PostgreSQL's own SCRAM iteration count (and RFC 7677's minimum): the default, because some
/// clients refuse verifiers with fewer (older pgjdbc, Bun). See `docs/databases.md`.
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;

/// One admin connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub engine: Engine,
    pub host: String,
    /// Default: 5432 (PostgreSQL), 3306 (MySQL).
    #[serde(default)]
    pub port: Option<u16>,
    /// The database the admin connects to (PostgreSQL grants for other databases get a pool
    /// of their own, see `docs/databases.md`).
    pub database: String,
    /// The admin user (needs CREATEROLE or CREATE USER rights; see `docs/databases.md`).
    pub user: String,
    /// Secrets Manager secret (ARN or name) holding the admin password: the password itself
    /// or JSON with a `password` field. The only source allowed in Lambda.
    #[serde(default)]
    pub password_secret_arn: Option<String>,
    /// Local mode: a file holding the admin password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Local mode: an environment variable holding the admin password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS to the database. Default `verify-full`; `disable` is for local servers.
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM file of the CA(s) that sign the server certificate (e.g. the RDS bundle); without
    /// it the Mozilla roots (webpki-roots) are used.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: iteration count of the SCRAM-SHA-256 verifier the broker computes for each
    /// minted role. Default 4096; see `docs/databases.md` before lowering it.
    #[serde(default = "default_scram_iterations")]
    pub scram_iterations: u32,
    /// Admin connections kept open per database (warm across Lambda invocations).
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// How long to wait for a connection (also the connect timeout).
    #[serde(default = "default_connect_timeout", with = "super::humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// PostgreSQL: `VALID UNTIL` = lease expiry + this, the server-side backstop should the
    /// revoker be late. Covers clock skew between the broker and the database.
    #[serde(default = "default_expiry_grace", with = "super::humantime_serde_compat")]
    pub expiry_grace: Duration,
    /// PostgreSQL: on revocation, `REASSIGN OWNED BY <user> TO <this role>` before
    /// `DROP OWNED`, so objects a minted user created survive it. Default: they are dropped.
    #[serde(default)]
    pub reassign_owned_to: Option<String>,
    /// PostgreSQL: the name prefix of users this connection mints (as the grants' username
    /// templates start). When set, orphan reconciliation lists roles with this prefix and drops
    /// those no live lease names once their `VALID UNTIL` is old enough. Unset: no reconciliation.
    #[serde(default)]
    pub orphan_prefix: Option<String>,
    /// MySQL: the host part of minted accounts (`'user'@'<user_host>'`).
    #[serde(default = "default_user_host")]
    pub user_host: String,
}

/// TLS to the database server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP (local servers only).
    Disable,
    /// Encrypted, server certificate not verified.
    Require,
    /// Encrypted, certificate chain and host name verified.
    #[default]
    VerifyFull,
}

impl DatabaseConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.engine {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        })
    }

    /// Checks what serde cannot: ranges, one password source, engine-specific fields.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let err = |msg: String| Err(format!("databases.{name}: {msg}"));
        if !valid_connection_name(name) {
            return err("connection names are 1-40 chars of a-z, 0-9, '-', '_'".into());
        }
        if self.host.is_empty() || self.database.is_empty() || self.user.is_empty() {
            return err("host, database and user must not be empty".into());
        }
        let sources =
            [self.password_secret_arn.is_some(), self.password_file.is_some(), self.password_env.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            return err("give at most one of password_secret_arn, password_file, password_env".into());
        }
        if self.scram_iterations == 0 {
            return err("scram_iterations must be at least 1".into());
        }
        if !(1..=64).contains(&self.pool_size) {
            return err("pool_size must be between 1 and 64".into());
        }
        if self.connect_timeout.is_zero() || self.connect_timeout > Duration::from_mins(1) {
            return err("connect_timeout must be between 1ms and 60s".into());
        }
        if self.expiry_grace > Duration::from_hours(24) {
            return err("expiry_grace must be at most 24h".into());
        }
        if self.ca_file.is_some() && self.tls == TlsMode::Disable {
            return err("ca_file needs tls = \"require\" or \"verify-full\"".into());
        }
        match self.engine {
            Engine::Postgres => {
                if self.user_host != default_user_host() {
                    return err("user_host is for MySQL".into());
                }
                if let Some(role) = &self.reassign_owned_to {
                    crate::backend::sql::postgres::quote_ident(role)
                        .map_err(|e| format!("reassign_owned_to: {e}"))?;
                }
            }
            Engine::Mysql => {
                if self.reassign_owned_to.is_some() {
                    return err("reassign_owned_to is for PostgreSQL (MySQL users own no objects)".into());
                }
                if self.scram_iterations != DEFAULT_SCRAM_ITERATIONS {
                    return err("scram_iterations is for PostgreSQL".into());
                }
                if self.user_host.is_empty()
                    || self.user_host.len() > 255
                    || !self.user_host.bytes().all(|b| b.is_ascii_alphanumeric() || b"%_.-:".contains(&b))
                {
                    return err("user_host must be a host pattern of letters, digits and %_.-:".into());
                }
            }
        }
        Ok(())
    }
}

fn valid_connection_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn default_scram_iterations() -> u32 {
    DEFAULT_SCRAM_ITERATIONS
}
fn default_pool_size() -> u32 {
    4
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_expiry_grace() -> Duration {
    Duration::from_mins(1)
}
fn default_user_host() -> String {
    "%".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DatabaseConfig, String> {
        let config: DatabaseConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate("main")?;
        Ok(config)
    }

    #[test]
    fn defaults_and_strictness() {
        let pg = parse("engine = \"postgres\"\nhost = \"db\"\ndatabase = \"app\"\nuser = \"admin\"").unwrap();
        assert_eq!(pg.port(), 5432);
        assert_eq!(pg.tls, TlsMode::VerifyFull);
        assert_eq!(pg.scram_iterations, 4096);
        assert_eq!(pg.expiry_grace, Duration::from_mins(1));
        let my = parse(
            "engine = \"mysql\"\nhost = \"db\"\ndatabase = \"app\"\nuser = \"admin\"\ntls = \"disable\"",
        )
        .unwrap();
        assert_eq!(my.port(), 3306);
        assert_eq!(my.user_host, "%");

        let base = "host = \"db\"\ndatabase = \"app\"\nuser = \"admin\"\n";
        let cases = [
            ("unknown field", "engine = \"postgres\"\npasword = \"x\"", "pasword"),
            ("plain password field does not exist", "engine = \"postgres\"\npassword = \"x\"", "password"),
            ("unknown engine", "engine = \"oracle\"", "oracle"),
            ("unknown tls", "engine = \"postgres\"\ntls = \"prefer\"", "prefer"),
            (
                "two password sources",
                "engine = \"postgres\"\npassword_env = \"A\"\npassword_file = \"/b\"",
                "at most one",
            ),
            ("zero iterations", "engine = \"postgres\"\nscram_iterations = 0", "at least 1"),
            ("pool too big", "engine = \"postgres\"\npool_size = 500", "pool_size"),
            ("reassign on mysql", "engine = \"mysql\"\nreassign_owned_to = \"x\"", "PostgreSQL"),
            ("host pattern", "engine = \"mysql\"\nuser_host = \"a'b\"", "user_host"),
            ("ca without tls", "engine = \"postgres\"\ntls = \"disable\"\nca_file = \"/ca.pem\"", "ca_file"),
        ];
        for (name, text, needle) in cases {
            let err = parse(&format!("{base}{text}")).expect_err(name);
            assert!(err.contains(needle), "{name}: {err}");
        }
    }
}
