//! token-exchange Lambda: `POST /v1/token`, `GET /.well-known/jwks.json`,
//! `GET /.well-known/openid-configuration`, `GET /v1/health` and the lease API
//! (`GET`/`DELETE /v1/leases/{id}`, `POST /v1/leases/revoke`, `POST /v1/admin/aws-role-cutoff`)
//! behind API Gateway.
//!
//! Wiring only: configuration from the environment, clients built once at init
//! (`credbroker::app::exchange`: verifier, policies, STS, the signing key, the lease store),
//! then the router runs for every request. This binary links no IAM, database or embedded-store
//! code: it cannot edit IAM or touch a database (docs/architecture.md).

use credbroker::app::exchange::token_exchange;
use credbroker::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    credbroker::telemetry::init(false);
    let config = Config::from_lambda_env()?;
    let router = token_exchange(&config).await?;
    credbroker::http::run_lambda(router).await
}
