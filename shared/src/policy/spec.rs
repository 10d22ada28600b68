//! The policy file format, exactly as people write it. Parsed strictly: an unknown field is an
//! error, so a typo can never silently widen or narrow a policy.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Free text shown by tooling.
    #[serde(default)]
    pub description: Option<String>,
    /// The workload token's `iss`, exactly.
    pub issuer: String,
    /// Where to get the issuer's keys when it has no OIDC discovery document.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The token must carry at least one of these in `aud`.
    pub audience: Vec<String>,
    pub subject: PatternSpec,
    /// Per-claim patterns; every listed claim must be present and match.
    #[serde(default)]
    pub claims: BTreeMap<String, PatternSpec>,
    #[serde(default)]
    pub conditions: ConditionsSpec,
    #[serde(default)]
    pub ttl: TtlSpec,
    /// How often one token may be exchanged (`docs/policies.md`, "Replay").
    #[serde(default)]
    pub replay: ReplaySpec,
    pub grants: BTreeMap<String, GrantSpec>,
}

/// `[replay]`: how many exchanges one token (one `jti`) allows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    #[serde(default)]
    pub mode: ReplayModeSpec,
    /// With `until_expiry`: the most exchanges one token allows (default: no limit).
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Refuse tokens without a `jti` (they cannot be counted, so no mode would limit them).
    #[serde(default = "yes")]
    pub require_jti: bool,
}

impl Default for ReplaySpec {
    fn default() -> Self {
        Self { mode: ReplayModeSpec::default(), max_uses: None, require_jti: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayModeSpec {
    /// One exchange per token, whatever the grant (the strongest; the default).
    #[default]
    Once,
    /// One exchange per token and grant.
    OncePerGrant,
    /// Any number of exchanges until the token expires (`max_uses` caps them).
    UntilExpiry,
}

/// How a value is matched. Globs and regexes always match the whole value.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PatternSpec {
    Exact(String),
    /// `*` matches any run of characters (including none, including `/` and `:`), `?` exactly
    /// one character; everything else is literal.
    Glob(String),
    /// Compiled as `^(?:regex)$`.
    Regex(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionsSpec {
    /// The caller's address must fall in one of these networks (empty: any address).
    #[serde(default)]
    pub source_cidrs: Vec<String>,
    /// The request must fall in one of these windows (empty: any time).
    #[serde(default)]
    pub time_windows: Vec<TimeWindowSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindowSpec {
    /// `mon` … `sun`; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive; a window whose end is not after its start runs past midnight.
    pub end: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub zone: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlSpec {
    /// TTL when the request names none (humantime: `15m`, `1h`).
    #[serde(default = "default_ttl")]
    pub default: String,
    /// Requests above this are clamped to it (or refused when `strict`).
    #[serde(default = "max_ttl")]
    pub max: String,
    /// Refuse (`ttl_exceeds_max`) instead of clamping a request above `max`.
    #[serde(default)]
    pub strict: bool,
}

impl Default for TtlSpec {
    fn default() -> Self {
        Self { default: default_ttl(), max: max_ttl(), strict: false }
    }
}

fn default_ttl() -> String {
    "15m".to_owned()
}

fn max_ttl() -> String {
    "1h".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GrantSpec {
    AwsRole(AwsRoleSpec),
    SignedToken(SignedTokenSpec),
    Admin(AdminSpec),
    /// A PostgreSQL role or MySQL user per lease (`policy/database.rs`).
    Database(DatabaseGrantSection),
}

/// The body of a `type = "database"` grant. A function built without database support
/// (token-exchange) accepts it without reading it: it only needs the grant's kind, to refuse
/// an exchange for it with a pointer to the database endpoint, while db-credentials, which
/// mints the users, compiles it in full and fails its init if it is wrong. Its deserializer and compiler would be start-up code in a binary that never
/// plans a database user (docs/benchmarks.md, "Where the bytes are").
#[cfg(feature = "database")]
pub type DatabaseGrantSection = super::database::DatabaseGrantSpec;
#[cfg(not(feature = "database"))]
pub type DatabaseGrantSection = serde::de::IgnoredAny;

/// Administration of leases (bulk revocation, force, role cut-off): authorisation is a policy
/// like any other, never a shared secret. Issues no credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsRoleSpec {
    pub role_arn: String,
    /// JSON session policy template; placeholders are JSON-escaped when rendered.
    #[serde(default)]
    pub session_policy: Option<String>,
    /// Session tag key → value template.
    #[serde(default)]
    pub session_tags: BTreeMap<String, String>,
    /// Template for STS `SourceIdentity`; defaults to the token subject. Characters STS does
    /// not allow are replaced (see docs/policies.md).
    #[serde(default)]
    pub source_identity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTokenSpec {
    /// `aud` of the token the broker signs.
    pub audience: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}
