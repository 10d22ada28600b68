//! Broker configuration: one typed, strictly parsed TOML document, with a few environment
//! overrides for what a deployment template injects (table name, public URL).

#[cfg(feature = "database")]
pub mod database;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Value(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The broker's public base URL: `iss` of the tokens it signs, base of its JWKS.
    #[serde(default = "default_public_url")]
    pub public_url: String,
    /// Directory of policy files (`*.toml`).
    #[serde(default = "default_policy_dir")]
    pub policy_dir: PathBuf,
    /// Where local state lives (embedded store, local keys). Local mode only.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub signing: SigningConfig,
    /// Present: AWS grants are served (STS via the default credential chain or `endpoint_url`).
    #[serde(default)]
    pub aws: Option<AwsConfig>,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub leases: LeaseConfig,
    #[serde(default)]
    pub revoker: RevokerConfig,
    /// Admin connections for database grants, by name (`docs/databases.md`).
    #[serde(default)]
    #[cfg_attr(not(feature = "database"), allow(clippy::zero_sized_map_values))] // names only, there
    pub databases: std::collections::BTreeMap<String, DatabaseSection>,
}

/// One `[databases.<name>]` entry. A function built without database support (token-exchange)
/// accepts the section without reading it: the functions that connect to the databases
/// (db-credentials, the revoker) validate it, and fail their init if it is wrong. Its
/// deserializer would be the largest piece of configuration code in a binary that never
/// uses it (docs/benchmarks.md, "Where the bytes are").
#[cfg(feature = "database")]
pub type DatabaseSection = database::DatabaseConfig;
#[cfg(not(feature = "database"))]
pub type DatabaseSection = serde::de::IgnoredAny;

/// Tunables of the scheduled revoker (defaults suit a one-minute schedule).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokerConfig {
    /// Failed attempts before a lease becomes IRREVOCABLE (alarmed, then retried daily).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (with jitter) up to `max_backoff`.
    #[serde(default = "default_base_backoff", with = "humantime_serde_compat")]
    pub base_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde_compat")]
    pub max_backoff: Duration,
    /// Backend revocations in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Orphan reconciliation removes backend credentials no live lease names only once they
    /// are at least this old.
    #[serde(default = "default_orphan_min_age", with = "humantime_serde_compat")]
    pub orphan_min_age: Duration,
}

impl Default for RevokerConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            base_backoff: default_base_backoff(),
            max_backoff: default_max_backoff(),
            concurrency: default_concurrency(),
            orphan_min_age: default_orphan_min_age(),
        }
    }
}

impl RevokerConfig {
    pub fn settings(&self, retention: Duration) -> crate::revoker::RevokerSettings {
        crate::revoker::RevokerSettings {
            max_attempts: self.max_attempts,
            base_backoff: self.base_backoff,
            max_backoff: self.max_backoff,
            concurrency: self.concurrency,
            retention,
            ..crate::revoker::RevokerSettings::default()
        }
    }
}

