//! `POST /v1/token`: JSON or RFC 8693 form in, credential out.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::request::{RawBody, has_content_type, parse_ttl};
use super::{cacheable_json, no_store};
use crate::backend::Credential;
use crate::broker::{Broker, ExchangeRequest, Exchanged, RequestMeta};
use crate::keys::KeySource;
use crate::policy::{GrantKind, GrantRef};
use crate::reason::{Denial, ReasonCode};

const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Issued token type for STS sessions (not an OAuth token, so RFC 8693's `token_type` is N_A).
const TOKEN_TYPE_AWS_CREDENTIALS: &str = "urn:credbroker:token-type:aws-credentials";

/// The JSON request. No `Debug`: it holds the workload's token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonExchange {
    /// The workload's JWT.
    token: String,
    /// `<policy>/<grant>`.
    grant: String,
    /// Requested lifetime: `900`, `"15m"`, `"1h"`.
    #[serde(default)]
    ttl: Option<Value>,
}

/// The RFC 8693 form request. `audience` (or `resource`) names the grant. No `Debug`: it
/// holds the workload's token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FormExchange {
    grant_type: String,
    subject_token: String,
    subject_token_type: String,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    requested_token_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// What the caller asked for, whichever encoding it used.
struct Parsed {
    token: String,
    grant: GrantRef,
    ttl: Option<Duration>,
    /// RFC 8693 callers get RFC 8693 response fields and may constrain the token type.
    requested_token_type: Option<String>,
}

/// What the token exchange serves from: the broker (with the STS and signed-token issuers)
/// and the signing keys it publishes.
#[derive(Debug, Clone)]
pub struct TokenState {
    pub broker: Broker,
    pub keys: Arc<dyn KeySource>,
    /// The broker's public base URL: `iss` of its tokens, base of its JWKS URL.
    pub public_url: String,
}

/// `POST /v1/token`, `GET /.well-known/jwks.json`, `GET /.well-known/openid-configuration`.
pub fn exchange_routes(state: TokenState) -> Router {
    Router::new()
        .route("/v1/token", post(exchange))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .with_state(Arc::new(state))
}

const ACTION: &str = "token_exchange";

async fn exchange(
    State(state): State<Arc<TokenState>>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: Result<RawBody, Denial>,
) -> Response {
    let broker = &state.broker;
    let now = broker.clock().now();
    let parsed = match body.and_then(|RawBody(body)| parse(&headers, &body)) {
        Ok(parsed) => parsed,
        Err(denial) => return broker.refuse(ACTION, &meta, denial).into_response(),
    };
    let wants_rfc8693 = parsed.requested_token_type.is_some() || is_form(&headers);
    let kind = broker.policies().grant_kind(&parsed.grant);
    if let (Some(requested), Some(kind)) = (parsed.requested_token_type.as_deref(), kind)
        && let Some(denial) = token_type_mismatch(kind, &parsed.grant, requested)
    {
        return broker.refuse(ACTION, &meta, denial).into_response();
    }
    // Database users have their own route (and response shape): refuse before minting one.
    if kind == Some(GrantKind::Database) {
        let grant = &parsed.grant;
        let denial = invalid(format!(
            "{grant} is a database grant: POST /v1/db/{}/{}/credentials",
            grant.policy, grant.grant
        ));
        return broker.refuse(ACTION, &meta, denial).into_response();
    }
    let request = ExchangeRequest {
        token: parsed.token,
        grant: parsed.grant,
        ttl: parsed.ttl,
        source_ip: meta.source_ip,
        request_id: meta.request_id,
    };
    match broker.exchange(request).await {
        Ok(done) => success(&done, wants_rfc8693, now),
        Err(denial) => denial.into_response(),
    }
}

async fn jwks(State(state): State<Arc<TokenState>>) -> Response {
    cacheable_json(state.keys.jwks())
}

