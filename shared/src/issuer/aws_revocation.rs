//! Revoking STS sessions: they cannot be deleted, so each role carries an inline deny policy
//! (`credbroker-revocations`) that denies everything to the sessions of revoked leases
//! (`aws:userid` = `<role-id>:<lease-id>`, since the session is named after the lease) until
//! they would have expired anyway.
//!
//! Entries are grouped in statements by the hour their sessions expire (`Sid`
//! `CredbrokerRevokedUntil<yyyymmddhh>`), so pruning drops whole statements once that hour has
//! passed. IAM allows 10,240 characters of inline policy per role; when the list would not fit,
//! the policy falls back to a cut-off on `aws:TokenIssueTime` for the whole role (every session
//! issued before now is denied — legitimate ones too, which is why it is logged loudly), and the
//! individual entries it covers are dropped. An administrator can set such a cut-off directly.
//!
//! Writers of one role's policy are serialised with a lease-store lock: IAM has no conditional
//! write, and a lost update would silently un-revoke a session.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

use super::{CredentialRevoker, IssueError};
use crate::aws_failure::AwsFailure;
use crate::clock::Clock;
use crate::lease::{BackendRef, Lease, LeaseStore};

/// Name of the inline policy the revoker owns on each role.
pub const DENY_POLICY_NAME: &str = "credbroker-revocations";
/// IAM's limit for all inline policies of a role together; leave room for the role's own.
const DEFAULT_MAX_POLICY_CHARS: usize = 8 * 1024;
/// STS sessions last at most 12 hours, so a cut-off older than that covers nothing.
const MAX_SESSION: TimeDelta = TimeDelta::hours(12);
const REVOKED_SID_PREFIX: &str = "CredbrokerRevokedUntil";
const CUTOFF_SID: &str = "CredbrokerCutoff";

/// The deny list of one role, as the policy encodes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DenyList {
    /// Hour (UTC) by which the sessions expire → lease ids (session names).
    pub by_expiry_hour: BTreeMap<DateTime<Utc>, BTreeSet<String>>,
    /// Sessions issued before this are denied (fallback or emergency).
    pub cutoff: Option<DateTime<Utc>>,
}

impl DenyList {
    /// Adds a session that would stay valid until `expires_at`.
    pub fn add(&mut self, session_name: &str, expires_at: DateTime<Utc>) {
        self.by_expiry_hour.entry(hour_ceiling(expires_at)).or_default().insert(session_name.to_owned());
    }

    /// Drops entries whose sessions have expired, and a cut-off no session can predate.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.by_expiry_hour.retain(|hour, _| *hour > now);
        if self.cutoff.is_some_and(|cutoff| cutoff + MAX_SESSION <= now) {
            self.cutoff = None;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_expiry_hour.is_empty() && self.cutoff.is_none()
    }

    /// Every denied session name.
    pub fn sessions(&self) -> BTreeSet<&str> {
        self.by_expiry_hour.values().flatten().map(String::as_str).collect()
    }

    pub fn to_policy(&self) -> Value {
        let mut statements: Vec<Value> = self
            .by_expiry_hour
            .iter()
            .map(|(hour, sessions)| {
                let user_ids: Vec<String> = sessions.iter().map(|s| format!("*:{s}")).collect();
                json!({
                    "Sid": format!("{REVOKED_SID_PREFIX}{}", hour.format("%Y%m%d%H")),
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": { "StringLike": { "aws:userid": user_ids } },
                })
            })
            .collect();
        if let Some(cutoff) = self.cutoff {
            statements.push(json!({
                "Sid": CUTOFF_SID,
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": { "DateLessThan": {
                    "aws:TokenIssueTime": cutoff.to_rfc3339_opts(SecondsFormat::Secs, true)
                } },
            }));
        }
        json!({ "Version": "2012-10-17", "Statement": statements })
    }

    /// Reads a policy this module wrote; statements it did not write are an error (someone
    /// edited the policy by hand: refuse rather than silently drop their statements).
    pub fn from_policy(document: &Value) -> Result<Self, String> {
        let mut list = Self::default();
        let statements = document["Statement"].as_array().ok_or("policy has no Statement list")?;
        for statement in statements {
            let sid = statement["Sid"].as_str().unwrap_or_default();
            if sid == CUTOFF_SID {
                let raw = statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
                    .as_str()
                    .ok_or("cut-off statement without aws:TokenIssueTime")?;
                let cutoff =
                    DateTime::parse_from_rfc3339(raw).map_err(|e| format!("cut-off time {raw:?}: {e}"))?;
                list.cutoff = Some(cutoff.with_timezone(&Utc));
            } else if let Some(stamp) = sid.strip_prefix(REVOKED_SID_PREFIX) {
                let hour = chrono::NaiveDateTime::parse_from_str(&format!("{stamp}0000"), "%Y%m%d%H%M%S")
                    .map_err(|e| format!("statement {sid}: {e}"))?
                    .and_utc();
                let ids = statement["Condition"]["StringLike"]["aws:userid"]
                    .as_array()
                    .ok_or_else(|| format!("statement {sid} has no aws:userid list"))?;
                let entry = list.by_expiry_hour.entry(hour).or_default();
                for id in ids {
                    let id = id.as_str().ok_or_else(|| format!("statement {sid}: non-string user id"))?;
                    let session =
                        id.strip_prefix("*:").ok_or_else(|| format!("statement {sid}: user id {id:?}"))?;
                    entry.insert(session.to_owned());
                }
            } else {
                return Err(format!("statement {sid:?} was not written by credbroker"));
            }
        }
        Ok(list)
    }
}

