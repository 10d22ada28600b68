//! Mint benchmark: PostgreSQL users through the broker's issuer on a warm pool, against the
//! raw floor measured in the same run at the same SCRAM iteration count.
//!
//! - floor: one raw connection per worker sending exactly the statements a mint needs
//!   (`CREATE ROLE … LOGIN PASSWORD '<verifier>' VALID UNTIL …; GRANT <role> TO …` in one
//!   batch), verifiers computed before the clock starts;
//! - mint: `DatabaseIssuer::issue` for a compiled grant (password generation, client-side
//!   SCRAM verifier, SQL building, pool checkout, the same batch), plans rendered as the broker
//!   renders them.
//!
//! Both run sequentially (latency: median and p99 of single mints) and with `CONCURRENCY`
//! workers (throughput), at the default 4096 iterations and at 1 iteration, in alternating
//! rounds (so load from elsewhere on the machine hits both). Every role is dropped after each
//! round (not timed).
//!
//! `cargo bench -p credbroker-tests --bench db_mint` prints the table (needs the PostgreSQL
//! of `scripts/test.sh`, or `CREDBROKER_TEST_PG_URL`). Without `--bench` (as
//! `cargo test --all-targets` runs it) it does a quick smoke run that measures nothing.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use credbroker::backend::{CredentialIssuer, IssuePlan};
use credbroker::issuer::db::{DatabaseIssuer, scram};
use credbroker::lease::LeaseId;
use credbroker::policy::database::{DatabaseGrant, DatabaseGrantSpec, PlanInputs, compile};
use credbroker::secrets::StaticSecret;
use credbroker_tests::bench::{Row, Target, report};
use credbroker_tests::db::{PG_AUTH_DATABASE, pg_admin, pg_config, prefix};
use sqlx::{AssertSqlSafe, PgConnection};

/// Workers for the throughput runs (2 cores: the server's hashing and the client's overlap).
const CONCURRENCY: usize = 4;

struct Sizes {
    sequential: usize,
    concurrent: usize,
}

#[derive(Clone, Copy)]
struct Figures {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run(full));
}

