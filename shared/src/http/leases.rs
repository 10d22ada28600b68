//! The lease API: read, renew and revoke a lease as its holder (the same workload identity that
//! obtained it), and bulk or forced revocation as an administrator (an `admin` grant in a
//! policy, named in the `credbroker-admin-grant` header).
//!
//! Callers authenticate with `Authorization: Bearer <workload JWT>`. There is no replay guard
//! here (one token may read, then renew, then revoke); a lease that is not the caller's answers
//! exactly like one that does not exist.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, ClientAddr};
use crate::audit::{AuditEvent, Decision};
use crate::broker::Denial;
use crate::identity::Identity;
use crate::issuer::IssueError;
use crate::lease::{BackendRef, Lease, LeaseHolder, LeaseId, LeaseStatus, LiveFilter, StoreError};
use crate::policy::GrantRef;
use crate::reason::ReasonCode;
use crate::revoker::Outcome;

/// Header naming the admin grant (`<policy>/<grant>`) a caller acts under.
pub const ADMIN_GRANT_HEADER: &str = "credbroker-admin-grant";
/// Most leases one bulk revocation touches; repeat the call for more.
const BULK_LIMIT: usize = 1000;

/// Who is calling, once authenticated.
#[derive(Debug)]
enum Caller {
    Holder(Identity),
    Admin { identity: Identity, grant: GrantRef },
}

impl Caller {
    fn identity(&self) -> &Identity {
        match self {
            Self::Holder(identity) | Self::Admin { identity, .. } => identity,
        }
    }

    fn may_access(&self, lease: &Lease) -> bool {
        match self {
            Self::Admin { .. } => true,
            Self::Holder(identity) => {
                lease.holder
                    == LeaseHolder { issuer: identity.issuer.clone(), subject: identity.subject.clone() }
            }
        }
    }

    fn owner(&self) -> String {
        match self {
            Self::Holder(identity) => format!("holder:{}", identity.subject),
            Self::Admin { identity, grant } => format!("admin:{grant}:{}", identity.subject),
        }
    }
}

/// One audit event per lease API request.
struct Audit<'a> {
    state: &'a AppState,
    event: AuditEvent,
}

impl<'a> Audit<'a> {
    fn new(state: &'a AppState, action: &'static str, parts: &http::request::Parts) -> Self {
        let now = state.broker.clock().now();
        let mut event = AuditEvent::new(action, &super::request_id(&parts.extensions, now), now);
        event.source_ip = source(&parts.extensions);
        Self { state, event }
    }

    /// Authenticates the request and records who the caller is.
    async fn authenticate(&mut self, headers: &HeaderMap) -> Result<Caller, Denial> {
        let caller = authenticate(self.state, headers, self.event.source_ip).await?;
        self.caller(&caller);
        Ok(caller)
    }

    fn caller(&mut self, caller: &Caller) {
        self.event.issuer = Some(caller.identity().issuer.clone());
        self.event.subject = Some(caller.identity().subject.clone());
        if let Caller::Admin { grant, .. } = caller {
            self.event.policy = Some(grant.policy.clone());
            self.event.grant = Some(grant.grant.clone());
        }
    }

    fn finish(mut self, result: Result<Response, Denial>) -> Response {
        match result {
            Ok(response) => {
                self.event.decision = Decision::Allow;
                self.event.reason = ReasonCode::Granted.as_str().into_owned();
                self.state.broker.audit(&self.event);
                response
            }
            Err(denial) => {
                self.event.decision = Decision::Deny;
                self.event.reason = denial.reason.as_str().into_owned();
                self.event.detail = Some(denial.detail.clone());
                self.state.broker.audit(&self.event);
                denial.into_response()
            }
        }
    }
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    source_ip: Option<IpAddr>,
) -> Result<Caller, Denial> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Denial::new(ReasonCode::MissingToken, "no Authorization: Bearer token"))?;
    let identity = state.broker.verify(token).await?;
    let Some(raw) = headers.get(ADMIN_GRANT_HEADER) else { return Ok(Caller::Holder(identity)) };
    let grant = raw.to_str().ok().and_then(GrantRef::parse).ok_or_else(|| {
        Denial::new(ReasonCode::InvalidRequest, format!("{ADMIN_GRANT_HEADER} is not <policy>/<grant>"))
    })?;
    state.broker.authorize_admin(&identity, &grant, source_ip)?;
    Ok(Caller::Admin { identity, grant })
}

