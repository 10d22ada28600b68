//! Cold init, warm memory and binary size of the three Lambda functions, each against its
//! floor (`tests/floors`: a binary with the same SDK clients, database connection and runtime,
//! doing nothing else) and against a hello-world `lambda_runtime` binary, in one run.
//!
//! - cold init: process start (just before spawn) → first `GET …/runtime/invocation/next` on
//!   the runtime-API emulator (`credbroker_tests::lambda`), then the process is killed; every
//!   binary once per round, round-robin with a rotating start (so load from elsewhere on the
//!   machine hits all alike), after one discarded warm-up round; median and p95;
//! - warm memory: `VmRSS` and `VmHWM` (`/proc/<pid>/status`) after 1,000 invocations with a
//!   representative payload: real token exchanges (alternately a broker-signed token and an STS
//!   session) against LocalStack, real PostgreSQL users minted by db-credentials, revoker
//!   sweeps of the (shared) lease table; the floors after as many trivial invocations;
//! - binary size: the stripped release binaries.
//!
//! The functions are configured as the templates deploy them (one config file with AWS grants
//! and a PostgreSQL admin connection whose password is in Secrets Manager; DynamoDB lease
//! table), except that the signing key comes from a file, so that init makes no network call
//! its floor does not make; one extra, informational binary run takes the key from Secrets
//! Manager as deployed. `docs/benchmarks.md` ("Cold init, memory and binary size") has the
//! figures and what each function does at init.
//!
//! `cargo bench -p credbroker-tests --bench cold_init` uses the release binaries, built first
//! with `cargo build --release -p token-exchange -p revoker -p db-credentials -p
//! credbroker-floors`. Without `--bench` (as `cargo test --all-targets` runs it) it does a
//! quick smoke run (2 starts each, 3 invocations) with the debug binaries of `cargo build
//! --workspace --bins`. Both need LocalStack and PostgreSQL (`scripts/test.sh` starts them).

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use credbroker::keys::SigningKey;
use credbroker::store::dynamodb::create_table;
use credbroker_tests::bench::{Row, Target, quantile, report};
use credbroker_tests::db::{Cleanup, PG_AUTH_DATABASE, pg_admin, pg_server, prefix};
use credbroker_tests::lambda::{Outcome, RuntimeApi, proxy_response, rest_api_event, scheduled_event};
use credbroker_tests::oidc::OidcServer;
use credbroker_tests::{aws_endpoint, create_secret, localstack_sdk_config, unique_name};
use serde_json::{Value, json};

/// The three functions, each with its floor: (function binary, floor binary).
const FUNCTIONS: [(&str, &str); 3] = [
    ("token-exchange", "floor-token-exchange"),
    ("revoker", "floor-revoker"),
    ("db-credentials", "floor-db-credentials"),
];
const HELLO: &str = "floor-hello";
/// Label of the informational run of token-exchange with its signing key in Secrets Manager.
const TOKEN_EXCHANGE_SM: &str = "token-exchange (key in Secrets Manager)";
const RELEASE_BUILD: &str =
    "cargo build --release -p token-exchange -p revoker -p db-credentials -p credbroker-floors";
const INIT_TARGET: f64 = 1.3;
const SIZE_TARGET: f64 = 1.2;
/// Warm RSS target, MiB.
const RSS_TARGET: f64 = 32.0;
const MIB: f64 = 1024.0 * 1024.0;

struct Plan {
    smoke: bool,
    /// Measured rounds of cold starts (each binary once per round), after `warmup` rounds.
    rounds: usize,
    warmup: usize,
    invocations: usize,
}

/// One binary as the benchmark starts it.
struct Subject {
    label: String,
    path: PathBuf,
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    function_name: String,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
}

