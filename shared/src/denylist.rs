//! Deny lists of STS sessions, one per role: the authoritative record of which sessions of a
//! role are revoked, kept in the lease store and rendered into the role's inline IAM policy
//! (`credbroker-revocations`) by the revoker.
//!
//! STS sessions cannot be deleted. A revoked session is denied everything by an inline policy
//! on its role matching `aws:userid` = `<role-id>:<lease-id>` (the session is named after the
//! lease) until it would have expired anyway. The list of those sessions is kept here, in a
//! versioned store item written with conditional updates, and IAM is only ever *written* from
//! it: IAM reads are eventually consistent, so a read-modify-write of the policy itself could
//! drop an entry written a moment before (a session whose lease is already `REVOKED` would
//! work again). The store records which version IAM holds; a list whose version is ahead is
//! pending, and the revoker renders pending lists on every sweep.
//!
//! Entries are grouped by the hour their sessions expire, so pruning drops whole statements
//! once that hour has passed. IAM allows 10,240 characters of inline policy per role; when the
//! list would not fit, it falls back to a cut-off on `aws:TokenIssueTime` for the whole role
//! (every session issued before now is denied, legitimate ones too, which is why it is logged
//! loudly), and the individual entries it covers are dropped. An administrator can request such
//! a cut-off directly; the lease API records it here and the revoker applies it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::lease::StoreError;

/// Name of the inline policy the revoker owns on each role.
pub const DENY_POLICY_NAME: &str = "credbroker-revocations";
/// IAM's limit for all inline policies of a role together, less room for the role's own.
pub const DEFAULT_MAX_POLICY_CHARS: usize = 8 * 1024;
/// STS sessions last at most 12 hours, so a cut-off older than that covers nothing.
pub const MAX_SESSION: TimeDelta = TimeDelta::hours(12);
const REVOKED_SID_PREFIX: &str = "CredbrokerRevokedUntil";
const CUTOFF_SID: &str = "CredbrokerCutoff";

/// The deny list of one role.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyList {
    /// Hour (UTC) by which the sessions expire → lease ids (session names).
    #[serde(default)]
    pub by_expiry_hour: BTreeMap<DateTime<Utc>, BTreeSet<String>>,
    /// Sessions issued before this are denied (fallback or emergency).
    #[serde(default)]
    pub cutoff: Option<DateTime<Utc>>,
}

impl DenyList {
    /// Adds a session that would stay valid until `expires_at`; `false` if it was listed.
    pub fn add(&mut self, session_name: &str, expires_at: DateTime<Utc>) -> bool {
        self.by_expiry_hour.entry(hour_ceiling(expires_at)).or_default().insert(session_name.to_owned())
    }

    /// Whether the session is denied (listed, or issued before the cut-off).
    pub fn denies(&self, session_name: &str, issued_at: Option<DateTime<Utc>>) -> bool {
        self.by_expiry_hour.values().any(|s| s.contains(session_name))
            || matches!((self.cutoff, issued_at), (Some(cutoff), Some(issued)) if issued < cutoff)
    }

    /// Raises the cut-off to `before` (a cut-off only ever moves later).
    pub fn cut_off(&mut self, before: DateTime<Utc>) {
        self.cutoff = Some(self.cutoff.map_or(before, |c| c.max(before)));
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

    /// Prunes at `now`, then, if the policy would not fit in `max_chars`, replaces the entries
    /// by a cut-off at `now` (which denies each of them, and every other session of the role
    /// issued before now). Returns whether it fell back.
    pub fn fit(&mut self, now: DateTime<Utc>, max_chars: usize) -> bool {
        self.prune(now);
        if self.to_policy().to_string().len() <= max_chars {
            return false;
        }
        self.by_expiry_hour.clear();
        self.cut_off(now);
        true
    }

    /// The inline policy that enforces this list.
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
}

fn hour_ceiling(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t);
    if floor == t { t } else { floor + TimeDelta::hours(1) }
}

/// A role as an ARN names it: `arn:<partition>:iam::<account>:role/<path/>name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleRef {
    pub partition: String,
    pub account: String,
    /// The role name (unique in its account, whatever its path).
    pub name: String,
}

