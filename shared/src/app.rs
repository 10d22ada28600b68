//! Wiring shared by every front door: configuration in, a ready [`AppState`] out.
//!
//! Built once per process (Lambda init or `credbroker serve` start-up): policies compiled,
//! SDK clients and keys loaded. Nothing here runs per request.

#[cfg(feature = "local")]
use std::path::PathBuf;
use std::sync::Arc;

use crate::audit::TracingAuditSink;
use crate::broker::{Broker, BrokerPorts, BrokerSettings};
use crate::clock::{Clock, SystemClock};
use crate::config::{AwsConfig, Config, StoreConfig};
#[cfg(feature = "local")]
use crate::devissuer::DevIssuer;
use crate::http::AppState;
use crate::identity::{JwksCache, JwtVerifier, VerifierSettings};
use crate::issuer::aws::StsIssuer;
use crate::issuer::aws_revocation::StsSessionRevoker;
use crate::issuer::db::DatabaseIssuer;
use crate::issuer::token::SignedTokenExpiry;
use crate::issuer::token::SignedTokenIssuer;
use crate::issuer::{Issuers, Revokers};
use crate::keys::{KeySource, SigningKey, StaticKeys};
use crate::lease::LeaseStore;
use crate::metrics::EmfMetrics;
use crate::policy::{Grant, PolicySet};
use crate::revoker::{Revoker, RevokerPorts};
use crate::store::dynamodb::DynamoLeaseStore;
#[cfg(feature = "local")]
use crate::store::dynamodb::create_table;
#[cfg(feature = "local")]
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
///
/// Local mode exists with the `local` feature only (the CLI turns it on): the Lambda functions
/// are built without it, so their binaries carry no embedded store (redb) nor development
/// issuer (`docs/benchmarks.md`, "Cold init, memory and binary size").
#[derive(Debug, Clone)]
pub enum Mode {
    /// `credbroker serve`: embedded store and keys under `state_dir`, development issuer on.
    #[cfg(feature = "local")]
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

/// The SDK configuration when the config has an `[aws]` section.
async fn optional_sdk_config(config: &Config) -> Option<aws_config::SdkConfig> {
    match &config.aws {
        Some(aws) => Some(aws_sdk_config(aws).await),
        None => None,
    }
}

/// The lease store the configuration names.
// Only local mode awaits (creating a missing DynamoDB table); the signature stays async for both.
#[cfg_attr(not(feature = "local"), allow(clippy::unused_async))]
pub async fn open_store(
    config: &Config,
    mode: &Mode,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<Arc<dyn LeaseStore>, StartupError> {
    Ok(match (&config.store, mode) {
        #[cfg(feature = "local")]
        (StoreConfig::Embedded, Mode::Local { state_dir }) => {
            Arc::new(EmbeddedLeaseStore::open(state_dir.join("leases.redb"))?)
        }
        (StoreConfig::Embedded, Mode::Lambda) => {
            return Err(StartupError::Config("the embedded lease store is for local mode only".into()));
        }
        (StoreConfig::Dynamodb { table, create_if_missing }, _) => {
            let sdk = sdk.ok_or_else(|| {
                StartupError::Config("store.type = \"dynamodb\" needs an [aws] section".into())
            })?;
            let client = aws_sdk_dynamodb::Client::new(sdk);
            match (create_if_missing, mode) {
                (false, _) => {}
                #[cfg(feature = "local")]
                (true, Mode::Local { .. }) => create_table(&client, table).await?,
                (true, Mode::Lambda) => {
                    return Err(StartupError::Config(
                        "store.create_if_missing is for local mode; deployments create the table".into(),
                    ));
                }
            }
            Arc::new(DynamoLeaseStore::new(client, table.clone()))
        }
    })
}

/// Who this process is, in revocation claims and locks.
pub fn instance_id() -> String {
    std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("local-{}", std::process::id()))
}

/// Everything that can end a credential, by backend: signed tokens expire by themselves; STS
/// sessions need IAM (only with `[aws]`); databases need their admin connections.
pub fn build_revokers(
    sdk: Option<&aws_config::SdkConfig>,
    store: &Arc<dyn LeaseStore>,
    clock: &Arc<dyn Clock>,
) -> (Revokers, Option<Arc<StsSessionRevoker>>) {
    let mut revokers = Revokers::default().with(Arc::new(SignedTokenExpiry));
    let sessions = sdk.map(|sdk| {
        Arc::new(StsSessionRevoker::new(
            aws_sdk_iam::Client::new(sdk),
            Arc::clone(store),
            Arc::clone(clock),
            instance_id(),
        ))
    });
    if let Some(sessions) = &sessions {
        revokers = revokers.with(sessions.clone());
    }
    (revokers, sessions)
}

/// The revoker function's wiring: store, revokers, metrics; no issuer, no signing key.
pub async fn build_revoker(config: &Config, mode: &Mode, function: &str) -> Result<Revoker, StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sdk = optional_sdk_config(config).await;
    let store = open_store(config, mode, sdk.as_ref()).await?;
    let (mut revokers, _) = build_revokers(sdk.as_ref(), &store, &clock);
    if let Some(databases) = database_issuer(config, mode, sdk.as_ref())? {
        revokers = revokers.with(databases);
    }
    Ok(Revoker::new(
        RevokerPorts {
            store,
            revokers,
            clock,
            audit: Arc::new(TracingAuditSink),
            metrics: Arc::new(EmfMetrics { function: function.to_owned() }),
        },
        config.revoker.settings(config.leases.retention),
    ))
}

