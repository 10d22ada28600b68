//! Policy-as-code: which workload may obtain which credential, for how long.
//!
//! Policy files are TOML, one policy per file (the file stem is the policy name), parsed
//! strictly and compiled completely at load time — patterns, templates, networks, zones — so
//! a request can never discover a configuration error. See `docs/policies.md`.

pub mod aws;
mod conditions;
#[cfg(feature = "database")]
pub mod database;
pub mod github;
mod pattern;
pub mod spec;
pub mod template;
mod zone;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backend::{BackendKind, IssuePlan, SignedTokenPlan};
use crate::identity::{Identity, TrustedIssuer};
use crate::reason::{Denial, ReasonCode};
pub use conditions::Conditions;
pub use pattern::Pattern;
use spec::{AdminSpec, GrantSpec, PolicySpec, ReplayModeSpec, ReplaySpec};
use template::{Escape, Template, Var, Vars};

/// STS accepts `DurationSeconds` between 15 minutes and 12 hours.
pub const AWS_MIN_TTL: Duration = Duration::from_mins(15);
pub const AWS_MAX_TTL: Duration = Duration::from_hours(12);

#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("cannot read policies from {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no policy files (*.toml) in {0}")]
    Empty(PathBuf),
}

/// `<policy>/<grant>`, the name a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrantRef {
    pub policy: String,
    pub grant: String,
}

impl GrantRef {
    pub fn parse(raw: &str) -> Option<Self> {
        let (policy, grant) = raw.split_once('/')?;
        (valid_name(policy) && valid_name(grant))
            .then(|| Self { policy: policy.to_owned(), grant: grant.to_owned() })
    }
}

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.policy, self.grant)
    }
}

/// Policy and grant names: short, lowercase, safe in URLs, ARNs, usernames and logs.
fn valid_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    pub issuer: String,
    pub jwks_url: Option<String>,
    pub audiences: Vec<String>,
    pub subject: Pattern,
    /// Sorted by claim name so the first mismatch reported is deterministic.
    pub claims: BTreeMap<String, Pattern>,
    pub conditions: Conditions,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub strict_ttl: bool,
    pub replay: Replay,
    /// Tokens without `jti` are refused (`missing_claim:jti`); off, they are accepted uncounted.
    pub require_jti: bool,
    pub grants: BTreeMap<String, Grant>,
    /// Advice about a policy that loads but may not do what its author meant (logged at load,
    /// printed by `credbroker policy validate`).
    pub warnings: Vec<String>,
}

/// How often one token may be exchanged under a policy (its `jti` counted in the replay guard,
/// which expires with the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// One exchange per token, whatever the grant: a second one is `replayed_token`.
    Once,
    /// One exchange per token and grant: one GitLab job token can fetch an AWS session and a
    /// database user, each once.
    OncePerGrant,
    /// Any number until the token expires, at most `max_uses` when set: for tokens a workload
    /// cannot renew at will (Kubernetes service-account tokens live an hour).
    UntilExpiry { max_uses: Option<u32> },
}

impl Replay {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::OncePerGrant => "once_per_grant",
            Self::UntilExpiry { .. } => "until_expiry",
        }
    }

    /// The replay-guard key of a token under this mode, and how many uses it allows. `Once`
    /// and `UntilExpiry` count the token itself (so a token used under one policy counts
    /// towards another's limit); `OncePerGrant` counts it per grant. The key is unambiguous:
    /// the jti's length comes first, so no jti can forge another's per-grant key.
    pub fn key_and_limit(self, jti: &str, grant: &GrantRef) -> (String, u32) {
        match self {
            Self::Once => (jti.to_owned(), 1),
            Self::OncePerGrant => (format!("{}:{jti}:{grant}", jti.len()), 1),
            Self::UntilExpiry { max_uses } => (jti.to_owned(), max_uses.unwrap_or(u32::MAX)),
        }
    }
}

#[derive(Debug)]
pub enum Grant {
    AwsRole(AwsRoleGrant),
    SignedToken(SignedTokenGrant),
    /// Lease administration; never exchanged for a credential.
    Admin,
    /// A database user per lease.
    Database(DatabaseGrant),
}

/// A compiled database grant; without database support only its kind is known
/// (`spec::DatabaseGrantSection`).
#[cfg(feature = "database")]
pub type DatabaseGrant = database::DatabaseGrant;
#[cfg(not(feature = "database"))]
#[derive(Debug)]
pub struct DatabaseGrant;

