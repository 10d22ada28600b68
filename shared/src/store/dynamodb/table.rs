//! Creating the lease table (local mode and tests; deployments create it from their templates,
//! which must match).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::item::{attr, build_error, unavailable};
use super::{DUE_INDEX, IDENTITY_INDEX, TTL_ATTRIBUTE};
use crate::lease::StoreError;

/// How [`create_table`] waits for the table and its indexes to become ACTIVE.
const CREATE_TIMEOUT: Duration = Duration::from_mins(5);

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
