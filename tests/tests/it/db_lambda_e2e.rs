//! The real db-credentials `bootstrap` under a Lambda runtime-API emulator, fed API Gateway
//! REST events: leases in LocalStack DynamoDB, admin passwords from LocalStack Secrets Manager
//! (the only source Lambda accepts), users minted in the real PostgreSQL and MariaDB.

use credbroker::backend::BackendRef;
use credbroker::backend::CredentialRevoker;
use credbroker::lease::{LeaseId, LeaseStatus, LeaseStore};
use credbroker::store::dynamodb::{DynamoLeaseStore, create_table};
use credbroker_tests::db::{
    Cleanup, PG_AUTH_DATABASE, mysql_admin, mysql_login, mysql_server, mysql_user_exists, pg_login,
    pg_role_exists, pg_server, prefix,
};
use credbroker_tests::lambda::{RuntimeApi, proxy_response, rest_api_event};
use credbroker_tests::oidc::OidcServer;
use credbroker_tests::{aws_endpoint, create_secret, localstack_sdk_config, unique_name};
use serde_json::json;
use sqlx::AssertSqlSafe;

#[tokio::test]
async fn db_credentials_lambda_end_to_end() {
    let p = prefix();
    let (_pg_cleanup, _my_cleanup) = (Cleanup::postgres(&p), Cleanup::mysql(&p));
    let sdk = localstack_sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let table = unique_name("credbroker-db-lambda");
    create_table(&dynamo, &table).await.expect("create table");

    let (admin_user, admin_password) = mysql_admin_fixture(&p).await;
    // Kept in Secrets Manager the way RDS does (JSON); PostgreSQL trusts the test admin, so a
    // plain-string secret exercises the other shape.
    let my_secret = create_secret(
        &secrets,
        "credbroker-db-admin",
        json!({ "username": admin_user, "password": admin_password }).to_string(),
    )
    .await;
    let pg_secret = create_secret(&secrets, "credbroker-db-admin", "unused-with-trust-auth".to_owned()).await;

    let oidc = OidcServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, policy_dir) =
        write_config(dir.path(), &p, &oidc.url(), &admin_user, [&pg_secret, &my_secret]);

    let api = RuntimeApi::start().await;
    let process = api.spawn_function(
        "db-credentials",
        &[
            ("CREDBROKER_CONFIG", config.display().to_string()),
            ("CREDBROKER_TABLE", table.clone()),
            ("CREDBROKER_POLICY_DIR", policy_dir.display().to_string()),
            ("CREDBROKER_AWS_ENDPOINT_URL", aws_endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ],
    );
    let call = |grant: &str, token: &str| {
        let headers =
            [("authorization", format!("Bearer {token}")), ("content-type", "application/json".into())];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        rest_api_event(
            "POST",
            &format!("/v1/db/dbs/{grant}/credentials"),
            &headers,
            Some("{\"ttl\":\"10m\"}"),
            "198.51.100.7",
        )
    };
    let token =
        || oidc.issuer.sign(&oidc.issuer.claims("system:serviceaccount:ci:runner", chrono::Utc::now()));

    let store = DynamoLeaseStore::new(dynamo.clone(), table.clone());
    let (status, body) = proxy_response(api.invoke(call("my", &token())).await);
    assert_eq!(status, 200, "{body}");
    let (user, password) = (body["username"].as_str().expect("u"), body["password"].as_str().expect("p"));
    let mut session = mysql_login(user, password, &format!("{p}_db")).await.expect("MariaDB login");
    sqlx::raw_sql("INSERT INTO t VALUES (1)").execute(&mut session).await.expect("granted");
    let my_lease = store
        .get(&LeaseId::parse(body["lease_id"].as_str().expect("id")).expect("lease id"))
        .await
        .expect("get")
        .expect("lease in DynamoDB");
    assert_eq!(my_lease.status, LeaseStatus::Active);
    assert!(matches!(&my_lease.backend, BackendRef::Database { username, .. } if username == user));

    let (status, body) = proxy_response(api.invoke(call("pg", &token())).await);
    assert_eq!(status, 200, "{body}");
    let pg_user = body["username"].as_str().expect("u").to_owned();
    pg_login(&pg_user, body["password"].as_str().expect("p")).await.expect("PostgreSQL login");
    let pg_lease = store
        .get(&LeaseId::parse(body["lease_id"].as_str().expect("id")).expect("lease id"))
        .await
        .expect("get")
        .expect("lease in DynamoDB");

    // The stored leases are all a revoker needs (here: an issuer built from the same config).
    let revoker = credbroker::app::database_issuer(
        &credbroker::config::Config::load(&config).expect("config"),
        Some(&sdk),
        true,
    )
    .expect("issuer")
    .expect("connections");
    revoker.revoke(my_lease.issued()).await.expect("revoke MariaDB user");
    revoker.revoke(pg_lease.issued()).await.expect("revoke PostgreSQL role");
    assert!(!mysql_user_exists(user).await);
    assert!(!pg_role_exists(&pg_user).await);

    let logs = process.lines().join("\n");
    assert!(!logs.contains(password) && !logs.contains(&admin_password), "no password in the function's log");
    dynamo.delete_table().table_name(&table).send().await.expect("delete table");
    for arn in [my_secret, pg_secret] {
        secrets
            .delete_secret()
            .secret_id(arn)
            .force_delete_without_recovery(true)
            .send()
            .await
            .expect("delete secret");
    }
}

