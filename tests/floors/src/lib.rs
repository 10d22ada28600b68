//! Benchmark floors: for each Lambda function, the least a binary must do to reach the same
//! point — the first `GET /2018-06-01/runtime/invocation/next` — with the same SDK clients,
//! the same database connection and the same runtime, and nothing else (no policies, no
//! signing key, no router, no logging). Each floor also carries, behind [`EXERCISE_VAR`],
//! one request of every kind its function's clients send, so that its binary holds the same
//! client code as the function's. `tests/benches/cold_init.rs` measures each function's
//! cold init, warm memory and binary size against its floor; `docs/benchmarks.md` ("Cold
//! init, memory and binary size") says what each function does at init beyond its floor.
//!
//! The clients are those each function builds at init for the deployment the bench
//! configures (and the templates deploy: one shared config with AWS grants and one PostgreSQL
//! admin connection whose password is in Secrets Manager). Read `shared/src/app/` (one file
//! per function) to check a floor against its function.

use std::str::FromStr as _;

use aws_sdk_dynamodb::types::AttributeValue;

use sqlx::ConnectOptions as _;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;

/// The SDK configuration, built the way a function builds it (`credbroker::aws_env`): the
/// Lambda environment's credentials and region, and the endpoint override
/// `CREDBROKER_AWS_ENDPOINT_URL` when set (LocalStack).
pub fn sdk_config() -> aws_types::SdkConfig {
    let aws = credbroker::config::AwsConfig {
        role_arn_prefix: None,
        endpoint_url: std::env::var("CREDBROKER_AWS_ENDPOINT_URL").ok().filter(|v| !v.is_empty()),
        region: None,
    };
    credbroker::aws_env::sdk_config(&aws).expect("the Lambda environment")
}

/// What token-exchange creates at init (`app::exchange`): the lease store's DynamoDB client,
/// STS for AWS grants, Secrets Manager for the signing key.
#[derive(Debug, Clone)]
pub struct ExchangeClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sts: aws_sdk_sts::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
}

impl ExchangeClients {
    pub fn new(sdk: &aws_types::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sts: aws_sdk_sts::Client::new(sdk),
            secretsmanager: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }

    /// One request of every kind token-exchange sends: these clients' and its JWKS client's
    /// ([`EXERCISE_VAR`]).
    pub async fn exercise(&self) {
        exercise_dynamodb(&self.dynamodb).await;
        exercise_sts(&self.sts).await;
        exercise_secretsmanager(&self.secretsmanager).await;
        outcome("JWKS fetch", exercise_jwks_client().await);
    }
}

/// What db-credentials creates at init (`app::db_credentials`): DynamoDB for the lease store,
/// Secrets Manager for the database admin password (one client per `[databases.*]`
/// connection; one here).
#[derive(Debug, Clone)]
pub struct DbCredentialsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
}

impl DbCredentialsClients {
    pub fn new(sdk: &aws_types::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            secretsmanager: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }

    /// One request of every kind db-credentials sends: these clients', its database drivers'
    /// and its JWKS client's ([`EXERCISE_VAR`]).
    pub async fn exercise(&self) {
        exercise_dynamodb(&self.dynamodb).await;
        exercise_secretsmanager(&self.secretsmanager).await;
        exercise_databases().await;
        outcome("JWKS fetch", exercise_jwks_client().await);
    }
}

/// What the revoker creates at init (`app::revoker`): DynamoDB for the lease store, IAM for
/// the STS deny policies, Secrets Manager for the database admin password.
#[derive(Debug, Clone)]
pub struct RevokerClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub iam: aws_sdk_iam::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
}

impl RevokerClients {
    pub fn new(sdk: &aws_types::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            iam: aws_sdk_iam::Client::new(sdk),
            secretsmanager: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }

    /// One request of every kind the revoker sends: these clients' and its database
    /// drivers' ([`EXERCISE_VAR`]).
    pub async fn exercise(&self) {
        exercise_dynamodb(&self.dynamodb).await;
        exercise_dynamodb_delete(&self.dynamodb).await;
        exercise_secretsmanager(&self.secretsmanager).await;
        exercise_iam(&self.iam).await;
        exercise_databases().await;
    }
}

/// Setting this makes a floor, at init, send one request of every kind its function can send
/// (the benchmark never sets it; `exercise` prints what failed and goes on).
///
/// It is what makes a floor's binary comparable in size: a client that never sends a request
/// is only its constructor after LTO, so without these calls the floor would carry none of
/// the operation, signing, HTTP/2 or driver code that the function's binary must carry for
/// the same clients. With them, the size ratio is the broker's own code. Behind a switch, the
/// calls cost the floor's cold init nothing.
pub const EXERCISE_VAR: &str = "CREDBROKER_FLOOR_EXERCISE";

