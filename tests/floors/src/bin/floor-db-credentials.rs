//! Floor of db-credentials: the SDK configuration and the clients `app::db_credentials` creates,
//! plus what its init does to have a warm admin connection (`broker.warm()`): read the admin
//! password from Secrets Manager (the only source Lambda accepts) and open one PostgreSQL
//! connection with sqlx, the same driver, TLS mode and options; then `lambda_http` with a
//! trivial handler that holds the connection.
//!
//! The connection comes from `CREDBROKER_FLOOR_PG_URL` (`postgres://user@host:port/database?
//! sslmode=…&application_name=…`) and `CREDBROKER_FLOOR_PG_SECRET_ARN`, which the benchmark
//! sets to the same values as the function's `[databases.*]` entry.

use std::str::FromStr;

use credbroker_floors::{DbCredentialsClients, sdk_config};
use lambda_http::{Body, Error, Request, Response, service_fn};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let clients = DbCredentialsClients::new(&sdk_config());
    if credbroker_floors::exercise_requested() {
        clients.exercise().await;
    }
    let url = std::env::var("CREDBROKER_FLOOR_PG_URL")?;
    let secret_arn = std::env::var("CREDBROKER_FLOOR_PG_SECRET_ARN")?;
    let password = clients
        .secretsmanager
        .get_secret_value()
        .secret_id(secret_arn)
        .send()
        .await?
        .secret_string
        .ok_or("the admin secret has no SecretString")?;
    let mut options = PgConnectOptions::from_str(&url)?.disable_statement_logging();
    if !password.is_empty() {
        options = options.password(&password);
    }
    let connection = tokio::sync::Mutex::new(options.connect().await?);
    lambda_http::run(service_fn(move |_request: Request| {
        // Held by the handler, as the function's issuer holds its pool.
        let (_clients, _connection) = (&clients, &connection);
        async move { Ok::<_, Error>(Response::new(Body::from("ok"))) }
    }))
    .await
}