/// Everything the functions need: lease table, secrets, policies and config, OIDC issuer.
struct Fixture {
    dynamo: aws_sdk_dynamodb::Client,
    secrets: aws_sdk_secretsmanager::Client,
    table: String,
    secret_arns: Vec<String>,
    oidc: OidcServer,
    /// The PostgreSQL connection name (also the prefix of minted roles): `application_name`
    /// of the admin sessions is `credbroker:<this>`.
    connection: String,
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    signing_secret_arn: String,
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    /// MiB after init, before the first invocation.
    after_init: f64,
    rss: f64,
    hwm: f64,
    first_ms: f64,
    second_ms: f64,
    warm_p50_ms: f64,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan { smoke: false, rounds: 50, warmup: 1, invocations: 1000 }
    } else {
        Plan { smoke: true, rounds: 2, warmup: 0, invocations: 3 }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run(&plan));
}

async fn run(plan: &Plan) {
    let bin_dir = binaries_dir(plan.smoke);
    // Fails now, before anything is created in LocalStack, when PostgreSQL is missing.
    drop(pg_admin(PG_AUTH_DATABASE).await);
    let p = prefix();
    // Drops the roles db-credentials mints (`<p>_…`), also when the run fails half-way.
    let _cleanup = Cleanup::postgres(&p);
    let fixture = Fixture::new(&p).await;

    let mut subjects = Vec::new();
    for (function, floor) in FUNCTIONS {
        subjects.push(fixture.subject(&bin_dir, function, function, function, Vec::new()));
        let floor_env = if function == "db-credentials" { fixture.floor_db_env() } else { Vec::new() };
        subjects.push(fixture.subject(&bin_dir, floor, floor, function, floor_env));
    }
    subjects.push(fixture.subject(&bin_dir, HELLO, HELLO, "hello", Vec::new()));
    let key_from_secret = vec![("CREDBROKER_SIGNING_KEY_SECRET_ARN", fixture.signing_secret_arn.clone())];
    subjects.push(fixture.subject(
        &bin_dir,
        TOKEN_EXCHANGE_SM,
        "token-exchange",
        "token-exchange",
        key_from_secret,
    ));

    // Both db-credentials binaries really open their admin connection before the first /next
    // (the function only logs a warning when it cannot).
    for name in ["db-credentials", "floor-db-credentials"] {
        let subject = subjects.iter().find(|s| s.label == name).expect("subject");
        fixture.assert_admin_session_at_init(subject).await;
    }
    // The floors' exercise path, which keeps their clients' code in their binaries for the
    // size comparison, runs through and still reaches the runtime.
    for (_, floor) in FUNCTIONS {
        let subject = subjects.iter().find(|s| s.label == floor).expect("subject");
        assert_exercise_reaches_runtime(subject).await;
    }

    println!(
        "cold init: {} runs per binary ({} warm-up round discarded), interleaved; binaries in {}",
        plan.rounds,
        plan.warmup,
        bin_dir.display()
    );
    let init = cold_inits(&subjects, plan).await;

    println!("warm memory: {} invocations per binary", plan.invocations);
    let mut memory = Vec::new();
    for subject in subjects.iter().filter(|s| s.label != TOKEN_EXCHANGE_SM) {
        let measured = warm_memory(&fixture, subject, plan.invocations).await;
        memory.push((subject.label.clone(), measured));
    }

    let sizes: Vec<(String, f64)> = subjects
        .iter()
        .filter(|s| s.label != TOKEN_EXCHANGE_SM)
        .map(|s| (s.label.clone(), file_size_mib(&s.path)))
        .collect();

    print_details(&init, &memory, &sizes);
    report_rows(plan, &init, &memory, &sizes);
    fixture.clean_up().await;
    if plan.smoke {
        println!("(smoke run: pass --bench for real figures)");
    }
}

/// target/release (bench) or target/debug (smoke): where the bench executable's `deps/` is.
fn binaries_dir(smoke: bool) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_owned();
    let build = if smoke { "cargo build --workspace --bins" } else { RELEASE_BUILD };
    let missing: Vec<&str> = FUNCTIONS
        .iter()
        .flat_map(|(function, floor)| [*function, *floor])
        .chain([HELLO])
        .filter(|name| !dir.join(name).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "missing in {}: {}. Build them first: `{build}`",
        dir.display(),
        missing.join(", ")
    );
    dir
}

