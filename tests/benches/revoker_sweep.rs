//! Revoker sweep benchmark: expired database leases (users in the real PostgreSQL, leases in
//! LocalStack DynamoDB) ended by `Revoker::sweep`, against a raw loop doing the same work by
//! hand in the same run: per lease a conditional DynamoDB update to claim, `DROP ROLE`, and a
//! conditional update to mark it revoked, with the same concurrency.
//!
//! A full run starts with an untimed round of 300 leases each, which warms LocalStack up.
//!
//! `cargo bench -p credbroker-tests --bench revoker_sweep` runs 1,000 and 10,000 leases (needs
//! the services of `scripts/test.sh`; seeding 2 × 11,000 leases takes a few minutes). Without
//! `--bench` (as `cargo test --all-targets` runs it) it does a quick smoke run of 20;
//! `CREDBROKER_BENCH_SWEEP_SIZES=1000` picks the sizes of a full run.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{TimeDelta, Utc};
use credbroker::audit::MemoryAuditSink;
use credbroker::backend::BackendRef;
use credbroker::backend::Engine;
use credbroker::backend::Revokers;
use credbroker::clock::SystemClock;
use credbroker::issuer::db::DatabaseIssuer;
use credbroker::lease::{Activation, Lease, LeaseHolder, LeaseId, LeaseStatus, LeaseStore};
use credbroker::metrics::MemoryMetrics;
use credbroker::revoker::{Revoker, RevokerPorts, RevokerSettings};
use credbroker::secrets::StaticSecret;
use credbroker::store::dynamodb::{DynamoLeaseStore, create_table};
use credbroker_tests::bench::{self, Row, Target};
use credbroker_tests::db::{Cleanup, PG_AUTH_DATABASE, pg_admin, pg_config, pg_server, prefix};
use credbroker_tests::{localstack_sdk_config, unique_name};
use sqlx::AssertSqlSafe;
use tokio::sync::Semaphore;

const CONCURRENCY: usize = 16;
/// Leases of the untimed round that warms LocalStack up before the timed ones.
const WARM_UP_LEASES: usize = 300;

/// Creates `n` roles and their expired, active leases; returns the leases.
async fn seed(store: &Arc<dyn LeaseStore>, p: &str, tag: &str, n: usize) -> Vec<Lease> {
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    let names: Vec<String> = (0..n).map(|i| format!("{p}_{tag}{i}")).collect();
    for chunk in names.chunks(500) {
        let sql = chunk.iter().fold(String::new(), |mut sql, name| {
            let _ = write!(sql, "CREATE ROLE \"{name}\" LOGIN;");
            sql
        });
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.expect("create roles");
    }
    let now = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let semaphore = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for name in names {
        let store = Arc::clone(store);
        let permit = Arc::clone(&semaphore);
        tasks.spawn(async move {
            let _permit = permit.acquire_owned().await;
            let lease = Lease {
                id: LeaseId::generate(now).expect("id"),
                status: LeaseStatus::Pending,
                policy: "bench".into(),
                grant: "worker".into(),
                holder: LeaseHolder { issuer: "https://bench".into(), subject: name.clone() },
                backend: BackendRef::Database {
                    engine: Engine::Postgres,
                    connection: "main".into(),
                    database: PG_AUTH_DATABASE.into(),
                    username: name,
                    revocation_statements: Vec::new(),
                },
                created_at: now - TimeDelta::hours(1),
                issued_at: None,
                expires_at: now - TimeDelta::seconds(1),
                max_expires_at: now,
                next_action_at: now - TimeDelta::minutes(50),
                attempts: 0,
                last_error: None,
                owner: None,
                version: 0,
                gc_at: now + TimeDelta::days(1),
            };
            store.create_pending(&lease).await.expect("create");
            let activation =
                Activation { issued_at: lease.created_at, expires_at: lease.expires_at, gc_at: lease.gc_at };
            store.activate(&lease.id, 0, activation).await.expect("activate")
        });
    }
    let mut leases = Vec::with_capacity(n);
    while let Some(lease) = tasks.join_next().await {
        leases.push(lease.expect("seed task"));
    }
    leases
}

/// The floor: the same DynamoDB transitions and `DROP ROLE`s, by hand.
async fn raw_loop(dynamo: &aws_sdk_dynamodb::Client, table: &str, leases: Vec<Lease>) -> Duration {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(CONCURRENCY).expect("fits"))
        .connect(&{
            let server = pg_server();
            format!("postgres://{}@{}:{}/{PG_AUTH_DATABASE}", server.user, server.host, server.port)
        })
        .await
        .expect("pool");
    let semaphore = Arc::new(Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for lease in leases {
        let (dynamo, table, pool, permit) =
            (dynamo.clone(), table.to_owned(), pool.clone(), Arc::clone(&semaphore));
        tasks.spawn(async move {
            let _permit = permit.acquire_owned().await;
            let key = AttributeValue::S(format!("lease#{}", lease.id));
            let update = |status: &str, version: u64| {
                dynamo
                    .update_item()
                    .table_name(&table)
                    .key("pk", key.clone())
                    .update_expression("SET #s = :s, version = :next")
                    .condition_expression("version = :v")
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_values(":s", AttributeValue::S(status.to_owned()))
                    .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
                    .expression_attribute_values(":next", AttributeValue::N((version + 1).to_string()))
                    .send()
            };
            update("REVOKING", lease.version).await.expect("claim");
            let BackendRef::Database { username, .. } = &lease.backend else {
                unreachable!("database leases")
            };
            sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{username}\"")))
                .execute(&pool)
                .await
                .expect("drop role");
            update("REVOKED", lease.version + 1).await.expect("mark");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("raw task");
    }
    started.elapsed()
}

