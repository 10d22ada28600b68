//! DynamoDB lease store: the cloud adapter (one table per deployment).
//!
//! # Table
//!
//! - Partition key `pk` (S), no sort key; on-demand billing; TTL on attribute `ttl`.
//! - GSI `due` (projection ALL): hash `due_pk` (S), range `due_at` (N). Sparse: only lease
//!   items whose status needs action carry these two attributes.
//! - GSI `identity` (projection ALL): hash `holder` (S), range `created_sk` (S). Only lease
//!   items carry them.
//!
//! [`create_table`] creates exactly this; the SAM and Terraform templates must match it.
//!
//! # Lease item (`pk = lease#<id>`)
//!
//! | attribute        | type | content                                                      |
//! |------------------|------|--------------------------------------------------------------|
//! | `pk`             | S    | `lease#<ULID>`                                               |
//! | `status`         | S    | `PENDING` `ACTIVE` `REVOKING` `REVOKED` `IRREVOCABLE`        |
//! | `policy`, `grant`| S    | policy and grant names                                       |
//! | `iss`, `sub`     | S    | holder issuer and subject, verbatim                          |
//! | `backend`        | S    | `BackendRef` as JSON (`{"kind":"aws_session",…}`)            |
//! | `created_at`     | N    | epoch seconds                                                |
//! | `issued_at`      | N    | epoch seconds; absent until active                           |
//! | `expires_at`, `max_expires_at`, `next_action_at` | N | epoch seconds                   |
//! | `attempts`       | N    | revocation attempts                                          |
//! | `last_error`     | S    | absent when none                                             |
//! | `owner`          | S    | revocation claimer while a claim is held (`REVOKING`); absent otherwise |
//! | `version`        | N    | optimistic-concurrency counter, +1 per transition            |
//! | `ttl`            | N    | `gc_at`, epoch seconds (DynamoDB TTL: garbage collection only) |
//! | `due_pk`         | S    | `<STATUS>#<shard>`, e.g. `ACTIVE#5`; only while the status needs action |
//! | `due_at`         | N    | = `next_action_at`; present exactly when `due_pk` is         |
//! | `holder`         | S    | [`holder_key`]: `<byte length of iss>#<iss>#<sub>`, or `sha256#<64 hex>` of that text when it exceeds 1024 bytes |
//! | `created_sk`     | S    | `<created_at epoch seconds, 12 digits zero-padded>#<id>`     |
//!
//! The shard is [`shard_of`]: FNV-1a (64-bit) of the id's bytes modulo `shards` (default 8),
//! so a lease keeps its shard across status changes. Every reader and writer of a table must
//! use the same `shards`; to grow it, readers must first query the larger range.
//!
//! The length prefix in `holder` makes the issuer/subject split unambiguous (`("a#b", "c")`
//! and `("a", "b#c")` differ) while staying readable in the console; hashing long values keeps
//! the GSI partition key under DynamoDB's 2048-byte limit.
//!
//! # Transitions
//!
//! Every transition is one `UpdateItem` conditional on `attribute_exists(pk) AND version =
//! :expected AND (<allowed states>)`, sets `version = :expected + 1` and returns ALL_NEW; on a
//! failed condition ALL_OLD tells `NotFound` (no item) from `Conflict` (any item).
//!
//! | method                  | allowed states                                   | effect on `due_pk` / `due_at` |
//! |-------------------------|--------------------------------------------------|-------------------------------|
//! | `activate`              | `PENDING`                                        | `ACTIVE#s` / `expires_at`     |
//! | `record_issue_failure`  | `PENDING`                                        | `PENDING#s` / `due_at`        |
//! | `claim_for_revocation`  | `PENDING` `ACTIVE` `IRREVOCABLE`, or `REVOKING` with `next_action_at <= now` | `REVOKING#s` / deadline; SET `owner` |
//! | `record_revoke_failure` | `REVOKING`                                       | `REVOKING#s` or `IRREVOCABLE#s` / `retry_at`; REMOVE `owner`; `attempts + 1` |
//! | `mark_revoked`          | `REVOKING`                                       | REMOVE both (and `owner`); `next_action_at = revoked_at` |
//! | `renew`                 | `ACTIVE` with `max_expires_at >= :expires_at`    | `ACTIVE#s` / new `expires_at` |
//!
//! `now` is the store's clock (`with_clock`), in epoch seconds. `record_revoke_failure` never
//! lowers `ttl`: it first adds `ttl <= :gc_at` to the condition and SETs `ttl`; when only that
//! part failed (ALL_OLD still `REVOKING` at the expected version) it repeats the update without
//! touching `ttl`, still conditional on the version.
//!
//! `list_due` merges the `due` partitions (status needing action × shard) in `due_at` order: it
//! reads the first page of each at once (about `limit / shards` items), then further pages only
//! of the partitions that hold the merge back, until `limit` leases are settled (nothing unread
//! can be due earlier) or every partition is exhausted. A thousand leases expiring in the same
//! second cost about `limit` items read per call, not a thousand.
//!
//! `list_live` queries the `identity` partition of the holder when the filter names one, else
//! every `due` partition (status needing action × shard) without a bound on `due_at`; policy,
//! id prefix (`begins_with(pk, …)`), holder and `status <> REVOKED` are FilterExpressions, the
//! backend kind (inside the `backend` JSON) is checked client-side. Never a Scan.
//!
//! # Lock item (`pk = lock#<name>`)
//!
//! [`lock_key`]: `lock#<name>`, or `lock#sha256#<hex>` for names over 1024 bytes or starting
//! with `sha256#`. Attributes: `name` (S, verbatim), `owner` (S), `until` (N, epoch seconds),
//! `ttl` (N, `until` + 1 day, GC only). `try_lock` is a PutItem conditional on
//! `attribute_not_exists(pk) OR until < :now OR owner = :owner` (free, expired, or re-entrant:
//! the same owner extends it); `unlock` a DeleteItem conditional on `owner = :owner`, whose
//! failure is a no-op. Lock items carry no GSI attributes.
//!
//! # Replay-guard item (`pk = jti#<hash>`)
//!
//! `<hash>` is [`jti_key`]: lowercase hex SHA-256 of `u64be(len(iss)) ‖ iss ‖ jti` (bounded
//! size whatever the token carries, unambiguous split). Attributes: `iss` (S), `jti` (S),
//! `ttl` (N, the token's expiry). Written with `attribute_not_exists(pk) OR #ttl < :now`.
//!
//! # Time precision
//!
//! All times are epoch **seconds**: sub-second parts are dropped (floored) on write, so a lease
//! read back equals the one written only if it had whole-second times.
//!
//! # Consistency
//!
//! `get` is strongly consistent; `list_due`, `list_live` and `by_holder` read GSIs, which are
//! eventually consistent: a lease may appear with a slightly stale status or be missing for a
//! moment. The revoker tolerates this because every transition it makes is conditional on
//! `version`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValue, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

