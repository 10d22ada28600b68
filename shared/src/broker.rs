//! The exchange use case: verify → decide → record → issue → activate → audit.
//!
//! Ordering is what makes the broker crash-safe: everything that can fail without side effects
//! (verification, policy, rendering) runs first; the lease is written `Pending` before the
//! backend credential exists; it becomes `Active` only after. A crash in between leaves a
//! pending lease whose `next_action_at` makes it due for the revoker.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

use crate::audit::{AuditEvent, AuditSink, Decision};
use crate::backend::{Credential, IssueError, Issuers};
use crate::clock::Clock;
use crate::identity::{Identity, IdentityVerifier};
use crate::lease::{Activation, Lease, LeaseHolder, LeaseId, LeaseStatus, LeaseStore, StoreError, TokenUse};
use crate::policy::{GrantKind, GrantRef, Policy, PolicySet, Replay, RequestContext};
use crate::reason::{Denial, ReasonCode};

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// How long a `Pending` lease may stay pending before the revoker treats it as crashed.
    pub pending_grace: Duration,
    /// How long ended leases are kept (DynamoDB TTL) for audit history.
    pub retention: Duration,
    /// How long a `jti` is remembered past the token's `exp` (covers the verifier's leeway).
    pub replay_window_slack: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            pending_grace: Duration::from_mins(5),
            retention: Duration::from_hours(720),
            replay_window_slack: Duration::from_mins(1),
        }
    }
}

/// What the front door knows about a request: its id (API Gateway's, or a fresh one) and the
/// caller's address (from the request context, never from a client header unless configured).
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub source_ip: Option<IpAddr>,
}

/// A request to exchange a workload token for a credential. Its `Debug` shows the token's
/// length, never the token: a bearer credential must not reach a log through a `{:?}`.
#[derive(Clone)]
pub struct ExchangeRequest {
    pub token: String,
    pub grant: GrantRef,
    pub ttl: Option<Duration>,
    pub source_ip: Option<IpAddr>,
    pub request_id: String,
}

impl std::fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("token", &crate::secrets::Redacted(&self.token))
            .field("grant", &self.grant)
            .field("ttl", &self.ttl)
            .field("source_ip", &self.source_ip)
            .field("request_id", &self.request_id)
            .finish()
    }
}

#[derive(Debug)]
pub struct Exchanged {
    pub lease: Lease,
    pub credential: Credential,
}

#[derive(Debug, Clone)]
pub struct Broker {
    verifier: Arc<dyn IdentityVerifier>,
    policies: Arc<PolicySet>,
    store: Arc<dyn LeaseStore>,
    issuers: Issuers,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn AuditSink>,
    settings: BrokerSettings,
}

/// The ports a broker runs on.
#[derive(Debug, Clone)]
pub struct BrokerPorts {
    pub verifier: Arc<dyn IdentityVerifier>,
    pub policies: Arc<PolicySet>,
    pub store: Arc<dyn LeaseStore>,
    pub issuers: Issuers,
    pub clock: Arc<dyn Clock>,
    pub audit: Arc<dyn AuditSink>,
}