fn hour_ceiling(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t);
    if floor == t { t } else { floor + TimeDelta::hours(1) }
}

/// The role name of `arn:aws:iam::<acct>:role/<path/>name`.
pub fn role_name(role_arn: &str) -> Option<&str> {
    role_arn
        .split_once(":role/")
        .map(|(_, path)| path.rsplit('/').next().unwrap_or(path))
        .filter(|n| !n.is_empty())
}

/// Ends STS sessions by maintaining each role's deny policy.
#[derive(Debug, Clone)]
pub struct StsSessionRevoker {
    iam: aws_sdk_iam::Client,
    store: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    /// Identifies this process in the role lock.
    owner: String,
    max_policy_chars: usize,
}

impl StsSessionRevoker {
    pub fn new(
        iam: aws_sdk_iam::Client,
        store: Arc<dyn LeaseStore>,
        clock: Arc<dyn Clock>,
        owner: impl Into<String>,
    ) -> Self {
        Self { iam, store, clock, owner: owner.into(), max_policy_chars: DEFAULT_MAX_POLICY_CHARS }
    }

    #[must_use]
    pub fn with_max_policy_chars(mut self, chars: usize) -> Self {
        self.max_policy_chars = chars;
        self
    }

    /// The deny list currently on `role_arn` (empty when the role has no such policy).
    pub async fn deny_list(&self, role_arn: &str) -> Result<DenyList, IssueError> {
        let role =
            role_name(role_arn).ok_or_else(|| IssueError::Rejected(format!("not a role ARN: {role_arn}")))?;
        let output =
            match self.iam.get_role_policy().role_name(role).policy_name(DENY_POLICY_NAME).send().await {
                Ok(output) => output,
                Err(err) if is_no_such_entity(&err) => return Ok(DenyList::default()),
                Err(err) => return Err(classify(err)),
            };
        // IAM returns the document URL-encoded.
        let raw = output.policy_document;
        let decoded = decode_policy_document(&raw);
        let document: Value = serde_json::from_str(&decoded)
            .map_err(|e| IssueError::Rejected(format!("deny policy of {role} is not JSON: {e}")))?;
        DenyList::from_policy(&document)
            .map_err(|e| IssueError::Rejected(format!("deny policy of {role}: {e}")))
    }

    /// Emergency: deny every session of `role_arn` issued before `before`.
    pub async fn cut_off(&self, role_arn: &str, before: DateTime<Utc>) -> Result<DenyList, IssueError> {
        self.update(role_arn, |list, _| {
            list.cutoff = Some(list.cutoff.map_or(before, |c| c.max(before)));
        })
        .await
    }

    /// Read-modify-write of a role's policy under the role's lock.
    async fn update(
        &self,
        role_arn: &str,
        change: impl FnOnce(&mut DenyList, DateTime<Utc>),
    ) -> Result<DenyList, IssueError> {
        let role =
            role_name(role_arn).ok_or_else(|| IssueError::Rejected(format!("not a role ARN: {role_arn}")))?;
        let lock = format!("iam-deny-policy#{role_arn}");
        // One holder per update, not per process: tasks of one revoker run concurrently, and
        // the store's lock is re-entrant for the same owner.
        let holder = format!(
            "{}/{}",
            self.owner,
            crate::lease::LeaseId::generate(self.clock.now())
                .map_or_else(|_| "x".to_owned(), |id| id.to_string())
        );
        self.acquire(&lock, &holder).await?;
        let result = async {
            let now = self.clock.now();
            let mut list = self.deny_list(role_arn).await?;
            change(&mut list, now);
            list.prune(now);
            if list.to_policy().to_string().len() > self.max_policy_chars {
                // Too many revoked sessions for IAM's size limit: deny the whole role's past.
                tracing::warn!(
                    audit = true,
                    action = "aws_role_cutoff",
                    role_arn,
                    revoked_sessions = list.sessions().len(),
                    "deny list overflows the inline policy limit: denying every session of the role issued before now"
                );
                list.by_expiry_hour.clear();
                list.cutoff = Some(now);
            }
            self.write(role, &list).await?;
            Ok(list)
        }
        .await;
        // A failed unlock only delays the next writer until the lock expires.
        if let Err(e) = self.store.unlock(&lock, &holder).await {
            tracing::warn!(lock, error = %e, "releasing the deny-policy lock failed");
        }
        result
    }

