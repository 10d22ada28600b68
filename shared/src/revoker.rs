//! The revoker: ends every due lease, idempotently, with retries, and never silently gives up.
//!
//! One sweep reads due leases from the `due` index (never a scan), claims each with a
//! conditional write (so concurrent revokers and duplicated schedule deliveries never act
//! twice), calls the backend's idempotent revoke, and marks the lease `Revoked`. A failure is
//! recorded on the lease with exponential backoff and jitter; after `max_attempts` the lease
//! becomes `Irrevocable` (metric + audit event, for an alarm) and is still retried daily. A claim
//! whose revoker died lapses at its deadline and the lease is claimed again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::audit::{AuditEvent, AuditSink, Decision};
use crate::backend::{BackendKind, CredentialRevoker, Revokers};
use crate::clock::Clock;
use crate::lease::{
    Claim, DueBatch, DueLeases, Lease, LeaseStatus, LeaseStore, LiveFilter, RevokeFailure, StoreError,
    UnreadableLease,
};
use crate::metrics::MetricsSink;

#[derive(Debug, Clone)]
pub struct RevokerSettings {
    /// Due leases read per query.
    pub batch_size: usize,
    /// Backend revocations in flight at once.
    pub concurrency: usize,
    /// How long a claim holds; a lease whose revoker died is due again after it.
    pub claim_timeout: Duration,
    /// Failed attempts before a lease becomes `Irrevocable`.
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// How often `Irrevocable` leases are retried.
    pub irrevocable_retry: Duration,
    /// How long ended leases stay for audit (DynamoDB TTL).
    pub retention: Duration,
    /// Stop claiming new leases when less than this remains of the invocation.
    pub stop_margin: Duration,
}

impl Default for RevokerSettings {
    fn default() -> Self {
        Self {
            batch_size: 200,
            concurrency: 16,
            claim_timeout: Duration::from_mins(5),
            max_attempts: 8,
            base_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_hours(1),
            irrevocable_retry: Duration::from_hours(24),
            retention: Duration::from_hours(720),
            stop_margin: Duration::from_secs(5),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub examined: usize,
    pub revoked: usize,
    /// Attempts that failed and will be retried.
    pub failed: usize,
    /// Leases that became (or stayed) `Irrevocable` in this sweep.
    pub irrevocable: usize,
    /// Leases another revoker claimed first (or that changed meanwhile).
    pub skipped: usize,
    /// Due lease records this version cannot read, passed over (and reported) without being
    /// touched.
    pub unreadable: usize,
    /// The sweep stopped because the invocation's time ran out; the next run continues.
    pub budget_exhausted: bool,
    /// Backend work outside single leases that failed and is retried next sweep (e.g. a role's
    /// deny policy the lease API changed), as `backend: detail`.
    pub catch_up_failures: Vec<String>,
}

/// How one lease's revocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Revoked(Lease),
    /// The backend failed; the lease records the error and when it is retried.
    Failed {
        lease: Lease,
        irrevocable: bool,
    },
    /// Someone else holds or changed the lease.
    Skipped(String),
    /// This process holds no revoker for the lease's backend: the lease is claimed for the
    /// scheduled revoker, which ends it on its next sweep.
    HandedOff(Lease),
}

/// The owner a handed-off lease's claim carries (`<prefix><who asked>`); the revoker that takes
/// the lease over reads it to know who asked and whether they forced it.
const HANDED_OFF: &str = "handed-off:";
const HANDED_OFF_FORCED: &str = "handed-off+force:";

#[derive(Debug, Clone)]
pub struct RevokerPorts {
    pub store: Arc<dyn LeaseStore>,
    pub revokers: Revokers,
    pub clock: Arc<dyn Clock>,
    pub audit: Arc<dyn AuditSink>,
    pub metrics: Arc<dyn MetricsSink>,
}

#[derive(Debug, Clone)]
pub struct Revoker {
    ports: Arc<RevokerPorts>,
    settings: Arc<RevokerSettings>,
}

impl Revoker {
    pub fn new(ports: RevokerPorts, settings: RevokerSettings) -> Self {
        Self { ports: Arc::new(ports), settings: Arc::new(settings) }
    }

    pub fn settings(&self) -> &RevokerSettings {
        &self.settings
    }

    /// The backend adapter that ends (or extends) leases of `kind`, if this process has one.
    pub fn revoker_for(&self, kind: BackendKind) -> Option<&Arc<dyn CredentialRevoker>> {
        self.ports.revokers.get(kind)
    }

