//! The HTTP surface: one axum router, served by Lambda (`lambda_http`) and locally (`serve`).
//!
//! Errors are mapped to responses in exactly one place ([`Denial`]'s `IntoResponse`): a short,
//! stable `{"error", "reason"}` body; the detail goes to the audit event only.

mod database;
mod lambda;
pub mod leases;
mod token;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use lambda::run_lambda;

use crate::broker::{Broker, Denial};
use crate::devissuer::DevIssuer;
use crate::issuer::aws_revocation::StsSessionRevoker;
use crate::keys::KeySource;
use crate::lease::LeaseId;
use crate::reason::ReasonCode;
use crate::revoker::Revoker;

/// Request bodies are small JSON or form documents; anything bigger is refused early.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The caller's address as established by the front door (API Gateway request context, or
/// the TCP peer locally). Set by the adapters, never from a client header unless configured.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The request id of the front door (API Gateway), if any.
#[derive(Debug, Clone)]
pub struct FrontRequestId(pub String);

#[derive(Debug, Clone)]
pub struct AppState {
    pub broker: Broker,
    pub keys: Arc<dyn KeySource>,
    /// The broker's public base URL: `iss` of its tokens, base of its JWKS URL.
    pub public_url: String,
    /// Development-only OIDC issuer; `None` everywhere but `credbroker serve`.
    pub dev_issuer: Option<Arc<DevIssuer>>,
    /// Take the client address from the right-most `X-Forwarded-For` entry (only behind a
    /// proxy you run that sets it).
    pub trust_forwarded_for: bool,
    /// Ends leases on request (lease API); the scheduled revoker uses the same logic.
    pub revoker: Revoker,
    /// The STS session revoker, for the emergency whole-role cut-off (`None` without AWS).
    pub aws_sessions: Option<Arc<StsSessionRevoker>>,
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/v1/token", post(token::exchange))
        .route("/v1/db/{policy}/{grant}/credentials", post(database::credentials))
        .route("/v1/health", get(health))
        .route("/v1/leases/revoke", post(leases::bulk_revoke))
        .route("/v1/leases/{id}", get(leases::get_lease).delete(leases::delete_lease))
        .route("/v1/leases/{id}/renew", post(leases::renew_lease))
        .route("/v1/admin/aws-role-cutoff", post(leases::aws_role_cutoff))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery));
    if state.dev_issuer.is_some() {
        router = router
            .route("/dev/oidc/.well-known/openid-configuration", get(dev_discovery))
            .route("/dev/oidc/jwks.json", get(dev_jwks));
    }
    router = router.fallback(not_found).layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    // Only when configured: a `from_fn` layer boxes every request's future (~1 µs per exchange).
    if state.trust_forwarded_for {
        router = router.layer(axum::middleware::from_fn(forwarded_for));
    }
    router.with_state(Arc::new(state))
}

/// With `trust_forwarded_for`: the client address is the right-most `X-Forwarded-For` entry.
async fn forwarded_for(mut req: Request, next: Next) -> Response {
    if let Some(ip) = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
    {
        req.extensions_mut().insert(ClientAddr(ip));
    }
    next.run(req).await
}

impl IntoResponse for Denial {
    fn into_response(self) -> Response {
        error_response(&self.reason)
    }
}

pub fn error_response(reason: &ReasonCode) -> Response {
    let (status, error) = reason.http();
    let mut response = (status, Json(json!({ "error": error, "reason": reason.as_str() }))).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A request id for the audit event: the front door's, or a fresh one.
pub fn request_id(extensions: &http::Extensions, now: chrono::DateTime<chrono::Utc>) -> String {
    extensions.get::<FrontRequestId>().map_or_else(
        || LeaseId::generate(now).map_or_else(|_| "unknown".to_owned(), |id| id.to_string()),
        |id| id.0.clone(),
    )
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not_found", "reason": "unknown_route" }))).into_response()
}

fn cacheable_json(value: serde_json::Value) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    (headers, Json(value)).into_response()
}

async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    cacheable_json(state.keys.jwks())
}

async fn discovery(State(state): State<Arc<AppState>>) -> Response {
    let base = state.public_url.trim_end_matches('/');
    cacheable_json(json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/v1/token"),
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["none"],
    }))
}

async fn dev_discovery(State(state): State<Arc<AppState>>) -> Response {
    match &state.dev_issuer {
        Some(dev) => cacheable_json(dev.discovery()),
        None => not_found().await,
    }
}

async fn dev_jwks(State(state): State<Arc<AppState>>) -> Response {
    match &state.dev_issuer {
        Some(dev) => cacheable_json(dev.jwks()),
        None => not_found().await,
    }
}

/// Serves the router on a local listener, with the TCP peer as the client address.
pub async fn serve_local(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn(peer_address));
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
}

/// Ctrl-C or SIGTERM: finish in-flight requests, then stop.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn peer_address(mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    if let Some(ip) = peer {
        // A trusted X-Forwarded-For (inner layer) overrides this when configured.
        req.extensions_mut().insert(ClientAddr(ip));
    }
    next.run(req).await
}

#[cfg(test)]
mod tests;
