//! Ending STS sessions: each revoked session goes into its role's deny list in the lease store
//! ([`crate::denylist`]), and the list is rendered into the role's inline policy
//! `credbroker-revocations` through a [`RolePolicyWriter`] (IAM in the revoker function:
//! [`crate::issuer::iam`]). IAM is never read back: the store is the record.
//!
//! A revocation returns once IAM holds a version of the list that contains its session, so a
//! lease is marked `REVOKED` only after its session is denied. Revocations of one role's
//! sessions in one process share IAM writes: while one renders, the others wait and find their
//! entry already written (a sweep or a bulk revoke makes one or two writes per role, not one
//! per lease). Writers in different processes take the role's lock in the lease store, and a
//! render is recorded only while the list it wrote is still the newest, so a late write of an
//! older version is always followed by a newer one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::backend::{Backend, BackendKind, BackendRef, CredentialRevoker, IssueError, IssuedRef};
use crate::clock::Clock;
use crate::denylist::{self, DEFAULT_MAX_POLICY_CHARS, DenyList, DenyListRendering, RoleRef, StoredDenyList};
use crate::lease::StoreError;
use crate::metrics::MetricsSink;

/// Writes (never reads) the `credbroker-revocations` policy of a role.
#[async_trait::async_trait]
pub trait RolePolicyWriter: Send + Sync + std::fmt::Debug {
    /// Puts `document` as the role's deny policy.
    async fn put(&self, role: &RoleRef, document: &str) -> Result<(), IssueError>;
    /// Removes the role's deny policy; a role without one is success.
    async fn delete(&self, role: &RoleRef) -> Result<(), IssueError>;
}

/// What [`StsSessionRevoker::flush`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// Roles whose policy was written.
    pub rendered: usize,
    /// `role: error` for roles whose policy could not be written (retried next time).
    pub failures: Vec<String>,
}

/// Ends STS sessions by keeping each role's deny list and its IAM policy.
#[derive(Debug)]
pub struct StsSessionRevoker {
    writer: Arc<dyn RolePolicyWriter>,
    lists: Arc<dyn DenyListRendering>,
    clock: Arc<dyn Clock>,
    /// Identifies this process in the role locks.
    owner: String,
    max_policy_chars: usize,
    /// One renderer per role in this process (see the module docs).
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `DenyListNearlyFull` and `DenyListFallbacks` (alarmed in the templates), if set.
    metrics: Option<Arc<dyn MetricsSink>>,
}

/// A deny list this full (of the inline policy limit) is reported before it overflows: the
/// fallback that follows denies every session of the role, other workloads' included.
const NEARLY_FULL_PERCENT: usize = 80;

impl StsSessionRevoker {
    pub fn new(
        writer: Arc<dyn RolePolicyWriter>,
        lists: Arc<dyn DenyListRendering>,
        clock: Arc<dyn Clock>,
        owner: impl Into<String>,
    ) -> Self {
        Self {
            writer,
            lists,
            clock,
            owner: owner.into(),
            max_policy_chars: DEFAULT_MAX_POLICY_CHARS,
            gates: Mutex::new(HashMap::new()),
            metrics: None,
        }
    }

    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, metric: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.counts(&[(metric, 1)]);
        }
    }

    #[must_use]
    pub fn with_max_policy_chars(mut self, chars: usize) -> Self {
        self.max_policy_chars = chars;
        self
    }

    /// Denies every session of `role_arn` issued before `before` (an emergency), now.
    pub async fn cut_off(&self, role_arn: &str, before: DateTime<Utc>) -> Result<StoredDenyList, IssueError> {
        let role = parse_role(role_arn)?;
        let stored =
            denylist::request_cutoff(self.lists.as_ref(), &role, before).await.map_err(store_unavailable)?;
        self.render_at_least(&role, stored.version).await?;
        Ok(stored)
    }

    /// Writes every pending list to IAM (cut-offs the lease API recorded, renders that failed
    /// before). The revoker runs it at the start of every sweep.
    pub async fn flush(&self) -> Result<FlushReport, StoreError> {
        let mut report = FlushReport::default();
        for pending in self.lists.pending_deny_lists(100).await? {
            let Some(role) = role_from_key(&pending.role) else {
                report.failures.push(format!("{}: not a role key", pending.role));
                continue;
            };
            match self.render_at_least(&role, pending.version).await {
                Ok(()) => report.rendered += 1,
                Err(e) => report.failures.push(format!("{}: {e}", pending.role)),
            }
        }
        Ok(report)
    }

    fn gate(&self, role: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(gates.entry(role.to_owned()).or_default())
    }

    /// Returns once IAM holds version `min_version` of the role's list, or a later one.
    async fn render_at_least(&self, role: &RoleRef, min_version: u64) -> Result<(), IssueError> {
        let key = role.key();
        let gate = self.gate(&key);
        let _rendering = gate.lock().await;
        if self.rendered_at_least(&key, min_version).await? {
            return Ok(());
        }
        let lock = format!("iam-deny-policy#{key}");
        // One holder per render, not per process: the store's lock is re-entrant for its owner.
        let holder = format!(
            "{}/{}",
            self.owner,
            crate::lease::LeaseId::generate(self.clock.now())
                .map_or_else(|_| "x".to_owned(), |id| id.to_string())
        );
        self.acquire(&lock, &holder).await?;
        let result = self.render_locked(role, &key, min_version).await;
        // A failed unlock only delays the next writer until the lock expires.
        if let Err(e) = self.lists.unlock(&lock, &holder).await {
            tracing::warn!(lock, error = %e, "releasing the deny-policy lock failed");
        }
        result
    }

    async fn rendered_at_least(&self, key: &str, min_version: u64) -> Result<bool, IssueError> {
        let stored = self.lists.deny_list(key).await.map_err(store_unavailable)?;
        Ok(stored.is_none_or(|s| s.rendered_version >= min_version))
    }

    async fn render_locked(&self, role: &RoleRef, key: &str, min_version: u64) -> Result<(), IssueError> {
        let Some(stored) = self.lists.deny_list(key).await.map_err(store_unavailable)? else {
            return Ok(());
        };
        if stored.rendered_version >= min_version {
            return Ok(());
        }
        // The newest list (a strongly consistent read, under the lock): it holds every entry of
        // `min_version`, since entries only leave once their sessions have expired.
        let mut list = stored.list.clone();
        list.prune(self.clock.now());
        if list.is_empty() {
            self.writer.delete(role).await?;
        } else {
            self.writer.put(role, &list.to_policy().to_string()).await?;
        }
        // If the list changed meanwhile it stays pending: whoever changed it renders it next
        // (every writer renders after writing), and so does the next sweep. Renders never go
        // backwards: each one, under the lock, reads a version at least as new as the last.
        self.lists.mark_deny_list_rendered(key, stored.version).await.map_err(store_unavailable)?;
        Ok(())
    }

    async fn acquire(&self, lock: &str, holder: &str) -> Result<(), IssueError> {
        for attempt in 0..50u32 {
            let until = self.clock.now() + TimeDelta::seconds(30);
            match self.lists.try_lock(lock, holder, until).await {
                Ok(true) => return Ok(()),
                Ok(false) => tokio::time::sleep(Duration::from_millis(50 + u64::from(attempt) * 10)).await,
                Err(e) => return Err(IssueError::Unavailable(format!("lock {lock}: {e}"))),
            }
        }
        Err(IssueError::Unavailable(format!("lock {lock} is busy")))
    }
}