    /// Ends `lease` now when this process holds its backend's revoker; otherwise hands it to the
    /// scheduled revoker ([`Outcome::HandedOff`]), which is the only one that may (least
    /// privilege: the API functions cannot edit IAM or drop database users).
    pub async fn revoke_or_hand_off(
        &self,
        lease: Lease,
        owner: &str,
        deadline: Instant,
        force: bool,
    ) -> Result<Outcome, StoreError> {
        if self.revoker_for(lease.backend.kind()).is_some() {
            return self.revoke_lease(lease, owner, deadline, force).await;
        }
        if lease.status == LeaseStatus::Revoked {
            return Ok(Outcome::Skipped(format!("lease {} is already revoked", lease.id)));
        }
        let prefix = if force { HANDED_OFF_FORCED } else { HANDED_OFF };
        // A claim whose deadline is now has lapsed at once: the next sweep claims it over.
        let claim = Claim { owner: format!("{prefix}{owner}"), deadline: self.ports.clock.now() };
        match self.ports.store.claim_for_revocation(&lease.id, lease.version, claim).await {
            Ok(claimed) => {
                self.audit(&claimed, owner, Decision::Success, "revocation_handed_off", None);
                Ok(Outcome::HandedOff(claimed))
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {
                Ok(Outcome::Skipped(format!("lease {} changed or is held by another revoker", lease.id)))
            }
            Err(e) => Err(e),
        }
    }

    /// Revokes the leases `due` lists until none is left or `deadline` (minus the stop margin)
    /// is near. A lease-store failure ends the sweep with an error (the invocation fails and
    /// alarms); backend failures are recorded per lease.
    pub async fn sweep(
        &self,
        due: &dyn DueLeases,
        owner: &str,
        deadline: Instant,
    ) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for revoker in self.ports.revokers.all() {
            for failure in revoker.catch_up().await {
                tracing::warn!(backend = %revoker.backend(), failure, "backend catch-up failed; retried next sweep");
                report.catch_up_failures.push(format!("{}: {failure}", revoker.backend()));
            }
        }
        let result = self.sweep_into(due, owner, deadline, &mut report).await;
        self.ports.metrics.counts(&[
            ("LeasesRevoked", report.revoked as u64),
            ("RevocationFailures", report.failed as u64),
            ("LeasesIrrevocable", report.irrevocable as u64),
            ("CatchUpFailures", report.catch_up_failures.len() as u64),
            ("LeasesUnreadable", report.unreadable as u64),
        ]);
        tracing::info!(
            examined = report.examined,
            revoked = report.revoked,
            failed = report.failed,
            irrevocable = report.irrevocable,
            skipped = report.skipped,
            unreadable = report.unreadable,
            budget_exhausted = report.budget_exhausted,
            "sweep finished"
        );
        result.map(|()| report)
    }

    async fn sweep_into(
        &self,
        due_leases: &dyn DueLeases,
        owner: &str,
        deadline: Instant,
        report: &mut SweepReport,
    ) -> Result<(), StoreError> {
        let semaphore = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut reported = std::collections::HashSet::new();
        loop {
            if Instant::now() + self.settings.stop_margin >= deadline {
                report.budget_exhausted = true;
                return Ok(());
            }
            let DueBatch { leases: due, unreadable } =
                due_leases.list_due(self.ports.clock.now(), self.settings.batch_size).await?;
            for record in unreadable {
                if reported.insert(record.key.clone()) {
                    report.unreadable += 1;
                    self.audit_unreadable(&record, owner);
                }
            }
            if due.is_empty() {
                return Ok(());
            }
            let batch = due.len();
            let mut tasks = JoinSet::new();
            for lease in due {
                let this = self.clone();
                let owner = owner.to_owned();
                let permit = Arc::clone(&semaphore);
                tasks.spawn(async move {
                    let _permit = permit.acquire_owned().await;
                    this.revoke_lease(lease, &owner, deadline, false).await
                });
            }
            let mut all_skipped = true;
            while let Some(joined) = tasks.join_next().await {
                report.examined += 1;
                match joined {
                    Ok(Ok(Outcome::Revoked(_))) => {
                        report.revoked += 1;
                        all_skipped = false;
                    }
                    Ok(Ok(Outcome::Failed { irrevocable, .. })) => {
                        report.failed += 1;
                        report.irrevocable += usize::from(irrevocable);
                        all_skipped = false;
                    }
                    Ok(Ok(Outcome::Skipped(_) | Outcome::HandedOff(_))) => report.skipped += 1,
                    Ok(Err(store_error)) => return Err(store_error),
                    Err(join_error) => {
                        return Err(StoreError::Unavailable(format!("revocation task failed: {join_error}")));
                    }
                }
            }
            // A short page means nothing more is due; a page of nothing but skips means the
            // index still shows leases others hold (it is eventually consistent): stop either way.
            if batch < self.settings.batch_size || all_skipped {
                return Ok(());
            }
        }
    }