pub fn exercise_requested() -> bool {
    std::env::var_os(EXERCISE_VAR).is_some()
}

fn outcome<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) {
    if let Err(err) = result {
        eprintln!("{what}: {err}");
    }
}

const FLOOR_TABLE: &str = "credbroker-floor";

/// The DynamoDB operations every function's lease store sends: put, get, update, query.
async fn exercise_dynamodb(client: &aws_sdk_dynamodb::Client) {
    let table = FLOOR_TABLE;
    let key = || AttributeValue::S("floor".to_owned());
    outcome("PutItem", client.put_item().table_name(table).item("pk", key()).send().await);
    outcome("GetItem", client.get_item().table_name(table).key("pk", key()).send().await);
    outcome(
        "UpdateItem",
        client
            .update_item()
            .table_name(table)
            .key("pk", key())
            .update_expression("SET n = :n")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":n", AttributeValue::N("1".to_owned()))
            .send()
            .await,
    );
    outcome(
        "Query",
        client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", key())
            .send()
            .await,
    );
}

/// The revoker's one more: a delete, which releases a deny-policy writer's lock. A function of
/// its own, so that the other floors do not contain it (their functions never delete).
async fn exercise_dynamodb_delete(client: &aws_sdk_dynamodb::Client) {
    let key = AttributeValue::S("floor".to_owned());
    outcome("DeleteItem", client.delete_item().table_name(FLOOR_TABLE).key("pk", key).send().await);
}

/// IAM as the STS session revoker uses it: write and delete a role's inline policy (it never
/// reads one back).
async fn exercise_iam(client: &aws_sdk_iam::Client) {
    let (role, policy) = ("credbroker-floor", "credbroker-floor");
    outcome(
        "PutRolePolicy",
        client.put_role_policy().role_name(role).policy_name(policy).policy_document("{}").send().await,
    );
    outcome("DeleteRolePolicy", client.delete_role_policy().role_name(role).policy_name(policy).send().await);
}

async fn exercise_secretsmanager(client: &aws_sdk_secretsmanager::Client) {
    outcome("GetSecretValue", client.get_secret_value().secret_id("credbroker-floor").send().await);
}

/// STS as the AWS issuer uses it: one AssumeRole with a session policy and tags.
async fn exercise_sts(client: &aws_sdk_sts::Client) {
    let tag = aws_sdk_sts::types::Tag::builder().key("floor").value("floor").build().ok();
    let request = client
        .assume_role()
        .role_arn("arn:aws:iam::000000000000:role/credbroker-floor")
        .role_session_name("credbroker-floor")
        .policy("{}")
        .duration_seconds(900)
        .source_identity("credbroker-floor")
        .set_tags(tag.map(|tag| vec![tag]));
    outcome("AssumeRole", request.send().await);
}

/// Both database drivers as the database issuer uses them: connect, a statement batch, a
/// bound query with a scalar and with a row result.
async fn exercise_databases() {
    outcome("PostgreSQL", exercise_postgres().await);
    outcome("MySQL", exercise_mysql().await);
}

async fn exercise_postgres() -> Result<(), sqlx::Error> {
    let options = PgConnectOptions::from_str("postgres://credbroker-floor@127.0.0.1/floor")?;
    let mut conn = options.connect().await?;
    sqlx::raw_sql("SELECT 1; SELECT 2").execute(&mut conn).await?;
    let _exists: bool = sqlx::query_scalar("SELECT $1 = ''").bind("floor").fetch_one(&mut conn).await?;
    let _rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT 'a', 1::int8").fetch_all(&mut conn).await?;
    Ok(())
}

async fn exercise_mysql() -> Result<(), sqlx::Error> {
    let options = MySqlConnectOptions::from_str("mysql://credbroker-floor@127.0.0.1/floor")?;
    let mut conn = options.connect().await?;
    sqlx::raw_sql("SELECT 1; SELECT 2").execute(&mut conn).await?;
    let _version: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(&mut conn).await?;
    let _ids: Vec<u64> = sqlx::query_scalar("SELECT ? + 0").bind(1_u64).fetch_all(&mut conn).await?;
    Ok(())
}

/// The JWKS fetch: reqwest with a redirect policy, a timeout and a streamed body.
async fn exercise_jwks_client() -> Result<(), reqwest::Error> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > 3 { attempt.error("too many redirects") } else { attempt.follow() }
        }))
        .build()?;
    let mut response = client.get("https://127.0.0.1/.well-known/jwks.json").send().await?;
    while response.chunk().await?.is_some() {}
    Ok(())
}
