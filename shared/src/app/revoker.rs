//! The revoker function: ends due leases (expired, failed, or handed over by the lease API),
//! writes the STS deny lists to IAM, drops database users, reconciles orphans. It issues
//! nothing and holds no signing key; it is the only function that may edit IAM.

use std::sync::Arc;

use super::{
    StartupError, database_issuer, dynamodb_store, instance_id, lambda_sdk_config, revoker as build,
};
use crate::backend::Revokers;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::issuer::aws_revocation::StsSessionRevoker;
use crate::issuer::iam::IamRolePolicies;
use crate::issuer::token::SignedTokenExpiry;
use crate::lease::DueLeases;
use crate::revoker::Revoker;

/// The revoker function's revoker, and the due index its sweeps read; `function` names it in
/// metrics.
pub fn revoker(config: &Config, function: &str) -> Result<(Revoker, Arc<dyn DueLeases>), StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sdk = lambda_sdk_config(config)?;
    let store = dynamodb_store(config, &sdk)?;
    let sessions = StsSessionRevoker::new(
        Arc::new(IamRolePolicies::new(aws_sdk_iam::Client::new(&sdk))),
        store.clone(),
        Arc::clone(&clock),
        instance_id(),
    )
    .with_metrics(Arc::new(crate::metrics::EmfMetrics { function: function.to_owned() }));
    let mut revokers = Revokers::default().with(Arc::new(SignedTokenExpiry)).with(Arc::new(sessions));
    if let Some(databases) = database_issuer(config, Some(&sdk), true)? {
        revokers = revokers.with(databases);
    }
    Ok((build(config, store.clone(), revokers, clock, function), store))
}