    /// Claims and revokes one lease. With `force`, a backend failure still ends the lease
    /// (marked `Revoked` with the error as its note, audited as forced): the administrator
    /// has accepted that the credential may outlive its lease.
    pub async fn revoke_lease(
        &self,
        lease: Lease,
        owner: &str,
        deadline: Instant,
        force: bool,
    ) -> Result<Outcome, StoreError> {
        if lease.status == LeaseStatus::Revoked {
            return Ok(Outcome::Skipped(format!("lease {} is already revoked", lease.id)));
        }
        // A lease the lease API handed over carries who asked, and whether they forced it.
        let handed_off = lease.owner.as_deref().and_then(|o| {
            o.strip_prefix(HANDED_OFF_FORCED)
                .map(|who| (who, true))
                .or_else(|| o.strip_prefix(HANDED_OFF).map(|who| (who, false)))
        });
        let force = force || handed_off.is_some_and(|(_, forced)| forced);
        let owner = match handed_off {
            Some((who, _)) => format!("{owner} (asked by {who})"),
            None => owner.to_owned(),
        };
        let owner = owner.as_str();
        let now = self.ports.clock.now();
        let claim = Claim { owner: owner.to_owned(), deadline: now + delta(self.settings.claim_timeout) };
        let claimed = match self.ports.store.claim_for_revocation(&lease.id, lease.version, claim).await {
            Ok(claimed) => claimed,
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {
                return Ok(Outcome::Skipped(format!(
                    "lease {} changed or is held by another revoker",
                    lease.id
                )));
            }
            Err(e) => return Err(e),
        };
        let result = match self.ports.revokers.get(claimed.backend.kind()) {
            Some(revoker) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, revoker.revoke(claimed.issued())).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out at the end of the invocation".to_owned()),
                }
            }
            None => Err(format!("no revoker configured for backend {}", claimed.backend.kind())),
        };
        let now = self.ports.clock.now();
        match result {
            Ok(()) => {
                let revoked = self.ports.store.mark_revoked(&claimed.id, claimed.version, now, None).await;
                self.finish_revoked(revoked, &claimed, owner, None)
            }
            Err(error) if force => {
                let note = format!("forced by {owner}: backend said: {error}");
                let revoked =
                    self.ports.store.mark_revoked(&claimed.id, claimed.version, now, Some(&note)).await;
                self.finish_revoked(revoked, &claimed, owner, Some(note))
            }
            Err(error) => self.record_failure(&claimed, owner, error, now).await,
        }
    }

    fn finish_revoked(
        &self,
        revoked: Result<Lease, StoreError>,
        claimed: &Lease,
        owner: &str,
        forced: Option<String>,
    ) -> Result<Outcome, StoreError> {
        match revoked {
            Ok(lease) => {
                let reason = if forced.is_some() { "revoked_forced" } else { "revoked" };
                self.audit(&lease, owner, Decision::Success, reason, forced);
                Ok(Outcome::Revoked(lease))
            }
            // Our claim lapsed and another revoker took over: it will finish (revoke is
            // idempotent, so the double call was harmless).
            Err(StoreError::Conflict { .. }) => {
                Ok(Outcome::Skipped(format!("claim on {} lapsed", claimed.id)))
            }
            Err(e) => Err(e),
        }
    }

    async fn record_failure(
        &self,
        claimed: &Lease,
        owner: &str,
        error: String,
        now: DateTime<Utc>,
    ) -> Result<Outcome, StoreError> {
        let attempts = claimed.attempts + 1;
        let irrevocable = attempts >= self.settings.max_attempts;
        let retry_at = if irrevocable {
            now + delta(self.settings.irrevocable_retry)
        } else {
            now + delta(backoff(&self.settings, attempts))
        };
        let failure = RevokeFailure {
            error: error.clone(),
            retry_at,
            irrevocable,
            gc_at: claimed.gc_at.max(retry_at + delta(self.settings.retention)),
        };
        match self.ports.store.record_revoke_failure(&claimed.id, claimed.version, failure).await {
            Ok(lease) => {
                let reason = if irrevocable { "irrevocable" } else { "revoke_failed" };
                self.audit(&lease, owner, Decision::Failure, reason, Some(error));
                if irrevocable {
                    tracing::error!(lease_id = %lease.id, attempts, "lease is irrevocable: its credential may still work");
                }
                Ok(Outcome::Failed { lease, irrevocable })
            }
            Err(StoreError::Conflict { .. }) => {
                Ok(Outcome::Skipped(format!("claim on {} lapsed", claimed.id)))
            }
            Err(e) => Err(e),
        }
    }

    /// One event per unreadable record and sweep, until a version that reads it ends it.
    fn audit_unreadable(&self, record: &UnreadableLease, owner: &str) {
        let mut event = AuditEvent::new("lease_revoke", owner, self.ports.clock.now());
        event.decision = Decision::Failure;
        "lease_unreadable".clone_into(&mut event.reason);
        event.detail = Some(format!("{}: {}", record.key, record.detail));
        self.ports.audit.record(&event);
    }

    fn audit(&self, lease: &Lease, owner: &str, decision: Decision, reason: &str, detail: Option<String>) {
        let mut event = AuditEvent::new("lease_revoke", owner, self.ports.clock.now());
        event.decision = decision;
        reason.clone_into(&mut event.reason);
        event.detail = detail;
        event.issuer = Some(lease.holder.issuer.clone());
        event.subject = Some(lease.holder.subject.clone());
        event.policy = Some(lease.policy.clone());
        event.grant = Some(lease.grant.clone());
        event.lease_id = Some(lease.id.to_string());
        event.expires_at = Some(lease.expires_at);
        self.ports.audit.record(&event);
    }
}

