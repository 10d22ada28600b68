//! The db-credentials function: `POST /v1/db/{policy}/{grant}/credentials` and renewals of
//! database leases (`POST /v1/leases/{id}/renew`: only this function can extend a database
//! user). It verifies workload tokens, decides by policy and creates database users with the
//! admin connections of `[databases]`. It holds no signing key, cannot assume roles and
//! cannot edit IAM.

use std::sync::Arc;

use axum::Router;

use super::{
    StartupError, broker, check_database_grants, database_issuer, dynamodb_store, lambda_sdk_config,
    load_policies, revoker, verifier, warn_unserved,
};
use crate::backend::{Issuers, Revokers};
use crate::broker::leases::LeaseService;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{HttpSettings, database_routes, finish, renew_routes};
use crate::policy::GrantKind;

/// The db-credentials function's router, its admin connections already open (Lambda init is
/// not billed against the first request's latency).
pub async fn db_credentials(config: &Config) -> Result<Router, StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let policies = Arc::new(load_policies(config)?);
    let verifier = verifier(config, &policies, &clock)?;
    let sdk = lambda_sdk_config(config)?;
    let store = dynamodb_store(config, &sdk)?;
    let databases = database_issuer(config, Some(&sdk), true)?;
    let (mut issuers, mut revokers) = (Issuers::default(), Revokers::default());
    match &databases {
        Some(databases) => {
            check_database_grants(&policies, databases)?;
            issuers = issuers.with(databases.clone());
            revokers = revokers.with(databases.clone());
        }
        None => warn_unserved(&policies, GrantKind::Database, "there is no [databases] configuration"),
    }
    let broker = broker(config, policies, verifier, store.clone(), issuers, Arc::clone(&clock));
    broker.warm().await;
    let lease_revoker = revoker(config, store, revokers, clock, "db-credentials");
    let leases = LeaseService::new(broker.clone(), lease_revoker, None);
    let routes = database_routes(broker).merge(renew_routes(leases));
    Ok(finish(routes, HttpSettings { trust_forwarded_for: config.http.trust_forwarded_for }))
}
