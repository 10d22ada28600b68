//! The lease API's use cases: read, renew and revoke a lease as its holder (the workload
//! identity that obtained it), and bulk revocation and the STS role cut-off as an administrator
//! (an `admin` grant in a policy).
//!
//! Each request is authenticated, run and audited here (exactly one event, allow or deny); the
//! HTTP layer only parses and renders. A lease that is not the caller's answers exactly like
//! one that does not exist. Revocation ends the lease at once when this process holds its
//! backend's revoker; otherwise it is handed to the scheduled revoker (the API functions hold
//! no IAM or database admin rights: least privilege).

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Broker, RequestMeta};
use crate::audit::{AuditEvent, Decision};
use crate::backend::{BackendKind, IssueError};
use crate::denylist::{self, DenyListStore, RoleRef};
use crate::identity::Identity;
use crate::lease::{Lease, LeaseHolder, LeaseId, LeaseStatus, LiveFilter, StoreError};
use crate::policy::GrantRef;
use crate::reason::{Denial, ReasonCode};
use crate::revoker::{Outcome, Revoker};

/// Header naming the admin grant (`<policy>/<grant>`) a caller acts under.
pub const ADMIN_GRANT_HEADER: &str = "credbroker-admin-grant";
/// Most leases one bulk revocation touches; repeat the call for more.
pub const BULK_LIMIT: usize = 1000;
/// How long one revocation (or a bulk one) may take before the rest is left to the revoker;
/// below the API functions' timeout.
const REVOKE_DEADLINE: Duration = Duration::from_secs(8);

/// How a caller authenticates: the bearer token, and the admin grant it claims, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub bearer: Option<&'a str>,
    pub admin_grant: Option<&'a str>,
}

/// Who is calling, once authenticated.
#[derive(Debug)]
pub enum Caller {
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

    fn is_admin(&self) -> bool {
        matches!(self, Self::Admin { .. })
    }

    /// How the caller appears as a revocation claim's owner.
    fn owner(&self) -> String {
        match self {
            Self::Holder(identity) => format!("holder:{}", identity.subject),
            Self::Admin { identity, grant } => format!("admin:{grant}:{}", identity.subject),
        }
    }
}

/// A revocation's result: `ended` when the lease is `REVOKED`, else it is on its way (the
/// revoker retries a failed backend, or takes over a handed-off lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub lease: Lease,
    pub ended: bool,
}

/// What a bulk revocation did, by lease id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BulkRevocation {
    pub revoked: Vec<String>,
    /// Failed at the backend (the revoker retries) or handed to the revoker.
    pub pending: Vec<String>,
    /// Held or changed by someone else meanwhile.
    pub skipped: usize,
}

/// Which live leases a bulk revocation ends; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkFilter {
    pub id_prefix: Option<String>,
    pub holder: Option<LeaseHolder>,
    pub policy: Option<String>,
}

/// The lease API, over the broker (verification, policies, store, audit) and a revoker holding
/// the backends this process may end itself.
#[derive(Debug, Clone)]
pub struct LeaseService {
    broker: Broker,
    revoker: Revoker,
    /// Where STS role cut-offs are recorded; `None` where STS sessions are not served.
    deny_lists: Option<std::sync::Arc<dyn DenyListStore>>,
}

