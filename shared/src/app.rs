//! Wiring shared by every front door: configuration in, a ready [`AppState`] out.
//!
//! Built once per process (Lambda init or `credbroker serve` start-up): policies compiled,
//! SDK clients and keys loaded. Nothing here runs per request.

use std::path::PathBuf;
use std::sync::Arc;

use crate::audit::TracingAuditSink;
use crate::broker::{Broker, BrokerPorts, BrokerSettings};
use crate::clock::{Clock, SystemClock};
use crate::config::{AwsConfig, Config, StoreConfig};
use crate::devissuer::DevIssuer;
use crate::http::AppState;
use crate::identity::{JwksCache, JwtVerifier, VerifierSettings};
use crate::issuer::Issuers;
use crate::issuer::aws::StsIssuer;
use crate::issuer::token::SignedTokenIssuer;
use crate::keys::{KeySource, SigningKey, StaticKeys};
use crate::lease::LeaseStore;
use crate::policy::{Grant, PolicySet};
use crate::store::dynamodb::{DynamoLeaseStore, create_table};
use crate::store::embedded::EmbeddedLeaseStore;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyLoadError),
    #[error("policies: {0}")]
    PolicyConsistency(String),
    #[error(transparent)]
    Verifier(#[from] crate::identity::VerifierConfigError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error("lease store: {0}")]
    Store(#[from] crate::lease::StoreError),
    #[error("{0}")]
    Config(String),
}

/// Where the broker runs.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `credbroker serve`: embedded store and keys under `state_dir`, development issuer on.
    Local { state_dir: PathBuf },
    /// A Lambda function: DynamoDB store, no development issuer.
    Lambda,
}

/// Loads and compiles the policy directory, failing on any inconsistency.
pub fn load_policies(config: &Config) -> Result<PolicySet, StartupError> {
    let policies = PolicySet::load_dir(&config.policy_dir)?;
    policies.validate_consistency().map_err(StartupError::PolicyConsistency)?;
    Ok(policies)
}

/// The shared SDK configuration (credentials chain, region, optional endpoint override).
pub async fn aws_sdk_config(aws: &AwsConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = &aws.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &aws.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    loader.load().await
}

pub async fn build(config: &Config, mode: &Mode) -> Result<AppState, StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let policies = Arc::new(load_policies(config)?);

    let settings = VerifierSettings {
        leeway: config.identity.leeway,
        max_token_bytes: config.identity.max_token_bytes,
        cache_ttl: config.identity.jwks_cache_ttl,
        allow_http_loopback: config.identity.allow_http_loopback,
        ..VerifierSettings::default()
    };
    let jwks = Arc::new(JwksCache::http(&settings, Arc::clone(&clock))?);
    let verifier =
        Arc::new(JwtVerifier::new(policies.trusted_issuers(), &settings, Arc::clone(&clock), jwks)?);

    let sdk = match &config.aws {
        Some(aws) => Some(aws_sdk_config(aws).await),
        None => None,
    };

    let store: Arc<dyn LeaseStore> = match (&config.store, mode) {
        (StoreConfig::Embedded, Mode::Local { state_dir }) => {
            Arc::new(EmbeddedLeaseStore::open(state_dir.join("leases.redb"))?)
        }
        (StoreConfig::Embedded, Mode::Lambda) => {
            return Err(StartupError::Config("the embedded lease store is for local mode only".into()));
        }
        (StoreConfig::Dynamodb { table, create_if_missing }, _) => {
            let sdk = sdk.as_ref().ok_or_else(|| {
                StartupError::Config("store.type = \"dynamodb\" needs an [aws] section".into())
            })?;
            let client = aws_sdk_dynamodb::Client::new(sdk);
            match (create_if_missing, mode) {
                (false, _) => {}
                (true, Mode::Local { .. }) => create_table(&client, table).await?,
                (true, Mode::Lambda) => {
                    return Err(StartupError::Config(
                        "store.create_if_missing is for local mode; deployments create the table".into(),
                    ));
                }
            }
            Arc::new(DynamoLeaseStore::new(client, table.clone()))
        }
    };

    let key_file = match (&config.signing.key_file, mode) {
        (Some(file), _) => file.clone(),
        (None, Mode::Local { state_dir }) => state_dir.join("signing-key.pk8"),
        (None, Mode::Lambda) => {
            return Err(StartupError::Config(
                "no signing key: set CREDBROKER_SIGNING_KEY_FILE (or signing.key_file)".into(),
            ));
        }
    };
    let keys: Arc<dyn KeySource> = Arc::new(StaticKeys::new(SigningKey::load_or_generate(&key_file)?));

    let mut issuers = Issuers::default()
        .with(Arc::new(SignedTokenIssuer::new(Arc::clone(&keys), config.public_url.trim_end_matches('/'))));
    let wants_aws = policies.policies().any(|p| p.grants.values().any(|g| matches!(g, Grant::AwsRole(_))));
    if let (true, Some(sdk)) = (wants_aws, &sdk) {
        issuers = issuers.with(Arc::new(StsIssuer::new(aws_sdk_sts::Client::new(sdk))));
    } else if wants_aws {
        tracing::warn!("policies have AWS grants but no [aws] configuration: those grants will answer 503");
    }

    let dev_issuer = match mode {
        Mode::Local { state_dir } => Some(Arc::new(DevIssuer::load(state_dir, &config.public_url)?)),
        Mode::Lambda => None,
    };

    let broker = Broker::new(
        BrokerPorts { verifier, policies, store, issuers, clock, audit: Arc::new(TracingAuditSink) },
        BrokerSettings {
            pending_grace: config.leases.pending_grace,
            retention: config.leases.retention,
            ..BrokerSettings::default()
        },
    );
    Ok(AppState {
        broker,
        keys,
        public_url: config.public_url.trim_end_matches('/').to_owned(),
        dev_issuer,
        trust_forwarded_for: config.http.trust_forwarded_for,
    })
}
