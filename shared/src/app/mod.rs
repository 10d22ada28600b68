//! Wiring: configuration in, one function's ports and router out. Each function has its own
//! builder, behind a feature of its own, and wires only what its code calls — the capability
//! table of `docs/architecture.md`:
//!
//! | builder | feature | wires | never |
//! |---|---|---|---|
//! | [`token_exchange`](exchange::token_exchange) | `exchange` | verifier, policies, STS issuer, signing key, lease API | IAM, database admin secrets |
//! | [`db_credentials`](db_credentials::db_credentials) | `db-credentials` | verifier, policies, database issuer, renewals | signing key, STS, IAM |
//! | [`revoker`](revoker::revoker) | `revoker` | due leases, IAM deny lists, database revocation, metrics | issuing anything, the signing key |
//! | [`local`](local::local) | `local` | all of the above in one process, the embedded store, the development issuer | — |
//!
//! Built once per process (Lambda init or `credbroker serve` start-up): policies compiled, SDK
//! clients and keys loaded. Nothing here runs per request.

#[cfg(feature = "db-credentials")]
pub mod db_credentials;
#[cfg(feature = "exchange")]
pub mod exchange;
#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "revoker")]
pub mod revoker;

#[cfg(any(feature = "dynamodb", feature = "database"))]
use std::sync::Arc;

use crate::config::Config;
#[cfg(feature = "dynamodb")]
use crate::config::StoreConfig;
#[cfg(feature = "database")]
use crate::issuer::db::DatabaseIssuer;
use crate::policy::PolicySet;

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

/// Loads and compiles the policy directory, failing on any inconsistency, or on a role outside
/// `[aws].role_arn_prefix` (the roles this deployment may assume and revoke).
pub fn load_policies(config: &Config) -> Result<PolicySet, StartupError> {
    let policies = PolicySet::load_dir(&config.policy_dir)?;
    policies.validate_consistency().map_err(StartupError::PolicyConsistency)?;
    if let Some(prefix) = config.aws.as_ref().and_then(|aws| aws.role_arn_prefix.as_deref()) {
        policies.check_role_arns(prefix).map_err(StartupError::PolicyConsistency)?;
    }
    for warning in policies.warnings() {
        tracing::warn!(dir = %config.policy_dir.display(), "{warning}");
    }
    Ok(policies)
}

/// Who this process is, in revocation claims and locks.
pub fn instance_id() -> String {
    std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("local-{}", std::process::id()))
}

/// Local mode's SDK configuration: aws-config's credential chain (environment, profiles, SSO),
/// region, optional endpoint override.
#[cfg(feature = "local")]
pub async fn aws_sdk_config(aws: &crate::config::AwsConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = &aws.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &aws.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    loader.load().await
}

/// A Lambda function's SDK configuration, from its environment (`crate::aws_env`).
#[cfg(any(feature = "exchange", feature = "db-credentials", feature = "revoker"))]
fn lambda_sdk_config(config: &Config) -> Result<aws_types::SdkConfig, StartupError> {
    crate::aws_env::sdk_config(&config.aws.clone().unwrap_or_default())
        .map_err(|e| StartupError::Config(e.to_string()))
}

/// A Lambda function's lease store: the DynamoDB table the deployment created. Each function
/// takes the ports it uses from it; only the revoker's wiring makes it a [`DueLeases`] or a
/// [`DenyListRendering`](crate::denylist::DenyListRendering), so the API functions' binaries
/// carry neither the sweep's query nor the IAM writer's.
///
/// [`DueLeases`]: crate::lease::DueLeases
#[cfg(feature = "dynamodb")]
pub fn dynamodb_store(
    config: &Config,
    sdk: &aws_types::SdkConfig,
) -> Result<Arc<crate::store::dynamodb::DynamoLeaseStore>, StartupError> {
    match &config.store {
        StoreConfig::Dynamodb { table, create_if_missing: false } => Ok(Arc::new(
            crate::store::dynamodb::DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(sdk), table.clone()),
        )),
        StoreConfig::Dynamodb { create_if_missing: true, .. } => Err(StartupError::Config(
            "store.create_if_missing is for local mode; deployments create the table".into(),
        )),
        StoreConfig::Embedded => {
            Err(StartupError::Config("the embedded lease store is for local mode only".into()))
        }
    }
}

/// The token verifier for every issuer a policy trusts (JWKS over HTTPS, cached).
#[cfg(feature = "http")]
pub fn verifier(
    config: &Config,
    policies: &PolicySet,
    clock: &Arc<dyn crate::clock::Clock>,
) -> Result<Arc<crate::identity::JwtVerifier>, StartupError> {
    use crate::identity::{JwksCache, JwtVerifier, VerifierSettings};
    let settings = VerifierSettings {
        leeway: config.identity.leeway,
        max_token_bytes: config.identity.max_token_bytes,
        cache_ttl: config.identity.jwks_cache_ttl,
        allow_http_loopback: config.identity.allow_http_loopback,
        ..VerifierSettings::default()
    };
    let jwks = Arc::new(JwksCache::http(&settings, Arc::clone(clock)));
    Ok(Arc::new(JwtVerifier::new(policies.trusted_issuers(), &settings, Arc::clone(clock), jwks)?))
}

