//! db-credentials Lambda: `POST /v1/db/{policy}/{grant}/credentials` behind API Gateway.
//!
//! Wiring only: configuration from the environment (`CREDBROKER_CONFIG` names the TOML file
//! with `[databases]`), clients built once at init, admin secrets read and one admin
//! connection per database opened before the first request, then the shared router (the same
//! one `credbroker serve` runs) handles every request.

use credbroker::app::{self, Mode};
use credbroker::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    credbroker::telemetry::init(false);
    let config = Config::from_lambda_env()?;
    let state = app::build(&config, &Mode::Lambda).await?;
    // Pools stay warm across invocations; open them during init, which Lambda does not bill
    // against the first request's latency budget.
    state.broker.warm().await;
    credbroker::http::run_lambda(credbroker::http::router(state)).await
}
