//! The HTTP surface: one route set per capability, assembled per function by the wiring
//! (`crate::app`) and served by Lambda (`lambda_http`) or locally (`credbroker serve`).
//!
//! | route set | routes | served by |
//! |---|---|---|
//! | [`exchange_routes`] | `POST /v1/token`, JWKS, discovery | token-exchange |
//! | [`lease_routes`] | `GET`/`DELETE /v1/leases/{id}`, `POST /v1/leases/revoke`, `POST /v1/admin/aws-role-cutoff` | token-exchange |
//! | [`database_routes`] | `POST /v1/db/{policy}/{grant}/credentials` | db-credentials |
//! | [`renew_routes`] | `POST /v1/leases/{id}/renew` | db-credentials (the only function that can extend a credential) |
//! | `dev_routes` | the development issuer under `/dev/oidc` | `credbroker serve` only |
//!
//! [`finish`] adds what every router has: `GET /v1/health`, the `unknown_route` fallback, the
//! body limit. Handlers only parse (`request.rs`), call a use case of the core and render;
//! errors are mapped to responses in exactly one place ([`Denial`]'s `IntoResponse`): a short,
//! stable `{"error", "reason"}` body, the detail in the audit event only.

mod database;
#[cfg(feature = "local")]
mod dev;
mod lambda;
mod leases;
mod request;
mod token;

use std::net::IpAddr;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub use database::database_routes;
#[cfg(feature = "local")]
pub use dev::dev_routes;
pub use lambda::run_lambda;
pub use leases::{lease_routes, lease_view, renew_routes};
pub use request::{ClientAddr, FrontRequestId};
pub use token::{TokenState, exchange_routes};

use crate::reason::{Denial, ReasonCode};

/// Request bodies are small JSON or form documents; anything bigger is refused early.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every function's router shares, from the broker config's `[http]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpSettings {
    /// Take the client address from the right-most `X-Forwarded-For` entry (only behind a
    /// proxy you run that sets it).
    pub trust_forwarded_for: bool,
}

/// A function's router: its route sets plus `/v1/health`, the `unknown_route` fallback and
/// the body limit (and, when configured, the trusted `X-Forwarded-For`).
pub fn finish(routes: Router, settings: HttpSettings) -> Router {
    let mut app = routes
        .route("/v1/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    // Only when configured: a `from_fn` layer boxes every request's future (~1 µs per exchange).
    if settings.trust_forwarded_for {
        app = app.layer(axum::middleware::from_fn(forwarded_for));
    }
    app
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

/// Responses carrying credentials: never cached (RFC 6749 §5.1).
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
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
