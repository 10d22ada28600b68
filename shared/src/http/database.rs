//! `POST /v1/db/{policy}/{grant}/credentials`: a workload JWT in, a database user out.
//!
//! The grant is named by two path segments (a segment cannot hold `policy/grant`); the JWT
//! comes as `Authorization: Bearer …`; the optional JSON body is `{"ttl": "15m"}`. Everything
//! after parsing is [`Broker::exchange`]: the same verification, policy, replay guard, lease and
//! audit event as `POST /v1/token`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::SecondsFormat;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::no_store;
use super::request::{Bearer, OptionalJson, parse_ttl};
use crate::backend::Credential;
use crate::broker::{Broker, ExchangeRequest, RequestMeta};
use crate::policy::{GrantKind, GrantRef};
use crate::reason::{Denial, ReasonCode};

/// `POST /v1/db/{policy}/{grant}/credentials`, served by a broker holding the database issuer.
pub fn database_routes(broker: Broker) -> Router {
    Router::new().route("/v1/db/{policy}/{grant}/credentials", post(credentials)).with_state(broker)
}

/// The optional body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsRequest {
    /// Requested lifetime: `900`, `"15m"`; clamped to the policy's max.
    #[serde(default)]
    ttl: Option<Value>,
}

async fn credentials(
    State(broker): State<Broker>,
    Path((policy, grant)): Path<(String, String)>,
    meta: RequestMeta,
    Bearer(token): Bearer,
    body: Result<OptionalJson<CredentialsRequest>, Denial>,
) -> Response {
    match parse(&broker, &policy, &grant, token, body) {
        Ok((token, grant, ttl)) => {
            let now = broker.clock().now();
            let request =
                ExchangeRequest { token, grant, ttl, source_ip: meta.source_ip, request_id: meta.request_id };
            match broker.exchange(request).await {
                Ok(done) => match &done.credential {
                    Credential::Database(creds) => no_store(
                        Json(json!({
                            "lease_id": done.lease.id.as_str(),
                            "policy": done.lease.policy,
                            "grant": done.lease.grant,
                            "engine": creds.engine.as_str(),
                            "username": creds.username,
                            "password": creds.password.expose_secret(),
                            "host": creds.host,
                            "port": creds.port,
                            "database": creds.database,
                            "expires_at": creds.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                            "expires_in": (creds.expires_at - now).num_seconds().max(0),
                        }))
                        .into_response(),
                    ),
                    // The kind check makes this a wiring bug; the lease ends at its expiry.
                    _ => super::error_response(&ReasonCode::Internal),
                },
                Err(denial) => denial.into_response(),
            }
        }
        Err(denial) => broker.refuse("token_exchange", &meta, denial).into_response(),
    }
}

type Parsed = (String, GrantRef, Option<std::time::Duration>);

fn parse(
    broker: &Broker,
    policy: &str,
    grant: &str,
    token: Option<String>,
    body: Result<OptionalJson<CredentialsRequest>, Denial>,
) -> Result<Parsed, Denial> {
    let invalid = |detail: String| Denial::new(ReasonCode::InvalidRequest, detail);
    let grant = GrantRef::parse(&format!("{policy}/{grant}"))
        .ok_or_else(|| invalid("the path must be /v1/db/<policy>/<grant>/credentials".to_owned()))?;
    let token =
        token.ok_or_else(|| Denial::new(ReasonCode::MissingToken, "no Authorization: Bearer token"))?;
    let OptionalJson(body) = body?;
    let ttl = body.and_then(|b| b.ttl).as_ref().map(parse_ttl).transpose()?;
    // Refused before anything is minted: other grants have their own route.
    if let Some(kind) = broker.policies().grant_kind(&grant).filter(|k| *k != GrantKind::Database) {
        return Err(invalid(format!("{grant} is a {kind} grant; use POST /v1/token")));
    }
    Ok((token, grant, ttl))
}