use crate::aws_failure::AwsFailure;
use crate::clock::{Clock, SystemClock};
use crate::lease::{
    Activation, BackendRef, Claim, JtiOutcome, Lease, LeaseHolder, LeaseId, LeaseStatus, LeaseStore,
    LiveFilter, RevokeFailure, StoreError,
};
use crate::store::rules;

/// Name of the sparse GSI the revoker queries.
pub const DUE_INDEX: &str = "due";
/// Name of the GSI listing one workload identity's leases.
pub const IDENTITY_INDEX: &str = "identity";
/// The TTL attribute (garbage collection only).
pub const TTL_ATTRIBUTE: &str = "ttl";
/// Default number of `due` partitions per status.
pub const DEFAULT_SHARDS: u16 = 8;

/// Above this many bytes `holder` is hashed (GSI partition keys may hold at most 2048).
const HOLDER_KEY_MAX: usize = 1024;
/// How long after its `until` a lock item is garbage-collected (TTL; expiry never depends on it).
const LOCK_RETENTION: TimeDelta = TimeDelta::days(1);
/// Above this many bytes a lock name is hashed in the lock item's key.
const LOCK_NAME_MAX: usize = 1024;
/// Largest page asked of one Query (DynamoDB caps a page at 1 MB anyway).
const PAGE_MAX: usize = 1000;
/// How long [`create_table`] waits for the table and its indexes to become ACTIVE.
const CREATE_TIMEOUT: Duration = Duration::from_mins(5);

type Item = HashMap<String, AttributeValue>;

/// Attribute names, in one place so expressions and parsing cannot disagree.
mod attr {
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
    pub const TTL: &str = super::TTL_ATTRIBUTE;
    pub const DUE_PK: &str = "due_pk";
    pub const DUE_AT: &str = "due_at";
    pub const HOLDER: &str = "holder";
    pub const CREATED_SK: &str = "created_sk";
    pub const JTI: &str = "jti";
    pub const NAME: &str = "name";
    pub const UNTIL: &str = "until";
}

/// A [`LeaseStore`] on one DynamoDB table (layout in the module docs).
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    client: Client,
    table: String,
    shards: u16,
    /// "Now" for the replay-guard and lock expiry conditions and for lapsed revocation claims.
    clock: Arc<dyn Clock>,
}

