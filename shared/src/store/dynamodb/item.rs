//! The item codec of the lease table: attribute names, value constructors, and the strict
//! reader every item goes through (a problem is a [`StoreError::Corrupt`] naming the item).

use std::collections::HashMap;
use std::fmt;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::aws_failure::AwsFailure;
use crate::backend::BackendRef;
use crate::lease::{Lease, LeaseHolder, LeaseId, LeaseStatus, StoreError};

pub(super) type Item = HashMap<String, AttributeValue>;

/// Attribute names, in one place so expressions and parsing cannot disagree.
pub(super) mod attr {
    pub const PK: &str = "pk";
    pub const STATUS: &str = "status";
    pub const POLICY: &str = "policy";
    pub const GRANT: &str = "grant";
    pub const ISS: &str = "iss";
    pub const SUB: &str = "sub";
    pub const BACKEND: &str = "backend";
    pub const CREATED_AT: &str = "created_at";
    pub const ISSUED_AT: &str = "issued_at";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const MAX_EXPIRES_AT: &str = "max_expires_at";
    pub const NEXT_ACTION_AT: &str = "next_action_at";
    pub const ATTEMPTS: &str = "attempts";
    pub const LAST_ERROR: &str = "last_error";
    pub const OWNER: &str = "owner";
    pub const VERSION: &str = "version";
    pub const TTL: &str = super::super::TTL_ATTRIBUTE;
    pub const DUE_PK: &str = "due_pk";
    pub const DUE_AT: &str = "due_at";
    pub const HOLDER: &str = "holder";
    pub const CREATED_SK: &str = "created_sk";
    pub const JTI: &str = "jti";
    pub const NAME: &str = "name";
    pub const UNTIL: &str = "until";
    pub const ROLE: &str = "role";
    pub const LIST: &str = "list";
    pub const RENDERED: &str = "rendered";
    pub const USES: &str = "uses";
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn secs(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp())
}

pub(super) fn status(status: LeaseStatus) -> AttributeValue {
    s(status.as_str())
}

/// The attribute names referenced as `#name` in expressions we wrote, each once (DynamoDB
/// refuses unused or missing placeholders).
pub(super) fn placeholder_names<'a>(expressions: &[&'a str]) -> Vec<&'a str> {
    let mut names: Vec<&str> = expressions
        .iter()
        .flat_map(|expression| expression.split('#').skip(1))
        .filter_map(|rest| {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

pub(super) fn unavailable<E, R>(op: &str, table: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata,
    R: fmt::Debug,
{
    StoreError::Unavailable(format!("dynamodb {op} on table {table}: {}", AwsFailure::from(err)))
}

pub(super) fn build_error(what: &str, err: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("dynamodb: building {what}: {err}"))
}

/// Strict reading of one item: every problem is a [`StoreError::Corrupt`] naming the item.
pub(super) struct Reader<'a> {
    item: &'a Item,
    key: String,
}

impl<'a> Reader<'a> {
    pub(super) fn new(item: &'a Item) -> Self {
        let key = match item.get(attr::PK) {
            Some(AttributeValue::S(pk)) => pk.clone(),
            _ => "<item without pk>".to_owned(),
        };
        Self { item, key }
    }

    pub(super) fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt { key: self.key.clone(), detail }
    }

    pub(super) fn opt_s(&self, name: &str) -> Result<Option<&'a str>, StoreError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v)),
            Some(other) => Err(self.corrupt(format!("attribute {name}: expected S, got {other:?}"))),
        }
    }

    pub(super) fn s(&self, name: &str) -> Result<&'a str, StoreError> {
        self.opt_s(name)?.ok_or_else(|| self.corrupt(format!("attribute {name} is missing")))
    }

    pub(super) fn opt_n<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, StoreError>
    where
        T::Err: fmt::Display,
    {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse()
                .map(Some)
                .map_err(|e| self.corrupt(format!("attribute {name}: {v:?} is out of range: {e}"))),
            Some(other) => Err(self.corrupt(format!("attribute {name}: expected N, got {other:?}"))),
        }
    }

    pub(super) fn n<T: std::str::FromStr>(&self, name: &str) -> Result<T, StoreError>
    where
        T::Err: fmt::Display,
    {
        self.opt_n(name)?.ok_or_else(|| self.corrupt(format!("attribute {name} is missing")))
    }

    pub(super) fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.opt_n::<i64>(name)?
            .map(|secs| {
                DateTime::from_timestamp(secs, 0).ok_or_else(|| {
                    self.corrupt(format!("attribute {name}: {secs} is not a representable time"))
                })
            })
            .transpose()
    }

    pub(super) fn time(&self, name: &str) -> Result<DateTime<Utc>, StoreError> {
        self.opt_time(name)?.ok_or_else(|| self.corrupt(format!("attribute {name} is missing")))
    }
}

pub(super) fn parse_lease(item: &Item) -> Result<Lease, StoreError> {
    let r = Reader::new(item);
    let raw_id =
        r.s(attr::PK)?.strip_prefix("lease#").ok_or_else(|| r.corrupt("pk is not lease#<id>".to_owned()))?;
    let id = LeaseId::parse(raw_id)
        .filter(|id| id.as_str() == raw_id)
        .ok_or_else(|| r.corrupt(format!("{raw_id:?} is not a lease id")))?;
    let status = r.s(attr::STATUS)?;
    let status = LeaseStatus::parse(status)
        .ok_or_else(|| r.corrupt(format!("attribute status: unknown status {status:?}")))?;
    let backend: BackendRef = serde_json::from_str(r.s(attr::BACKEND)?)
        .map_err(|e| r.corrupt(format!("attribute backend: {e}")))?;
    Ok(Lease {
        id,
        status,
        policy: r.s(attr::POLICY)?.to_owned(),
        grant: r.s(attr::GRANT)?.to_owned(),
        holder: LeaseHolder { issuer: r.s(attr::ISS)?.to_owned(), subject: r.s(attr::SUB)?.to_owned() },
        backend,
        created_at: r.time(attr::CREATED_AT)?,
        issued_at: r.opt_time(attr::ISSUED_AT)?,
        expires_at: r.time(attr::EXPIRES_AT)?,
        max_expires_at: r.time(attr::MAX_EXPIRES_AT)?,
        next_action_at: r.time(attr::NEXT_ACTION_AT)?,
        attempts: r.n(attr::ATTEMPTS)?,
        last_error: r.opt_s(attr::LAST_ERROR)?.map(str::to_owned),
        owner: r.opt_s(attr::OWNER)?.map(str::to_owned),
        version: r.n(attr::VERSION)?,
        gc_at: r.time(attr::TTL)?,
    })
}

/// The use count of a replay-guard item; items written before use counts existed have none
/// and count as one use.
pub(super) fn token_uses(item: &Item) -> Result<u32, StoreError> {
    Ok(Reader::new(item).opt_n(attr::USES)?.unwrap_or(1))
}

/// The expiry (epoch seconds) of a replay-guard item.
pub(super) fn ttl_secs(item: &Item) -> Result<i64, StoreError> {
    Reader::new(item).n(attr::TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_names_finds_each_name_once() {
        assert_eq!(placeholder_names(&["SET #a = :x, #b_c = #b_c + :y REMOVE #z"]), ["a", "b_c", "z"]);
        assert_eq!(
            placeholder_names(&["SET #a = :x", "attribute_exists(#pk) AND (#a IN (:p) OR #c <= :n)"]),
            ["a", "c", "pk"]
        );
        assert!(placeholder_names(&["SET x = :y"]).is_empty());
    }
}
