//! `credbroker serve`: every function's routes in one process, on the embedded store (or a
//! DynamoDB table, e.g. LocalStack's), with a key file under the state directory and the
//! development-only OIDC issuer. AWS grants and STS revocation need `[aws]`; database grants
//! need `[databases]`.

use std::path::Path;
use std::sync::Arc;

use axum::Router;

use super::{
    StartupError, aws_sdk_config, broker, check_database_grants, database_issuer, instance_id, load_policies,
    revoker as build_revoker, verifier, warn_unserved,
};
use crate::backend::{Issuers, Revokers};
use crate::broker::leases::LeaseService;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StoreConfig};
use crate::denylist::{DenyListRendering, DenyListStore};
use crate::devissuer::DevIssuer;
use crate::http::{
    HttpSettings, TokenState, database_routes, dev_routes, exchange_routes, finish, lease_routes,
    renew_routes,
};
use crate::issuer::aws::StsIssuer;
use crate::issuer::aws_revocation::StsSessionRevoker;
use crate::issuer::iam::IamRolePolicies;
use crate::issuer::token::{SignedTokenExpiry, SignedTokenIssuer};
use crate::keys::{KeySource, SigningKey, StaticKeys};
use crate::lease::{DueLeases, LeaseStore};
use crate::policy::{GrantKind, PolicySet};
use crate::revoker::Revoker;
use crate::store::dynamodb::{DynamoLeaseStore, create_table};
use crate::store::embedded::EmbeddedLeaseStore;

/// A local broker, ready to serve.
#[derive(Debug)]
pub struct LocalBroker {
    pub router: Router,
    /// Ends leases in this process (the lease API uses it too).
    pub revoker: Revoker,
    /// The leases a sweep of [`Self::revoker`] ends.
    pub due: Arc<dyn DueLeases>,
    pub dev_issuer: Arc<DevIssuer>,
    pub policies: Arc<PolicySet>,
}

pub async fn local(config: &Config, state_dir: &Path) -> Result<LocalBroker, StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let policies = Arc::new(load_policies(config)?);
    let verifier = verifier(config, &policies, &clock)?;
    let sdk = match &config.aws {
        Some(aws) => Some(aws_sdk_config(aws).await),
        None => None,
    };
    let stores = match &config.store {
        StoreConfig::Embedded => {
            LocalStores::of(Arc::new(EmbeddedLeaseStore::open(state_dir.join("leases.redb"))?))
        }
        StoreConfig::Dynamodb { table, create_if_missing } => {
            let sdk = sdk.as_ref().ok_or_else(|| {
                StartupError::Config("store.type = \"dynamodb\" needs an [aws] section".into())
            })?;
            let client = aws_sdk_dynamodb::Client::new(sdk);
            if *create_if_missing {
                create_table(&client, table).await?;
            }
            LocalStores::of(Arc::new(DynamoLeaseStore::new(client, table.clone())))
        }
    };
    let keys: Arc<dyn KeySource> = match (&config.signing.secret_arn, &config.signing.key_file) {
        (Some(arn), _) => {
            let sdk =
                sdk.as_ref().ok_or_else(|| StartupError::Config("signing.secret_arn needs [aws]".into()))?;
            Arc::new(StaticKeys::from_secrets_manager(&aws_sdk_secretsmanager::Client::new(sdk), arn).await?)
        }
        (None, Some(file)) => Arc::new(StaticKeys::new(SigningKey::load_or_generate(file)?)),
        (None, None) => {
            Arc::new(StaticKeys::new(SigningKey::load_or_generate(&state_dir.join("signing-key.pk8"))?))
        }
    };
    let public_url = config.public_url.trim_end_matches('/').to_owned();

    let mut issuers =
        Issuers::default().with(Arc::new(SignedTokenIssuer::new(Arc::clone(&keys), public_url.clone())));
    let mut revokers = Revokers::default().with(Arc::new(SignedTokenExpiry));
    match &sdk {
        Some(sdk) => {
            issuers = issuers.with(Arc::new(StsIssuer::new(aws_sdk_sts::Client::new(sdk))));
            revokers = revokers.with(Arc::new(StsSessionRevoker::new(
                Arc::new(IamRolePolicies::new(aws_sdk_iam::Client::new(sdk))),
                Arc::clone(&stores.deny_lists),
                Arc::clone(&clock),
                instance_id(),
            )));
        }
        None => warn_unserved(&policies, GrantKind::AwsRole, "there is no [aws] configuration"),
    }
    match database_issuer(config, sdk.as_ref(), false)? {
        Some(databases) => {
            check_database_grants(&policies, &databases)?;
            issuers = issuers.with(databases.clone());
            revokers = revokers.with(databases);
        }
        None => warn_unserved(&policies, GrantKind::Database, "there is no [databases] configuration"),
    }

    let broker = broker(
        config,
        Arc::clone(&policies),
        verifier,
        Arc::clone(&stores.leases),
        issuers,
        Arc::clone(&clock),
    );
    let revoker = build_revoker(config, Arc::clone(&stores.leases), revokers, clock, "local");
    let deny_lists = sdk.as_ref().map(|_| Arc::clone(&stores.deny_lists) as Arc<dyn DenyListStore>);
    let leases = LeaseService::new(broker.clone(), revoker.clone(), deny_lists);
    let dev_issuer = Arc::new(DevIssuer::load(state_dir, &config.public_url)?);
    let every_route = exchange_routes(TokenState { broker: broker.clone(), keys, public_url })
        .merge(lease_routes(leases.clone()))
        .merge(database_routes(broker))
        .merge(renew_routes(leases))
        .merge(dev_routes(Arc::clone(&dev_issuer)));
    let router = finish(every_route, HttpSettings { trust_forwarded_for: config.http.trust_forwarded_for });
    Ok(LocalBroker { router, revoker, due: stores.due, dev_issuer, policies })
}

/// The local store, as every function's port at once.
struct LocalStores {
    leases: Arc<dyn LeaseStore>,
    due: Arc<dyn DueLeases>,
    deny_lists: Arc<dyn DenyListRendering>,
}

impl LocalStores {
    fn of<S: LeaseStore + DueLeases + DenyListRendering + 'static>(store: Arc<S>) -> Self {
        Self { leases: store.clone(), due: store.clone(), deny_lists: store }
    }
}
