//! Benchmark floors: for each Lambda function, the least a binary must do to reach the same
//! point — the first `GET /2018-06-01/runtime/invocation/next` — with the same SDK clients,
//! the same database connection and the same runtime, and nothing else (no policies, no
//! signing key, no router, no logging). `tests/benches/cold_init.rs` measures each function's
//! cold init, warm memory and binary size against its floor; `docs/benchmarks.md` ("Cold
//! init, memory and binary size") says what each function does at init beyond its floor.
//!
//! The clients are those the functions build at init for the deployment the bench configures
//! (and the templates deploy: one shared config with AWS grants and one PostgreSQL admin
//! connection whose password is in Secrets Manager). Read `shared/src/app.rs` (`build`,
//! `build_revoker`) to check a floor against its function.

/// The SDK configuration, loaded the way `credbroker::app::aws_sdk_config` loads it for a
/// Lambda function (`Config::from_lambda_env`): the default credentials and region chains,
/// and the endpoint override `CREDBROKER_AWS_ENDPOINT_URL` when set (LocalStack).
pub async fn sdk_config() -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = std::env::var("CREDBROKER_AWS_ENDPOINT_URL").ok().filter(|v| !v.is_empty()) {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// What `credbroker::app::build` creates at init (token-exchange, db-credentials): the lease
/// store's DynamoDB client, STS for AWS grants, Secrets Manager for the database admin
/// password (one client per `[databases.*]` connection; one here), IAM for session revocation.
#[derive(Debug, Clone)]
pub struct ApiClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sts: aws_sdk_sts::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    pub iam: aws_sdk_iam::Client,
}

impl ApiClients {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sts: aws_sdk_sts::Client::new(sdk),
            secretsmanager: aws_sdk_secretsmanager::Client::new(sdk),
            iam: aws_sdk_iam::Client::new(sdk),
        }
    }
}

/// What `credbroker::app::build_revoker` creates at init (revoker): DynamoDB for the lease
/// store, IAM for session revocation, Secrets Manager for the database admin password.
#[derive(Debug, Clone)]
pub struct RevokerClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub iam: aws_sdk_iam::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
}

impl RevokerClients {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            iam: aws_sdk_iam::Client::new(sdk),
            secretsmanager: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }
}