impl DynamoLeaseStore {
    /// A store on `table` (which must already exist, see [`create_table`]), with
    /// [`DEFAULT_SHARDS`] `due` partitions per status.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), shards: DEFAULT_SHARDS, clock: Arc::new(SystemClock) }
    }

    /// Sets the number of `due` partitions per status (at least 1). More shards spread a
    /// large backlog of due leases over more partitions; each `list_due` costs at least one
    /// Query per status that needs action per shard. All readers and writers of a table must
    /// agree.
    #[must_use]
    pub fn with_shards(mut self, shards: u16) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Use `clock` as "now" for the replay-guard and lock expiry conditions and for lapsed
    /// revocation claims.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The number of `due` partitions per status.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    fn due_pk(&self, status: LeaseStatus, id: &LeaseId) -> String {
        format!("{}#{}", status.as_str(), shard_of(id, self.shards))
    }

    fn lease_item(&self, lease: &Lease) -> Result<Item, StoreError> {
        let backend = serde_json::to_string(&lease.backend)
            .map_err(|e| StoreError::Unavailable(format!("encoding backend of lease {}: {e}", lease.id)))?;
        let mut item = Item::new();
        item.insert(attr::PK.into(), s(lease_pk(&lease.id)));
        item.insert(attr::STATUS.into(), s(lease.status.as_str()));
        item.insert(attr::POLICY.into(), s(&lease.policy));
        item.insert(attr::GRANT.into(), s(&lease.grant));
        item.insert(attr::ISS.into(), s(&lease.holder.issuer));
        item.insert(attr::SUB.into(), s(&lease.holder.subject));
        item.insert(attr::BACKEND.into(), s(backend));
        item.insert(attr::CREATED_AT.into(), secs(lease.created_at));
        if let Some(issued_at) = lease.issued_at {
            item.insert(attr::ISSUED_AT.into(), secs(issued_at));
        }
        item.insert(attr::EXPIRES_AT.into(), secs(lease.expires_at));
        item.insert(attr::MAX_EXPIRES_AT.into(), secs(lease.max_expires_at));
        item.insert(attr::NEXT_ACTION_AT.into(), secs(lease.next_action_at));
        item.insert(attr::ATTEMPTS.into(), n(lease.attempts));
        if let Some(error) = &lease.last_error {
            item.insert(attr::LAST_ERROR.into(), s(error));
        }
        if let Some(owner) = &lease.owner {
            item.insert(attr::OWNER.into(), s(owner));
        }
        item.insert(attr::VERSION.into(), n(lease.version));
        item.insert(attr::TTL.into(), secs(lease.gc_at));
        if lease.status.needs_action() {
            item.insert(attr::DUE_PK.into(), s(self.due_pk(lease.status, &lease.id)));
            item.insert(attr::DUE_AT.into(), secs(lease.next_action_at));
        }
        item.insert(attr::HOLDER.into(), s(holder_key(&lease.holder)));
        item.insert(attr::CREATED_SK.into(), s(created_sk(lease.created_at, &lease.id)));
        Ok(item)
    }

    /// One conditional lease update (see [`Update`]); `Err(Refused)` when the condition
    /// failed, with the item as it was (ALL_OLD) if it exists.
    async fn conditional_update(
        &self,
        id: &LeaseId,
        expected_version: u64,
        update: &Update,
    ) -> Result<Result<Lease, Refused>, StoreError> {
        let next_version = expected_version.checked_add(1).ok_or_else(|| StoreError::Conflict {
            id: id.clone(),
            expected: format!("a version below {expected_version}"),
        })?;
        let mut expression = format!("SET {}, #version = :next_version", update.set);
        if !update.remove.is_empty() {
            let names: Vec<String> = update.remove.iter().map(|name| format!("#{name}")).collect();
            expression = format!("{expression} REMOVE {}", names.join(", "));
        }
        let condition =
            format!("attribute_exists(#pk) AND #version = :expected_version AND ({})", update.condition);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(lease_pk(id)))
            .expression_attribute_values(":expected_version", n(expected_version))
            .expression_attribute_values(":next_version", n(next_version))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        // Every attribute name goes through a `#name` placeholder: several of ours (status,
        // ttl, owner, …) are DynamoDB reserved words.
        for name in placeholder_names(&[&expression, &condition]) {
            request = request.expression_attribute_names(format!("#{name}"), name);
        }
        for (placeholder, value) in &update.values {
            request = request.expression_attribute_values(*placeholder, value.clone());
        }
        let result = request.update_expression(expression).condition_expression(condition).send().await;
        match result {
            Ok(output) => {
                let item = output.attributes().ok_or_else(|| StoreError::Corrupt {
                    key: lease_pk(id),
                    detail: format!("{} returned no attributes", update.op),
                })?;
                parse_lease(item).map(Ok)
            }
            Err(err) => match err.as_service_error() {
                // ALL_OLD on a failed condition tells "not there" from "not in that state".
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(Err(match failed.item() {
                        Some(item) if !item.is_empty() => Refused::Old(item.clone()),
                        _ => Refused::Missing,
                    }))
                }
                _ => Err(unavailable(update.op, &self.table, err)),
            },
        }
    }

    /// [`Self::conditional_update`], with a refusal mapped to `NotFound` or `Conflict`.
    async fn transition(
        &self,
        id: &LeaseId,
        expected_version: u64,
        update: Update,
    ) -> Result<Lease, StoreError> {
        match self.conditional_update(id, expected_version, &update).await? {
            Ok(lease) => Ok(lease),
            Err(refused) => Err(refused.into_error(id, update.expected)),
        }
    }

    /// One page (at most `page` leases) of a `due` partition, from `start`; the key to continue
    /// from, if the partition may hold more.
    async fn query_due_page(
        client: Client,
        table: String,
        due_pk: String,
        now: i64,
        page: usize,
        start: Option<Item>,
    ) -> Result<(Vec<Lease>, Option<Item>), StoreError> {
        let output = client
            .query()
            .table_name(&table)
            .index_name(DUE_INDEX)
            .key_condition_expression("#due_pk = :due_pk AND #due_at <= :now")
            .expression_attribute_names("#due_pk", attr::DUE_PK)
            .expression_attribute_names("#due_at", attr::DUE_AT)
            .expression_attribute_values(":due_pk", s(&due_pk))
            .expression_attribute_values(":now", n(now))
            .scan_index_forward(true)
            .limit(i32::try_from(page.clamp(1, PAGE_MAX)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| unavailable("list_due query", &table, e))?;
        let leases = output.items().iter().map(parse_lease).collect::<Result<Vec<_>, _>>()?;
        let next = output.last_evaluated_key().filter(|key| !key.is_empty()).cloned();
        Ok((leases, next))
    }
}

/// Where `list_due` stands in one `due` partition.
#[derive(Debug)]
struct DueCursor {
    due_pk: String,
    /// Whether the partition may hold more due leases than were read.
    more: bool,
    /// Where to continue reading (`None`: from the start).
    start: Option<Item>,
    /// `next_action_at` (= `due_at`) of the last lease read: whatever the partition still
    /// holds is due no earlier.
    last: Option<DateTime<Utc>>,
    /// Read in the next round.
    wanted: bool,
}

/// One conditional update of a lease item, always conditional on the item existing at the
/// expected version and always bumping `version`.
struct Update {
    op: &'static str,
    /// The transition's own condition (the allowed states), ANDed with existence and version.
    condition: String,
    /// The SET clause, without the version bump.
    set: String,
    /// Attributes to REMOVE.
    remove: &'static [&'static str],
    /// Values of the `:placeholders` in `condition` and `set`.
    values: Vec<(&'static str, AttributeValue)>,
    /// The `expected` text of the `Conflict` when the condition fails on an existing item.
    expected: String,
}

/// Why a conditional update was refused.
enum Refused {
    Missing,
    /// The item as it was (it exists but failed the condition).
    Old(Item),
}

impl Refused {
    fn into_error(self, id: &LeaseId, expected: String) -> StoreError {
        match self {
            Self::Missing => StoreError::NotFound(id.clone()),
            Self::Old(_) => StoreError::Conflict { id: id.clone(), expected },
        }
    }
}

/// `list_live`'s paged Query of one index partition, with the filter applied server-side where
/// it is an exact attribute comparison and client-side (always, as the final word) otherwise.
#[derive(Clone)]
struct LiveQuery {
    client: Client,
    table: String,
    filter: LiveFilter,
    limit: usize,
}

impl LiveQuery {
    fn new(client: Client, table: String, filter: LiveFilter, limit: usize) -> Self {
        Self { client, table, filter, limit }
    }