/// Database `<p>_db` and a MariaDB admin with a real password (and every privilege).
async fn mysql_admin_fixture(p: &str) -> (String, String) {
    let admin_user = format!("{p}_admin");
    let admin_password = format!("Adm1n-{}", unique_name("pw"));
    let mut root = mysql_admin().await;
    for statement in [
        format!("CREATE DATABASE {p}_db"),
        format!("CREATE TABLE {p}_db.t (id int)"),
        format!("CREATE USER {admin_user}@'%' IDENTIFIED BY '{admin_password}'"),
        format!("GRANT ALL PRIVILEGES ON *.* TO {admin_user}@'%' WITH GRANT OPTION"),
    ] {
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut root).await.expect("mysql fixture");
    }
    (admin_user, admin_password)
}

/// The function's policy directory and config file (admin passwords by secret ARN).
fn write_config(
    dir: &std::path::Path,
    p: &str,
    issuer: &str,
    admin_user: &str,
    [pg_secret, my_secret]: [&str; 2],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let policy_dir = dir.join("policies");
    std::fs::create_dir(&policy_dir).expect("mkdir");
    std::fs::write(
        policy_dir.join("dbs.toml"),
        format!(
            r#"
issuer = "{issuer}"
audience = ["credbroker"]
subject = {{ glob = "system:serviceaccount:ci:*" }}

[grants.pg]
type = "database"
engine = "postgres"
connection = "pg"
database = "{PG_AUTH_DATABASE}"
username = "{p}_{{{{random}}}}"
privileges = [{{ allow = ["CREATE"], schemas = ["public"] }}]

[grants.my]
type = "database"
engine = "mysql"
connection = "my"
database = "{p}_db"
username = "{p}_{{{{random}}}}"
privileges = [{{ allow = ["SELECT", "INSERT"], tables = ["t"] }}]
"#
        ),
    )
    .expect("policy");
    let (pg, my) = (pg_server(), mysql_server());
    let config = dir.join("credbroker.toml");
    std::fs::write(
        &config,
        format!(
            r#"public_url = "https://broker.example.test"
[identity]
allow_http_loopback = true
[signing]
key_file = "{}"

[databases.pg]
engine = "postgres"
host = "{}"
port = {}
user = "{}"
database = "{PG_AUTH_DATABASE}"
tls = "disable"
password_secret_arn = "{pg_secret}"

[databases.my]
engine = "mysql"
host = "{}"
port = {}
user = "{admin_user}"
database = "{}"
tls = "disable"
password_secret_arn = "{my_secret}"
"#,
            dir.join("signing.pk8").display(),
            pg.host,
            pg.port,
            pg.user,
            my.host,
            my.port,
            my.database
        ),
    )
    .expect("config");
    (config, policy_dir)
}
