//! token-exchange Lambda: `POST /v1/token`, `GET /.well-known/jwks.json`,
//! `GET /.well-known/openid-configuration`, `GET /v1/health` behind API Gateway.
//!
//! Wiring only: configuration from the environment, clients built once at init, then the
//! shared router runs for every request.

use credbroker::app::{self, Mode};
use credbroker::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    credbroker::telemetry::init(false);
    let config = Config::from_lambda_env()?;
    let state = app::build(&config, &Mode::Lambda).await?;
    credbroker::http::run_lambda(credbroker::http::router(state)).await
}