async fn run(full: bool) {
    let p = prefix();
    let role = format!("{p}_bench");
    let mut admin = pg_admin(PG_AUTH_DATABASE).await;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE ROLE {role} NOLOGIN")))
        .execute(&mut admin)
        .await
        .expect("role");

    println!(
        "{:<44} {:>9} {:>9} {:>10} {:>8}  target",
        "benchmark (PostgreSQL, warm connections)", "p50", "p99", "mints/s", "ratio"
    );
    let rounds = if full { 5 } else { 1 };
    for iterations in [4096, 1] {
        let sizes = match (full, iterations) {
            (false, _) => Sizes { sequential: 3, concurrent: 4 },
            (true, 4096) => Sizes { sequential: 300, concurrent: 400 },
            (true, _) => Sizes { sequential: 1000, concurrent: 4000 },
        };
        let grant = grant(&p, &role);
        let issuer = Arc::new(DatabaseIssuer::new().with_connection(
            "bench",
            pg_config(&format!("scram_iterations = {iterations}\npool_size = {CONCURRENCY}")),
            Arc::new(StaticSecret::empty()),
        ));
        // Warm the pool and the raw connections (each backend's catalog caches) untimed.
        mint_many(&issuer, &grant, CONCURRENCY * 4, CONCURRENCY).await;
        let mut raw = Vec::new();
        for _ in 0..CONCURRENCY {
            raw.push(pg_admin(PG_AUTH_DATABASE).await);
        }
        floor(&p, &role, iterations, CONCURRENCY * 4, &mut raw, CONCURRENCY).await;

        // Floor and mint alternate in rounds, so load from elsewhere on the machine hits both.
        let (mut floor_seq, mut mint_seq, mut floor_conc, mut mint_conc) =
            (Run::default(), Run::default(), Run::default(), Run::default());
        for _ in 0..rounds {
            floor_seq.add(floor(&p, &role, iterations, sizes.sequential / rounds, &mut raw, 1).await);
            mint_seq.add(mint_many(&issuer, &grant, sizes.sequential / rounds, 1).await);
            floor_conc
                .add(floor(&p, &role, iterations, sizes.concurrent / rounds, &mut raw, CONCURRENCY).await);
            mint_conc.add(mint_many(&issuer, &grant, sizes.concurrent / rounds, CONCURRENCY).await);
            drop_roles(&mut admin, &format!("{p}_%")).await;
        }
        let (floor_seq, mint_seq, floor_conc, mint_conc) =
            (floor_seq.figures(), mint_seq.figures(), floor_conc.figures(), mint_conc.figures());

        let label = format!("{iterations} it.");
        let row = |name: &str, f: Figures, ratio: Option<f64>, target: &str| {
            println!(
                "{name:<44} {:>7.2}ms {:>7.2}ms {:>10.0} {:>8}  {target}",
                ms(f.p50),
                ms(f.p99),
                f.per_second,
                ratio.map_or_else(|| "1.00x".to_owned(), |r| format!("{r:.2}x"))
            );
        };
        row(&format!("floor, sequential ({label})"), floor_seq, None, "");
        row(
            &format!("mint, sequential ({label})"),
            mint_seq,
            Some(mint_seq.p50.as_secs_f64() / floor_seq.p50.as_secs_f64()),
            "<= 1.30x (p50)",
        );
        row(&format!("floor, {CONCURRENCY} workers ({label})"), floor_conc, None, "");
        let low = if iterations == 1 { ", >= 1000/s" } else { "" };
        row(
            &format!("mint, {CONCURRENCY} workers ({label})"),
            mint_conc,
            Some(floor_conc.per_second / mint_conc.per_second),
            &format!("<= 1.30x (time per mint){low}"),
        );
        report_headlines(&label, iterations, (&floor_seq, &mint_seq), (&floor_conc, &mint_conc), full);
    }
    sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE {role}"))).execute(&mut admin).await.expect("drop role");
    if !full {
        println!("(smoke run: pass --bench for real figures)");
    }
}

/// The rows of the benchmark table (`scripts/bench.sh`): ratios to the floor, and the rate.
fn report_headlines(
    label: &str,
    iterations: u32,
    (floor_seq, mint_seq): (&Figures, &Figures),
    (floor_conc, mint_conc): (&Figures, &Figures),
    full: bool,
) {
    let headline = |name: String, figure: f64, floor: Option<f64>, unit: &str, target: Target| {
        let mut row = Row::new(name, figure, floor, unit, target);
        row.smoke = !full;
        report(&row);
    };
    headline(
        format!("db mint p50, sequential ({label})"),
        ms(mint_seq.p50),
        Some(ms(floor_seq.p50)),
        "ms",
        Target::MaxRatio(1.3),
    );
    // Time per mint with several workers: the inverse of the rate.
    headline(
        format!("db mint, {CONCURRENCY} workers ({label})"),
        1e3 / mint_conc.per_second,
        Some(1e3 / floor_conc.per_second),
        "ms/mint",
        Target::MaxRatio(1.3),
    );
    if iterations == 1 {
        headline(
            format!("db mint rate, {CONCURRENCY} workers ({label})"),
            mint_conc.per_second,
            None,
            "mints/s",
            Target::MinFigure(1000.0),
        );
    }
}

fn grant(p: &str, role: &str) -> DatabaseGrant {
    let text = format!(
        "engine = \"postgres\"\nconnection = \"bench\"\ndatabase = \"{PG_AUTH_DATABASE}\"\n\
         username = \"{p}_{{{{random}}}}\"\nroles = [\"{role}\"]"
    );
    let spec: DatabaseGrantSpec = toml::from_str(&text).expect("grant spec");
    compile(spec).expect("grant")
}