#[derive(Debug)]
pub struct AwsRoleGrant {
    pub role_arn: String,
    pub session_policy: Option<Template>,
    pub session_tags: Vec<(String, Template)>,
    pub source_identity: Template,
}

#[derive(Debug)]
pub struct SignedTokenGrant {
    pub audience: String,
    pub scopes: Vec<String>,
}

/// The kinds of grant a policy file can name (`type = "…"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    AwsRole,
    SignedToken,
    Admin,
    Database,
}

impl GrantKind {
    /// The `type` as policy files write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwsRole => "aws_role",
            Self::SignedToken => "signed_token",
            Self::Admin => "admin",
            Self::Database => "database",
        }
    }

    /// The backend that issues this kind of grant (admin grants issue nothing).
    pub fn backend(self) -> Option<BackendKind> {
        match self {
            Self::AwsRole => Some(BackendKind::AwsSession),
            Self::SignedToken => Some(BackendKind::SignedToken),
            Self::Database => Some(BackendKind::Database),
            Self::Admin => None,
        }
    }
}

impl fmt::Display for GrantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Grant {
    pub fn kind(&self) -> GrantKind {
        match self {
            Self::AwsRole(_) => GrantKind::AwsRole,
            Self::SignedToken(_) => GrantKind::SignedToken,
            Self::Admin => GrantKind::Admin,
            Self::Database(_) => GrantKind::Database,
        }
    }
}

/// The request facts policies can condition on, besides the identity.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub source_ip: Option<IpAddr>,
    pub now: DateTime<Utc>,
    pub requested_ttl: Option<Duration>,
}

/// An allowed request: which grant, and for how long.
#[derive(Debug, Clone)]
pub struct Allowed<'a> {
    pub policy: &'a Policy,
    pub grant_name: &'a str,
    pub grant: &'a Grant,
    pub ttl: Duration,
}

impl Allowed<'_> {
    /// The grant rendered for one request: everything its backend needs, nothing secret. The
    /// lease (and the AWS session) is named `lease_id`; the credential lasts until `expires_at`.
    pub fn plan(
        &self,
        identity: &Identity,
        lease_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<IssuePlan, Denial> {
        let vars = GrantVars { identity, lease_id, policy: &self.policy.name, grant: self.grant_name };
        match self.grant {
            Grant::AwsRole(aws) => aws.plan(&vars, lease_id, self.ttl).map(IssuePlan::AwsSession),
            #[cfg(feature = "database")]
            Grant::Database(db) => Ok(IssuePlan::Database(db.plan(&database::PlanInputs {
                policy: &self.policy.name,
                grant: self.grant_name,
                subject: &identity.subject,
                lease_id,
                now,
                expires_at,
            }))),
            #[cfg(not(feature = "database"))]
            Grant::Database(DatabaseGrant) => Err(Denial::new(
                ReasonCode::UnknownGrant,
                format!(
                    "{}/{} is a database grant: this function is built without database support",
                    self.policy.name, self.grant_name
                ),
            )),
            Grant::Admin => Err(Denial::new(
                ReasonCode::UnknownGrant,
                format!(
                    "{}/{} is an admin grant: it authorises lease administration, not credentials",
                    self.policy.name, self.grant_name
                ),
            )),
            Grant::SignedToken(token) => Ok(IssuePlan::SignedToken(SignedTokenPlan {
                lease_id: lease_id.to_owned(),
                subject: identity.subject.clone(),
                source_issuer: identity.issuer.clone(),
                audience: token.audience.clone(),
                scopes: token.scopes.clone(),
                policy: self.policy.name.clone(),
                grant: self.grant_name.to_owned(),
                issued_at: now,
                expires_at,
            })),
        }
    }
}

/// Template values for one request.
struct GrantVars<'a> {
    identity: &'a Identity,
    lease_id: &'a str,
    policy: &'a str,
    grant: &'a str,
}

impl Vars for GrantVars<'_> {
    fn get(&self, var: &Var) -> Option<String> {
        match var {
            Var::Subject => Some(self.identity.subject.clone()),
            Var::Issuer => Some(self.identity.issuer.clone()),
            Var::LeaseId => Some(self.lease_id.to_owned()),
            Var::Policy => Some(self.policy.to_owned()),
            Var::Grant => Some(self.grant.to_owned()),
            Var::Claim(name) => self.identity.claim_str(name),
        }
    }
}

