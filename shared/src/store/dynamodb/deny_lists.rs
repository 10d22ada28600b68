//! Deny lists of STS sessions ([`DenyListStore`]) and the advisory locks of their IAM writers,
//! in the lease table.
//!
//! # Deny-list item (`pk = denylist#<role key>`)
//!
//! Attributes: `role` (S, [`RoleRef::key`](crate::denylist::RoleRef::key)), `list` (S, the
//! [`DenyList`] as JSON), `version` (N, +1 per write, every write conditional on it),
//! `rendered` (N, the version IAM holds), `ttl` (N, two days after the last write: every entry
//! has expired by then). While `rendered < version` the item is in the `due` index under the
//! partition `DENYLIST` (`due_at` = the write's second), where the revoker finds pending lists;
//! marking it rendered removes it from there.

use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, TimeDelta, Utc};

use super::item::{Item, Reader, attr, n, s, secs, unavailable};
use super::keys::lock_key;
use super::{DUE_INDEX, DynamoLeaseStore, PAGE_MAX};
use crate::denylist::{DenyList, DenyListRendering, DenyListStore, StoredDenyList};
use crate::lease::StoreError;

/// The `due` partition of pending deny lists.
const PENDING_PARTITION: &str = "DENYLIST";
/// How long after its last write a deny-list item is garbage-collected (TTL): longer than any
/// STS session, so every entry has expired by then.
const DENY_LIST_RETENTION: TimeDelta = TimeDelta::days(2);
/// How long after its `until` a lock item is garbage-collected (TTL; expiry never depends on it).
const LOCK_RETENTION: TimeDelta = TimeDelta::days(1);

fn deny_list_pk(role: &str) -> String {
    format!("denylist#{role}")
}

fn parse_deny_list(item: &Item) -> Result<StoredDenyList, StoreError> {
    let r = Reader::new(item);
    let list: DenyList =
        serde_json::from_str(r.s(attr::LIST)?).map_err(|e| r.corrupt(format!("attribute list: {e}")))?;
    Ok(StoredDenyList {
        role: r.s(attr::ROLE)?.to_owned(),
        list,
        version: r.n(attr::VERSION)?,
        rendered_version: r.n(attr::RENDERED)?,
    })
}

#[async_trait::async_trait]
impl DenyListStore for DynamoLeaseStore {
    async fn deny_list(&self, role: &str) -> Result<Option<StoredDenyList>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(deny_list_pk(role)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("deny_list", &self.table, e))?;
        output.item().map(parse_deny_list).transpose()
    }

    async fn put_deny_list(
        &self,
        role: &str,
        expected_version: Option<u64>,
        list: &DenyList,
    ) -> Result<StoredDenyList, StoreError> {
        let text = serde_json::to_string(list)
            .map_err(|e| StoreError::Unavailable(format!("encoding the deny list of {role}: {e}")))?;
        let now = self.clock.now();
        let gc_at = now.checked_add_signed(DENY_LIST_RETENTION).unwrap_or(now);
        let conflict =
            || StoreError::Stale { key: deny_list_pk(role), expected: format!("{expected_version:?}") };
        let Some(expected) = expected_version else {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(attr::PK, s(deny_list_pk(role)))
                .item(attr::ROLE, s(role))
                .item(attr::LIST, s(text.clone()))
                .item(attr::VERSION, n(1))
                .item(attr::RENDERED, n(0))
                .item(attr::DUE_PK, s(PENDING_PARTITION))
                .item(attr::DUE_AT, secs(now))
                .item(attr::TTL, secs(gc_at))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", attr::PK)
                .send()
                .await;
            return match result {
                Ok(_) => Ok(StoredDenyList {
                    role: role.to_owned(),
                    list: list.clone(),
                    version: 1,
                    rendered_version: 0,
                }),
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(PutItemError::is_conditional_check_failed_exception) =>
                {
                    Err(conflict())
                }
                Err(err) => Err(unavailable("put_deny_list", &self.table, err)),
            };
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(deny_list_pk(role)))
            .update_expression(
                "SET #list = :list, #version = :next, #due_pk = :due_pk, #due_at = :now, #ttl = :ttl",
            )
            .condition_expression("#version = :expected")
            .expression_attribute_names("#list", attr::LIST)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#due_pk", attr::DUE_PK)
            .expression_attribute_names("#due_at", attr::DUE_AT)
            .expression_attribute_names("#ttl", attr::TTL)
            .expression_attribute_values(":list", s(text))
            .expression_attribute_values(":next", n(expected.saturating_add(1)))
            .expression_attribute_values(":expected", n(expected))
            .expression_attribute_values(":due_pk", s(PENDING_PARTITION))
            .expression_attribute_values(":now", secs(now))
            .expression_attribute_values(":ttl", secs(gc_at))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => {
                let item = output.attributes().ok_or_else(|| StoreError::Corrupt {
                    key: deny_list_pk(role),
                    detail: "put_deny_list returned no attributes".to_owned(),
                })?;
                parse_deny_list(item)
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Err(conflict())
            }
            Err(err) => Err(unavailable("put_deny_list", &self.table, err)),
        }
    }
}

#[async_trait::async_trait]
impl DenyListRendering for DynamoLeaseStore {
    async fn pending_deny_lists(&self, limit: usize) -> Result<Vec<StoredDenyList>, StoreError> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        while found.len() < limit {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("#due_pk = :due_pk")
                .expression_attribute_names("#due_pk", attr::DUE_PK)
                .expression_attribute_values(":due_pk", s(PENDING_PARTITION))
                .limit(i32::try_from((limit - found.len()).min(PAGE_MAX)).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("pending_deny_lists query", &self.table, e))?;
            for item in output.items() {
                found.push(parse_deny_list(item)?);
            }
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    async fn mark_deny_list_rendered(&self, role: &str, version: u64) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(deny_list_pk(role)))
            .update_expression("SET #rendered = :version REMOVE #due_pk, #due_at")
            .condition_expression("#version = :version")
            .expression_attribute_names("#rendered", attr::RENDERED)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#due_pk", attr::DUE_PK)
            .expression_attribute_names("#due_at", attr::DUE_AT)
            .expression_attribute_values(":version", n(version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Ok(false)
            }
            Err(err) => Err(unavailable("mark_deny_list_rendered", &self.table, err)),
        }
    }

    async fn try_lock(&self, name: &str, owner: &str, until: DateTime<Utc>) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::PK, s(lock_key(name)))
            .item(attr::NAME, s(name))
            .item(attr::OWNER, s(owner))
            .item(attr::UNTIL, secs(until))
            .item(attr::TTL, secs(until.checked_add_signed(LOCK_RETENTION).unwrap_or(until)))
            // Free, expired (same whole-second rule as `rules::lock_held`), or ours already.
            .condition_expression("attribute_not_exists(#pk) OR #until < :now OR #owner = :owner")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#until", attr::UNTIL)
            .expression_attribute_names("#owner", attr::OWNER)
            .expression_attribute_values(":now", secs(self.clock.now()))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(PutItemError::is_conditional_check_failed_exception) =>
            {
                Ok(false)
            }
            Err(err) => Err(unavailable("try_lock", &self.table, err)),
        }
    }

    async fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(attr::PK, s(lock_key(name)))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", attr::OWNER)
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not ours (any more), or already gone: nothing to release.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(DeleteItemError::is_conditional_check_failed_exception) =>
            {
                Ok(())
            }
            Err(err) => Err(unavailable("unlock", &self.table, err)),
        }
    }
}