fn plan(grant: &DatabaseGrant) -> IssuePlan {
    let now = Utc::now();
    let lease_id = LeaseId::generate(now).expect("lease id");
    IssuePlan::Database(grant.plan(&PlanInputs {
        policy: "bench",
        grant: "mint",
        subject: "bench",
        lease_id: lease_id.as_str(),
        now,
        expires_at: now + TimeDelta::minutes(15),
    }))
}

/// `count` mints over `workers` concurrent tasks; latencies of each, and the overall rate.
async fn mint_many(issuer: &Arc<DatabaseIssuer>, grant: &DatabaseGrant, count: usize, workers: usize) -> Run {
    let plans: Vec<IssuePlan> = (0..count).map(|_| plan(grant)).collect();
    let chunks: Vec<Vec<IssuePlan>> = split(plans, workers);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in chunks {
        let issuer = Arc::clone(issuer);
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(chunk.len());
            for plan in chunk {
                let t = Instant::now();
                issuer.issue(&plan).await.expect("mint");
                latencies.push(t.elapsed());
            }
            latencies
        });
    }
    collect(tasks, started, count).await
}

/// The same statements on raw connections (kept warm across rounds, like the issuer's
/// pool), verifiers precomputed.
async fn floor(
    p: &str,
    role: &str,
    iterations: u32,
    count: usize,
    connections: &mut Vec<PgConnection>,
    workers: usize,
) -> Run {
    let iterations = NonZeroU32::new(iterations).expect("iterations");
    let until = (Utc::now() + TimeDelta::minutes(16)).format("%Y-%m-%d %H:%M:%S+00");
    let batches: Vec<String> = (0..count)
        .map(|i| {
            let mut random = [0u8; 8];
            aws_lc_rs::rand::fill(&mut random).expect("random");
            let name = format!("{p}_f{}_{i}", u64::from_be_bytes(random));
            let verifier = scram::verifier("Aa0-floor-password-0123456789xyz", iterations).expect("verifier");
            format!(
                "CREATE ROLE \"{name}\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
                 PASSWORD '{verifier}' VALID UNTIL '{until}';\nGRANT \"{role}\" TO \"{name}\""
            )
        })
        .collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let taken: Vec<PgConnection> = connections.drain(..workers).collect();
    for (chunk, mut conn) in split(batches, workers).into_iter().zip(taken) {
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(chunk.len());
            for batch in chunk {
                let t = Instant::now();
                sqlx::raw_sql(AssertSqlSafe(batch)).execute(&mut conn).await.expect("floor");
                latencies.push(t.elapsed());
            }
            (latencies, conn)
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        let (chunk, conn) = done.expect("task");
        latencies.extend(chunk);
        connections.push(conn);
    }
    Run { latencies, elapsed: started.elapsed() }
}

fn split<T>(items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..parts).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        out[i % parts].push(item);
    }
    out
}

async fn collect(mut tasks: tokio::task::JoinSet<Vec<Duration>>, started: Instant, count: usize) -> Run {
    let mut latencies = Vec::with_capacity(count);
    while let Some(chunk) = tasks.join_next().await {
        latencies.extend(chunk.expect("task"));
    }
    Run { latencies, elapsed: started.elapsed() }
}

/// Latencies and wall time of one or more rounds.
#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
    }

    fn figures(mut self) -> Figures {
        self.latencies.sort();
        let at = |q: f64| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
            self.latencies[i]
        };
        #[allow(clippy::cast_precision_loss)]
        let per_second = self.latencies.len() as f64 / self.elapsed.as_secs_f64();
        Figures { p50: at(0.5), p99: at(0.99), per_second }
    }
}

async fn drop_roles(admin: &mut PgConnection, pattern: &str) {
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolname LIKE $1 AND rolcanlogin")
            .bind(pattern)
            .fetch_all(&mut *admin)
            .await
            .expect("roles");
    for chunk in roles.chunks(200) {
        let batch: Vec<String> = chunk.iter().map(|r| format!("DROP ROLE \"{r}\"")).collect();
        sqlx::raw_sql(AssertSqlSafe(batch.join(";"))).execute(&mut *admin).await.expect("drop roles");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