    async fn acquire(&self, lock: &str, holder: &str) -> Result<(), IssueError> {
        for attempt in 0..50u32 {
            let until = self.clock.now() + TimeDelta::seconds(30);
            match self.store.try_lock(lock, holder, until).await {
                Ok(true) => return Ok(()),
                Ok(false) => tokio::time::sleep(Duration::from_millis(50 + u64::from(attempt) * 10)).await,
                Err(e) => return Err(IssueError::Unavailable(format!("lock {lock}: {e}"))),
            }
        }
        Err(IssueError::Unavailable(format!("lock {lock} is busy")))
    }

    async fn write(&self, role: &str, list: &DenyList) -> Result<(), IssueError> {
        if list.is_empty() {
            return match self
                .iam
                .delete_role_policy()
                .role_name(role)
                .policy_name(DENY_POLICY_NAME)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(err) if is_no_such_entity(&err) => Ok(()),
                Err(err) => Err(classify(err)),
            };
        }
        self.iam
            .put_role_policy()
            .role_name(role)
            .policy_name(DENY_POLICY_NAME)
            .policy_document(list.to_policy().to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

#[async_trait::async_trait]
impl CredentialRevoker for StsSessionRevoker {
    fn backend(&self) -> &'static str {
        "aws_session"
    }

    async fn revoke(&self, lease: &Lease) -> Result<(), IssueError> {
        let BackendRef::AwsSession { role_arn, session_name } = &lease.backend else {
            return Err(IssueError::WrongBackend { expected: "aws_session", got: lease.backend.kind() });
        };
        if lease.expires_at <= self.clock.now() {
            // The session has ended by itself; nothing to deny.
            return Ok(());
        }
        let expires_at = lease.expires_at;
        self.update(role_arn, |list, _| list.add(session_name, expires_at)).await.map(|_| ())
    }
}

fn is_no_such_entity<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(err, SdkError::ServiceError(e) if e.err().code() == Some("NoSuchEntity"))
}

fn classify<E: ProvideErrorMetadata, R: std::fmt::Debug>(err: SdkError<E, R>) -> IssueError {
    let failure = AwsFailure::from(err);
    match failure.code() {
        Some("Throttling" | "ServiceFailure" | "ServiceUnavailable" | "ConcurrentModification") | None => {
            IssueError::Unavailable(failure.to_string())
        }
        Some(_) => IssueError::Rejected(failure.to_string()),
    }
}

/// Percent-decoding of IAM's URL-encoded policy documents (RFC 3986). Documents that are not
/// encoded (LocalStack returns them as written) pass through unchanged.
pub fn decode_policy_document(raw: &str) -> String {
    if raw.trim_start().starts_with('{') {
        return raw.to_owned();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn entries_group_by_expiry_hour_and_prune_when_expired() {
        let mut list = DenyList::default();
        list.add("01AAAAAAAAAAAAAAAAAAAAAAAA", at("2026-11-25T12:10:00Z"));
        list.add("01BBBBBBBBBBBBBBBBBBBBBBBB", at("2026-11-25T12:50:00Z"));
        list.add("01CCCCCCCCCCCCCCCCCCCCCCCC", at("2026-11-25T14:00:00Z"));
        assert_eq!(list.by_expiry_hour.len(), 2, "12:10 and 12:50 share the 13:00 statement");
        let round = DenyList::from_policy(&list.to_policy()).unwrap();
        assert_eq!(round, list);
        list.prune(at("2026-11-25T13:00:00Z"));
        assert_eq!(list.sessions().into_iter().collect::<Vec<_>>(), vec!["01CCCCCCCCCCCCCCCCCCCCCCCC"]);
        list.prune(at("2026-11-25T14:00:00Z"));
        assert!(list.is_empty());
    }

    #[test]
    fn cutoff_round_trips_and_expires_after_the_longest_session() {
        let mut list = DenyList { cutoff: Some(at("2026-11-25T12:00:00Z")), ..DenyList::default() };
        assert_eq!(DenyList::from_policy(&list.to_policy()).unwrap(), list);
        list.prune(at("2026-11-25T23:59:59Z"));
        assert!(list.cutoff.is_some());
        list.prune(at("2026-11-26T00:00:00Z"));
        assert!(list.is_empty());
    }

    #[test]
    fn foreign_statements_are_refused() {
        let doc = json!({"Version": "2012-10-17", "Statement": [{"Sid": "Hand", "Effect": "Deny", "Action": "*", "Resource": "*"}]});
        assert!(DenyList::from_policy(&doc).is_err());
    }

    #[test]
    fn role_names_and_decoding() {
        assert_eq!(role_name("arn:aws:iam::123456789012:role/deploy"), Some("deploy"));
        assert_eq!(role_name("arn:aws:iam::123456789012:role/team/a/deploy"), Some("deploy"));
        assert_eq!(role_name("arn:aws:iam::123456789012:user/x"), None);
        assert_eq!(decode_policy_document("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(decode_policy_document("{\"a\":1}"), "{\"a\":1}");
    }
}