    /// Matching live leases of the partition `key_name = key_value` of `index`, at most `limit`.
    async fn run(self, index: &str, key_name: &str, key_value: String) -> Result<Vec<Lease>, StoreError> {
        // Read capacity is spent on every item the Query reads, filtered or not, so the
        // FilterExpression only saves transfer. The backend kind sits inside a JSON string and
        // is matched client-side rather than with `contains` on its serialised form.
        let mut conditions = vec!["#status <> :revoked"];
        let mut values = vec![(":revoked", status(LeaseStatus::Revoked))];
        if let Some(prefix) = &self.filter.id_prefix {
            conditions.push("begins_with(#pk, :pk_prefix)");
            values.push((":pk_prefix", s(format!("lease#{prefix}"))));
        }
        if let Some(holder) = &self.filter.holder {
            conditions.push("#iss = :iss AND #sub = :sub");
            values.push((":iss", s(&holder.issuer)));
            values.push((":sub", s(&holder.subject)));
        }
        if let Some(policy) = &self.filter.policy {
            conditions.push("#policy = :policy");
            values.push((":policy", s(policy)));
        }
        let filter_expression = conditions.join(" AND ");
        let key_condition = "#key = :key";
        let mut found: Vec<Lease> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(key_condition)
                .filter_expression(&filter_expression)
                .expression_attribute_names("#key", key_name)
                .expression_attribute_values(":key", s(&key_value))
                .limit(i32::try_from(PAGE_MAX).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            for name in placeholder_names(&[&filter_expression]) {
                request = request.expression_attribute_names(format!("#{name}"), name);
            }
            for (placeholder, value) in &values {
                request = request.expression_attribute_values(*placeholder, value.clone());
            }
            let output = request.send().await.map_err(|e| unavailable("list_live query", &self.table, e))?;
            for item in output.items() {
                let lease = parse_lease(item)?;
                if rules::is_live_match(&lease, &self.filter) {
                    found.push(lease);
                    if found.len() == self.limit {
                        return Ok(found);
                    }
                }
            }
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(found),
            }
        }
    }
}

/// The partition-key value of a lock item: `lock#<name>`, or `lock#sha256#<hex>` of the name
/// when it is longer than 1024 bytes or itself starts with `sha256#` (so the two forms never
/// collide).
pub fn lock_key(name: &str) -> String {
    if name.len() <= LOCK_NAME_MAX && !name.starts_with("sha256#") {
        format!("lock#{name}")
    } else {
        format!("lock#sha256#{}", hex(&Sha256::digest(name.as_bytes())))
    }
}

/// The partition-key value of a lease item.
fn lease_pk(id: &LeaseId) -> String {
    format!("lease#{id}")
}

/// The `due` shard of a lease: FNV-1a (64-bit) of the id's bytes modulo `shards`. Stable
/// across Rust versions and platforms (unlike `std`'s hasher), so every writer agrees.
pub fn shard_of(id: &LeaseId, shards: u16) -> u16 {
    let shard = fnv1a_64(id.as_str().as_bytes()) % u64::from(shards.max(1));
    u16::try_from(shard).unwrap_or(0)
}

/// FNV-1a, 64-bit: stable across releases and platforms (unlike `std`'s hasher).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The `holder` GSI partition key: `<byte length of iss>#<iss>#<sub>`, or `sha256#<hex>` of
/// that text when it is longer than 1024 bytes.
pub fn holder_key(holder: &LeaseHolder) -> String {
    let plain = format!("{}#{}#{}", holder.issuer.len(), holder.issuer, holder.subject);
    if plain.len() <= HOLDER_KEY_MAX {
        plain
    } else {
        format!("sha256#{}", hex(&Sha256::digest(plain.as_bytes())))
    }
}

/// The `identity` GSI sort key: zero-padded creation second, then the id, so newest-first
/// order is total. Times outside 1970..=33658 AD are clamped (order stays monotone).
fn created_sk(created_at: DateTime<Utc>, id: &LeaseId) -> String {
    let secs = created_at.timestamp().clamp(0, 999_999_999_999);
    format!("{secs:012}#{id}")
}

/// The replay-guard item's partition key: `jti#` + hex SHA-256 of
/// `u64be(len(iss)) ‖ iss ‖ jti`.
pub fn jti_key(issuer: &str, jti: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(u64::try_from(issuer.len()).unwrap_or(u64::MAX).to_be_bytes());
    digest.update(issuer.as_bytes());
    digest.update(jti.as_bytes());
    format!("jti#{}", hex(&digest.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn secs(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp())
}

fn status(status: LeaseStatus) -> AttributeValue {
    s(status.as_str())
}

/// The attribute names referenced as `#name` in expressions we wrote, each once (DynamoDB
/// refuses unused or missing placeholders).
fn placeholder_names<'a>(expressions: &[&'a str]) -> Vec<&'a str> {
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

fn unavailable<E, R>(op: &str, table: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata,
    R: fmt::Debug,
{
    StoreError::Unavailable(format!("dynamodb {op} on table {table}: {}", AwsFailure::from(err)))
}

fn build_error(what: &str, err: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("dynamodb: building {what}: {err}"))
}

/// Strict reading of one item: every problem is a [`StoreError::Corrupt`] naming the item.
struct Reader<'a> {
    item: &'a Item,
    key: String,
}

impl<'a> Reader<'a> {
    fn new(item: &'a Item) -> Self {
        let key = match item.get(attr::PK) {
            Some(AttributeValue::S(pk)) => pk.clone(),
            _ => "<item without pk>".to_owned(),
        };
        Self { item, key }
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt { key: self.key.clone(), detail }
    }

    fn opt_s(&self, name: &str) -> Result<Option<&'a str>, StoreError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v)),
            Some(other) => Err(self.corrupt(format!("attribute {name}: expected S, got {other:?}"))),
        }
    }

    fn s(&self, name: &str) -> Result<&'a str, StoreError> {
        self.opt_s(name)?.ok_or_else(|| self.corrupt(format!("attribute {name} is missing")))
    }

    fn opt_n<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, StoreError>
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

    fn n<T: std::str::FromStr>(&self, name: &str) -> Result<T, StoreError>
    where
        T::Err: fmt::Display,
    {
        self.opt_n(name)?.ok_or_else(|| self.corrupt(format!("attribute {name} is missing")))
    }

    fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.opt_n::<i64>(name)?
            .map(|secs| {
                DateTime::from_timestamp(secs, 0).ok_or_else(|| {
                    self.corrupt(format!("attribute {name}: {secs} is not a representable time"))
                })
            })
            .transpose()
    }

    fn time(&self, name: &str) -> Result<DateTime<Utc>, StoreError> {
        self.opt_time(name)?.ok_or_else(|| self.corrupt(format!("attribute {name} is missing")))
    }
}

