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
//! `<hash>` is [`jti_key`]: lowercase hex SHA-256 of `u64be(len(iss)) ‖ iss ‖ key` (bounded
//! size whatever the token carries, unambiguous split; the key is the jti, or the jti with a
//! grant for per-grant replay modes). Attributes: `iss` (S), `jti` (S, the key), `uses` (N;
//! absent on items written before use counts existed, which count as one), `ttl` (N, the
//! token's expiry). A first use is a PutItem conditional on `attribute_not_exists(pk) OR #ttl <
//! :now` (one round trip, the usual case); a further one, where the policy allows more, an
//! UpdateItem `uses + 1` conditional on the item being live and `uses < :limit`.
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

mod deny_lists;
mod item;
mod keys;
mod query;
mod table;

use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

use crate::clock::{Clock, SystemClock};
use crate::lease::{
    Activation, Claim, DueBatch, DueLeases, Lease, LeaseHolder, LeaseId, LeaseStatus, LeaseStore, LiveFilter,
    RevokeFailure, StoreError, TokenUse,
};
use item::{Item, attr, n, parse_lease, placeholder_names, s, secs, status, unavailable};
use keys::{created_sk, lease_pk};
pub use keys::{holder_key, jti_key, lock_key, shard_of};
pub use table::create_table;

use crate::store::rules;

/// Name of the sparse GSI the revoker queries.
pub const DUE_INDEX: &str = "due";
/// Name of the GSI listing one workload identity's leases.
pub const IDENTITY_INDEX: &str = "identity";
/// The TTL attribute (garbage collection only).
pub const TTL_ATTRIBUTE: &str = "ttl";
/// Default number of `due` partitions per status.
pub const DEFAULT_SHARDS: u16 = 8;
/// Largest page asked of one Query (DynamoDB caps a page at 1 MB anyway).
const PAGE_MAX: usize = 1000;

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

    async fn by_holder(&self, holder: &LeaseHolder, limit: usize) -> Result<Vec<Lease>, StoreError> {
        self.holder_leases(holder, limit).await
    }

    async fn list_live(&self, filter: &LiveFilter, limit: usize) -> Result<Vec<Lease>, StoreError> {
        self.live_leases(filter, limit).await
    }

    async fn record_token_use(
        &self,
        issuer: &str,
        key: &str,
        expires_at: DateTime<Utc>,
        limit: u32,
    ) -> Result<TokenUse, StoreError> {
        let pk = jti_key(issuer, key);
        for _ in 0..3 {
            let now = self.clock.now();
            // The usual case first, one round trip: the token's first use (or a record that has
            // expired: TTL deletion lags by up to days, so an expired record must not block).
            let created = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(attr::PK, s(&pk))
                .item(attr::ISS, s(issuer))
                .item(attr::JTI, s(key))
                .item(attr::USES, n(1))
                .item(attr::TTL, secs(expires_at))
                .condition_expression("attribute_not_exists(#pk) OR #ttl < :now")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#ttl", attr::TTL)
                .expression_attribute_values(":now", secs(now))
                .send()
                .await;
            match created {
                Ok(_) => return Ok(TokenUse::Counted(1)),
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(PutItemError::is_conditional_check_failed_exception) => {}
                Err(err) => return Err(unavailable("record_token_use", &self.table, err)),
            }
            if limit <= 1 {
                return Ok(TokenUse::Exhausted(1));
            }
            // A live record: one more use while under the limit. Records without `uses` (written
            // before use counts existed) count as one use.
            let counted = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(attr::PK, s(&pk))
                .update_expression("SET #uses = if_not_exists(#uses, :one) + :one")
                .condition_expression(
                    "attribute_exists(#pk) AND #ttl >= :now AND (#uses < :limit OR attribute_not_exists(#uses))",
                )
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#ttl", attr::TTL)
                .expression_attribute_names("#uses", attr::USES)
                .expression_attribute_values(":now", secs(now))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":limit", n(limit))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match counted {
                Ok(output) => {
                    let uses = output.attributes().map(item::token_uses).transpose()?.unwrap_or(1);
                    return Ok(TokenUse::Counted(uses));
                }
                Err(err) => match err.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(failed)) => match failed.item() {
                        // Live and at its limit.
                        Some(item) if item::ttl_secs(item)? >= now.timestamp() => {
                            return Ok(TokenUse::Exhausted(item::token_uses(item)?));
                        }
                        // Expired or deleted between the two calls: start again.
                        _ => {}
                    },
                    _ => return Err(unavailable("record_token_use", &self.table, err)),
                },
            }
        }
        Err(StoreError::Unavailable(format!("replay guard {pk}: changed under three attempts in a row")))
    }
}

#[async_trait::async_trait]
impl DueLeases for DynamoLeaseStore {
    async fn list_due(&self, now: DateTime<Utc>, limit: usize) -> Result<DueBatch, StoreError> {
        self.due_leases(now, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