impl Fixture {
    async fn new(p: &str) -> Self {
        let sdk = localstack_sdk_config().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let table = unique_name("bench-cold-init");
        create_table(&dynamo, &table).await.expect("create table");
        // The test server trusts its admin: the secret exists because Lambda reads it.
        let admin_secret =
            create_secret(&secrets, "credbroker-bench-cold-init", "unused-with-trust-auth".to_owned()).await;
        // What the templates generate: 64 letters and digits (their randomness is not measured).
        let seed: String = (0..4).map(|_| unique_name("seed").replace('-', "")).collect();
        let signing_secret = create_secret(
            &secrets,
            "credbroker-bench-cold-init",
            json!({ "format": "ed25519-seed-sha256", "seed": seed }).to_string(),
        )
        .await;
        let oidc = OidcServer::start().await;

        let dir = tempfile::tempdir().expect("tempdir");
        let policy_dir = dir.path().join("policies");
        std::fs::create_dir(&policy_dir).expect("mkdir");
        std::fs::write(policy_dir.join("bench.toml"), policy(&oidc.url(), p)).expect("write policy");
        let key_file = dir.path().join("signing.pk8");
        // Created now, so every start loads the same key and none writes one.
        SigningKey::load_or_generate(&key_file).expect("signing key");
        let pg = pg_server();
        let config = dir.path().join("credbroker.toml");
        std::fs::write(
            &config,
            format!(
                r#"public_url = "https://broker.example.test"
[identity]
allow_http_loopback = true
[signing]
key_file = "{}"

[databases.{p}]
engine = "postgres"
host = "{}"
port = {}
user = "{}"
database = "{PG_AUTH_DATABASE}"
tls = "disable"
password_secret_arn = "{admin_secret}"
# A fast mint (docs/databases.md): the bench measures memory, not PBKDF2.
scram_iterations = 1
"#,
                key_file.display(),
                pg.host,
                pg.port,
                pg.user
            ),
        )
        .expect("write config");
        let env = vec![
            ("CREDBROKER_CONFIG", config.display().to_string()),
            ("CREDBROKER_TABLE", table.clone()),
            ("CREDBROKER_POLICY_DIR", policy_dir.display().to_string()),
            ("CREDBROKER_AWS_ENDPOINT_URL", aws_endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ];
        Self {
            dynamo,
            secrets,
            table,
            secret_arns: vec![admin_secret, signing_secret.clone()],
            oidc,
            connection: p.to_owned(),
            dir,
            env,
            signing_secret_arn: signing_secret,
        }
    }

    /// What `[databases.<p>]` says, as the floor's connection URL and secret.
    fn floor_db_env(&self) -> Vec<(&'static str, String)> {
        let pg = pg_server();
        vec![
            (
                "CREDBROKER_FLOOR_PG_URL",
                format!(
                    "postgres://{}@{}:{}/{PG_AUTH_DATABASE}?sslmode=disable&application_name=credbroker%3A{}",
                    pg.user, pg.host, pg.port, self.connection
                ),
            ),
            ("CREDBROKER_FLOOR_PG_SECRET_ARN", self.secret_arns[0].clone()),
        ]
    }

    fn subject(
        &self,
        bin_dir: &Path,
        label: &str,
        binary: &str,
        function_name: &str,
        extra_env: Vec<(&'static str, String)>,
    ) -> Subject {
        let mut env = self.env.clone();
        env.extend(extra_env);
        Subject {
            label: label.to_owned(),
            path: bin_dir.join(binary),
            function_name: function_name.to_owned(),
            env,
            log: self.dir.path().join(format!("{}.log", label.replace([' ', '(', ')'], "_"))),
        }
    }

    /// Starts `subject` and checks that an admin session named like the function's exists
    /// once it asks for its first invocation.
    async fn assert_admin_session_at_init(&self, subject: &Subject) {
        let application_name = format!("credbroker:{}", self.connection);
        let mut admin = pg_admin(PG_AUTH_DATABASE).await;
        let sessions = || {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(application_name.clone())
        };
        for _ in 0..100 {
            if sessions().fetch_one(&mut admin).await.expect("pg_stat_activity") == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let api = RuntimeApi::start().await;
        let mut child = start(&api, subject);
        wait_ready(&api, &mut child, subject).await;
        let open = sessions().fetch_one(&mut admin).await.expect("pg_stat_activity");
        stop(child);
        assert!(
            open >= 1,
            "{} opened no admin connection during init; log:\n{}",
            subject.label,
            log_tail(subject)
        );
    }

    /// A representative invocation of `subject` (the `n`th).
    fn payload(&self, subject: &Subject, n: usize) -> Value {
        let token = || {
            self.oidc.issuer.sign(&self.oidc.issuer.claims("system:serviceaccount:bench:runner", Utc::now()))
        };
        match subject.label.as_str() {
            "token-exchange" => {
                let grant = if n.is_multiple_of(2) { "bench/api" } else { "bench/aws" };
                let body = json!({ "token": token(), "grant": grant }).to_string();
                let headers = [("content-type", "application/json")];
                rest_api_event("POST", "/v1/token", &headers, Some(&body), "198.51.100.7")
            }
            "db-credentials" => {
                let authorization = format!("Bearer {}", token());
                let headers =
                    [("authorization", authorization.as_str()), ("content-type", "application/json")];
                rest_api_event(
                    "POST",
                    "/v1/db/bench/pg/credentials",
                    &headers,
                    Some("{\"ttl\":\"10m\"}"),
                    "198.51.100.7",
                )
            }
            "floor-token-exchange" | "floor-db-credentials" => {
                rest_api_event("GET", "/v1/health", &[], None, "198.51.100.7")
            }
            _ => scheduled_event(),
        }
    }

    /// Deletes the table and the secrets; a failure is reported, not fatal (the figures stand).
    async fn clean_up(self) {
        if let Err(e) = self.dynamo.delete_table().table_name(&self.table).send().await {
            eprintln!("warning: could not delete table {}: {e:?}", self.table);
        }
        for arn in &self.secret_arns {
            let deleted =
                self.secrets.delete_secret().secret_id(arn).force_delete_without_recovery(true).send().await;
            if let Err(e) = deleted {
                eprintln!("warning: could not delete secret {arn}: {e:?}");
            }
        }
    }
}

/// One policy with the three kinds of grant the functions serve.
/// Starts a floor with `CREDBROKER_FLOOR_EXERCISE` set (`tests/floors/src/lib.rs`): it sends
/// its requests, most of which fail here (no such table, role or database), and must then
/// still ask for its first invocation.
async fn assert_exercise_reaches_runtime(floor: &Subject) {
    let mut env = floor.env.clone();
    env.push(("CREDBROKER_FLOOR_EXERCISE", "1".to_owned()));
    let exercising = Subject {
        label: format!("{} (exercise)", floor.label),
        path: floor.path.clone(),
        function_name: floor.function_name.clone(),
        env,
        log: floor.log.with_extension("exercise.log"),
    };
    let api = RuntimeApi::start().await;
    let mut child = start(&api, &exercising);
    wait_ready(&api, &mut child, &exercising).await;
    stop(child);
}

fn policy(issuer: &str, p: &str) -> String {
    format!(
        r#"issuer = "{issuer}"
audience = ["credbroker"]
subject = {{ glob = "system:serviceaccount:bench:*" }}

[grants.api]
type = "signed_token"
audience = "ledger"
scopes = ["ledger:read"]

[grants.aws]
type = "aws_role"
role_arn = "arn:aws:iam::000000000000:role/credbroker-bench"

[grants.pg]
type = "database"
engine = "postgres"
connection = "{p}"
database = "{PG_AUTH_DATABASE}"
username = "{p}_{{{{random}}}}"
privileges = [{{ allow = ["USAGE"], schemas = ["public"] }}]
"#
    )
}

/// Spawns `subject` attached to `api`, its output appended to its log file.
fn start(api: &RuntimeApi, subject: &Subject) -> Child {
    let log = File::options().create(true).append(true).open(&subject.log).expect("log file");
    let env: Vec<(&str, String)> = subject.env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut command = api.function_command(&subject.path, &subject.function_name, &env);
    command.stdin(Stdio::null()).stdout(log.try_clone().expect("log file")).stderr(log);
    command.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", subject.path.display()))
}

/// When the first `GET …/invocation/next` arrived; panics if the process exits or hangs first.
async fn wait_ready(api: &RuntimeApi, child: &mut Child, subject: &Subject) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(at) = api.wait_first_next(Duration::from_millis(20)).await {
            return at;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} exited ({status}) before asking for an invocation (init error: {:?}); log:\n{}",
                subject.label,
                api.init_error(),
                log_tail(subject)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready within 30 s; log:\n{}",
            subject.label,
            log_tail(subject)
        );
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn log_tail(subject: &Subject) -> String {
    let text = std::fs::read_to_string(&subject.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Cold-init samples (ms) by subject label.
async fn cold_inits(subjects: &[Subject], plan: &Plan) -> Vec<(String, Vec<f64>)> {
    let mut samples: Vec<(String, Vec<f64>)> =
        subjects.iter().map(|s| (s.label.clone(), Vec::with_capacity(plan.rounds))).collect();
    for round in 0..plan.warmup + plan.rounds {
        for offset in 0..subjects.len() {
            let i = (round + offset) % subjects.len();
            let subject = &subjects[i];
            let api = RuntimeApi::start().await;
            let started = Instant::now();
            let mut child = start(&api, subject);
            let ready = wait_ready(&api, &mut child, subject).await;
            stop(child);
            if round >= plan.warmup {
                samples[i].1.push(ready.duration_since(started).as_secs_f64() * 1e3);
            }
        }
    }
    samples
}

/// Memory of `subject` after `invocations` representative invocations.
async fn warm_memory(fixture: &Fixture, subject: &Subject, invocations: usize) -> Memory {
    let api = RuntimeApi::start().await;
    let mut child = start(&api, subject);
    wait_ready(&api, &mut child, subject).await;
    let (after_init, _) = memory_of(&child);
    let mut latencies = Vec::with_capacity(invocations);
    for n in 0..invocations {
        let payload = fixture.payload(subject, n);
        let started = Instant::now();
        let outcome = api.invoke(payload).await;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        check(subject, n, outcome);
    }
    let (rss, hwm) = memory_of(&child);
    stop(child);
    let (first_ms, second_ms) = (latencies[0], latencies.get(1).copied().unwrap_or(f64::NAN));
    let warm_p50_ms = if latencies.len() > 2 { quantile(&mut latencies[2..], 0.5) } else { f64::NAN };
    Memory { after_init, rss, hwm, first_ms, second_ms, warm_p50_ms }
}

/// Panics unless the invocation did the real work (a 200 for the HTTP functions).
fn check(subject: &Subject, n: usize, outcome: Outcome) {
    match subject.label.as_str() {
        "token-exchange" | "db-credentials" | "floor-token-exchange" | "floor-db-credentials" => {
            let (status, body) = proxy_response(outcome);
            assert_eq!(status, 200, "{} invocation {n}: {body}", subject.label);
        }
        _ => {
            if let Outcome::Error(error) = outcome {
                panic!("{} invocation {n} failed: {error}", subject.label);
            }
        }
    }
}

/// (`VmRSS`, `VmHWM`) of a running child, MiB.
fn memory_of(child: &Child) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("/proc status");
    let field = |name: &str| {
        let kib: u32 = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{}/status", child.id()));
        f64::from(kib) / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn file_size_mib(path: &Path) -> f64 {
    let bytes = std::fs::metadata(path).expect("binary").len();
    // Binaries are far below 2^53 bytes.
    #[allow(clippy::cast_precision_loss)]
    let bytes = bytes as f64;
    bytes / MIB
}

fn figure<'a, T>(list: &'a [(String, T)], label: &str) -> &'a T {
    &list.iter().find(|(l, _)| l == label).unwrap_or_else(|| panic!("no figure for {label}")).1
}

/// (p50, p95) of a subject's cold inits, ms.
fn init_quantiles(init: &[(String, Vec<f64>)], label: &str) -> (f64, f64) {
    let mut samples = figure(init, label).clone();
    (quantile(&mut samples, 0.5), quantile(&mut samples, 0.95))
}

/// The floor of a function (or of its Secrets Manager variant).
fn floor_of(label: &str) -> Option<&'static str> {
    FUNCTIONS.iter().find(|(function, _)| label.starts_with(function)).map(|(_, floor)| *floor)
}

fn ratio(figure: f64, floor: f64) -> String {
    format!("{:.2}x", figure / floor)
}

fn print_details(init: &[(String, Vec<f64>)], memory: &[(String, Memory)], sizes: &[(String, f64)]) {
    let p50 = |label: &str| init_quantiles(init, label).0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<40} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "cold init (ms)", "p50", "p95", "min", "max", "p50/floor", "p50/hello"
    );
    for (label, samples) in init {
        let mut s = samples.clone();
        let vs_floor = floor_of(label).map_or_else(|| "-".to_owned(), |f| ratio(p50(label), p50(f)));
        let _ = writeln!(
            out,
            "{label:<40} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {vs_floor:>9} {:>9}",
            quantile(&mut s, 0.5),
            quantile(&mut s, 0.95),
            quantile(&mut s, 0.0),
            quantile(&mut s, 1.0),
            ratio(p50(label), p50(HELLO)),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<40} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "warm memory (MiB), latency (ms)", "init RSS", "RSS", "HWM", "1st inv.", "2nd inv.", "warm p50"
    );
    for (label, m) in memory {
        let _ = writeln!(
            out,
            "{label:<40} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
            m.after_init, m.rss, m.hwm, m.first_ms, m.second_ms, m.warm_p50_ms
        );
    }
    let _ = writeln!(out, "\n{:<40} {:>9} {:>9} {:>9}", "binary size (MiB)", "size", "/floor", "/hello");
    for (label, size) in sizes {
        let vs_floor = floor_of(label).map_or_else(|| "-".to_owned(), |f| ratio(*size, *figure(sizes, f)));
        let _ =
            writeln!(out, "{label:<40} {size:>9.2} {vs_floor:>9} {:>9}", ratio(*size, *figure(sizes, HELLO)));
    }
    println!("{out}");
}

