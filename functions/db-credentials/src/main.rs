//! db-credentials Lambda: `POST /v1/db/{policy}/{grant}/credentials` and
//! `POST /v1/leases/{id}/renew` behind API Gateway.
//!
//! Wiring only: configuration from the environment (`CREDBROKER_CONFIG` names the TOML file
//! with `[databases]`), clients built once at init, admin secrets read and one admin connection
//! per database opened before the first request (`credbroker::app::db_credentials`), then the
//! router handles every request. This binary holds no signing key and links no STS or IAM code.

use credbroker::app::db_credentials::db_credentials;
use credbroker::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    credbroker::telemetry::init(false);
    let config = Config::from_lambda_env()?;
    let router = db_credentials(&config).await?;
    credbroker::http::run_lambda(router).await
}