fn default_max_attempts() -> u32 {
    8
}
fn default_base_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_backoff() -> Duration {
    Duration::from_hours(1)
}
fn default_concurrency() -> usize {
    16
}
fn default_orphan_min_age() -> Duration {
    Duration::from_hours(1)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// redb file; defaults to `<state_dir>/leases.redb`.
    #[default]
    Embedded,
    Dynamodb {
        table: String,
        /// Local mode only: create the table (as the deployment templates would) if missing.
        #[serde(default)]
        create_if_missing: bool,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Ed25519 PKCS#8 private key file; created if missing. Defaults to
    /// `<state_dir>/signing-key.pk8`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Secrets Manager secret holding the key (deployments; see `SigningKey::from_secret_json`).
    /// Takes precedence over `key_file`.
    #[serde(default)]
    pub secret_arn: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// e.g. `http://127.0.0.1:4566` for LocalStack.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// The roles `aws_role` grants may name: every `role_arn` must start with this (e.g.
    /// `arn:aws:iam::123456789012:role/credbroker/`). The deployment templates set it to the
    /// roles the broker's own IAM permissions cover, so a policy naming a role the broker could
    /// not assume, or whose sessions the revoker could not deny, is refused at load instead of
    /// failing at request or revocation time.
    #[serde(default)]
    pub role_arn_prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Clock-skew allowance on `exp`/`nbf`/`iat` (at most 60 s).
    #[serde(default = "default_leeway", with = "humantime_serde_compat")]
    pub leeway: Duration,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    #[serde(default = "default_jwks_cache_ttl", with = "humantime_serde_compat")]
    pub jwks_cache_ttl: Duration,
    /// Accept `http://` issuers on loopback addresses (local development and tests only).
    #[serde(default)]
    pub allow_http_loopback: bool,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            leeway: default_leeway(),
            max_token_bytes: default_max_token_bytes(),
            jwks_cache_ttl: default_jwks_cache_ttl(),
            allow_http_loopback: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Take the caller's address from the right-most `X-Forwarded-For` entry. Only behind a
    /// proxy you run; API Gateway's own source address is used otherwise.
    #[serde(default)]
    pub trust_forwarded_for: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// A pending lease older than this is treated as a crashed issuance.
    #[serde(default = "default_pending_grace", with = "humantime_serde_compat")]
    pub pending_grace: Duration,
    /// How long ended leases are kept for audit history (DynamoDB TTL).
    #[serde(default = "default_retention", with = "humantime_serde_compat")]
    pub retention: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self { pending_grace: default_pending_grace(), retention: default_retention() }
    }
}

fn default_public_url() -> String {
    "http://127.0.0.1:8080".to_owned()
}
fn default_policy_dir() -> PathBuf {
    PathBuf::from("policies/examples")
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_max_token_bytes() -> usize {
    16 * 1024
}
fn default_jwks_cache_ttl() -> Duration {
    Duration::from_mins(10)
}
fn default_pending_grace() -> Duration {
    Duration::from_mins(5)
}
fn default_retention() -> Duration {
    Duration::from_hours(720)
}

/// Durations are written the human way (`30s`, `15m`, `30d`), here and in `[databases]`.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let raw = String::deserialize(d)?;
        humantime::parse_duration(&raw).map_err(|e| serde::de::Error::custom(format!("{raw:?}: {e}")))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::from_toml_str("", Path::new("<defaults>"))
            .unwrap_or_else(|_| unreachable!("empty config is valid"))
    }
}

