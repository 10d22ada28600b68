//! The token-exchange function: `POST /v1/token`, JWKS and discovery, and the lease API
//! (reads, revocation, bulk revocation, role cut-off). It verifies workload tokens, decides by
//! policy, assumes workload roles (STS) and signs tokens. It never edits IAM and never holds a
//! database admin secret: revoking an STS session or a database user is handed to the revoker
//! function (`docs/leases.md`).

use std::sync::Arc;

use axum::Router;

use super::{StartupError, broker, dynamodb_store, lambda_sdk_config, load_policies, revoker, verifier};
use crate::backend::{Issuers, Revokers};
use crate::broker::leases::LeaseService;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{HttpSettings, TokenState, exchange_routes, finish, lease_routes};
use crate::issuer::aws::StsIssuer;
use crate::issuer::token::{SignedTokenExpiry, SignedTokenIssuer};
use crate::keys::{KeySource, SigningKey, StaticKeys};

/// The token-exchange function's router.
pub async fn token_exchange(config: &Config) -> Result<Router, StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let policies = Arc::new(load_policies(config)?);
    let verifier = verifier(config, &policies, &clock)?;
    let sdk = lambda_sdk_config(config)?;
    let store = dynamodb_store(config, &sdk)?;
    let keys: Arc<dyn KeySource> = match (&config.signing.secret_arn, &config.signing.key_file) {
        (Some(arn), _) => {
            Arc::new(StaticKeys::from_secrets_manager(&aws_sdk_secretsmanager::Client::new(&sdk), arn).await?)
        }
        (None, Some(file)) => Arc::new(StaticKeys::new(SigningKey::load(file)?)),
        (None, None) => {
            return Err(StartupError::Config(
                "no signing key: set CREDBROKER_SIGNING_KEY_SECRET_ARN (or CREDBROKER_SIGNING_KEY_FILE)"
                    .into(),
            ));
        }
    };
    let public_url = config.public_url.trim_end_matches('/').to_owned();
    let issuers = Issuers::default()
        .with(Arc::new(SignedTokenIssuer::new(Arc::clone(&keys), public_url.clone())))
        .with(Arc::new(StsIssuer::new(aws_sdk_sts::Client::new(&sdk))));
    let broker = broker(config, policies, verifier, store.clone(), issuers, Arc::clone(&clock));
    // Signed tokens end by themselves, so the lease API ends their leases here; everything
    // else it hands to the revoker function.
    let revokers = Revokers::default().with(Arc::new(SignedTokenExpiry));
    let lease_revoker = revoker(config, store.clone(), revokers, clock, "token-exchange");
    let leases = LeaseService::new(broker.clone(), lease_revoker, Some(store));
    let routes = exchange_routes(TokenState { broker, keys, public_url }).merge(lease_routes(leases));
    Ok(finish(routes, HttpSettings { trust_forwarded_for: config.http.trust_forwarded_for }))
}
