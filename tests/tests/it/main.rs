//! The integration tests: one binary (one link of the SDK, sqlx and the harness instead of one
//! per file), one module per area. They need the services `scripts/test.sh` starts.

mod db_claims;
mod db_crash;
mod db_lambda_e2e;
mod db_mysql;
mod db_postgres;
mod db_serve;
mod lambda_e2e;
mod replay;
mod revoker_e2e;
mod revoker_postgres;
mod serve_e2e;
mod signing_keys;
mod store_dynamodb;
mod sts_exchange;
mod sts_revocation;
