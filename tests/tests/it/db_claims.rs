//! Hostile token claims never reach SQL unescaped, shown on the real servers.
//!
//! 1. The quoting functions are sound against the servers' own parsers: every hostile string
//!    round-trips as a literal and as an identifier, exactly, with nothing else executed.
//! 2. End to end: workload tokens whose subject (the only claim a username may use) and other
//!    claims carry quotes, semicolons, comment markers, dollar quotes, backslashes, unicode
//!    and 10 kB values mint working users with `[a-z0-9_]` names, for structured grants and
//!    for grants with their own statements, and the server holds no other new role or user.

use std::sync::Arc;

use credbroker::backend::CredentialRevoker;
use credbroker::backend::sql::{mysql, postgres};
use credbroker::issuer::db::DatabaseIssuer;
use credbroker::secrets::StaticSecret;
use credbroker_tests::db::{
    Cleanup, DbBroker, PG_AUTH_DATABASE, mysql_admin, mysql_config, mysql_login, pg_admin, pg_config,
    pg_login, prefix,
};
use secrecy::ExposeSecret;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, Row};

/// Each row names the attack.
fn hostile() -> Vec<(&'static str, String)> {
    vec![
        ("single quote", "o'brien".into()),
        ("double quote", "say \"hi\"".into()),
        ("backtick", "a`b".into()),
        ("statement break", "x'; DROP ROLE postgres; --".into()),
        ("identifier break", "x\"; DROP ROLE postgres; --".into()),
        ("comment", "a /* b */ -- c".into()),
        ("dollar quoting", "$$; DROP TABLE t; $$".into()),
        ("backslash escape", "a\\'; DROP TABLE t; --".into()),
        ("newline", "line1\nline2; DROP TABLE t".into()),
        ("unicode", "ünïcødé サブジェクト 🙂".into()),
        ("right-to-left override", "admin\u{202e}txt".into()),
        ("10 kB", format!("{}'; DROP ROLE postgres; --", "x".repeat(10 * 1024))),
        ("10 kB of multibyte", "ü".repeat(5 * 1024)),
    ]
}

#[tokio::test]
async fn postgres_quoting_round_trips_every_hostile_string() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    for (attack, value) in hostile() {
        let literal = postgres::quote_literal(&value).expect("quotable");
        let back: String = sqlx::query_scalar(AssertSqlSafe(format!("SELECT {literal}")))
            .fetch_one(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{attack}: {e}"));
        assert_eq!(back, value, "{attack}: literal");

        // As a role name: created under exactly that name (if it fits PostgreSQL's 63 bytes).
        let name = format!("{p}{value}");
        match postgres::quote_ident(&name) {
            Ok(ident) => {
                sqlx::raw_sql(AssertSqlSafe(format!("CREATE ROLE {ident} NOLOGIN")))
                    .execute(&mut admin)
                    .await
                    .unwrap_or_else(|e| panic!("{attack}: {e}"));
                let found: Vec<String> =
                    sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolname LIKE $1")
                        .bind(format!("{p}%"))
                        .fetch_all(&mut admin)
                        .await
                        .expect("roles");
                assert_eq!(found, vec![name.clone()], "{attack}: exactly one role, named exactly so");
                sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE {ident}")))
                    .execute(&mut admin)
                    .await
                    .expect("drop");
            }
            Err(err) => assert!(name.len() > 63, "{attack}: only over-long names are refused ({err})"),
        }
    }
    let postgres_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'postgres')")
            .fetch_one(&mut admin)
            .await
            .expect("query");
    assert!(postgres_exists);
}