impl Broker {
    pub fn new(ports: BrokerPorts, settings: BrokerSettings) -> Self {
        let BrokerPorts { verifier, policies, store, issuers, clock, audit } = ports;
        Self { verifier, policies, store, issuers, clock, audit, settings }
    }

    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.store
    }

    /// Lets every issuer get ready before the first request (Lambda init): e.g. database
    /// issuers read their admin secrets and open a connection.
    pub async fn warm(&self) {
        for issuer in self.issuers.all() {
            issuer.warm().await;
        }
    }

    /// Verifies a workload token (no replay guard: lease API calls may reuse one token).
    pub async fn verify(&self, token: &str) -> Result<Identity, Denial> {
        self.verifier.verify(token).await.map_err(|e| Denial::new(ReasonCode::from(&e), e.to_string()))
    }

    /// Checks that `identity` may administer leases through the admin grant `grant`.
    pub fn authorize_admin(
        &self,
        identity: &Identity,
        grant: &GrantRef,
        source_ip: Option<IpAddr>,
    ) -> Result<(), Denial> {
        let ctx = RequestContext { source_ip, now: self.clock.now(), requested_ttl: None };
        let allowed = self.policies.evaluate(grant, identity, &ctx).map_err(|reason| {
            let detail = format!("admin grant {grant} denied: {reason}");
            Denial::new(reason, detail)
        })?;
        match allowed.grant.kind() {
            GrantKind::Admin => Ok(()),
            other => Err(Denial::new(ReasonCode::NotAdmin, format!("{grant} is a {other} grant, not admin"))),
        }
    }

    /// Records an event decided outside [`Broker::exchange`].
    pub fn audit(&self, event: &AuditEvent) {
        self.audit.record(event);
    }

    /// Refuses a request before the broker runs (it could not be parsed, or asks the wrong
    /// route), with its one audit event; returns the denial for the response.
    pub fn refuse(&self, action: &'static str, meta: &RequestMeta, denial: Denial) -> Denial {
        let mut event = AuditEvent::new(action, &meta.request_id, self.clock.now());
        event.decision = Decision::Deny;
        event.reason = denial.reason.as_str().into_owned();
        event.detail = Some(denial.detail.clone());
        event.source_ip = meta.source_ip;
        self.audit.record(&event);
        denial
    }

    /// Runs one exchange and records exactly one audit event for it.
    pub async fn exchange(&self, request: ExchangeRequest) -> Result<Exchanged, Denial> {
        // Whole seconds: the lease stores (and DynamoDB) keep epoch seconds, so the lease the
        // caller sees is exactly the lease that is stored.
        let now = self.clock.now().trunc_subsecs(0);
        let mut event = AuditEvent::new("token_exchange", &request.request_id, now);
        event.source_ip = request.source_ip;
        event.policy = Some(request.grant.policy.clone());
        event.grant = Some(request.grant.grant.clone());
        let result = self.exchange_inner(&request, now, &mut event).await;
        match &result {
            Ok(done) => {
                event.decision = Decision::Allow;
                event.reason = ReasonCode::Granted.as_str().into_owned();
                event.expires_at = Some(done.lease.expires_at);
            }
            Err(denial) => {
                event.decision = Decision::Deny;
                event.reason = denial.reason.as_str().into_owned();
                event.detail = Some(denial.detail.clone());
            }
        }
        self.audit.record(&event);
        result
    }

    async fn exchange_inner(
        &self,
        request: &ExchangeRequest,
        now: DateTime<Utc>,
        event: &mut AuditEvent,
    ) -> Result<Exchanged, Denial> {
        let identity = self
            .verifier
            .verify(&request.token)
            .await
            .map_err(|e| Denial::new(ReasonCode::from(&e), e.to_string()))?;
        event.issuer = Some(identity.issuer.clone());
        event.subject = Some(identity.subject.clone());
        event.token_jti.clone_from(&identity.jti);

        let ctx = RequestContext { source_ip: request.source_ip, now, requested_ttl: request.ttl };
        let allowed = self.policies.evaluate(&request.grant, &identity, &ctx).map_err(|reason| {
            let detail = format!("policy {} denied: {reason}", request.grant.policy);
            Denial::new(reason, detail)
        })?;
        event.ttl_seconds = Some(allowed.ttl.as_secs());

        event.replay_mode = Some(allowed.policy.replay.as_str());
        event.token_uses = self.guard_replay(&identity, allowed.policy, &request.grant).await?;

        let lease_id = LeaseId::generate(now)
            .map_err(|_| Denial::new(ReasonCode::Internal, "random number generator failed"))?;
        event.lease_id = Some(lease_id.to_string());
        let expires_at = now + delta(allowed.ttl);
        let plan = allowed.plan(&identity, lease_id.as_str(), now, expires_at)?;
        let issuer = self.issuers.get(plan.backend()).ok_or_else(|| {
            Denial::new(
                ReasonCode::BackendUnavailable,
                format!("no issuer configured for backend {}", plan.backend()),
            )
        })?;

        let lease = Lease {
            id: lease_id.clone(),
            status: LeaseStatus::Pending,
            policy: allowed.policy.name.clone(),
            grant: allowed.grant_name.to_owned(),
            holder: LeaseHolder { issuer: identity.issuer.clone(), subject: identity.subject.clone() },
            backend: plan.backend_ref(&issuer.key_id()),
            created_at: now,
            issued_at: None,
            expires_at,
            max_expires_at: now + delta(allowed.policy.max_ttl.max(allowed.ttl)),
            next_action_at: now + delta(self.settings.pending_grace),
            attempts: 0,
            last_error: None,
            owner: None,
            version: 0,
            gc_at: expires_at + delta(self.settings.retention),
        };
        self.store.create_pending(&lease).await.map_err(store_denial)?;

        let credential = match issuer.issue(&plan).await {
            Ok(credential) => credential,
            Err(err) => return Err(self.fail_pending(&lease, &err).await),
        };

        let real_expiry = credential.expires_at();
        let activation = Activation {
            issued_at: now,
            expires_at: real_expiry,
            gc_at: real_expiry + delta(self.settings.retention),
        };
        // If this write fails the credential exists but the lease stays Pending: the revoker
        // ends it after `pending_grace`, and the caller never receives it.
        let lease = self.store.activate(&lease.id, lease.version, activation).await.map_err(|e| {
            Denial::new(ReasonCode::StoreUnavailable, format!("activating lease {}: {e}", lease.id))
        })?;
        Ok(Exchanged { lease, credential })
    }

    /// Counts this exchange of the token under the policy's replay mode; returns the use
    /// number (`None` for a token without `jti`, which cannot be counted).
    async fn guard_replay(
        &self,
        identity: &Identity,
        policy: &Policy,
        grant: &GrantRef,
    ) -> Result<Option<u32>, Denial> {
        let replay = policy.replay;
        let Some(jti) = identity.jti.as_deref() else {
            // Uncounted, such a token could be exchanged any number of times until it expires.
            if policy.require_jti {
                return Err(Denial::new(
                    ReasonCode::MissingClaim("jti"),
                    format!(
                        "the token has no jti, so its exchanges cannot be counted; policy {} requires one \
                         ([replay] require_jti = false accepts such tokens uncounted)",
                        policy.name
                    ),
                ));
            }
            return Ok(None);
        };
        let (key, limit) = replay.key_and_limit(jti, grant);
        let remember_until = identity.expires_at + delta(self.settings.replay_window_slack);
        match self.store.record_token_use(&identity.issuer, &key, remember_until, limit).await {
            Ok(TokenUse::Counted(uses)) => Ok(Some(uses)),
            Ok(TokenUse::Exhausted(uses)) => {
                let detail = match replay {
                    Replay::Once => format!("jti {jti:?} was already exchanged (replay mode once)"),
                    Replay::OncePerGrant => {
                        format!("jti {jti:?} was already exchanged for {grant} (replay mode once_per_grant)")
                    }
                    Replay::UntilExpiry { .. } => {
                        format!(
                            "jti {jti:?} was exchanged {uses} times, its limit (replay mode until_expiry)"
                        )
                    }
                };
                Err(Denial::new(ReasonCode::ReplayedToken, detail))
            }
            Err(e) => Err(store_denial(e)),
        }
    }

    async fn fail_pending(&self, lease: &Lease, err: &IssueError) -> Denial {
        let reason = match err {
            IssueError::Unavailable(_) => ReasonCode::BackendUnavailable,
            IssueError::Rejected(_) | IssueError::WrongBackend { .. } => ReasonCode::BackendRejected,
        };
        let mut detail = format!("issuing lease {}: {err}", lease.id);
        let now = self.clock.now();
        if let Err(store_err) =
            self.store.record_issue_failure(&lease.id, lease.version, &err.to_string(), now).await
        {
            // The lease stays Pending and becomes due after `pending_grace` anyway.
            let _ = write!(detail, "; recording the failure also failed: {store_err}");
        }
        Denial::new(reason, detail)
    }
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(store_denial)`
fn store_denial(err: StoreError) -> Denial {
    Denial::new(ReasonCode::StoreUnavailable, err.to_string())
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

pub mod leases;

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
