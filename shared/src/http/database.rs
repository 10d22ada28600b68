//! `POST /v1/db/{policy}/{grant}/credentials`: a workload JWT in, a database user out.
//!
//! The grant is named by two path segments (a segment cannot hold `policy/grant`); the JWT
//! comes as `Authorization: Bearer …`; the optional JSON body is `{"ttl": "15m"}`. Everything
//! after parsing is [`Broker::exchange`](crate::broker::Broker::exchange): the same
//! verification, policy, replay guard, lease and audit event as `POST /v1/token`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::token::parse_ttl;
use super::{AppState, ClientAddr, request_id};
use crate::audit::{AuditEvent, Decision};
use crate::broker::{Denial, ExchangeRequest};
use crate::issuer::Credential;
use crate::issuer::db::DatabaseCredentials;
use crate::policy::GrantRef;
use crate::reason::ReasonCode;

/// The optional body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsRequest {
    /// Requested lifetime: `900`, `"15m"`; clamped to the policy's max.
    #[serde(default)]
    ttl: Option<Value>,
}

pub(super) async fn credentials(
    State(state): State<Arc<AppState>>,
    Path((policy, grant)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let now = state.broker.clock().now();
    let request_id = request_id(&parts.extensions, now);
    let source_ip = parts.extensions.get::<ClientAddr>().map(|c| c.0);
    let reject = |denial: Denial| reject_early(&state, &request_id, source_ip, denial);

    let Some(grant) = GrantRef::parse(&format!("{policy}/{grant}")) else {
        return reject(invalid("the path must be /v1/db/<policy>/<grant>/credentials"));
    };
    let Some(token) = bearer(&parts.headers) else {
        return reject(Denial::new(ReasonCode::MissingToken, "no Authorization: Bearer token"));
    };
    let Ok(body) = axum::body::to_bytes(body, super::MAX_BODY_BYTES).await else {
        return reject(invalid("body too large or unreadable"));
    };
    let ttl = match parse_body(&parts.headers, &body) {
        Ok(ttl) => ttl,
        Err(denial) => return reject(denial),
    };
    // Refused before anything is minted: other grants have their own route.
    let kind = state
        .broker
        .policies()
        .get(&grant.policy)
        .and_then(|p| p.grants.get(&grant.grant))
        .map(crate::policy::Grant::kind);
    if let Some(kind) = kind.filter(|k| *k != "database") {
        return reject(invalid(format!("{grant} is a {kind} grant; use POST /v1/token")));
    }

    let request = ExchangeRequest { token, grant, ttl, source_ip, request_id: request_id.clone() };
    match state.broker.exchange(request).await {
        Ok(done) => match &done.credential {
            Credential::Database(creds) => {
                let mut body = credentials_json(creds, now);
                body["lease_id"] = json!(done.lease.id.as_str());
                body["policy"] = json!(done.lease.policy);
                body["grant"] = json!(done.lease.grant);
                no_store(Json(body).into_response())
            }
            // The kind check above makes this a wiring bug; the lease ends at its expiry.
            _ => super::error_response(&ReasonCode::Internal),
        },
        Err(denial) => denial.into_response(),
    }
}

/// The credential fields of a response (also used by `/v1/token`, which refuses database
/// grants before minting, so only for completeness).
pub(super) fn credentials_json(creds: &DatabaseCredentials, now: DateTime<Utc>) -> Value {
    json!({
        "engine": creds.engine.as_str(),
        "username": creds.username,
        "password": creds.password.expose_secret(),
        "host": creds.host,
        "port": creds.port,
        "database": creds.database,
        "expires_at": creds.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "expires_in": (creds.expires_at - now).num_seconds().max(0),
    })
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn invalid(detail: impl Into<String>) -> Denial {
    Denial::new(ReasonCode::InvalidRequest, detail)
}

/// `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// An empty body, or JSON `{"ttl": …}`.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Option<std::time::Duration>, Denial> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return Err(invalid("a body must be application/json"));
    }
    let request: CredentialsRequest =
        serde_json::from_slice(body).map_err(|e| invalid(format!("JSON body: {e}")))?;
    request.ttl.as_ref().map(parse_ttl).transpose()
}

/// Requests refused before the broker runs still get their one audit event.
fn reject_early(state: &AppState, request_id: &str, source_ip: Option<IpAddr>, denial: Denial) -> Response {
    let mut event = AuditEvent::new("token_exchange", request_id, state.broker.clock().now());
    event.decision = Decision::Deny;
    event.reason = denial.reason.as_str().into_owned();
    event.detail = Some(denial.detail.clone());
    event.source_ip = source_ip;
    state.broker.audit(&event);
    denial.into_response()
}