impl RoleRef {
    pub fn parse(role_arn: &str) -> Option<Self> {
        let mut parts = role_arn.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let path = resource.strip_prefix("role/")?;
        let name = path.rsplit('/').next().unwrap_or(path);
        let valid = partition.starts_with("aws")
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !name.is_empty();
        valid.then(|| Self {
            partition: partition.to_owned(),
            account: account.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The store key of the role's deny list: one key per role, however its ARN spells the
    /// path, so two spellings can never hold two lists (or two locks) for one policy.
    pub fn key(&self) -> String {
        format!("{}:{}:{}", self.partition, self.account, self.name)
    }
}

/// A role's deny list as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDenyList {
    /// [`RoleRef::key`].
    pub role: String,
    pub list: DenyList,
    /// Bumped by every write; writes are conditional on it.
    pub version: u64,
    /// The version IAM is known to hold (0: none yet).
    pub rendered_version: u64,
}

impl StoredDenyList {
    /// Whether IAM may be behind this list.
    pub fn is_pending(&self) -> bool {
        self.rendered_version < self.version
    }
}

/// Where deny lists live: the lease store (same table, same durability). The lease API writes
/// through this (role cut-offs); rendering them into IAM needs [`DenyListRendering`] too.
#[async_trait::async_trait]
pub trait DenyListStore: Send + Sync + std::fmt::Debug {
    /// The role's list (a strongly consistent read), if it has one.
    async fn deny_list(&self, role: &str) -> Result<Option<StoredDenyList>, StoreError>;

    /// Writes `list` as the role's list: created when `expected_version` is `None` (fails with
    /// [`StoreError::Stale`] if one exists), else replaced if the stored version is still
    /// `expected_version` (`Stale` otherwise). The new version is `expected + 1` (1 for a new
    /// list), and the list is pending until [`DenyListRendering::mark_deny_list_rendered`]
    /// catches up.
    async fn put_deny_list(
        &self,
        role: &str,
        expected_version: Option<u64>,
        list: &DenyList,
    ) -> Result<StoredDenyList, StoreError>;
}

/// What the writer of the IAM deny policies needs beyond the lists: which are ahead of IAM,
/// marking one written, and the advisory lock that serialises the writers of one role's policy
/// (IAM has no conditional write). Only the revoker function (and local mode) writes IAM, so
/// the other functions' binaries do not carry this.
#[async_trait::async_trait]
pub trait DenyListRendering: DenyListStore {
    /// Lists whose version is ahead of IAM, at most `limit`, in no particular order.
    async fn pending_deny_lists(&self, limit: usize) -> Result<Vec<StoredDenyList>, StoreError>;

    /// Records that IAM holds `version` of the role's list. Only takes effect while `version`
    /// is still the stored version (a newer write keeps the list pending); returns whether it
    /// did.
    async fn mark_deny_list_rendered(&self, role: &str, version: u64) -> Result<bool, StoreError>;

    /// A short advisory lock (one writer of a role's IAM policy at a time): conditional create
    /// of `name` owned by `owner` until `until`; an expired lock (`until` strictly before the
    /// store's clock, whole seconds) may be taken over, and the current owner may take it
    /// again, which moves `until`. Returns whether this caller now holds it.
    async fn try_lock(&self, name: &str, owner: &str, until: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Releases `name` if `owner` still holds it (a no-op otherwise).
    async fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError>;
}

/// Applies `change` to the role's stored list, retrying on concurrent writes, and returns the
/// stored result. `change` returns whether it changed anything; nothing is written when it did
/// not (the stored list is returned as it is, or `None` when there is none).
pub async fn update(
    store: &dyn DenyListStore,
    role: &str,
    mut change: impl FnMut(&mut DenyList) -> bool,
) -> Result<Option<StoredDenyList>, StoreError> {
    const ATTEMPTS: u32 = 20;
    for _ in 0..ATTEMPTS {
        let current = store.deny_list(role).await?;
        let mut list = current.as_ref().map(|c| c.list.clone()).unwrap_or_default();
        if !change(&mut list) {
            return Ok(current);
        }
        match store.put_deny_list(role, current.as_ref().map(|c| c.version), &list).await {
            Ok(stored) => return Ok(Some(stored)),
            Err(StoreError::Stale { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(format!("deny list of {role}: {ATTEMPTS} concurrent writers in a row")))
}

/// Records a cut-off in the role's stored list: every session issued before `before` is denied
/// once the revoker renders it. The lease API's part of an emergency cut-off (no IAM access).
pub async fn request_cutoff(
    store: &dyn DenyListStore,
    role: &RoleRef,
    before: DateTime<Utc>,
) -> Result<StoredDenyList, StoreError> {
    let stored = update(store, &role.key(), |list| {
        let old = list.cutoff;
        list.cut_off(before);
        list.cutoff != old
    })
    .await?;
    stored.ok_or_else(|| StoreError::Unavailable(format!("deny list of {} vanished", role.key())))
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
        assert!(list.add("01AAAAAAAAAAAAAAAAAAAAAAAA", at("2026-11-25T12:10:00Z")));
        assert!(list.add("01BBBBBBBBBBBBBBBBBBBBBBBB", at("2026-11-25T12:50:00Z")));
        assert!(list.add("01CCCCCCCCCCCCCCCCCCCCCCCC", at("2026-11-25T14:00:00Z")));
        assert!(!list.add("01CCCCCCCCCCCCCCCCCCCCCCCC", at("2026-11-25T14:00:00Z")), "listed once");
        assert_eq!(list.by_expiry_hour.len(), 2, "12:10 and 12:50 share the 13:00 statement");
        let statements = list.to_policy()["Statement"].as_array().unwrap().len();
        assert_eq!(statements, 2);
        list.prune(at("2026-11-25T13:00:00Z"));
        assert_eq!(list.sessions().into_iter().collect::<Vec<_>>(), vec!["01CCCCCCCCCCCCCCCCCCCCCCCC"]);
        list.prune(at("2026-11-25T14:00:00Z"));
        assert!(list.is_empty());
    }

    #[test]
    fn the_stored_form_round_trips() {
        let mut list = DenyList::default();
        list.add("01AAAAAAAAAAAAAAAAAAAAAAAA", at("2026-11-25T12:10:00Z"));
        list.cut_off(at("2026-11-25T11:00:00Z"));
        let text = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<DenyList>(&text).unwrap(), list);
    }

    #[test]
    fn cutoff_only_moves_later_and_expires_after_the_longest_session() {
        let mut list = DenyList::default();
        list.cut_off(at("2026-11-25T12:00:00Z"));
        list.cut_off(at("2026-11-25T11:00:00Z"));
        assert_eq!(list.cutoff, Some(at("2026-11-25T12:00:00Z")));
        assert!(list.denies("x", Some(at("2026-11-25T11:59:59Z"))));
        assert!(!list.denies("x", Some(at("2026-11-25T12:00:00Z"))));
        list.prune(at("2026-11-25T23:59:59Z"));
        assert!(list.cutoff.is_some());
        list.prune(at("2026-11-26T00:00:00Z"));
        assert!(list.is_empty());
    }

    #[test]
    fn an_overflowing_list_falls_back_to_a_cutoff() {
        let now = at("2026-11-25T12:00:00Z");
        let mut list = DenyList::default();
        for i in 0..400 {
            list.add(&format!("01AAAAAAAAAAAAAAAAAAAA{i:04}"), now + TimeDelta::minutes(30));
        }
        assert!(list.fit(now, DEFAULT_MAX_POLICY_CHARS));
        assert!(list.by_expiry_hour.is_empty());
        assert_eq!(list.cutoff, Some(now));
        let mut small = DenyList::default();
        small.add("01AAAAAAAAAAAAAAAAAAAAAAAA", now + TimeDelta::minutes(30));
        assert!(!small.fit(now, DEFAULT_MAX_POLICY_CHARS));
        assert_eq!(small.sessions().len(), 1);
    }

    #[test]
    fn role_refs_ignore_the_path_and_keep_the_account() {
        let a = RoleRef::parse("arn:aws:iam::123456789012:role/deploy").unwrap();
        let b = RoleRef::parse("arn:aws:iam::123456789012:role/team/a/deploy").unwrap();
        let other = RoleRef::parse("arn:aws:iam::210987654321:role/deploy").unwrap();
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), other.key());
        assert_eq!(a.name, "deploy");
        for bad in [
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::1234:role/x",
            "arn:aws:sts::123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert!(RoleRef::parse(bad).is_none(), "{bad}");
        }
    }
}