/// One sweep of `n` expired leases and the floor's loop over `n` others: (sweep, floor).
async fn sweep_and_floor(
    dynamo: &aws_sdk_dynamodb::Client,
    db: &Arc<DatabaseIssuer>,
    p: &str,
    n: usize,
) -> (Duration, Duration) {
    // Separate tables so each sweep sees exactly its own leases.
    let (ours_table, floor_table) = (unique_name("bench-sweep"), unique_name("bench-floor"));
    create_table(dynamo, &ours_table).await.expect("table");
    create_table(dynamo, &floor_table).await.expect("table");
    let ours_store = Arc::new(DynamoLeaseStore::new(dynamo.clone(), ours_table.clone()));
    let floor_store: Arc<dyn LeaseStore> =
        Arc::new(DynamoLeaseStore::new(dynamo.clone(), floor_table.clone()));
    seed(&(ours_store.clone() as Arc<dyn LeaseStore>), p, &format!("o{n}_"), n).await;
    let floor_leases = seed(&floor_store, p, &format!("f{n}_"), n).await;

    let revoker = Revoker::new(
        RevokerPorts {
            store: ours_store.clone(),
            revokers: Revokers::default().with(db.clone()),
            clock: Arc::new(SystemClock),
            audit: Arc::new(MemoryAuditSink::default()),
            metrics: Arc::new(MemoryMetrics::default()),
        },
        RevokerSettings { concurrency: CONCURRENCY, ..RevokerSettings::default() },
    );
    let started = Instant::now();
    let report = revoker
        .sweep(&*ours_store, "bench", tokio::time::Instant::now() + Duration::from_hours(1))
        .await
        .expect("sweep");
    let ours = started.elapsed();
    assert_eq!(report.revoked, n, "{report:?}");
    let floor = raw_loop(dynamo, &floor_table, floor_leases).await;

    for table in [ours_table, floor_table] {
        let _ = dynamo.delete_table().table_name(table).send().await;
    }
    (ours, floor)
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // `CREDBROKER_BENCH_SWEEP_SIZES=1000` runs one size only (a quicker look while tuning).
    let sizes: Vec<usize> = match std::env::var("CREDBROKER_BENCH_SWEEP_SIZES") {
        Ok(list) if full => {
            list.split(',').map(|n| n.trim().parse().expect("sizes: numbers, comma-separated")).collect()
        }
        _ if full => vec![1000, 10_000],
        _ => vec![20],
    };
    let sdk = localstack_sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let p = prefix();
    // Drops whatever this run created under its prefix, also when it fails half-way.
    let _cleanup = Cleanup::postgres(&p);
    let db = Arc::new(DatabaseIssuer::new().with_connection(
        "main",
        pg_config(&format!("pool_size = {CONCURRENCY}")),
        Arc::new(StaticSecret::empty()),
    ));
    println!("{:<28} {:>10} {:>10} {:>7} {:>12}  target", "sweep", "time", "floor", "ratio", "per lease");
    let mut per_lease = Vec::new();
    if full {
        // LocalStack's DynamoDB warms up under load (the same 1,000 leases took 1.70x their
        // floor on a fresh LocalStack and 1.00x right after): whichever runs first would pay
        // for it. One untimed round of both first.
        sweep_and_floor(&dynamo, &db, &p, WARM_UP_LEASES).await;
    }
    for &n in &sizes {
        let (ours, floor) = sweep_and_floor(&dynamo, &db, &p, n).await;
        let ratio = ours.as_secs_f64() / floor.as_secs_f64();
        let each = ours.as_secs_f64() * 1e3 / f64::from(u32::try_from(n).expect("lease count fits"));
        per_lease.push(each);
        let mut row = Row::new(
            format!("revoker sweep, {n} expired leases"),
            ours.as_secs_f64(),
            Some(floor.as_secs_f64()),
            "s",
            Target::MaxRatio(1.5),
        );
        row.smoke = !full;
        bench::report(&row);
        println!(
            "{:<28} {:>9.2}s {:>9.2}s {ratio:>6.2}x {each:>9.3} ms  ≤ 1.5x",
            format!("{n} expired leases"),
            ours.as_secs_f64(),
            floor.as_secs_f64()
        );
    }
    if let [small, large] = per_lease[..] {
        // Linear cost: the same time per lease at 10x the leases (1.0x).
        bench::report(&Row::new(
            format!("revoker sweep per lease, {} vs {} leases", sizes[1], sizes[0]),
            large,
            Some(small),
            "ms",
            Target::MaxRatio(1.3),
        ));
    }
    if !full {
        println!("(smoke run: pass --bench for real figures)");
    }
}
