//! `POST /v1/token`: JSON or RFC 8693 form in, credential out.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AppState, ClientAddr, request_id};
use crate::audit::{AuditEvent, Decision};
use crate::broker::{Denial, ExchangeRequest, Exchanged};
use crate::issuer::Credential;
use crate::policy::GrantRef;
use crate::reason::ReasonCode;

const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Issued token type for STS sessions (not an OAuth token, so RFC 8693's `token_type` is N_A).
const TOKEN_TYPE_AWS_CREDENTIALS: &str = "urn:credbroker:token-type:aws-credentials";

/// The JSON request.
#[derive(Debug, Deserialize)]
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

/// The RFC 8693 form request. `audience` (or `resource`) names the grant.
#[derive(Debug, Deserialize)]
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

pub(super) async fn exchange(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let now = state.broker.clock().now();
    let request_id = request_id(&parts.extensions, now);
    let source_ip = parts.extensions.get::<ClientAddr>().map(|c| c.0);
    let Ok(body) = axum::body::to_bytes(body, super::MAX_BODY_BYTES).await else {
        let denial = Denial::new(ReasonCode::InvalidRequest, "body too large or unreadable");
        return reject_early(&state, &request_id, source_ip, denial);
    };
    let parsed = match parse(headers, &body) {
        Ok(parsed) => parsed,
        Err(denial) => return reject_early(&state, &request_id, source_ip, denial),
    };
    let wants_rfc8693 = parsed.requested_token_type.is_some() || is_form(headers);
    let request =
        ExchangeRequest { token: parsed.token, grant: parsed.grant, ttl: parsed.ttl, source_ip, request_id };
    if let Some(requested) = parsed.requested_token_type.as_deref()
        && let Some(denial) = token_type_mismatch(&state, &request.grant, requested)
    {
        return reject_early(&state, &request.request_id, source_ip, denial);
    }
    // Database users have their own route (and response shape): refuse before minting one.
    if let Some(policy) = state.broker.policies().get(&request.grant.policy)
        && policy.grants.get(&request.grant.grant).is_some_and(|g| g.kind() == "database")
    {
        let denial = invalid(format!(
            "{} is a database grant: POST /v1/db/{}/{}/credentials",
            request.grant, request.grant.policy, request.grant.grant
        ));
        return reject_early(&state, &request.request_id, source_ip, denial);
    }
    match state.broker.exchange(request).await {
        Ok(done) => success(&done, wants_rfc8693, now),
        Err(denial) => denial.into_response(),
    }
}

/// Requests refused before the broker runs still get their one audit event.
fn reject_early(
    state: &AppState,
    request_id: &str,
    source_ip: Option<std::net::IpAddr>,
    denial: Denial,
) -> Response {
    let mut event = AuditEvent::new("token_exchange", request_id, state.broker.clock().now());
    event.decision = Decision::Deny;
    event.reason = denial.reason.as_str().into_owned();
    event.detail = Some(denial.detail.clone());
    event.source_ip = source_ip;
    state.broker.audit(&event);
    denial.into_response()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

fn invalid(detail: impl Into<String>) -> Denial {
    Denial::new(ReasonCode::InvalidRequest, detail)
}

fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Parsed, Denial> {
    if is_form(headers) {
        let form: FormExchange =
            serde_urlencoded_from(body).map_err(|e| invalid(format!("form body: {e}")))?;
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
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return Err(invalid("content-type must be application/json or application/x-www-form-urlencoded"));
    }
    let json: JsonExchange = serde_json::from_slice(body).map_err(|e| invalid(format!("JSON body: {e}")))?;
    let grant = GrantRef::parse(&json.grant).ok_or_else(|| invalid("grant is not <policy>/<grant>"))?;
    let ttl = json.ttl.as_ref().map(parse_ttl).transpose()?;
    Ok(Parsed { token: json.token, grant, ttl, requested_token_type: None })
}

fn serde_urlencoded_from(body: &Bytes) -> Result<FormExchange, String> {
    serde_urlencoded::from_bytes(body).map_err(|e| e.to_string())
}

pub(super) fn parse_ttl(value: &Value) -> Result<Duration, Denial> {
    let ttl = match value {
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| invalid("ttl must be a positive number of seconds"))?,
        Value::String(s) => humantime::parse_duration(s).map_err(|e| invalid(format!("ttl {s:?}: {e}")))?,
        _ => return Err(invalid("ttl must be seconds or a duration like \"15m\"")),
    };
    if ttl.is_zero() {
        return Err(invalid("ttl must be positive"));
    }
    Ok(ttl)
}

/// RFC 8693 callers may insist on a token type; refuse when the grant cannot produce it.
fn token_type_mismatch(state: &AppState, grant: &GrantRef, requested: &str) -> Option<Denial> {
    let kind = state.broker.policies().get(&grant.policy)?.grants.get(&grant.grant)?.kind();
    let produces: &[&str] = match kind {
        "signed_token" => &[TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT],
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
    database: Option<Value>,
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
        database: None,
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
        // Refused above; rendered like the database route should it ever get here.
        Credential::Database(db) => body.database = Some(super::database::credentials_json(db, now)),
    }
    let mut headers = HeaderMap::new();
    // RFC 6749 §5.1: responses carrying credentials must not be cached.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    (headers, Json(body)).into_response()
}