/// What one orphan reconciliation found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanReport {
    /// Credentials in backends that no live lease names (`location/name`).
    pub orphans: Vec<String>,
    pub removed: usize,
    /// Orphans younger than the safety age, left for the next run.
    pub too_young: usize,
    /// `location/name: error` for removals (or listings) that failed.
    pub failures: Vec<String>,
}

impl Revoker {
    /// Finds credentials that backends hold but no live lease names, and removes those older
    /// than `min_age`. The age threshold covers the lease index's eventual consistency: a
    /// lease is written before its credential, but a fresh one may not be listed yet.
    pub async fn reconcile_orphans(&self, min_age: Duration) -> Result<OrphanReport, StoreError> {
        let mut report = OrphanReport::default();
        let now = self.ports.clock.now();
        for revoker in self.ports.revokers.all() {
            let issued = match revoker.list_issued().await {
                Ok(Some(issued)) => issued,
                Ok(None) => continue,
                Err(e) => {
                    report.failures.push(format!("{}: listing failed: {e}", revoker.backend()));
                    continue;
                }
            };
            let filter = LiveFilter { backend_kind: Some(revoker.backend()), ..LiveFilter::default() };
            let live = self.ports.store.list_live(&filter, usize::MAX).await?;
            let named: HashSet<(String, String)> =
                live.iter().filter_map(|lease| lease.backend.credential_name()).collect();
            for credential in issued {
                if named.contains(&(credential.location.clone(), credential.name.clone())) {
                    continue;
                }
                let label = format!("{}/{}", credential.location, credential.name);
                report.orphans.push(label.clone());
                let old_enough = credential.created_at.is_some_and(|created| now - created >= delta(min_age));
                if !old_enough {
                    report.too_young += 1;
                    continue;
                }
                match revoker.remove_orphan(&credential).await {
                    Ok(()) => {
                        report.removed += 1;
                        tracing::warn!(audit = true, action = "orphan_removed", backend = %revoker.backend(), credential = %label, "removed a credential no lease named");
                    }
                    Err(e) => report.failures.push(format!("{label}: {e}")),
                }
            }
        }
        self.ports.metrics.counts(&[
            ("OrphansFound", report.orphans.len() as u64),
            ("OrphansRemoved", report.removed as u64),
        ]);
        Ok(report)
    }
}

/// Exponential backoff (`base · 2^(attempts-1)`, capped) with jitter in [50 %, 100 %], so
/// leases that failed together do not retry together (no revocation storm after an outage).
pub fn backoff(settings: &RevokerSettings, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let full = settings.base_backoff.saturating_mul(1 << exponent).min(settings.max_backoff);
    let mut random = [0u8; 2];
    let jitter =
        if aws_lc_rs::rand::fill(&mut random).is_ok() { u16::from_le_bytes(random) } else { u16::MAX };
    full.mul_f64(0.5 + 0.5 * f64::from(jitter) / f64::from(u16::MAX))
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests;