fn parse_lease(item: &Item) -> Result<Lease, StoreError> {
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

#[async_trait::async_trait]
impl LeaseStore for DynamoLeaseStore {
    async fn create_pending(&self, lease: &Lease) -> Result<(), StoreError> {
        if lease.status != LeaseStatus::Pending {
            return Err(StoreError::Conflict { id: lease.id.clone(), expected: "PENDING".to_owned() });
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.lease_item(lease)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(PutItemError::is_conditional_check_failed_exception) =>
            {
                Err(StoreError::AlreadyExists(lease.id.clone()))
            }
            Err(err) => Err(unavailable("create_pending", &self.table, err)),
        }
    }

    async fn activate(
        &self,
        id: &LeaseId,
        expected_version: u64,
        activation: Activation,
    ) -> Result<Lease, StoreError> {
        let update = Update {
            op: "activate",
            condition: "#status = :pending".to_owned(),
            set: "#status = :active, #issued_at = :issued_at, #expires_at = :expires_at, \
                  #next_action_at = :expires_at, #due_pk = :due_pk, #due_at = :expires_at, \
                  #ttl = :gc_at"
                .to_owned(),
            remove: &[],
            values: vec![
                (":pending", status(LeaseStatus::Pending)),
                (":active", status(LeaseStatus::Active)),
                (":issued_at", secs(activation.issued_at)),
                (":expires_at", secs(activation.expires_at)),
                (":due_pk", s(self.due_pk(LeaseStatus::Active, id))),
                (":gc_at", secs(activation.gc_at)),
            ],
            expected: rules::pending_at(expected_version),
        };
        self.transition(id, expected_version, update).await
    }

    async fn record_issue_failure(
        &self,
        id: &LeaseId,
        expected_version: u64,
        error: &str,
        due_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let update = Update {
            op: "record_issue_failure",
            condition: "#status = :pending".to_owned(),
            set: "#last_error = :error, #next_action_at = :due_at, #due_pk = :due_pk, #due_at = :due_at"
                .to_owned(),
            remove: &[],
            values: vec![
                (":pending", status(LeaseStatus::Pending)),
                (":error", s(error)),
                (":due_at", secs(due_at)),
                (":due_pk", s(self.due_pk(LeaseStatus::Pending, id))),
            ],
            expected: rules::pending_at(expected_version),
        };
        self.transition(id, expected_version, update).await
    }

    async fn claim_for_revocation(
        &self,
        id: &LeaseId,
        expected_version: u64,
        claim: Claim,
    ) -> Result<Lease, StoreError> {
        let update = Update {
            op: "claim_for_revocation",
            // Same whole-second rule as `rules::claim_lapsed`.
            condition: "#status IN (:pending, :active, :irrevocable) \
                        OR (#status = :revoking AND #next_action_at <= :now)"
                .to_owned(),
            set: "#status = :revoking, #owner = :owner, #next_action_at = :deadline, \
                  #due_pk = :due_pk, #due_at = :deadline"
                .to_owned(),
            remove: &[],
            values: vec![
                (":pending", status(LeaseStatus::Pending)),
                (":active", status(LeaseStatus::Active)),
                (":irrevocable", status(LeaseStatus::Irrevocable)),
                (":revoking", status(LeaseStatus::Revoking)),
                (":now", secs(self.clock.now())),
                (":owner", s(claim.owner)),
                (":deadline", secs(claim.deadline)),
                (":due_pk", s(self.due_pk(LeaseStatus::Revoking, id))),
            ],
            expected: rules::claimable_at(expected_version),
        };
        self.transition(id, expected_version, update).await
    }

    async fn mark_revoked(
        &self,
        id: &LeaseId,
        expected_version: u64,
        revoked_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<Lease, StoreError> {
        let mut set = "#status = :revoked, #next_action_at = :revoked_at".to_owned();
        let mut values = vec![
            (":revoking", status(LeaseStatus::Revoking)),
            (":revoked", status(LeaseStatus::Revoked)),
            (":revoked_at", secs(revoked_at)),
        ];
        if let Some(note) = note {
            set.push_str(", #last_error = :note");
            values.push((":note", s(note)));
        }
        let update = Update {
            op: "mark_revoked",
            condition: "#status = :revoking".to_owned(),
            set,
            // Terminal: out of the sparse `due` index for good.
            remove: &[attr::OWNER, attr::DUE_PK, attr::DUE_AT],
            values,
            expected: rules::revoking_at(expected_version),
        };
        self.transition(id, expected_version, update).await
    }

    async fn record_revoke_failure(
        &self,
        id: &LeaseId,
        expected_version: u64,
        failure: RevokeFailure,
    ) -> Result<Lease, StoreError> {
        let next = if failure.irrevocable { LeaseStatus::Irrevocable } else { LeaseStatus::Revoking };
        let set = "#status = :next_status, #attempts = #attempts + :one, #last_error = :error, \
                   #next_action_at = :retry_at, #due_pk = :due_pk, #due_at = :retry_at";
        let values = vec![
            (":revoking", status(LeaseStatus::Revoking)),
            (":next_status", status(next)),
            (":one", n(1)),
            (":error", s(&failure.error)),
            (":retry_at", secs(failure.retry_at)),
            (":due_pk", s(self.due_pk(next, id))),
        ];
        // `gc_at` may only move later, and an update expression has no `max`. Optimistically
        // raise it under the condition `ttl <= :gc_at`; if only that part failed (the ALL_OLD
        // item is still REVOKING at the expected version), the stored value is already later:
        // apply the same transition without touching `ttl`, still conditional on the version,
        // so nothing can slip in between.
        let mut raise = Update {
            op: "record_revoke_failure",
            condition: "#status = :revoking AND (attribute_not_exists(#ttl) OR #ttl <= :gc_at)".to_owned(),
            set: format!("{set}, #ttl = :gc_at"),
            remove: &[attr::OWNER],
            values: values.clone(),
            expected: rules::revoking_at(expected_version),
        };
        raise.values.push((":gc_at", secs(failure.gc_at)));
        let old = match self.conditional_update(id, expected_version, &raise).await? {
            Ok(lease) => return Ok(lease),
            Err(Refused::Old(old)) => parse_lease(&old)?,
            Err(refused) => return Err(refused.into_error(id, raise.expected)),
        };
        if old.status != LeaseStatus::Revoking || old.version != expected_version {
            return Err(StoreError::Conflict { id: id.clone(), expected: raise.expected });
        }
        let keep = Update {
            op: "record_revoke_failure",
            condition: "#status = :revoking".to_owned(),
            set: set.to_owned(),
            remove: &[attr::OWNER],
            values,
            expected: raise.expected,
        };
        self.transition(id, expected_version, keep).await
    }

    async fn renew(
        &self,
        id: &LeaseId,
        expected_version: u64,
        expires_at: DateTime<Utc>,
        gc_at: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let update = Update {
            op: "renew",
            condition: "#status = :active AND #max_expires_at >= :expires_at".to_owned(),
            set: "#expires_at = :expires_at, #next_action_at = :expires_at, #due_pk = :due_pk, \
                  #due_at = :expires_at, #ttl = :gc_at"
                .to_owned(),
            remove: &[],
            values: vec![
                (":active", status(LeaseStatus::Active)),
                (":expires_at", secs(expires_at)),
                (":due_pk", s(self.due_pk(LeaseStatus::Active, id))),
                (":gc_at", secs(gc_at)),
            ],
            expected: rules::renewable_at(expected_version, expires_at),
        };
        self.transition(id, expected_version, update).await
    }

    async fn get(&self, id: &LeaseId) -> Result<Option<Lease>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(lease_pk(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("get", &self.table, e))?;
        output.item().map(parse_lease).transpose()
    }

    async fn list_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A k-way merge of the `due` partitions (status needing action × shard), each read in
        // order of `due_at`, a page at a time. Every partition is read at once, a fair share
        // each (the shards are balanced by hash), so the usual cost is one round trip and about
        // `limit` items, however many leases are due. Never a Scan.
        let mut cursors: Vec<DueCursor> = LeaseStatus::ALL
            .into_iter()
            .filter(|status| status.needs_action())
            .flat_map(|status| (0..self.shards).map(move |shard| format!("{}#{shard}", status.as_str())))
            .map(|due_pk| DueCursor { due_pk, more: true, start: None, last: None, wanted: true })
            .collect();
        let mut page = limit.div_ceil(usize::from(self.shards)).saturating_add(1);
        let mut newest: HashMap<LeaseId, Lease> = HashMap::new();
        loop {
            let mut queries = tokio::task::JoinSet::new();
            for (index, cursor) in cursors.iter_mut().enumerate().filter(|(_, c)| c.wanted) {
                let query = Self::query_due_page(
                    self.client.clone(),
                    self.table.clone(),
                    cursor.due_pk.clone(),
                    now.timestamp(),
                    page,
                    cursor.start.take(),
                );
                queries.spawn(async move { (index, query.await) });
            }
            while let Some(joined) = queries.join_next().await {
                let (index, result) = joined.map_err(|e| {
                    StoreError::Unavailable(format!("dynamodb list_due on table {}: {e}", self.table))
                })?;
                let (leases, next) = result?;
                let cursor = &mut cursors[index];
                cursor.last = leases.last().map(|lease| lease.next_action_at).or(cursor.last);
                cursor.more = next.is_some();
                cursor.start = next;
                // A status change moves a lease between partitions; the eventually consistent
                // index can briefly show both copies. Keep the newer.
                for lease in leases {
                    match newest.get(&lease.id) {
                        Some(seen) if seen.version >= lease.version => {}
                        _ => {
                            newest.insert(lease.id.clone(), lease);
                        }
                    }
                }
            }
            // Whatever is still unread is due no earlier than `frontier`, so what we hold up
            // to it is a correct answer (ties at the frontier may be cut either way).
            let frontier = cursors.iter().filter(|c| c.more).filter_map(|c| c.last).min();
            let settled =
                newest.values().filter(|lease| frontier.is_none_or(|f| lease.next_action_at <= f)).count();
            if frontier.is_none() || settled >= limit {
                let mut due: Vec<Lease> = newest
                    .into_values()
                    .filter(|lease| frontier.is_none_or(|f| lease.next_action_at <= f))
                    .collect();
                due.sort_by(|a, b| (a.next_action_at, &a.id).cmp(&(b.next_action_at, &b.id)));
                due.truncate(limit);
                return Ok(due);
            }
            // Read the next page of the partitions that hold the frontier back; the others
            // wait (their unread leases are due later than it).
            for cursor in &mut cursors {
                cursor.wanted = cursor.more && cursor.last == frontier;
            }
            page = (limit - settled).max(page);
        }
    }

    async fn by_holder(&self, holder: &LeaseHolder, limit: usize) -> Result<Vec<Lease>, StoreError> {
        let mut found: Vec<Lease> = Vec::new();
        let mut start: Option<Item> = None;
        while found.len() < limit {
            let page = (limit - found.len()).min(PAGE_MAX);
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(IDENTITY_INDEX)
                .key_condition_expression("#holder = :holder")
                .expression_attribute_names("#holder", attr::HOLDER)
                .expression_attribute_values(":holder", s(holder_key(holder)))
                .scan_index_forward(false)
                .limit(i32::try_from(page).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("by_holder query", &self.table, e))?;
            for item in output.items() {
                let lease = parse_lease(item)?;
                // Guards the (theoretical) hash collision of long holders.
                if &lease.holder == holder {
                    found.push(lease);
                }
            }
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    async fn list_live(&self, filter: &LiveFilter, limit: usize) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = LiveQuery::new(self.client.clone(), self.table.clone(), filter.clone(), limit);
        if let Some(holder) = &filter.holder {
            // One identity partition (its history included) is far smaller than every live
            // lease; REVOKED ones are filtered out.
            return query.run(IDENTITY_INDEX, attr::HOLDER, holder_key(holder)).await;
        }
        // Every `due` partition at once (one Query per status needing action × shard), like
        // `list_due` but without a bound on `due_at`. Never a Scan.
        let mut queries = tokio::task::JoinSet::new();
        for status in LeaseStatus::ALL.into_iter().filter(|s| s.needs_action()) {
            for shard in 0..self.shards {
                let query = query.clone();
                let due_pk = format!("{}#{shard}", status.as_str());
                queries.spawn(async move { query.run(DUE_INDEX, attr::DUE_PK, due_pk).await });
            }
        }
        let mut newest: HashMap<LeaseId, Lease> = HashMap::new();
        while let Some(joined) = queries.join_next().await {
            let leases = joined.map_err(|e| {
                StoreError::Unavailable(format!("dynamodb list_live on table {}: {e}", self.table))
            })??;
            for lease in leases {
                match newest.get(&lease.id) {
                    Some(seen) if seen.version >= lease.version => {}
                    _ => {
                        newest.insert(lease.id.clone(), lease);
                    }
                }
            }
        }
        Ok(newest.into_values().take(limit).collect())
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

    async fn record_jti(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<JtiOutcome, StoreError> {
        let now = self.clock.now();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::PK, s(jti_key(issuer, jti)))
            .item(attr::ISS, s(issuer))
            .item(attr::JTI, s(jti))
            .item(attr::TTL, secs(expires_at))
            // TTL deletion lags by up to days, so an expired record must not block on its own.
            .condition_expression("attribute_not_exists(#pk) OR #ttl < :now")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#ttl", attr::TTL)
            .expression_attribute_values(":now", secs(now))
            .send()
            .await;
        match result {
            Ok(_) => Ok(JtiOutcome::FirstUse),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(PutItemError::is_conditional_check_failed_exception) =>
            {
                Ok(JtiOutcome::Replayed)
            }
            Err(err) => Err(unavailable("record_jti", &self.table, err)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Table creation

/// Creates `table` with the layout in the module docs (on-demand billing, GSIs `due` and
/// `identity`, TTL on `ttl`) and waits until it and its indexes are ACTIVE.
///
/// Idempotent: an existing table is accepted if its key schema and indexes match (otherwise
/// this fails, naming the difference), and TTL is enabled only if it is not already.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let started = Instant::now();
    let result = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(vec![
            attribute(attr::PK, ScalarAttributeType::S)?,
            attribute(attr::DUE_PK, ScalarAttributeType::S)?,
            attribute(attr::DUE_AT, ScalarAttributeType::N)?,
            attribute(attr::HOLDER, ScalarAttributeType::S)?,
            attribute(attr::CREATED_SK, ScalarAttributeType::S)?,
        ]))
        .key_schema(key(attr::PK, KeyType::Hash)?)
        .global_secondary_indexes(index(DUE_INDEX, attr::DUE_PK, attr::DUE_AT)?)
        .global_secondary_indexes(index(IDENTITY_INDEX, attr::HOLDER, attr::CREATED_SK)?)
        .send()
        .await;
    match result {
        Ok(_) => tracing::info!(table, "created DynamoDB lease table"),
        Err(err) if err.as_service_error().is_some_and(CreateTableError::is_resource_in_use_exception) => {
            tracing::debug!(table, "DynamoDB lease table already exists");
        }
        Err(err) => return Err(unavailable("CreateTable", table, err)),
    }
    wait_until_active(client, table).await?;
    enable_ttl(client, table).await?;
    tracing::info!(table, elapsed_ms = started.elapsed().as_millis(), "DynamoDB lease table ready");
    Ok(())
}

fn attribute(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(|e| build_error("attribute definition", e))
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| build_error("key schema", e))
}

fn index(name: &str, hash: &str, range: &str) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash)?)
        .key_schema(key(range, KeyType::Range)?)
        // ALL: readers get whole leases from the index, without a GetItem per lease.
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .map_err(|e| build_error("global secondary index", e))
}

/// `(attribute, key type)` pairs of a key schema, for comparison.
fn schema_of(elements: &[KeySchemaElement]) -> Vec<(String, KeyType)> {
    elements.iter().map(|k| (k.attribute_name().to_owned(), k.key_type().clone())).collect()
}

async fn wait_until_active(client: &Client, table: &str) -> Result<(), StoreError> {
    let deadline = Instant::now() + CREATE_TIMEOUT;
    loop {
        let output = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| unavailable("DescribeTable", table, e))?;
        let description = output.table().ok_or_else(|| {
            StoreError::Unavailable(format!("dynamodb DescribeTable {table}: no description"))
        })?;
        check_schema(table, description)?;
        let table_active = description.table_status() == Some(&TableStatus::Active);
        let indexes_active = description
            .global_secondary_indexes()
            .iter()
            .all(|i| i.index_status() == Some(&IndexStatus::Active));
        if table_active && indexes_active {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "dynamodb table {table} not ACTIVE after {}s (status {:?})",
                CREATE_TIMEOUT.as_secs(),
                description.table_status()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An existing table with another layout would make every later call fail obscurely; say so
/// up front.
fn check_schema(
    table: &str,
    description: &aws_sdk_dynamodb::types::TableDescription,
) -> Result<(), StoreError> {
    let mismatch = |what: String| {
        StoreError::Unavailable(format!("dynamodb table {table} exists with another layout: {what}"))
    };
    let want_key = vec![(attr::PK.to_owned(), KeyType::Hash)];
    if schema_of(description.key_schema()) != want_key {
        return Err(mismatch(format!("key schema {:?}", description.key_schema())));
    }
    for (name, hash, range) in
        [(DUE_INDEX, attr::DUE_PK, attr::DUE_AT), (IDENTITY_INDEX, attr::HOLDER, attr::CREATED_SK)]
    {
        let found = description
            .global_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some(name))
            .ok_or_else(|| mismatch(format!("no global secondary index {name}")))?;
        let want = vec![(hash.to_owned(), KeyType::Hash), (range.to_owned(), KeyType::Range)];
        if schema_of(found.key_schema()) != want {
            return Err(mismatch(format!("index {name} has key schema {:?}", found.key_schema())));
        }
        let projection = found.projection().and_then(|p| p.projection_type());
        if projection != Some(&ProjectionType::All) {
            return Err(mismatch(format!("index {name} projects {projection:?}, not ALL")));
        }
    }
    Ok(())
}

async fn ttl_status(
    client: &Client,
    table: &str,
) -> Result<(Option<TimeToLiveStatus>, Option<String>), StoreError> {
    let output = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| unavailable("DescribeTimeToLive", table, e))?;
    let description = output.time_to_live_description();
    Ok((
        description.and_then(|d| d.time_to_live_status()).cloned(),
        description.and_then(|d| d.attribute_name()).map(str::to_owned),
    ))
}

async fn enable_ttl(client: &Client, table: &str) -> Result<(), StoreError> {
    let ttl_ok = |status: &Option<TimeToLiveStatus>, name: &Option<String>| {
        matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
            && name.as_deref() == Some(TTL_ATTRIBUTE)
    };
    let (status, name) = ttl_status(client, table).await?;
    if ttl_ok(&status, &name) {
        return Ok(());
    }
    if matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)) {
        return Err(StoreError::Unavailable(format!(
            "dynamodb table {table} has TTL on attribute {name:?}, expected {TTL_ATTRIBUTE:?}"
        )));
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(TTL_ATTRIBUTE)
        .build()
        .map_err(|e| build_error("TTL specification", e))?;
    let result = client.update_time_to_live().table_name(table).time_to_live_specification(spec).send().await;
    if let Err(err) = result {
        // A concurrent creator may have enabled it in between ("TimeToLive is already
        // enabled"): re-check before failing.
        let (status, name) = ttl_status(client, table).await?;
        if !ttl_ok(&status, &name) {
            return Err(unavailable("UpdateTimeToLive", table, err));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> LeaseId {
        LeaseId::parse(raw).expect("valid ULID")
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        let lease = id("01JD0000000000000000000000");
        // Pinned (computed independently): a change here would strand existing leases in
        // partitions no reader queries.
        assert_eq!(shard_of(&lease, 8), 4);
        assert_eq!(shard_of(&lease, 3), 1);
        assert_eq!(shard_of(&lease, 1), 0);
        assert_eq!(shard_of(&lease, 0), 0, "0 shards is treated as 1");
        for i in 0..200u32 {
            let raw = format!("01JD{i:0>22}");
            assert!(shard_of(&id(&raw), 8) < 8);
        }
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Reference test vectors of FNV-1a 64.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn holder_key_is_unambiguous_and_bounded() {
        let a = LeaseHolder { issuer: "a#b".into(), subject: "c".into() };
        let b = LeaseHolder { issuer: "a".into(), subject: "b#c".into() };
        assert_eq!(holder_key(&a), "3#a#b#c");
        assert_eq!(holder_key(&b), "1#a#b#c");
        let long = LeaseHolder { issuer: "i".repeat(600), subject: "s".repeat(600) };
        let key = holder_key(&long);
        assert!(key.starts_with("sha256#") && key.len() == 7 + 64, "{key}");
    }

    #[test]
    fn jti_key_is_unambiguous_and_bounded() {
        assert_ne!(jti_key("a#b", "c"), jti_key("a", "b#c"));
        assert_eq!(jti_key("iss", &"j".repeat(5000)).len(), 4 + 64);
    }

    #[test]
    fn created_sk_sorts_like_time() {
        let x = id("01JD0000000000000000000000");
        let early = DateTime::from_timestamp(999, 0).expect("time");
        let late = DateTime::from_timestamp(1_000, 0).expect("time");
        assert!(created_sk(early, &x) < created_sk(late, &x));
        assert_eq!(created_sk(late, &x), "000000001000#01JD0000000000000000000000");
    }

    #[test]
    fn placeholder_names_finds_each_name_once() {
        assert_eq!(placeholder_names(&["SET #a = :x, #b_c = #b_c + :y REMOVE #z"]), ["a", "b_c", "z"]);
        assert_eq!(
            placeholder_names(&["SET #a = :x", "attribute_exists(#pk) AND (#a IN (:p) OR #c <= :n)"]),
            ["a", "c", "pk"]
        );
        assert!(placeholder_names(&["SET x = :y"]).is_empty());
    }

    fn sample_item() -> (Lease, Item) {
        let store = DynamoLeaseStore::new(
            Client::from_conf(
                aws_sdk_dynamodb::Config::builder()
                    .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                    .build(),
            ),
            "t",
        );
        let now = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let holder = LeaseHolder { issuer: "https://i".into(), subject: "s".into() };
        let lease = crate::store::conformance::sample_lease(now, &holder);
        let item = store.lease_item(&lease).expect("item");
        (lease, item)
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_items() {
        let (lease, item) = sample_item();
        assert_eq!(parse_lease(&item).expect("parses"), lease);
        assert!(item.contains_key("due_pk") && item.contains_key("due_at"));

        let mut missing = item.clone();
        missing.remove("version");
        assert!(matches!(
            parse_lease(&missing),
            Err(StoreError::Corrupt { detail, .. }) if detail.contains("version")
        ));
        let mut ill_typed = item.clone();
        ill_typed.insert("expires_at".into(), AttributeValue::S("soon".into()));
        assert!(matches!(parse_lease(&ill_typed), Err(StoreError::Corrupt { .. })));
        let mut bad_status = item.clone();
        bad_status.insert("status".into(), AttributeValue::S("GONE".into()));
        assert!(matches!(parse_lease(&bad_status), Err(StoreError::Corrupt { .. })));
        let mut bad_number = item.clone();
        bad_number.insert("attempts".into(), AttributeValue::N("-1".into()));
        assert!(matches!(parse_lease(&bad_number), Err(StoreError::Corrupt { .. })));
        let mut bad_backend = item;
        bad_backend.insert("backend".into(), AttributeValue::S("{\"kind\":\"x\"}".into()));
        assert!(matches!(parse_lease(&bad_backend), Err(StoreError::Corrupt { .. })));
        assert!(matches!(parse_lease(&Item::new()), Err(StoreError::Corrupt { .. })));
    }
}
