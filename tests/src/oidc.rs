//! A test OIDC issuer on 127.0.0.1: discovery document and JWKS over real HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use credbroker::identity::testing::TestIssuer;
use serde_json::json;

#[derive(Debug)]
pub struct OidcServer {
    pub issuer: Arc<TestIssuer>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl OidcServer {
    /// Serves an ES256 issuer whose `iss` is its own base URL.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let issuer = Arc::new(TestIssuer::es256(base.clone()));
        let jwks = issuer.jwks();
        let discovery = json!({ "issuer": base, "jwks_uri": format!("{base}/jwks") });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(move || async move { Json(discovery) }))
            .route("/jwks", get(move || async move { Json(jwks) }));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { issuer, addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