impl Config {
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)
            .map_err(|e| ConfigError::Invalid { path: path.to_owned(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Self::from_toml_str(&text, path)
    }

    /// Lambda configuration: `CREDBROKER_CONFIG` (a TOML file packaged with the function) if
    /// set, then overrides from `CREDBROKER_TABLE`, `CREDBROKER_PUBLIC_URL`,
    /// `CREDBROKER_POLICY_DIR`, `CREDBROKER_SIGNING_KEY_FILE`, `CREDBROKER_SIGNING_KEY_SECRET_ARN`,
    /// `CREDBROKER_AWS_ENDPOINT_URL`, `CREDBROKER_WORKLOAD_ROLE_ARN_PREFIX`.
    /// Policies default to `$LAMBDA_TASK_ROOT/policies`.
    pub fn from_lambda_env() -> Result<Self, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config = if let Some(path) = var("CREDBROKER_CONFIG") {
            Self::load(Path::new(&path))?
        } else {
            let mut defaults = Self::default();
            if let Some(root) = var("LAMBDA_TASK_ROOT") {
                defaults.policy_dir = Path::new(&root).join("policies");
            }
            defaults
        };
        if let Some(table) = var("CREDBROKER_TABLE") {
            config.store = StoreConfig::Dynamodb { table, create_if_missing: false };
        }
        if let Some(url) = var("CREDBROKER_PUBLIC_URL") {
            config.public_url = url;
        }
        if let Some(dir) = var("CREDBROKER_POLICY_DIR") {
            config.policy_dir = dir.into();
        }
        if let Some(file) = var("CREDBROKER_SIGNING_KEY_FILE") {
            config.signing.key_file = Some(file.into());
        }
        if let Some(arn) = var("CREDBROKER_SIGNING_KEY_SECRET_ARN") {
            config.signing.secret_arn = Some(arn);
        }
        // Lambda always has AWS: the execution role's credentials and region.
        let aws = config.aws.get_or_insert_with(AwsConfig::default);
        if let Some(endpoint) = var("CREDBROKER_AWS_ENDPOINT_URL") {
            aws.endpoint_url = Some(endpoint);
        }
        if let Some(prefix) = var("CREDBROKER_WORKLOAD_ROLE_ARN_PREFIX") {
            aws.role_arn_prefix = Some(prefix);
        }
        if matches!(config.store, StoreConfig::Embedded) {
            return Err(ConfigError::Value(
                "Lambda needs a DynamoDB lease store: set CREDBROKER_TABLE (the embedded store is local only)"
                    .into(),
            ));
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.revoker.max_attempts == 0 || self.revoker.concurrency == 0 {
            return Err(ConfigError::Value(
                "revoker.max_attempts and revoker.concurrency must be at least 1".into(),
            ));
        }
        if self.identity.leeway > Duration::from_mins(1) {
            return Err(ConfigError::Value("identity.leeway must be at most 60s".into()));
        }
        // Shorter than an issuance can take (API Gateway gives a request 29 s), the revoker
        // would end a lease whose credential is still being made; much longer, a crashed
        // issuance's credential would outlive it until its own expiry.
        if !(Duration::from_mins(1)..=Duration::from_hours(1)).contains(&self.leases.pending_grace) {
            return Err(ConfigError::Value("leases.pending_grace must be between 1m and 1h".into()));
        }
        if !(self.public_url.starts_with("https://") || self.public_url.starts_with("http://")) {
            return Err(ConfigError::Value(format!(
                "public_url {:?} must be an http(s) URL",
                self.public_url
            )));
        }
        if let StoreConfig::Dynamodb { table, .. } = &self.store
            && table.is_empty()
        {
            return Err(ConfigError::Value("store.table must not be empty".into()));
        }
        #[cfg(feature = "database")]
        for (name, database) in &self.databases {
            database.validate(name).map_err(ConfigError::Value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_has_safe_defaults() {
        let c = Config::default();
        assert_eq!(c.identity.leeway, Duration::from_secs(30));
        assert!(!c.identity.allow_http_loopback);
        assert!(!c.http.trust_forwarded_for);
        assert!(c.aws.is_none());
        assert!(matches!(c.store, StoreConfig::Embedded));
    }

    #[test]
    fn strict_parsing() {
        let path = Path::new("test.toml");
        let cases = [
            ("unknown field", "publik_url = \"http://x\"", "publik_url"),
            ("leeway above 60s", "[identity]\nleeway = \"2m\"", "60s"),
            ("pending_grace below an issuance", "[leases]\npending_grace = \"10s\"", "pending_grace"),
            ("pending_grace above 1h", "[leases]\npending_grace = \"2h\"", "between 1m and 1h"),
            ("bad duration", "[leases]\nretention = \"forever\"", "forever"),
            ("unknown store", "[store]\ntype = \"etcd\"", "etcd"),
        ];
        for (name, text, needle) in cases {
            let err = Config::from_toml_str(text, path).expect_err(name).to_string();
            assert!(err.contains(needle), "{name}: {err}");
        }
        let ok = Config::from_toml_str(
            "[store]\ntype = \"dynamodb\"\ntable = \"t\"\n[aws]\nendpoint_url = \"http://127.0.0.1:4566\"",
            path,
        )
        .unwrap();
        assert!(
            matches!(ok.store, StoreConfig::Dynamodb { ref table, create_if_missing: false } if table == "t")
        );
    }
}
