//! The development-only OIDC issuer of `credbroker serve` (`/dev/oidc`): its discovery document
//! and JWKS, so policies can trust it like any issuer. Lambda builds do not contain it.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::cacheable_json;
use crate::devissuer::DevIssuer;

pub fn dev_routes(dev: Arc<DevIssuer>) -> Router {
    Router::new()
        .route("/dev/oidc/.well-known/openid-configuration", get(discovery))
        .route("/dev/oidc/jwks.json", get(jwks))
        .with_state(dev)
}

async fn discovery(State(dev): State<Arc<DevIssuer>>) -> Response {
    cacheable_json(dev.discovery())
}

async fn jwks(State(dev): State<Arc<DevIssuer>>) -> Response {
    cacheable_json(dev.jwks())
}