impl LeaseService {
    pub fn new(
        broker: Broker,
        revoker: Revoker,
        deny_lists: Option<std::sync::Arc<dyn DenyListStore>>,
    ) -> Self {
        Self { broker, revoker, deny_lists }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Authenticates, runs `work` and records the request's one audit event.
    async fn audited<T>(
        &self,
        action: &'static str,
        meta: &RequestMeta,
        credentials: Credentials<'_>,
        work: impl AsyncFnOnce(Caller, &mut AuditEvent) -> Result<T, Denial>,
    ) -> Result<T, Denial> {
        let mut event = AuditEvent::new(action, &meta.request_id, self.broker.clock().now());
        event.source_ip = meta.source_ip;
        let result = match self.authenticate(credentials, meta.source_ip).await {
            Ok(caller) => {
                event.issuer = Some(caller.identity().issuer.clone());
                event.subject = Some(caller.identity().subject.clone());
                if let Caller::Admin { grant, .. } = &caller {
                    event.policy = Some(grant.policy.clone());
                    event.grant = Some(grant.grant.clone());
                }
                work(caller, &mut event).await
            }
            Err(denial) => Err(denial),
        };
        match &result {
            Ok(_) => {
                event.decision = Decision::Allow;
                event.reason = ReasonCode::Granted.as_str().into_owned();
            }
            Err(denial) => {
                event.decision = Decision::Deny;
                event.reason = denial.reason.as_str().into_owned();
                event.detail = Some(denial.detail.clone());
            }
        }
        self.broker.audit(&event);
        result
    }

    async fn authenticate(
        &self,
        credentials: Credentials<'_>,
        source_ip: Option<IpAddr>,
    ) -> Result<Caller, Denial> {
        let token = credentials
            .bearer
            .ok_or_else(|| Denial::new(ReasonCode::MissingToken, "no Authorization: Bearer token"))?;
        let identity = self.broker.verify(token).await?;
        let Some(raw) = credentials.admin_grant else { return Ok(Caller::Holder(identity)) };
        let grant = GrantRef::parse(raw).ok_or_else(|| {
            Denial::new(ReasonCode::InvalidRequest, format!("{ADMIN_GRANT_HEADER} is not <policy>/<grant>"))
        })?;
        self.broker.authorize_admin(&identity, &grant, source_ip)?;
        Ok(Caller::Admin { identity, grant })
    }

    /// The lease the caller may see, or `lease_not_found`.
    async fn load(&self, caller: &Caller, raw_id: &str) -> Result<Lease, Denial> {
        let not_found =
            || Denial::new(ReasonCode::LeaseNotFound, format!("no lease {raw_id:?} visible to the caller"));
        let id = LeaseId::parse(raw_id).ok_or_else(not_found)?;
        let lease =
            self.broker.store().get(&id).await.map_err(|e| store_denial(&e))?.ok_or_else(not_found)?;
        if caller.may_access(&lease) { Ok(lease) } else { Err(not_found()) }
    }

    /// `GET /v1/leases/{id}`.
    pub async fn get(
        &self,
        meta: &RequestMeta,
        credentials: Credentials<'_>,
        raw_id: &str,
    ) -> Result<Lease, Denial> {
        self.audited("lease_read", meta, credentials, async |caller, event| {
            let lease = self.load(&caller, raw_id).await?;
            event.lease_id = Some(lease.id.to_string());
            Ok(lease)
        })
        .await
    }

    /// `DELETE /v1/leases/{id}`: ends the lease now, or hands it to the revoker.
    pub async fn revoke(
        &self,
        meta: &RequestMeta,
        credentials: Credentials<'_>,
        raw_id: &str,
        force: Result<bool, Denial>,
    ) -> Result<Revocation, Denial> {
        self.audited("lease_revoke_request", meta, credentials, async |caller, event| {
            let force = force?;
            if force && !caller.is_admin() {
                return Err(Denial::new(
                    ReasonCode::NotAdmin,
                    format!("force=true needs the {ADMIN_GRANT_HEADER} header"),
                ));
            }
            let lease = self.load(&caller, raw_id).await?;
            event.lease_id = Some(lease.id.to_string());
            self.revoke_one(lease, &caller.owner(), force).await
        })
        .await
    }

    async fn revoke_one(&self, lease: Lease, owner: &str, force: bool) -> Result<Revocation, Denial> {
        if lease.status == LeaseStatus::Revoked {
            return Ok(Revocation { lease, ended: true });
        }
        let deadline = tokio::time::Instant::now() + REVOKE_DEADLINE;
        let id = lease.id.clone();
        let outcome = self
            .revoker
            .revoke_or_hand_off(lease, owner, deadline, force)
            .await
            .map_err(|e| store_denial(&e))?;
        match outcome {
            Outcome::Revoked(lease) => Ok(Revocation { lease, ended: true }),
            Outcome::Failed { lease, .. } | Outcome::HandedOff(lease) => {
                Ok(Revocation { lease, ended: false })
            }
            Outcome::Skipped(_) => {
                // Another revoker holds it, or it changed: show where it stands now.
                let current = self.broker.store().get(&id).await.map_err(|e| store_denial(&e))?;
                let lease = current
                    .ok_or_else(|| Denial::new(ReasonCode::LeaseNotFound, format!("lease {id} vanished")))?;
                let ended = lease.status == LeaseStatus::Revoked;
                Ok(Revocation { lease, ended })
            }
        }
    }

    /// `POST /v1/leases/{id}/renew`: extends an active lease to now + `ttl`, never past its
    /// maximum; the credential first, then the lease.
    pub async fn renew(
        &self,
        meta: &RequestMeta,
        credentials: Credentials<'_>,
        raw_id: &str,
        ttl: Result<Duration, Denial>,
    ) -> Result<Lease, Denial> {
        self.audited("lease_renew", meta, credentials, async |caller, event| {
            let ttl = ttl?;
            let lease = self.load(&caller, raw_id).await?;
            event.lease_id = Some(lease.id.to_string());
            if lease.status != LeaseStatus::Active {
                return Err(Denial::new(
                    ReasonCode::LeaseNotRenewable,
                    format!("lease {} is {}", lease.id, lease.status),
                ));
            }
            let now = self.broker.clock().now();
            let expires_at = (now + delta(ttl)).min(lease.max_expires_at);
            event.expires_at = Some(expires_at);
            let kind = lease.backend.kind();
            let backend = self.revoker.revoker_for(kind).ok_or_else(|| {
                Denial::new(
                    ReasonCode::BackendUnavailable,
                    format!("this function cannot extend {kind} credentials"),
                )
            })?;
            // Extend the credential first: if the lease write then fails, the lease ends earlier
            // than the credential would — the safe direction.
            backend.renew(lease.issued(), expires_at).await.map_err(|e| match e {
                IssueError::Unavailable(_) => Denial::new(ReasonCode::BackendUnavailable, e.to_string()),
                _ => Denial::new(ReasonCode::LeaseNotRenewable, e.to_string()),
            })?;
            // History is kept as long after the new expiry as after the old one.
            let gc_at = lease.gc_at.max(expires_at + (lease.gc_at - lease.expires_at));
            self.broker.store().renew(&lease.id, lease.version, expires_at, gc_at).await.map_err(
                |e| match e {
                    StoreError::Conflict { .. } => Denial::new(ReasonCode::LeaseConflict, e.to_string()),
                    other => store_denial(&other),
                },
            )
        })
        .await
    }

    /// `POST /v1/leases/revoke` (admin): every live lease matching `filter`, at most
    /// [`BULK_LIMIT`].
    pub async fn bulk_revoke(
        &self,
        meta: &RequestMeta,
        credentials: Credentials<'_>,
        request: Result<(BulkFilter, bool), Denial>,
    ) -> Result<BulkRevocation, Denial> {
        self.audited("lease_bulk_revoke", meta, credentials, async |caller, event| {
            require_admin(&caller, "bulk revocation")?;
            let (filter, force) = request?;
            if filter == BulkFilter::default() {
                return Err(Denial::new(
                    ReasonCode::InvalidRequest,
                    "name id_prefix, holder or policy (revoking everything is not an API call)",
                ));
            }
            let live = LiveFilter {
                id_prefix: filter.id_prefix.clone(),
                holder: filter.holder.clone(),
                policy: filter.policy.clone(),
                backend_kind: None,
            };
            let leases =
                self.broker.store().list_live(&live, BULK_LIMIT).await.map_err(|e| store_denial(&e))?;
            let owner = caller.owner();
            let deadline = tokio::time::Instant::now() + REVOKE_DEADLINE;
            let mut done = BulkRevocation::default();
            for lease in leases {
                let id = lease.id.to_string();
                match self.revoker.revoke_or_hand_off(lease, &owner, deadline, force).await {
                    Ok(Outcome::Revoked(_)) => done.revoked.push(id),
                    Ok(Outcome::Failed { .. } | Outcome::HandedOff(_)) => done.pending.push(id),
                    Ok(Outcome::Skipped(_)) => done.skipped += 1,
                    Err(e) => return Err(store_denial(&e)),
                }
            }
            event.detail = Some(format!(
                "filter {filter:?}, force {force}: {} revoked, {} pending, {} held elsewhere",
                done.revoked.len(),
                done.pending.len(),
                done.skipped
            ));
            Ok(done)
        })
        .await
    }

    /// `POST /v1/admin/aws-role-cutoff` (admin): every session of the role issued before
    /// `issued_before` (at most now; default now) is denied. Recorded in the role's deny list;
    /// the revoker writes it to IAM on its next sweep (at once where this process is the
    /// revoker too). Returns the cut-off in force.
    pub async fn cut_off(
        &self,
        meta: &RequestMeta,
        credentials: Credentials<'_>,
        request: Result<(String, Option<DateTime<Utc>>), Denial>,
    ) -> Result<(String, DateTime<Utc>), Denial> {
        self.audited("aws_role_cutoff", meta, credentials, async |caller, event| {
            require_admin(&caller, "role cut-off")?;
            let (role_arn, issued_before) = request?;
            let lists = self
                .deny_lists
                .as_ref()
                .ok_or_else(|| Denial::new(ReasonCode::BackendUnavailable, "AWS is not configured"))?;
            let role = RoleRef::parse(&role_arn).ok_or_else(|| {
                Denial::new(ReasonCode::InvalidRequest, format!("not an IAM role ARN: {role_arn:?}"))
            })?;
            // A cut-off in the future would deny sessions not issued yet, and nothing lifts it.
            let now = self.broker.clock().now();
            let before = issued_before.map_or(now, |t| t.min(now));
            let stored = denylist::request_cutoff(lists.as_ref(), &role, before)
                .await
                .map_err(|e| store_denial(&e))?;
            if let Some(sessions) = self.revoker.revoker_for(BackendKind::AwsSession) {
                for failure in sessions.catch_up().await {
                    tracing::warn!(failure, "writing the cut-off to IAM failed; the revoker retries");
                }
            }
            let cutoff = stored.list.cutoff.unwrap_or(before);
            event.detail = Some(format!("role {role_arn}: sessions issued before {cutoff} denied"));
            Ok((role_arn, cutoff))
        })
        .await
    }
}

fn require_admin(caller: &Caller, what: &str) -> Result<(), Denial> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Denial::new(ReasonCode::NotAdmin, format!("{what} needs the {ADMIN_GRANT_HEADER} header")))
    }
}

fn store_denial(err: &StoreError) -> Denial {
    Denial::new(ReasonCode::StoreUnavailable, err.to_string())
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}
