//! Request plumbing every handler shares, as extractors: what the front door knows
//! ([`RequestMeta`]), the bearer token, the admin grant header, and strictly parsed bodies and
//! queries whose rejection is a [`Denial`] — so a handler's signature says what it needs and
//! no handler re-parses headers. Extractors that can fail hand their denial to the use case,
//! which audits it (every request is one audit event, malformed ones too).

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::broker::RequestMeta;
use crate::broker::leases::ADMIN_GRANT_HEADER;
use crate::lease::LeaseId;
use crate::reason::{Denial, ReasonCode};

/// The caller's address as established by the front door (API Gateway request context, or
/// the TCP peer locally). Set by the adapters, never from a client header unless configured.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The request id of the front door (API Gateway), if any.
#[derive(Debug, Clone)]
pub struct FrontRequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let request_id = parts.extensions.get::<FrontRequestId>().map_or_else(
            || {
                LeaseId::generate(chrono::Utc::now())
                    .map_or_else(|_| "unknown".to_owned(), |id| id.to_string())
            },
            |id| id.0.clone(),
        );
        Ok(Self { request_id, source_ip: parts.extensions.get::<ClientAddr>().map(|c| c.0) })
    }
}

/// `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235), if present. Its
/// `Debug` shows the token's length, never the token.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Bearer").field(&self.0.as_deref().map(crate::secrets::Redacted)).finish()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .map(str::to_owned);
        Ok(Self(token))
    }
}

/// The `credbroker-admin-grant` header, if present (checked by the lease service).
#[derive(Debug, Clone)]
pub struct AdminGrant(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for AdminGrant {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // A header that is not visible ASCII is passed on as given so the service refuses it.
        let value =
            parts.headers.get(ADMIN_GRANT_HEADER).map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned());
        Ok(Self(value))
    }
}

fn invalid(detail: impl Into<String>) -> Denial {
    Denial::new(ReasonCode::InvalidRequest, detail)
}

/// Whether the request says its body is `media_type` (parameters such as `charset` allowed).
pub fn has_content_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with(media_type))
}

/// The raw body, or `invalid_request` when it is over the limit or unreadable.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Denial;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(|e| invalid(format!("body too large or unreadable: {e}")))
    }
}

/// A JSON body parsed strictly into `T` (`application/json`; `T` refuses unknown fields).
pub struct StrictJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = Denial;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = has_content_type(request.headers(), "application/json");
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        if !json {
            return Err(invalid("the body must be application/json"));
        }
        serde_json::from_slice(&bytes).map(Self).map_err(|e| invalid(format!("JSON body: {e}")))
    }
}

/// Like [`StrictJson`], but an empty body is `None`.
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = Denial;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = has_content_type(request.headers(), "application/json");
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if !json {
            return Err(invalid("a body must be application/json"));
        }
        serde_json::from_slice(&bytes).map(|v| Self(Some(v))).map_err(|e| invalid(format!("JSON body: {e}")))
    }
}

/// The query string parsed strictly into `T` (unknown parameters refused by `T`).
pub struct StrictQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = Denial;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
            .map(Self)
            .map_err(|e| invalid(format!("query: {e}")))
    }
}

/// A requested lifetime: seconds (`900`) or a duration (`"15m"`); positive.
pub fn parse_ttl(value: &Value) -> Result<Duration, Denial> {
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