/// All loaded policies, indexed by name and by issuer.
#[derive(Debug, Default)]
pub struct PolicySet {
    by_name: HashMap<String, Arc<Policy>>,
}

impl PolicySet {
    /// Loads every `*.toml` in `dir` (not recursive). Fails on the first invalid file, naming
    /// it, so a bad policy can never be deployed half-loaded.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyLoadError> {
        let io = |source| PolicyLoadError::Io { path: dir.to_owned(), source };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(PolicyLoadError::Empty(dir.to_owned()));
        }
        let mut set = Self::default();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| PolicyLoadError::Io { path: path.clone(), source })?;
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            let policy = Policy::from_toml(&name, &text)
                .map_err(|message| PolicyLoadError::Invalid { path: path.clone(), message })?;
            set.insert(policy).map_err(|message| PolicyLoadError::Invalid { path: path.clone(), message })?;
        }
        Ok(set)
    }

    pub fn insert(&mut self, policy: Policy) -> Result<(), String> {
        if self.by_name.contains_key(&policy.name) {
            return Err(format!("duplicate policy name {:?}", policy.name));
        }
        self.by_name.insert(policy.name.clone(), Arc::new(policy));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Policy>> {
        self.by_name.get(name)
    }

    /// The kind of the grant `grant` names, if it exists.
    pub fn grant_kind(&self, grant: &GrantRef) -> Option<GrantKind> {
        self.get(&grant.policy)?.grants.get(&grant.grant).map(Grant::kind)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.by_name.values()
    }

    /// Every policy's warnings, by policy name.
    pub fn warnings(&self) -> Vec<&str> {
        let mut policies: Vec<&Arc<Policy>> = self.by_name.values().collect();
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        policies.iter().flat_map(|p| p.warnings.iter().map(String::as_str)).collect()
    }

    /// Issuers named by any policy: the only ones whose keys the broker will ever fetch.
    /// Two policies naming one issuer with different `jwks_url`s is a load error upstream.
    pub fn trusted_issuers(&self) -> Vec<TrustedIssuer> {
        let mut by_issuer: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for p in self.by_name.values() {
            let entry = by_issuer.entry(&p.issuer).or_default();
            if entry.is_none() {
                *entry = p.jwks_url.as_deref();
            }
        }
        by_issuer
            .into_iter()
            .map(|(issuer, jwks_url)| TrustedIssuer {
                issuer: issuer.to_owned(),
                jwks_url: jwks_url.map(str::to_owned),
            })
            .collect()
    }

    /// Checks that every `aws_role` grant names a role starting with `prefix`: the roles the
    /// deployment's own permissions cover (`[aws].role_arn_prefix`).
    pub fn check_role_arns(&self, prefix: &str) -> Result<(), String> {
        for policy in self.by_name.values() {
            for (name, grant) in &policy.grants {
                if let Grant::AwsRole(aws) = grant
                    && !aws.role_arn.starts_with(prefix)
                {
                    return Err(format!(
                        "policy {}, grant {name}: role_arn {:?} is outside the roles this deployment may use \
                         ({prefix}*): the broker could not assume it, nor deny its sessions when revoked",
                        policy.name, aws.role_arn
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that policies agree with each other (one JWKS location per issuer).
    pub fn validate_consistency(&self) -> Result<(), String> {
        let mut seen: HashMap<&str, (&str, Option<&str>)> = HashMap::new();
        for p in self.by_name.values() {
            if let Some((other, url)) = seen.insert(&p.issuer, (&p.name, p.jwks_url.as_deref()))
                && url != p.jwks_url.as_deref()
            {
                return Err(format!(
                    "policies {other:?} and {:?} give different jwks_url for issuer {:?}",
                    p.name, p.issuer
                ));
            }
        }
        Ok(())
    }

    /// Decides one request. The checks run in a fixed order so the reason code for a request
    /// that fails several checks is stable: grant, issuer, audience, subject, claims, source
    /// address, time window, TTL.
    pub fn evaluate<'a>(
        &'a self,
        grant_ref: &GrantRef,
        identity: &Identity,
        ctx: &RequestContext,
    ) -> Result<Allowed<'a>, ReasonCode> {
        let policy = self.get(&grant_ref.policy).ok_or(ReasonCode::UnknownGrant)?;
        let (grant_name, grant) =
            policy.grants.get_key_value(&grant_ref.grant).ok_or(ReasonCode::UnknownGrant)?;
        if identity.issuer != policy.issuer {
            return Err(ReasonCode::IssuerUntrusted);
        }
        if !identity.audiences.iter().any(|aud| policy.audiences.contains(aud)) {
            return Err(ReasonCode::AudienceMismatch);
        }
        if !policy.subject.matches(&identity.subject) {
            return Err(ReasonCode::SubjectMismatch);
        }
        for (claim, pattern) in &policy.claims {
            let matched = identity.claim_str(claim).is_some_and(|v| pattern.matches(&v));
            if !matched {
                return Err(ReasonCode::ClaimMismatch(claim.clone()));
            }
        }
        if !policy.conditions.source_allowed(ctx.source_ip) {
            return Err(ReasonCode::SourceIpDenied);
        }
        if !policy.conditions.time_allowed(ctx.now) {
            return Err(ReasonCode::OutsideTimeWindow);
        }
        let ttl = policy.effective_ttl(grant, ctx.requested_ttl)?;
        Ok(Allowed { policy, grant_name, grant, ttl })
    }
}

impl Policy {
    /// Parses and compiles one policy file's text.
    pub fn from_toml(name: &str, text: &str) -> Result<Self, String> {
        if !valid_name(name) {
            return Err(format!(
                "policy name {name:?} (the file name) must be 1-40 chars of a-z, 0-9, '-', '_'"
            ));
        }
        let spec: PolicySpec = toml::from_str(text).map_err(|e| e.to_string())?;
        Self::compile(name, spec)
    }

    fn compile(name: &str, spec: PolicySpec) -> Result<Self, String> {
        if spec.issuer.is_empty() {
            return Err("issuer must not be empty".into());
        }
        if spec.audience.is_empty() {
            return Err("audience must list at least one value".into());
        }
        if spec.grants.is_empty() {
            return Err("a policy needs at least one grant".into());
        }
        let subject = Pattern::compile(&spec.subject).map_err(|e| format!("subject: {e}"))?;
        let claims = spec
            .claims
            .iter()
            .map(|(k, v)| Ok((k.clone(), Pattern::compile(v).map_err(|e| format!("claims.{k}: {e}"))?)))
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        let conditions = Conditions::compile(&spec.conditions)?;
        let parse_ttl = |field: &str, raw: &str| {
            humantime::parse_duration(raw).map_err(|e| format!("ttl.{field}: {raw:?}: {e}"))
        };
        let default_ttl = parse_ttl("default", &spec.ttl.default)?;
        let max_ttl = parse_ttl("max", &spec.ttl.max)?;
        if default_ttl.is_zero() || default_ttl > max_ttl {
            return Err(format!(
                "ttl.default ({}) must be positive and at most ttl.max ({})",
                spec.ttl.default, spec.ttl.max
            ));
        }
        let replay = compile_replay(&spec.replay)?;
        let constrained: BTreeSet<String> = spec.claims.keys().cloned().collect();
        let mut grants = BTreeMap::new();
        for (grant_name, grant_spec) in spec.grants {
            if !valid_name(&grant_name) {
                return Err(format!("grant name {grant_name:?} must be 1-40 chars of a-z, 0-9, '-', '_'"));
            }
            let grant = compile_grant(grant_spec, &constrained, max_ttl)
                .map_err(|e| format!("grants.{grant_name}: {e}"))?;
            grants.insert(grant_name, grant);
        }
        let mut policy = Self {
            name: name.to_owned(),
            description: spec.description,
            issuer: spec.issuer,
            jwks_url: spec.jwks_url,
            audiences: spec.audience,
            subject,
            claims,
            conditions,
            default_ttl,
            max_ttl,
            strict_ttl: spec.ttl.strict,
            replay,
            require_jti: spec.replay.require_jti,
            grants,
            warnings: Vec::new(),
        };
        policy.warnings.extend(github::name_only_warning(&policy));
        Ok(policy)
    }

    /// Requested (or default) TTL, clamped to `max` unless the policy is strict. AWS sessions
    /// cannot be shorter than 15 minutes, so they are raised to that (the lease records the
    /// real expiry).
    fn effective_ttl(&self, grant: &Grant, requested: Option<Duration>) -> Result<Duration, ReasonCode> {
        let wanted = requested.unwrap_or(self.default_ttl);
        let ttl = if wanted > self.max_ttl {
            if self.strict_ttl {
                return Err(ReasonCode::TtlExceedsMax);
            }
            self.max_ttl
        } else {
            wanted
        };
        Ok(match grant {
            Grant::AwsRole(_) => ttl.max(AWS_MIN_TTL),
            Grant::SignedToken(_) | Grant::Admin | Grant::Database(_) => ttl,
        })
    }
}

fn compile_grant(
    spec: GrantSpec,
    constrained: &BTreeSet<String>,
    max_ttl: Duration,
) -> Result<Grant, String> {
    match spec {
        GrantSpec::AwsRole(aws) => {
            if !valid_role_arn(&aws.role_arn) {
                return Err(format!("role_arn {:?} is not an IAM role ARN", aws.role_arn));
            }
            if max_ttl < AWS_MIN_TTL || max_ttl > AWS_MAX_TTL {
                return Err("AWS sessions need ttl.max between 15m and 12h".into());
            }
            let session_policy = aws
                .session_policy
                .as_deref()
                .map(|src| {
                    let t = Template::parse(src, constrained).map_err(|e| format!("session_policy: {e}"))?;
                    // Render with sample values: the result must be JSON whatever the claims are.
                    let sample = t
                        .render(&SampleVars, Escape::IamPolicyString)
                        .map_err(|v| format!("session_policy: no sample for {v:?}"))?;
                    serde_json::from_str::<serde_json::Value>(&sample).map_err(|e| {
                        format!(
                            "session_policy is not valid JSON (placeholders must sit inside strings): {e}"
                        )
                    })?;
                    Ok::<_, String>(t)
                })
                .transpose()?;
            let session_tags = aws
                .session_tags
                .iter()
                .map(|(key, value)| {
                    if !valid_tag_key(key) {
                        return Err(format!("session tag key {key:?} is not a valid STS tag key"));
                    }
                    let t = Template::parse(value, constrained)
                        .map_err(|e| format!("session_tags.{key}: {e}"))?;
                    Ok((key.clone(), t))
                })
                .collect::<Result<Vec<_>, String>>()?;
            if session_tags.len() > 50 {
                return Err("STS allows at most 50 session tags".into());
            }
            let source_identity =
                Template::parse(aws.source_identity.as_deref().unwrap_or("{{sub}}"), constrained)
                    .map_err(|e| format!("source_identity: {e}"))?;
            Ok(Grant::AwsRole(AwsRoleGrant {
                role_arn: aws.role_arn,
                session_policy,
                session_tags,
                source_identity,
            }))
        }
        GrantSpec::SignedToken(token) => {
            if token.audience.is_empty() {
                return Err("audience must not be empty".into());
            }
            if let Some(bad) = token.scopes.iter().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
                return Err(format!("scope {bad:?} must be non-empty without spaces"));
            }
            Ok(Grant::SignedToken(SignedTokenGrant { audience: token.audience, scopes: token.scopes }))
        }
        GrantSpec::Admin(AdminSpec {}) => Ok(Grant::Admin),
        #[cfg(feature = "database")]
        GrantSpec::Database(db) => database::compile(db).map(Grant::Database),
        #[cfg(not(feature = "database"))]
        GrantSpec::Database(serde::de::IgnoredAny) => Ok(Grant::Database(DatabaseGrant)),
    }
}

fn compile_replay(spec: &ReplaySpec) -> Result<Replay, String> {
    match (spec.mode, spec.max_uses) {
        (ReplayModeSpec::Once, None) => Ok(Replay::Once),
        (ReplayModeSpec::OncePerGrant, None) => Ok(Replay::OncePerGrant),
        (ReplayModeSpec::UntilExpiry, Some(0)) => {
            Err("replay.max_uses must be at least 1 (1 is mode = \"once\")".into())
        }
        (ReplayModeSpec::UntilExpiry, max_uses) => Ok(Replay::UntilExpiry { max_uses }),
        (_, Some(_)) => Err("replay.max_uses goes with mode = \"until_expiry\"".into()),
    }
}

struct SampleVars;
impl Vars for SampleVars {
    fn get(&self, _: &Var) -> Option<String> {
        Some("sample\"\\value".to_owned())
    }
}

fn valid_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix("role/").is_some_and(|r| !r.is_empty())
}

/// STS tag keys: 1–128 chars of letters, digits, spaces and `_.:/=+-@`.
fn valid_tag_key(key: &str) -> bool {
    (1..=128).contains(&key.chars().count()) && key.chars().all(sts_tag_char)
}

/// Characters STS allows in session tag keys and values.
pub fn sts_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c)
}

#[cfg(test)]
mod tests;