/// The request body as `T` (strict JSON), or `invalid_request`.
async fn json_body<T: serde::de::DeserializeOwned>(body: axum::body::Body) -> Result<T, Denial> {
    let bytes = axum::body::to_bytes(body, super::MAX_BODY_BYTES)
        .await
        .map_err(|_| Denial::new(ReasonCode::InvalidRequest, "body too large or unreadable"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Denial::new(ReasonCode::InvalidRequest, format!("JSON body: {e}")))
}

fn require_admin(caller: &Caller, what: &str) -> Result<(), Denial> {
    match caller {
        Caller::Admin { .. } => Ok(()),
        Caller::Holder(_) => {
            Err(Denial::new(ReasonCode::NotAdmin, format!("{what} needs the {ADMIN_GRANT_HEADER} header")))
        }
    }
}

fn store_denial(err: &StoreError) -> Denial {
    Denial::new(ReasonCode::StoreUnavailable, err.to_string())
}

/// The lease the caller may see, or `lease_not_found`.
async fn load(state: &AppState, caller: &Caller, raw_id: &str) -> Result<Lease, Denial> {
    let not_found =
        || Denial::new(ReasonCode::LeaseNotFound, format!("no lease {raw_id:?} visible to the caller"));
    let id = LeaseId::parse(raw_id).ok_or_else(not_found)?;
    let lease = state.broker.store().get(&id).await.map_err(|e| store_denial(&e))?.ok_or_else(not_found)?;
    if caller.may_access(&lease) { Ok(lease) } else { Err(not_found()) }
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

fn source(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions.get::<ClientAddr>().map(|c| c.0)
}

pub(super) async fn get_lease(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let mut audit = Audit::new(&state, "lease_read", &parts);
    let result = async {
        let caller = audit.authenticate(&parts.headers).await?;
        let lease = load(&state, &caller, &id).await?;
        audit.event.lease_id = Some(lease.id.to_string());
        Ok(Json(lease_view(&lease)).into_response())
    }
    .await;
    audit.finish(result)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeQuery {
    /// Admin only: end the lease even if the backend refuses (audited as forced).
    #[serde(default)]
    force: bool,
}

pub(super) async fn delete_lease(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let mut audit = Audit::new(&state, "lease_revoke_request", &parts);
    let result = async {
        let query: RevokeQuery = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
            .map_err(|e| Denial::new(ReasonCode::InvalidRequest, format!("query: {e}")))?;
        let force = query.force;
        let caller = audit.authenticate(&parts.headers).await?;
        if force {
            require_admin(&caller, "force=true")?;
        }
        let lease = load(&state, &caller, &id).await?;
        audit.event.lease_id = Some(lease.id.to_string());
        revoke_one(&state, lease, &caller.owner(), force).await
    }
    .await;
    audit.finish(result)
}

/// Revokes now; `200` with the ended lease, or `202` when the backend failed and the revoker
/// will retry (the lease says when).
async fn revoke_one(state: &AppState, lease: Lease, owner: &str, force: bool) -> Result<Response, Denial> {
    if lease.status == LeaseStatus::Revoked {
        return Ok(Json(lease_view(&lease)).into_response());
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let id = lease.id.clone();
    let outcome =
        state.revoker.revoke_lease(lease, owner, deadline, force).await.map_err(|e| store_denial(&e))?;
    match outcome {
        Outcome::Revoked(lease) => Ok(Json(lease_view(&lease)).into_response()),
        Outcome::Failed { lease, .. } => Ok((StatusCode::ACCEPTED, Json(lease_view(&lease))).into_response()),
        Outcome::Skipped(_) => {
            // Another revoker holds it, or it changed: show where it stands now.
            let current = state.broker.store().get(&id).await.map_err(|e| store_denial(&e))?;
            let current = current
                .ok_or_else(|| Denial::new(ReasonCode::LeaseNotFound, format!("lease {id} vanished")))?;
            let status =
                if current.status == LeaseStatus::Revoked { StatusCode::OK } else { StatusCode::ACCEPTED };
            Ok((status, Json(lease_view(&current))).into_response())
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RenewBody {
    /// New lifetime from now (`"15m"` or seconds); clamped to the lease's maximum.
    ttl: Value,
}

pub(super) async fn renew_lease(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let mut audit = Audit::new(&state, "lease_renew", &parts);
    let result = async {
        let caller = audit.authenticate(&parts.headers).await?;
        let body: RenewBody = json_body(body).await?;
        let ttl = super::token::parse_ttl(&body.ttl)?;
        let lease = load(&state, &caller, &id).await?;
        audit.event.lease_id = Some(lease.id.to_string());
        if lease.status != LeaseStatus::Active {
            return Err(Denial::new(
                ReasonCode::LeaseNotRenewable,
                format!("lease {} is {}", lease.id, lease.status),
            ));
        }
        let now = state.broker.clock().now();
        let wanted = now + chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX);
        let expires_at = wanted.min(lease.max_expires_at);
        audit.event.expires_at = Some(expires_at);
        let revoker = state.revoker.revoker_for(lease.backend.kind()).ok_or_else(|| {
            Denial::new(
                ReasonCode::BackendUnavailable,
                format!("no revoker for backend {}", lease.backend.kind()),
            )
        })?;
        // Extend the credential first: if the lease write then fails, the lease ends earlier than
        // the credential would — the safe direction.
        revoker.renew(&lease, expires_at).await.map_err(|e| match e {
            IssueError::Unavailable(_) => Denial::new(ReasonCode::BackendUnavailable, e.to_string()),
            _ => Denial::new(ReasonCode::LeaseNotRenewable, e.to_string()),
        })?;
        let gc_at = lease.gc_at.max(expires_at + (lease.gc_at - lease.expires_at));
        let renewed = state.broker.store().renew(&lease.id, lease.version, expires_at, gc_at).await.map_err(
            |e| match e {
                StoreError::Conflict { .. } => Denial::new(ReasonCode::LeaseConflict, e.to_string()),
                other => store_denial(&other),
            },
        )?;
        Ok(Json(lease_view(&renewed)).into_response())
    }
    .await;
    audit.finish(result)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkRevoke {
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

pub(super) async fn bulk_revoke(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let mut audit = Audit::new(&state, "lease_bulk_revoke", &parts);
    let result = async {
        let caller = audit.authenticate(&parts.headers).await?;
        require_admin(&caller, "bulk revocation")?;
        let body: BulkRevoke = json_body(body).await?;
        let filter = LiveFilter {
            id_prefix: body.id_prefix.filter(|p| !p.is_empty()),
            holder: body.holder.map(|h| LeaseHolder { issuer: h.issuer, subject: h.subject }),
            policy: body.policy,
            backend_kind: None,
        };
        if filter == LiveFilter::default() {
            return Err(Denial::new(
                ReasonCode::InvalidRequest,
                "name id_prefix, holder or policy (revoking everything is not an API call)",
            ));
        }
        let leases =
            state.broker.store().list_live(&filter, BULK_LIMIT).await.map_err(|e| store_denial(&e))?;
        let owner = caller.owner();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(25);
        let (mut revoked, mut pending, mut skipped) = (Vec::new(), Vec::new(), 0usize);
        for lease in leases {
            match state
                .revoker
                .revoke_lease(lease, &owner, deadline, body.force)
                .await
                .map_err(|e| store_denial(&e))?
            {
                Outcome::Revoked(l) => revoked.push(l.id.to_string()),
                Outcome::Failed { lease, .. } => pending.push(lease.id.to_string()),
                Outcome::Skipped(_) => skipped += 1,
            }
        }
        audit.event.detail = Some(format!(
            "filter {filter:?}, force {}: {} revoked, {} retrying, {skipped} held elsewhere",
            body.force,
            revoked.len(),
            pending.len()
        ));
        Ok(Json(json!({ "revoked": revoked, "retrying": pending, "skipped": skipped, "force": body.force }))
            .into_response())
    }
    .await;
    audit.finish(result)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleCutoff {
    role_arn: String,
    /// Sessions issued before this are denied; default: now.
    #[serde(default)]
    issued_before: Option<DateTime<Utc>>,
}

pub(super) async fn aws_role_cutoff(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let mut audit = Audit::new(&state, "aws_role_cutoff", &parts);
    let result = async {
        let caller = audit.authenticate(&parts.headers).await?;
        require_admin(&caller, "role cut-off")?;
        let body: RoleCutoff = json_body(body).await?;
        let sessions = state
            .aws_sessions
            .as_ref()
            .ok_or_else(|| Denial::new(ReasonCode::BackendUnavailable, "AWS is not configured"))?;
        let before = body.issued_before.unwrap_or_else(|| state.broker.clock().now());
        let list = sessions.cut_off(&body.role_arn, before).await.map_err(|e| match e {
            IssueError::Unavailable(_) => Denial::new(ReasonCode::BackendUnavailable, e.to_string()),
            _ => Denial::new(ReasonCode::BackendRejected, e.to_string()),
        })?;
        audit.event.detail =
            Some(format!("role {} sessions issued before {} denied", body.role_arn, time(before)));
        Ok(Json(json!({ "role_arn": body.role_arn, "issued_before": list.cutoff.map(time) })).into_response())
    }
    .await;
    audit.finish(result)
}