fn parse_role(role_arn: &str) -> Result<RoleRef, IssueError> {
    RoleRef::parse(role_arn).ok_or_else(|| IssueError::Rejected(format!("not a role ARN: {role_arn}")))
}

/// The role of a [`RoleRef::key`].
fn role_from_key(key: &str) -> Option<RoleRef> {
    let mut parts = key.splitn(3, ':');
    let (Some(partition), Some(account), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    Some(RoleRef { partition: partition.to_owned(), account: account.to_owned(), name: name.to_owned() })
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(store_unavailable)`
fn store_unavailable(err: StoreError) -> IssueError {
    IssueError::Unavailable(format!("deny list: {err}"))
}

impl Backend for StsSessionRevoker {
    fn backend(&self) -> BackendKind {
        BackendKind::AwsSession
    }
}

#[async_trait::async_trait]
impl CredentialRevoker for StsSessionRevoker {
    async fn revoke(&self, issued: IssuedRef<'_>) -> Result<(), IssueError> {
        let BackendRef::AwsSession { role_arn, session_name } = issued.backend else {
            return Err(IssueError::WrongBackend {
                expected: BackendKind::AwsSession,
                got: issued.backend.kind(),
            });
        };
        let now = self.clock.now();
        if !issued.delivered || issued.expires_at <= now {
            // Never handed out (issuance failed, or crashed before the caller got the
            // credentials), or already ended by itself: nothing to deny.
            return Ok(());
        }
        let role = parse_role(role_arn)?;
        let max_chars = self.max_policy_chars;
        let mut fell_back = false;
        let stored = denylist::update(self.lists.as_ref(), &role.key(), |list: &mut DenyList| {
            if list.denies(session_name, None) {
                return false;
            }
            list.add(session_name, issued.expires_at);
            fell_back = list.fit(now, max_chars);
            true
        })
        .await
        .map_err(store_unavailable)?;
        if fell_back {
            tracing::warn!(
                audit = true,
                action = "aws_role_cutoff",
                role_arn,
                "deny list overflows the inline policy limit: denying every session of the role issued before now"
            );
            self.count("DenyListFallbacks");
        } else if let Some(stored) = &stored {
            let used = stored.list.to_policy().to_string().len();
            if used * 100 >= self.max_policy_chars * NEARLY_FULL_PERCENT {
                tracing::warn!(
                    audit = true,
                    action = "aws_deny_list_nearly_full",
                    role_arn,
                    used,
                    limit = self.max_policy_chars,
                    sessions = stored.list.sessions().len(),
                    "deny list nearly fills the inline policy limit: when it overflows, every session of the role issued before then is denied"
                );
                self.count("DenyListNearlyFull");
            }
        }
        match stored {
            Some(stored) => self.render_at_least(&role, stored.version).await,
            None => Ok(()),
        }
    }

    async fn catch_up(&self) -> Vec<String> {
        match self.flush().await {
            Ok(report) => report.failures,
            Err(e) => vec![format!("listing pending deny lists: {e}")],
        }
    }
}

#[cfg(test)]
mod tests;