fn report_rows(
    plan: &Plan,
    init: &[(String, Vec<f64>)],
    memory: &[(String, Memory)],
    sizes: &[(String, f64)],
) {
    let hello = init_quantiles(init, HELLO);
    let mut rows = Vec::new();
    for (function, floor) in FUNCTIONS {
        let (ours, floor) = (init_quantiles(init, function), init_quantiles(init, floor));
        let name = |what: &str| format!("cold init {function} {what}");
        rows.push(Row::new(name("p50"), ours.0, Some(floor.0), "ms", Target::MaxRatio(INIT_TARGET)));
        rows.push(Row::new(name("p95"), ours.1, Some(floor.1), "ms", Target::MaxRatio(INIT_TARGET)));
        rows.push(Row::new(name("p50 vs hello"), ours.0, Some(hello.0), "ms", Target::None));
        rows.push(Row::new(name("p95 vs hello"), ours.1, Some(hello.1), "ms", Target::None));
    }
    let (with_secret, floor) =
        (init_quantiles(init, TOKEN_EXCHANGE_SM), init_quantiles(init, FUNCTIONS[0].1));
    rows.push(Row::new(
        "cold init token-exchange, key in Secrets Manager, p50",
        with_secret.0,
        Some(floor.0),
        "ms",
        Target::None,
    ));
    for (function, floor) in FUNCTIONS {
        rows.push(Row::new(
            format!("warm RSS {function}"),
            figure(memory, function).rss,
            Some(figure(memory, floor).rss),
            "MiB",
            Target::MaxFigure(RSS_TARGET),
        ));
    }
    for (function, floor) in FUNCTIONS {
        let size = *figure(sizes, function);
        let row = |floor: &str, target| {
            let what = if floor == HELLO { " vs hello" } else { "" };
            Row::new(
                format!("binary size {function}{what}"),
                size,
                Some(*figure(sizes, floor)),
                "MiB",
                target,
            )
        };
        rows.push(row(floor, Target::MaxRatio(SIZE_TARGET)));
        rows.push(row(HELLO, Target::None));
    }
    for mut row in rows {
        row.smoke = plan.smoke;
        report(&row);
    }
}
