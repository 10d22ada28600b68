//! The lease API's routes: parsing and rendering around [`LeaseService`], which authenticates,
//! decides and audits (`crate::broker::leases`).

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::request::{AdminGrant, Bearer, StrictJson, StrictQuery, parse_ttl};
use crate::backend::BackendRef;
use crate::broker::RequestMeta;
use crate::broker::leases::{BulkFilter, Credentials, LeaseService};
use crate::lease::{Lease, LeaseHolder};
use crate::reason::Denial;

/// `GET`/`DELETE /v1/leases/{id}`, `POST /v1/leases/revoke`, `POST /v1/admin/aws-role-cutoff`.
pub fn lease_routes(service: LeaseService) -> Router {
    Router::new()
        .route("/v1/leases/revoke", post(bulk_revoke))
        .route("/v1/leases/{id}", get(get_lease).delete(delete_lease))
        .route("/v1/admin/aws-role-cutoff", post(aws_role_cutoff))
        .with_state(service)
}

/// `POST /v1/leases/{id}/renew`: served where the credentials can be extended (database
/// users: the db-credentials function).
pub fn renew_routes(service: LeaseService) -> Router {
    Router::new().route("/v1/leases/{id}/renew", post(renew_lease)).with_state(service)
}

/// What every lease API request carries besides its body: the front door's facts and the
/// caller's credentials (bearer token, admin grant header).
struct LeaseCall {
    meta: RequestMeta,
    bearer: Option<String>,
    admin_grant: Option<String>,
}

impl LeaseCall {
    fn credentials(&self) -> Credentials<'_> {
        Credentials { bearer: self.bearer.as_deref(), admin_grant: self.admin_grant.as_deref() }
    }
}

/// A request about one lease (`/v1/leases/{id}…`): the service, the id from the path, the call.
struct OnLease {
    service: LeaseService,
    id: String,
    call: LeaseCall,
}

impl FromRequestParts<LeaseService> for OnLease {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, service: &LeaseService) -> Result<Self, Self::Rejection> {
        // The router matched `{id}`, so the segment is there; a missing one reads as "" (no lease).
        let id = Path::<String>::from_request_parts(parts, service)
            .await
            .map_or_else(|_| String::new(), |Path(id)| id);
        let call = LeaseCall::from_request_parts(parts, service).await?;
        Ok(Self { service: service.clone(), id, call })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LeaseCall {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::from_request_parts(parts, state).await?;
        let Bearer(bearer) = Bearer::from_request_parts(parts, state).await?;
        let AdminGrant(admin_grant) = AdminGrant::from_request_parts(parts, state).await?;
        Ok(Self { meta, bearer, admin_grant })
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A lease as the API shows it: identifiers and times, never secret material.
pub fn lease_view(lease: &Lease) -> Value {
    let backend = match &lease.backend {
        BackendRef::AwsSession { role_arn, session_name } => {
            json!({ "kind": "aws_session", "role_arn": role_arn, "session_name": session_name })
        }
        BackendRef::SignedToken { audience, key_id } => {
            json!({ "kind": "signed_token", "audience": audience, "key_id": key_id })
        }
        BackendRef::Database { engine, connection, database, username, .. } => json!({
            "kind": "database", "engine": engine.as_str(), "connection": connection,
            "database": database, "username": username,
        }),
    };
    json!({
        "lease_id": lease.id.as_str(),
        "status": lease.status.as_str(),
        "policy": lease.policy,
        "grant": lease.grant,
        "holder": { "issuer": lease.holder.issuer, "subject": lease.holder.subject },
        "backend": backend,
        "created_at": time(lease.created_at),
        "issued_at": lease.issued_at.map(time),
        "expires_at": time(lease.expires_at),
        "max_expires_at": time(lease.max_expires_at),
        "next_action_at": time(lease.next_action_at),
        "attempts": lease.attempts,
        "last_error": lease.last_error,
    })
}

fn render(result: Result<Response, Denial>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn get_lease(State(service): State<LeaseService>, Path(id): Path<String>, call: LeaseCall) -> Response {
    render(
        service.get(&call.meta, call.credentials(), &id).await.map(|l| Json(lease_view(&l)).into_response()),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeQuery {
    /// Admin only: end the lease even if the backend refuses (audited as forced).
    #[serde(default)]
    force: bool,
}

/// `200` with the ended lease, or `202` while it is on its way (the revoker retries a failed
/// backend, or ends a lease this function may not end itself).
async fn delete_lease(
    OnLease { service, id, call }: OnLease,
    query: Result<StrictQuery<RevokeQuery>, Denial>,
) -> Response {
    let force = query.map(|StrictQuery(q)| q.force);
    render(service.revoke(&call.meta, call.credentials(), &id, force).await.map(|done| {
        let status = if done.ended { StatusCode::OK } else { StatusCode::ACCEPTED };
        (status, Json(lease_view(&done.lease))).into_response()
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    /// New lifetime from now (`"15m"` or seconds); clamped to the lease's maximum.
    ttl: Value,
}

async fn renew_lease(
    OnLease { service, id, call }: OnLease,
    body: Result<StrictJson<RenewBody>, Denial>,
) -> Response {
    let ttl = body.and_then(|StrictJson(b)| parse_ttl(&b.ttl));
    render(
        service
            .renew(&call.meta, call.credentials(), &id, ttl)
            .await
            .map(|l| Json(lease_view(&l)).into_response()),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRevoke {
    #[serde(default)]
    id_prefix: Option<String>,
    #[serde(default)]
    holder: Option<HolderBody>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderBody {
    issuer: String,
    subject: String,
}

async fn bulk_revoke(
    State(service): State<LeaseService>,
    call: LeaseCall,
    body: Result<StrictJson<BulkRevoke>, Denial>,
) -> Response {
    let request = body.map(|StrictJson(b)| {
        let filter = BulkFilter {
            id_prefix: b.id_prefix.filter(|p| !p.is_empty()),
            holder: b.holder.map(|h| LeaseHolder { issuer: h.issuer, subject: h.subject }),
            policy: b.policy,
        };
        (filter, b.force)
    });
    let force = request.as_ref().is_ok_and(|(_, force)| *force);
    render(service.bulk_revoke(&call.meta, call.credentials(), request).await.map(|done| {
        Json(json!({ "revoked": done.revoked, "retrying": done.pending, "skipped": done.skipped, "force": force }))
            .into_response()
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleCutoff {
    role_arn: String,
    /// Sessions issued before this are denied; default (and at most): now.
    #[serde(default)]
    issued_before: Option<DateTime<Utc>>,
}

async fn aws_role_cutoff(
    State(service): State<LeaseService>,
    call: LeaseCall,
    body: Result<StrictJson<RoleCutoff>, Denial>,
) -> Response {
    let request = body.map(|StrictJson(b)| (b.role_arn, b.issued_before));
    render(service.cut_off(&call.meta, call.credentials(), request).await.map(|(role_arn, cutoff)| {
        Json(json!({ "role_arn": role_arn, "issued_before": time(cutoff) })).into_response()
    }))
}