#[tokio::test]
async fn mysql_quoting_round_trips_every_hostile_string() {
    let mut admin = mysql_admin().await;
    for (attack, value) in hostile() {
        match mysql::quote_literal(&value) {
            Ok(literal) => {
                let back: String = sqlx::query_scalar(AssertSqlSafe(format!("SELECT {literal}")))
                    .fetch_one(&mut admin)
                    .await
                    .unwrap_or_else(|e| panic!("{attack}: {e}"));
                assert_eq!(back, value, "{attack}: literal");
            }
            // Refused, never escaped: its meaning would depend on NO_BACKSLASH_ESCAPES.
            Err(err) => assert!(value.contains('\\'), "{attack}: {err}"),
        }
        // Identifiers beyond the Basic Multilingual Plane are refused by the quoting itself.
        if let Ok(ident) = mysql::quote_ident(&value) {
            let row = sqlx::query(AssertSqlSafe(format!("SELECT 1 AS {ident}")))
                .fetch_one(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{attack}: {e}"));
            let column = sqlx::Column::name(&row.columns()[0]).to_owned();
            assert_eq!(column, value, "{attack}: identifier");
        }
    }
}

/// Claims carrying `value` everywhere a token can: the subject (the only claim a username
/// may use) and other claims. Policy patterns decide which subjects match at all: the subject
/// glob `*` does not span lines, so a multi-line value travels in the other claims only.
fn hostile_token(broker: &DbBroker, value: &str) -> String {
    let subject = if value.contains('\n') { "svc" } else { value };
    let mut claims = broker.issuer.claims(subject, chrono::Utc::now());
    claims["team"] = json!(value);
    claims["note"] = json!(value);
    broker.issuer.sign(&claims)
}

/// Structured and statement grants, hostile subjects and claims; PostgreSQL.
#[tokio::test]
async fn postgres_mints_safe_usernames_from_hostile_claims() {
    let p = prefix();
    let _cleanup = Cleanup::postgres(&p);
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {p}_s; CREATE TABLE {p}_s.t (id int)")))
        .execute(&mut admin)
        .await
        .expect("fixture");
    let body = format!(
        r#"
[claims]
team = {{ regex = "(?s).*" }}

[grants.structured]
type = "database"
engine = "postgres"
connection = "main"
database = "{PG_AUTH_DATABASE}"
username = "{p}_{{{{sub:12}}}}_{{{{random}}}}"
privileges = [
  {{ allow = ["USAGE"], schemas = ["{p}_s"] }},
  {{ allow = ["SELECT"], tables = ["{p}_s.t"] }},
]

[grants.statements]
type = "database"
engine = "postgres"
connection = "main"
database = "{PG_AUTH_DATABASE}"
username = "{p}_{{{{sub:12}}}}_{{{{random}}}}"
creation_statements = [
  "CREATE ROLE {{{{name}}}} WITH LOGIN PASSWORD {{{{password}}}} VALID UNTIL {{{{expiration}}}}",
  "GRANT USAGE ON SCHEMA {p}_s TO {{{{name}}}}",
  "GRANT SELECT ON {p}_s.t TO {{{{name}}}}",
]
"#
    );
    let db = DatabaseIssuer::new().with_connection("main", pg_config(""), Arc::new(StaticSecret::empty()));
    let broker = DbBroker::new(&body, db);
    let mut minted = Vec::new();
    for grant in ["structured", "statements"] {
        for (attack, value) in hostile() {
            let token = hostile_token(&broker, &value);
            let done = broker
                .broker
                .exchange(credbroker::broker::ExchangeRequest {
                    token,
                    grant: credbroker::policy::GrantRef::parse(&format!("db/{grant}")).expect("grant"),
                    ttl: None,
                    source_ip: None,
                    request_id: attack.into(),
                })
                .await
                .unwrap_or_else(|d| panic!("{grant} / {attack}: {d:?}"));
            let credbroker::backend::Credential::Database(creds) = &done.credential else {
                panic!("database")
            };
            assert!(
                creds.username.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{grant} / {attack}: {}",
                creds.username
            );
            let mut session = pg_login(&creds.username, creds.password.expose_secret())
                .await
                .unwrap_or_else(|e| panic!("{grant} / {attack}: login: {e}"));
            sqlx::raw_sql(AssertSqlSafe(format!("SELECT * FROM {p}_s.t")))
                .execute(&mut session)
                .await
                .unwrap_or_else(|e| panic!("{grant} / {attack}: {e}"));
            session.close().await.expect("close");
            minted.push((done.lease, creds.username.clone()));
        }
    }
    // Only the minted roles exist under the prefix; nothing else was created or dropped.
    let mut found: Vec<String> = sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolname LIKE $1")
        .bind(format!("{p}%"))
        .fetch_all(&mut admin)
        .await
        .expect("roles");
    let mut expected: Vec<String> = minted.iter().map(|(_, u)| u.clone()).collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    for (lease, _) in &minted {
        broker.db.revoke(lease.issued()).await.expect("revoked");
    }
}

/// The same on MariaDB.
#[tokio::test]
async fn mysql_mints_safe_usernames_from_hostile_claims() {
    let p = prefix();
    let _cleanup = Cleanup::mysql(&p);
    let mut admin = mysql_admin().await;
    for statement in [format!("CREATE DATABASE {p}_db"), format!("CREATE TABLE {p}_db.t (id int)")] {
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut admin).await.expect("fixture");
    }
    let body = format!(
        r#"
[claims]
team = {{ regex = "(?s).*" }}

[grants.structured]
type = "database"
engine = "mysql"
connection = "main"
database = "{p}_db"
username = "{p}_{{{{sub:6}}}}_{{{{random}}}}"
privileges = [{{ allow = ["SELECT"], tables = ["t"] }}]

[grants.statements]
type = "database"
engine = "mysql"
connection = "main"
database = "{p}_db"
username = "{p}_{{{{sub:6}}}}_{{{{random}}}}"
creation_statements = [
  "CREATE USER {{{{name}}}} IDENTIFIED BY {{{{password}}}}",
  "GRANT SELECT ON {{{{database}}}}.t TO {{{{name}}}}",
]
"#
    );
    let db = DatabaseIssuer::new().with_connection("main", mysql_config(""), Arc::new(StaticSecret::empty()));
    let broker = DbBroker::new(&body, db);
    let mut minted = Vec::new();
    for grant in ["structured", "statements"] {
        for (attack, value) in hostile() {
            let token = hostile_token(&broker, &value);
            let done = broker
                .broker
                .exchange(credbroker::broker::ExchangeRequest {
                    token,
                    grant: credbroker::policy::GrantRef::parse(&format!("db/{grant}")).expect("grant"),
                    ttl: None,
                    source_ip: None,
                    request_id: attack.into(),
                })
                .await
                .unwrap_or_else(|d| panic!("{grant} / {attack}: {d:?}"));
            let credbroker::backend::Credential::Database(creds) = &done.credential else {
                panic!("database")
            };
            assert!(creds.username.len() <= 32, "{}", creds.username);
            assert!(
                creds.username.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{grant} / {attack}: {}",
                creds.username
            );
            let mut session = mysql_login(&creds.username, creds.password.expose_secret(), &creds.database)
                .await
                .unwrap_or_else(|e| panic!("{grant} / {attack}: login: {e}"));
            sqlx::raw_sql("SELECT * FROM t")
                .execute(&mut session)
                .await
                .unwrap_or_else(|e| panic!("{attack}: {e}"));
            session.close().await.expect("close");
            minted.push((done.lease, creds.username.clone()));
        }
    }
    let mut found: Vec<String> = sqlx::query_scalar("SELECT User FROM mysql.user WHERE User LIKE ?")
        .bind(format!("{p}%"))
        .fetch_all(&mut admin)
        .await
        .expect("users");
    let mut expected: Vec<String> = minted.iter().map(|(_, u)| u.clone()).collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    for (lease, _) in &minted {
        broker.db.revoke(lease.issued()).await.expect("revoked");
    }
}