/// The issuer (and revoker) of database users for `[databases]`, if any; admin connections
/// open on first use (`Broker::warm` opens them at start-up).
fn database_issuer(
    config: &Config,
    mode: &Mode,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<Option<Arc<DatabaseIssuer>>, StartupError> {
    DatabaseIssuer::from_config(&config.databases, sdk, matches!(mode, Mode::Lambda))
        .map(|issuer| issuer.map(Arc::new))
        .map_err(StartupError::Config)
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
    let jwks = Arc::new(JwksCache::http(&settings, Arc::clone(&clock)));
    let verifier =
        Arc::new(JwtVerifier::new(policies.trusted_issuers(), &settings, Arc::clone(&clock), jwks)?);

    let sdk = optional_sdk_config(config).await;

    let store = open_store(config, mode, sdk.as_ref()).await?;

    let keys: Arc<dyn KeySource> = match (&config.signing.secret_arn, &config.signing.key_file, mode) {
        (Some(arn), _, _) => {
            let sdk =
                sdk.as_ref().ok_or_else(|| StartupError::Config("signing.secret_arn needs AWS".into()))?;
            Arc::new(StaticKeys::from_secrets_manager(&aws_sdk_secretsmanager::Client::new(sdk), arn).await?)
        }
        (None, Some(file), _) => Arc::new(StaticKeys::new(SigningKey::load_or_generate(file)?)),
        #[cfg(feature = "local")]
        (None, None, Mode::Local { state_dir }) => {
            Arc::new(StaticKeys::new(SigningKey::load_or_generate(&state_dir.join("signing-key.pk8"))?))
        }
        (None, None, Mode::Lambda) => {
            return Err(StartupError::Config(
                "no signing key: set CREDBROKER_SIGNING_KEY_SECRET_ARN (or CREDBROKER_SIGNING_KEY_FILE)"
                    .into(),
            ));
        }
    };

    let mut issuers = Issuers::default()
        .with(Arc::new(SignedTokenIssuer::new(Arc::clone(&keys), config.public_url.trim_end_matches('/'))));
    let wants_aws = policies.policies().any(|p| p.grants.values().any(|g| matches!(g, Grant::AwsRole(_))));
    if let (true, Some(sdk)) = (wants_aws, &sdk) {
        issuers = issuers.with(Arc::new(StsIssuer::new(aws_sdk_sts::Client::new(sdk))));
    } else if wants_aws {
        tracing::warn!("policies have AWS grants but no [aws] configuration: those grants will answer 503");
    }
    let databases = database_issuer(config, mode, sdk.as_ref())?;
    if let Some(databases) = &databases {
        databases.check_grants(&policies).map_err(StartupError::Config)?;
        issuers = issuers.with(databases.clone());
    } else if policies.policies().any(|p| p.grants.values().any(|g| matches!(g, Grant::Database(_)))) {
        tracing::warn!(
            "policies have database grants but no [databases] configuration: those grants will answer 503"
        );
    }

    #[cfg(feature = "local")]
    let dev_issuer = match mode {
        Mode::Local { state_dir } => Some(Arc::new(DevIssuer::load(state_dir, &config.public_url)?)),
        Mode::Lambda => None,
    };
    #[cfg(not(feature = "local"))]
    let dev_issuer = None;

    let (mut revokers, aws_sessions) = build_revokers(sdk.as_ref(), &store, &clock);
    if let Some(databases) = databases {
        revokers = revokers.with(databases);
    }
    let revoker = Revoker::new(
        RevokerPorts {
            store: Arc::clone(&store),
            revokers,
            clock: Arc::clone(&clock),
            audit: Arc::new(TracingAuditSink),
            metrics: Arc::new(EmfMetrics { function: "api".to_owned() }),
        },
        config.revoker.settings(config.leases.retention),
    );

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
        revoker,
        aws_sessions,
    })
}
