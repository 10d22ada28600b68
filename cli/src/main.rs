//! `credbroker`: run the broker locally and mint development tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use credbroker::app::local::{LocalBroker, local};
use credbroker::config::{Config, IdentityConfig};
use credbroker::devissuer::DevIssuer;
use serde_json::{Map, Value};

#[derive(Parser, Debug)]
#[command(name = "credbroker", version, about = "Short-lived credentials for workload identities")]
struct Cli {
    /// Local state (embedded lease store, keys). Default: $XDG_STATE_HOME/credbroker or
    /// ~/.local/state/credbroker.
    #[arg(long, global = true, env = "CREDBROKER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the broker locally (embedded store, local keys, development OIDC issuer).
    Serve {
        /// Broker config (TOML); without it, local defaults (see docs/configuration.md).
        #[arg(long, env = "CREDBROKER_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Overrides `policy_dir` of the config.
        #[arg(long)]
        policy_dir: Option<PathBuf>,
    },
    /// Print a token from the development issuer of `credbroker serve` (development only).
    ///
    /// Examples:
    ///   credbroker dev-token --sub dev:alice --claim team=platform
    ///   credbroker dev-token --github acme/app --subject-form immutable
    DevToken {
        /// The token's `sub` (with --github: GitHub's subject for the repository and ref).
        #[arg(long, required_unless_present = "github")]
        sub: Option<String>,
        /// Shape the token like GitHub Actions' for OWNER/REPO: repository, repository_owner,
        /// repository_id, repository_owner_id, ref, event_name, and GitHub's subject.
        #[arg(long, value_name = "OWNER/REPO")]
        github: Option<String>,
        /// With --github: the subject form (GitHub's immutable form since July 2026, or names only).
        #[arg(long, value_enum, default_value_t = SubjectFormArg::Immutable, requires = "github")]
        subject_form: SubjectFormArg,
        /// With --github: the owner's immutable ID.
        #[arg(long, default_value = "1234567", requires = "github")]
        github_owner_id: String,
        /// With --github: the repository's immutable ID.
        #[arg(long, default_value = "7654321", requires = "github")]
        github_repo_id: String,
        /// With --github: the Git ref of the run.
        #[arg(long = "ref", default_value = "refs/heads/main", requires = "github")]
        git_ref: String,
        #[arg(long, default_value = "credbroker")]
        aud: String,
        /// Extra claim, `name=value` (repeatable). Values that parse as JSON are used as JSON.
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, Value)>,
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Base URL of the broker whose development issuer signs the token.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Check policies before deploying them.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Parse and compile a policy directory (or one file) exactly as the broker does at start,
    /// and print its warnings; exit status 1 when a policy does not load.
    ///
    /// Example: credbroker policy validate policies/
    Validate {
        /// A directory of `*.toml` policies, or one policy file.
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SubjectFormArg {
    /// `repo:owner/repo:ref:…`
    Names,
    /// `repo:owner@<id>/repo@<id>:ref:…`
    Immutable,
}

/// Claims of a GitHub Actions token for `owner/repo` (those policies match on), and its subject.
fn github_claims(
    repository: &str,
    form: SubjectFormArg,
    owner_id: &str,
    repo_id: &str,
    git_ref: &str,
) -> Result<(String, Map<String, Value>), String> {
    let (owner, repo) = repository.split_once('/').ok_or("--github takes OWNER/REPO")?;
    let subject = match form {
        SubjectFormArg::Names => format!("repo:{owner}/{repo}:ref:{git_ref}"),
        SubjectFormArg::Immutable => format!("repo:{owner}@{owner_id}/{repo}@{repo_id}:ref:{git_ref}"),
    };
    let claims = serde_json::json!({
        "repository": repository,
        "repository_owner": owner,
        "repository_id": repo_id,
        "repository_owner_id": owner_id,
        "ref": git_ref,
        "ref_type": "branch",
        "event_name": "push",
        "workflow": "deploy",
        "run_id": "1",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
    });
    let Value::Object(claims) = claims else { unreachable!("an object literal") };
    Ok((subject, claims))
}

fn parse_claim(raw: &str) -> Result<(String, Value), String> {
    let (name, value) = raw.split_once('=').ok_or("expected name=value")?;
    if name.is_empty() {
        return Err("claim name is empty".into());
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME").map_or_else(
        || {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("."), |h| PathBuf::from(h).join(".local/state"))
        },
        PathBuf::from,
    );
    base.join("credbroker")
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let state_dir = cli.state_dir.unwrap_or_else(default_state_dir);
    let result = match cli.command {
        Command::Serve { config, listen, policy_dir } => serve(state_dir, config, listen, policy_dir).await,
        Command::DevToken {
            sub,
            github,
            subject_form,
            github_owner_id,
            github_repo_id,
            git_ref,
            aud,
            claims,
            ttl,
            url,
        } => {
            let shaped = github
                .map(|repo| github_claims(&repo, subject_form, &github_owner_id, &github_repo_id, &git_ref))
                .transpose();
            shaped.and_then(|shaped| {
                let (github_sub, mut all) = shaped.unwrap_or_default();
                all.extend(claims);
                let sub = sub.unwrap_or(github_sub);
                dev_token(&state_dir, &sub, &aud, &all, ttl, &url)
            })
        }
        Command::Policy { command: PolicyCommand::Validate { path } } => validate_policies(&path),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("credbroker: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    state_dir: PathBuf,
    config_path: Option<PathBuf>,
    listen: SocketAddr,
    policy_dir: Option<PathBuf>,
) -> Result<(), String> {
    credbroker::telemetry::init(true);
    let mut config = if let Some(path) = &config_path {
        Config::load(path).map_err(|e| e.to_string())?
    } else {
        let defaults = Config::default();
        Config {
            public_url: format!("http://{listen}"),
            // The development issuer is served over plain HTTP on loopback.
            identity: IdentityConfig { allow_http_loopback: true, ..defaults.identity.clone() },
            ..defaults
        }
    };
    let state_dir = config.state_dir.clone().unwrap_or(state_dir);
    if let Some(dir) = policy_dir {
        config.policy_dir = dir;
    } else if config_path.is_none() && !config.policy_dir.is_dir() {
        // Started outside a checkout: serve the bundled example policies.
        config.policy_dir = install_example_policies(&state_dir)?;
    }
    let broker = local(&config, &state_dir).await.map_err(|e| format!("cannot start: {e}"))?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let hint = try_it(&broker, &config);
    let router = broker.router;
    println!(
        "credbroker listening on http://{listen} (local mode, state in {}, policies from {})",
        state_dir.display(),
        config.policy_dir.display()
    );
    println!("{hint}");
    credbroker::http::serve_local(listener, router).await.map_err(|e| format!("server failed: {e}"))
}

/// `policy validate`: the policies load (or the first error, with file and line), then every
/// warning, on standard error; the summary on standard output.
fn validate_policies(path: &std::path::Path) -> Result<(), String> {
    use credbroker::policy::{Policy, PolicySet};
    let set = if path.is_dir() {
        PolicySet::load_dir(path).map_err(|e| e.to_string())?
    } else {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let policy = Policy::from_toml(name, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut set = PolicySet::default();
        set.insert(policy)?;
        set
    };
    set.validate_consistency()?;
    let warnings = set.warnings();
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    println!("{}: {} policies load, {} warnings", path.display(), set.len(), warnings.len());
    Ok(())
}

/// The example policies, built into the binary so `serve` works from any directory.
const EXAMPLE_POLICIES: &[(&str, &str)] = &[
    ("local-dev.toml", include_str!("../../policies/examples/local-dev.toml")),
    ("github-actions.toml", include_str!("../../policies/examples/github-actions.toml")),
    ("kubernetes.toml", include_str!("../../policies/examples/kubernetes.toml")),
    ("gitlab-ci.toml", include_str!("../../policies/examples/gitlab-ci.toml")),
    ("local-databases.toml", include_str!("../../policies/examples/local-databases.toml")),
];

/// Writes the bundled examples to `<state_dir>/policies` (keeping files already there, which
/// may have been edited) and returns that directory.
fn install_example_policies(state_dir: &std::path::Path) -> Result<PathBuf, String> {
    let dir = state_dir.join("policies");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, text) in EXAMPLE_POLICIES {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(dir)
}

/// The ready-to-paste exchange printed at start-up: a fresh development token for the
/// `local-dev/api` example grant.
fn try_it(broker: &LocalBroker, config: &Config) -> String {
    let dev = &broker.dev_issuer;
    let has_example = broker.policies.get("local-dev").is_some_and(|p| p.issuer == dev.issuer());
    if !has_example {
        return format!("development issuer: {} (no policy trusts it yet)", dev.issuer());
    }
    let mut claims = Map::new();
    claims.insert("team".into(), Value::String("platform".into()));
    let now = chrono::Utc::now();
    match dev.mint("dev:alice", "credbroker", &claims, Duration::from_mins(10), now) {
        Ok(token) => format!(
            "development issuer (development only): {issuer}\n\
             Exchange a development token (valid 10 minutes, usable once) for a broker-signed token:\n\n  \
             curl -s {base}/v1/token -H 'content-type: application/json' \\\n    \
             -d '{{\"token\":\"{token}\",\"grant\":\"local-dev/api\"}}'\n\n\
             More tokens: credbroker dev-token --sub dev:alice --aud credbroker --claim team=platform\n\
             Verify results against {base}/.well-known/jwks.json",
            issuer = dev.issuer(),
            base = config.public_url.trim_end_matches('/'),
        ),
        Err(e) => format!("cannot mint a development token: {e}"),
    }
}

fn dev_token(
    state_dir: &std::path::Path,
    sub: &str,
    aud: &str,
    claims: &Map<String, Value>,
    ttl: Duration,
    url: &str,
) -> Result<(), String> {
    let dev = DevIssuer::load(state_dir, url).map_err(|e| e.to_string())?;
    let token = dev.mint(sub, aud, claims, ttl, chrono::Utc::now()).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}