async fn discovery(State(state): State<Arc<TokenState>>) -> Response {
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

fn is_form(headers: &HeaderMap) -> bool {
    has_content_type(headers, "application/x-www-form-urlencoded")
}

fn invalid(detail: impl Into<String>) -> Denial {
    Denial::new(ReasonCode::InvalidRequest, detail)
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, Denial> {
    if is_form(headers) {
        let form: FormExchange =
            serde_urlencoded::from_bytes(body).map_err(|e| invalid(format!("form body: {e}")))?;
        if form.grant_type != GRANT_TYPE_TOKEN_EXCHANGE {
            return Err(Denial::new(
                ReasonCode::UnsupportedGrantType,
                format!("grant_type {:?}", form.grant_type),
            ));
        }
        if form.subject_token_type != TOKEN_TYPE_JWT && form.subject_token_type != TOKEN_TYPE_ID_TOKEN {
            return Err(Denial::new(
                ReasonCode::UnsupportedTokenType,
                format!("subject_token_type {:?}", form.subject_token_type),
            ));
        }
        if form.scope.is_some() {
            return Err(invalid("scope is decided by the grant; omit it"));
        }
        let grant_name = form
            .audience
            .or(form.resource)
            .ok_or_else(|| invalid("audience (or resource) must name the grant as <policy>/<grant>"))?;
        let grant =
            GrantRef::parse(&grant_name).ok_or_else(|| invalid("audience is not <policy>/<grant>"))?;
        return Ok(Parsed {
            token: form.subject_token,
            grant,
            ttl: None,
            requested_token_type: Some(form.requested_token_type.unwrap_or_default())
                .filter(|t| !t.is_empty()),
        });
    }
    if !has_content_type(headers, "application/json") {
        return Err(invalid("content-type must be application/json or application/x-www-form-urlencoded"));
    }
    let json: JsonExchange = serde_json::from_slice(body).map_err(|e| invalid(format!("JSON body: {e}")))?;
    let grant = GrantRef::parse(&json.grant).ok_or_else(|| invalid("grant is not <policy>/<grant>"))?;
    let ttl = json.ttl.as_ref().map(parse_ttl).transpose()?;
    Ok(Parsed { token: json.token, grant, ttl, requested_token_type: None })
}

/// RFC 8693 callers may insist on a token type; refuse when the grant cannot produce it.
fn token_type_mismatch(kind: GrantKind, grant: &GrantRef, requested: &str) -> Option<Denial> {
    let produces: &[&str] = match kind {
        GrantKind::SignedToken => &[TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT],
        _ => &[TOKEN_TYPE_AWS_CREDENTIALS],
    };
    (!produces.contains(&requested)).then(|| {
        Denial::new(ReasonCode::UnsupportedTokenType, format!("grant {grant} cannot issue {requested:?}"))
    })
}

/// The success body. Typed rather than a `serde_json::Value`: rendered straight into the
/// response buffer, without building (and freeing) a map of copied strings per request.
#[derive(Serialize)]
struct Success<'a> {
    lease_id: &'a str,
    policy: &'a str,
    grant: &'a str,
    expires_at: String,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    /// The AWS CLI `credential_process` format.
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials: Option<ProcessCredentials<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assumed_role_arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessCredentials<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: String,
}

fn success(done: &Exchanged, rfc8693: bool, now: chrono::DateTime<Utc>) -> Response {
    let lease = &done.lease;
    let mut body = Success {
        lease_id: lease.id.as_str(),
        policy: &lease.policy,
        grant: &lease.grant,
        expires_at: lease.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        expires_in: (lease.expires_at - now).num_seconds().max(0),
        access_token: None,
        credentials: None,
        assumed_role_arn: None,
        token_type: None,
        issued_token_type: None,
    };
    match &done.credential {
        Credential::AccessToken(token) => {
            body.access_token = Some(token.token.expose_secret());
            body.token_type = Some("Bearer");
            body.issued_token_type = Some(if rfc8693 { TOKEN_TYPE_ACCESS_TOKEN } else { TOKEN_TYPE_JWT });
        }
        Credential::Aws(aws) => {
            body.credentials = Some(ProcessCredentials {
                version: 1,
                access_key_id: &aws.access_key_id,
                secret_access_key: aws.secret_access_key.expose_secret(),
                session_token: aws.session_token.expose_secret(),
                expiration: aws.expiration.to_rfc3339_opts(SecondsFormat::Secs, true),
            });
            body.assumed_role_arn = Some(&aws.assumed_role_arn);
            body.issued_token_type = Some(TOKEN_TYPE_AWS_CREDENTIALS);
            body.token_type = Some("N_A");
        }
        // Refused above (database grants have their own route): a wiring bug if it gets here.
        Credential::Database(_) => return super::error_response(&ReasonCode::Internal),
    }
    no_store(Json(body).into_response())
}