/// The broker's exchange use case over `issuers`.
#[cfg(feature = "http")]
fn broker(
    config: &Config,
    policies: Arc<PolicySet>,
    verifier: Arc<crate::identity::JwtVerifier>,
    store: Arc<dyn crate::lease::LeaseStore>,
    issuers: crate::backend::Issuers,
    clock: Arc<dyn crate::clock::Clock>,
) -> crate::broker::Broker {
    use crate::broker::{Broker, BrokerPorts, BrokerSettings};
    Broker::new(
        BrokerPorts {
            verifier,
            policies,
            store,
            issuers,
            clock,
            audit: Arc::new(crate::audit::TracingAuditSink),
        },
        BrokerSettings {
            pending_grace: config.leases.pending_grace,
            retention: config.leases.retention,
            ..BrokerSettings::default()
        },
    )
}

/// Ends leases through `revokers`: the scheduled revoker's, or (in the API functions) the lease
/// API's, which hands everything else to the scheduled one.
#[cfg(any(feature = "http", feature = "revoker"))]
fn revoker(
    config: &Config,
    store: Arc<dyn crate::lease::LeaseStore>,
    revokers: crate::backend::Revokers,
    clock: Arc<dyn crate::clock::Clock>,
    function: &str,
) -> crate::revoker::Revoker {
    use crate::revoker::{Revoker, RevokerPorts};
    Revoker::new(
        RevokerPorts {
            store,
            revokers,
            clock,
            audit: Arc::new(crate::audit::TracingAuditSink),
            metrics: Arc::new(crate::metrics::EmfMetrics { function: function.to_owned() }),
        },
        config.revoker.settings(config.leases.retention),
    )
}

/// The issuer (and revoker) of database users for `[databases]`, if any; admin connections
/// open on first use (or `warm`). Admin passwords come from Secrets Manager (the only source
/// in Lambda: `lambda = true`, since file and environment secrets would sit in the function's
/// package or configuration), or locally from a file, a variable or nowhere (trust auth).
#[cfg(all(feature = "database", feature = "secrets-manager"))]
pub fn database_issuer(
    config: &Config,
    sdk: Option<&aws_types::SdkConfig>,
    lambda: bool,
) -> Result<Option<Arc<DatabaseIssuer>>, StartupError> {
    use crate::secrets::{EnvSecret, FileSecret, SecretSource, StaticSecret};
    if config.databases.is_empty() {
        return Ok(None);
    }
    let mut issuer = DatabaseIssuer::new();
    for (name, database) in &config.databases {
        let secret: Arc<dyn SecretSource> =
            match (&database.password_secret_arn, &database.password_file, &database.password_env) {
                (Some(arn), _, _) => {
                    let sdk = sdk.ok_or_else(|| {
                        StartupError::Config(format!(
                            "databases.{name}.password_secret_arn needs an [aws] section (Secrets Manager)"
                        ))
                    })?;
                    Arc::new(crate::secrets::SecretsManagerSecret::new(
                        aws_sdk_secretsmanager::Client::new(sdk),
                        arn,
                    ))
                }
                (None, _, _) if lambda => {
                    return Err(StartupError::Config(format!(
                        "databases.{name}: in Lambda the admin password must come from password_secret_arn"
                    )));
                }
                (None, Some(file), _) => Arc::new(FileSecret::new(file)),
                (None, None, Some(var)) => Arc::new(EnvSecret::new(var)),
                // Trust or peer authentication (local servers).
                (None, None, None) => Arc::new(StaticSecret::empty()),
            };
        issuer = issuer.with_connection(name, database.clone(), secret);
    }
    Ok(Some(Arc::new(issuer)))
}

/// Checks every database grant against the configured connections: a grant naming a
/// connection of another engine is a configuration error; one naming no connection answers
/// 503 (`backend_unavailable`), like AWS grants without `[aws]`.
#[cfg(feature = "database")]
pub fn check_database_grants(policies: &PolicySet, databases: &DatabaseIssuer) -> Result<(), StartupError> {
    let connections: std::collections::HashMap<&str, crate::backend::Engine> =
        databases.connection_names().collect();
    for policy in policies.policies() {
        for (grant_name, grant) in &policy.grants {
            let crate::policy::Grant::Database(grant) = grant else { continue };
            match connections.get(grant.connection.as_str()) {
                Some(engine) if *engine != grant.engine => {
                    return Err(StartupError::Config(format!(
                        "policy {}, grant {grant_name}: connection {:?} is {engine}, the grant says {}",
                        policy.name, grant.connection, grant.engine
                    )));
                }
                Some(_) => {}
                None => tracing::warn!(
                    policy = %policy.name,
                    grant = %grant_name,
                    connection = %grant.connection,
                    "database grant names an unconfigured connection: it will answer 503"
                ),
            }
        }
    }
    Ok(())
}

/// Warns about grants of `kind` this process cannot serve (they answer 503).
#[cfg(any(feature = "db-credentials", feature = "local"))]
fn warn_unserved(policies: &PolicySet, kind: crate::policy::GrantKind, why: &str) {
    if policies.policies().any(|p| p.grants.values().any(|g| g.kind() == kind)) {
        tracing::warn!("policies have {kind} grants but {why}: those grants will answer 503");
    }
}
