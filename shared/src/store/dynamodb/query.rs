//! The lease store's queries: `list_due` (a merge of the sharded `due` partitions),
//! `by_holder` and `list_live` (index partitions, never a Scan). Layout and cost: the module
//! documentation of [`super`].

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use super::item::{Item, attr, n, parse_lease, placeholder_names, s, status, unavailable};
use super::keys::holder_key;
use super::{DUE_INDEX, DynamoLeaseStore, IDENTITY_INDEX, PAGE_MAX};
use crate::lease::{
    DueBatch, Lease, LeaseHolder, LeaseId, LeaseStatus, LiveFilter, StoreError, UnreadableLease,
};
use crate::store::rules;

impl DynamoLeaseStore {
    pub(super) async fn due_leases(&self, now: DateTime<Utc>, limit: usize) -> Result<DueBatch, StoreError> {
        if limit == 0 {
            return Ok(DueBatch::default());
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
        let mut unreadable: HashMap<String, UnreadableLease> = HashMap::new();
        loop {
            let mut queries = tokio::task::JoinSet::new();
            for (index, cursor) in cursors.iter_mut().enumerate().filter(|(_, c)| c.wanted) {
                let query = query_due_page(
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
                let DuePage { leases, unreadable: skipped, last, next } = result?;
                let cursor = &mut cursors[index];
                cursor.last = last.or(cursor.last);
                for record in skipped {
                    unreadable.insert(record.key.clone(), record);
                }
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
                let mut unreadable: Vec<UnreadableLease> = unreadable.into_values().collect();
                unreadable.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(DueBatch { leases: due, unreadable });
            }
            // Read the next page of the partitions that hold the frontier back; the others
            // wait (their unread leases are due later than it).
            for cursor in &mut cursors {
                cursor.wanted = cursor.more && cursor.last == frontier;
            }
            page = (limit - settled).max(page);
        }
    }

    pub(super) async fn holder_leases(
        &self,
        holder: &LeaseHolder,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
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

    pub(super) async fn live_leases(
        &self,
        filter: &LiveFilter,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
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
) -> Result<DuePage, StoreError> {
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
    let mut page = DuePage { leases: Vec::new(), unreadable: Vec::new(), last: None, next: None };
    for item in output.items() {
        match parse_lease(item) {
            Ok(lease) => {
                page.last = Some(lease.next_action_at);
                page.leases.push(lease);
            }
            Err(error) => {
                // Its index key still says how far the partition has been read: the item is
                // passed over, the merge goes on behind it.
                page.last = item
                    .get(attr::DUE_AT)
                    .and_then(|due_at| due_at.as_n().ok())
                    .and_then(|secs| secs.parse::<i64>().ok())
                    .and_then(|secs| DateTime::from_timestamp(secs, 0))
                    .or(page.last);
                let record = UnreadableLease::from_error(error)?;
                tracing::error!(key = %record.key, detail = %record.detail, "unreadable lease record in the due index; left as it is");
                page.unreadable.push(record);
            }
        }
    }
    page.next = output.last_evaluated_key().filter(|key| !key.is_empty()).cloned();
    Ok(page)
}

/// One page of one `due` partition.
struct DuePage {
    leases: Vec<Lease>,
    unreadable: Vec<UnreadableLease>,
    /// `due_at` of the last item read (readable or not): the partition holds nothing earlier.
    last: Option<DateTime<Utc>>,
    next: Option<Item>,
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
