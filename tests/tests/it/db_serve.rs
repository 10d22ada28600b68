//! `POST /v1/db/{policy}/{grant}/credentials` end to end: the real `credbroker serve` binary
//! with admin connections to the real PostgreSQL and MariaDB in its config, called over HTTP
//! with development tokens; the credentials it returns log in.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use credbroker::devissuer::DevIssuer;
use credbroker_tests::db::{
    Cleanup, PG_AUTH_DATABASE, mysql_admin, mysql_login, mysql_server, pg_admin, pg_login, pg_server, prefix,
};
use credbroker_tests::process::{Running, binary};
use serde_json::{Map, Value, json};
use sqlx::AssertSqlSafe;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn fixtures(p: &str) {
    let mut pg = pg_admin(PG_AUTH_DATABASE).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA {p}_s; CREATE TABLE {p}_s.t (id int); INSERT INTO {p}_s.t VALUES (1);
         CREATE ROLE {p}_read NOLOGIN; GRANT USAGE ON SCHEMA {p}_s TO {p}_read; GRANT SELECT ON {p}_s.t TO {p}_read"
    )))
    .execute(&mut pg)
    .await
    .expect("postgres fixture");
    let mut my = mysql_admin().await;
    for statement in [
        format!("CREATE DATABASE {p}_db"),
        format!("CREATE TABLE {p}_db.t (id int)"),
        format!("INSERT INTO {p}_db.t VALUES (1)"),
    ] {
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut my).await.expect("mysql fixture");
    }
}

fn policy(p: &str, base: &str) -> String {
    format!(
        r#"
issuer = "{base}/dev/oidc"
audience = ["credbroker"]
subject = {{ glob = "dev:*" }}

[ttl]
default = "10m"
max = "1h"

[grants.pg]
type = "database"
engine = "postgres"
connection = "pg"
database = "{PG_AUTH_DATABASE}"
username = "{p}_{{{{sub:6}}}}_{{{{random}}}}"
roles = ["{p}_read"]

[grants.my]
type = "database"
engine = "mysql"
connection = "my"
database = "{p}_db"
username = "{p}_{{{{random}}}}"
privileges = [{{ allow = ["SELECT"], all_tables_in_schemas = ["{p}_db"] }}]

[grants.api]
type = "signed_token"
audience = "internal"
"#
    )
}

fn config(base: &str, dir: &std::path::Path) -> String {
    let (pg, my) = (pg_server(), mysql_server());
    let password_file = dir.join("mysql-admin-password");
    std::fs::write(&password_file, "\n").expect("write password file"); // root has none
    format!(
        r#"public_url = "{base}"
[identity]
allow_http_loopback = true

[databases.pg]
engine = "postgres"
host = "{}"
port = {}
user = "{}"
database = "{PG_AUTH_DATABASE}"
tls = "disable"
scram_iterations = 64
password_env = "DB_SERVE_TEST_PG_ADMIN_PASSWORD"

[databases.my]
engine = "mysql"
host = "{}"
port = {}
user = "{}"
database = "{}"
tls = "disable"
password_file = "{}"
"#,
        pg.host,
        pg.port,
        pg.user,
        my.host,
        my.port,
        my.user,
        my.database,
        password_file.display()
    )
}

/// name, path, bearer token, body (content type, text), status, reason.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<(&'a str, String)>, u16, &'a str);

struct Served {
    base: String,
    process: Running,
    state_dir: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(p: &str) -> Self {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("tempdir");
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).expect("mkdir");
        std::fs::write(policies.join("dbs.toml"), policy(p, &base)).expect("policy");
        let config_file = dir.path().join("config.toml");
        std::fs::write(&config_file, config(&base, dir.path())).expect("config");
        let state_dir = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new(binary("credbroker"));
        command
            .arg("--state-dir")
            .arg(state_dir.path())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&config_file)
            .arg("--policy-dir")
            .arg(&policies)
            // Debug logging everywhere (sqlx included): passwords must still never appear.
            .env("CREDBROKER_LOG", "debug")
            .env("DB_SERVE_TEST_PG_ADMIN_PASSWORD", "ignored-by-trust-auth")
            .env_remove("AWS_PROFILE");
        let mut process = Running::spawn(command);
        process.wait_for_line("the listening banner", |l| l.contains("credbroker listening on")).await;
        Self { base, process, state_dir, _dir: dir }
    }

    fn token(&self, subject: &str) -> String {
        let dev = DevIssuer::load(self.state_dir.path(), &self.base).expect("dev issuer key");
        dev.mint(subject, "credbroker", &Map::new(), Duration::from_mins(5), chrono::Utc::now())
            .expect("mint")
    }

    async fn post(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (u16, Value, String) {
        let mut request = reqwest::Client::new().post(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let cache =
            response.headers().get("cache-control").map(|v| v.to_str().unwrap_or_default().to_owned());
        (status, response.json().await.expect("JSON body"), cache.unwrap_or_default())
    }
}

#[tokio::test]
async fn serve_mints_database_users_over_http() {
    let p = prefix();
    let (_pg_cleanup, _my_cleanup) = (Cleanup::postgres(&p), Cleanup::mysql(&p));
    fixtures(&p).await;
    let served = Served::start(&p).await;

    // PostgreSQL, with a TTL.
    let json_ttl = Some(("application/json", json!({ "ttl": "5m" }).to_string()));
    let (status, pg, cache) =
        served.post("/v1/db/dbs/pg/credentials", Some(&served.token("dev:alice")), json_ttl.clone()).await;
    assert_eq!(status, 200, "{pg}");
    assert_eq!(cache, "no-store");
    for field in ["lease_id", "username", "password", "host", "port", "database", "expires_at"] {
        assert!(!pg[field].is_null(), "{field} in {pg}");
    }
    assert_eq!(pg["database"], PG_AUTH_DATABASE);
    assert_eq!(pg["port"], pg_server().port);
    let expires_in = pg["expires_in"].as_i64().expect("expires_in");
    assert!((290..=300).contains(&expires_in), "ttl honoured: {expires_in}");
    let (username, password) = (pg["username"].as_str().expect("u"), pg["password"].as_str().expect("p"));
    assert!(username.starts_with(&format!("{p}_devali_")), "{username}");
    let mut session =
        pg_login(username, password).await.expect("PostgreSQL login with the returned password");
    let one: i32 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT id FROM {p}_s.t")))
        .fetch_one(&mut session)
        .await
        .expect("granted");
    assert_eq!(one, 1);

    // MariaDB, no body at all.
    let (status, my, _) =
        served.post("/v1/db/dbs/my/credentials", Some(&served.token("dev:bob")), None).await;
    assert_eq!(status, 200, "{my}");
    let mut session = mysql_login(
        my["username"].as_str().expect("u"),
        my["password"].as_str().expect("p"),
        my["database"].as_str().expect("d"),
    )
    .await
    .expect("MariaDB login with the returned password");
    let one: i32 = sqlx::query_scalar("SELECT id FROM t").fetch_one(&mut session).await.expect("granted");
    assert_eq!(one, 1);

    // Refusals: the same {error, reason} shape as every other route.
    let token = served.token("dev:carol");
    let replayed = served.token("dev:dave");
    let (status, _, _) = served.post("/v1/db/dbs/pg/credentials", Some(&replayed), None).await;
    assert_eq!(status, 200);
    let cases: Vec<Case<'_>> = vec![
        ("no token", "/v1/db/dbs/pg/credentials", None, None, 401, "missing_token"),
        ("replayed token", "/v1/db/dbs/pg/credentials", Some(&replayed), None, 401, "replayed_token"),
        ("garbage token", "/v1/db/dbs/pg/credentials", Some("not-a-jwt"), None, 401, "malformed_token"),
        ("unknown grant", "/v1/db/dbs/nope/credentials", Some(&token), None, 400, "unknown_grant"),
        ("unknown policy", "/v1/db/nope/pg/credentials", Some(&token), None, 400, "unknown_grant"),
        ("bad name", "/v1/db/DBS/pg/credentials", Some(&token), None, 400, "invalid_request"),
        ("not a database grant", "/v1/db/dbs/api/credentials", Some(&token), None, 400, "invalid_request"),
        (
            "unknown body field",
            "/v1/db/dbs/pg/credentials",
            Some(&token),
            Some(("application/json", json!({ "ttl": "5m", "role": "admin" }).to_string())),
            400,
            "invalid_request",
        ),
        (
            "not JSON",
            "/v1/db/dbs/pg/credentials",
            Some(&token),
            Some(("text/plain", "ttl=5m".into())),
            400,
            "invalid_request",
        ),
    ];
    for (name, path, bearer, body, status, reason) in cases {
        let (got, body, _) = served.post(path, bearer, body).await;
        assert_eq!((got, body["reason"].as_str()), (status, Some(reason)), "{name}: {body}");
        assert_eq!(body.as_object().expect("object").len(), 2, "{name}: only error and reason: {body}");
    }
    // A database grant is not served by /v1/token (its response has no place for it).
    let (status, body, _) = served
        .post(
            "/v1/token",
            None,
            Some((
                "application/json",
                json!({ "token": served.token("dev:erin"), "grant": "dbs/pg" }).to_string(),
            )),
        )
        .await;
    assert_eq!((status, body["reason"].as_str()), (400, Some("invalid_request")), "{body}");

    // Audit events for every decision; passwords nowhere in the output, even at debug level.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = served.process.audit_events();
    let allows: Vec<&Value> = events.iter().filter(|e| e["decision"] == "allow").collect();
    assert_eq!(allows.len(), 3, "{events:?}");
    assert!(allows.iter().any(|e| e["lease_id"] == pg["lease_id"]));
    let output = served.process.lines().join("\n");
    for secret in [password, my["password"].as_str().expect("p")] {
        assert!(!output.contains(secret), "a minted password reached the log");
    }
    assert!(!output.contains("SCRAM-SHA-256$"), "verifiers are never logged either");
}
