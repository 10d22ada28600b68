//! `type = "database"` grants: a PostgreSQL role or MySQL/MariaDB user per lease.
//!
//! Compiled completely at load time: identifiers checked (and quoted later by the issuer),
//! privilege keywords matched against a fixed list per engine, statements parsed, the
//! username template checked to fit the engine's limit with at least 80 random bits. Token
//! claims never reach SQL: the only request value in SQL is the username, reduced to
//! `[a-z0-9_]` here. See `docs/policies.md` and `docs/databases.md`.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::backend::database::{
    Creation, DatabasePlan, Engine, ObjectPrivilege, Privileges, REVOCATION_PLACEHOLDERS, Target,
};
use crate::backend::password::{PasswordPolicy, PasswordSpec};
use crate::backend::sql::{Placeholder, SqlTemplate};

/// The grant as written in a policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseGrantSpec {
    /// `postgres` or `mysql` (MariaDB too); must match the connection's engine.
    pub engine: Engine,
    /// Name of an admin connection in the broker config (`[databases.<name>]`).
    pub connection: String,
    /// The database the credential is for (returned to the caller; PostgreSQL grants run in it).
    pub database: String,
    /// Username template; default `v_{{policy:8}}_{{sub:8}}_{{random}}_{{unix}}` (PostgreSQL),
    /// `v_{{policy:6}}_{{sub:6}}_{{random}}` (MySQL, 32 characters at most).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: PasswordSpec,
    /// Roles granted to the user.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Object privileges granted to the user.
    #[serde(default)]
    pub privileges: Vec<PrivilegeSpec>,
    /// Instead of `roles`/`privileges`: the statements that create the user.
    #[serde(default)]
    pub creation_statements: Vec<String>,
    /// Run at revocation before the user is dropped (e.g. to clean up elsewhere).
    #[serde(default)]
    pub revocation_statements: Vec<String>,
}

/// `{ allow = ["SELECT"], tables = ["public.orders"] }`: privileges on one kind of target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivilegeSpec {
    pub allow: Vec<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(default)]
    pub all_tables_in_schemas: Vec<String>,
    #[serde(default)]
    pub all_sequences_in_schemas: Vec<String>,
}

/// A compiled database grant.
#[derive(Debug)]
pub struct DatabaseGrant {
    pub engine: Engine,
    pub connection: String,
    pub database: String,
    pub username: UsernameTemplate,
    pub password: PasswordPolicy,
    pub creation: Arc<Creation>,
    pub revocation_statements: Vec<String>,
}

/// What a request contributes to the plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanInputs<'a> {
    pub policy: &'a str,
    pub grant: &'a str,
    pub subject: &'a str,
    /// The lease id (ULID): its 80 random bits are the username's random part.
    pub lease_id: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl DatabaseGrant {
    pub fn plan(&self, inputs: &PlanInputs<'_>) -> DatabasePlan {
        DatabasePlan {
            engine: self.engine,
            connection: self.connection.clone(),
            database: self.database.clone(),
            username: self.username.render(inputs),
            expires_at: inputs.expires_at,
            password: self.password.clone(),
            creation: Arc::clone(&self.creation),
            revocation_statements: self.revocation_statements.clone(),
        }
    }
}

/// Limits on what a grant stores in every lease and sends per mint.
const MAX_CREATION_BYTES: usize = 16 * 1024;
const MAX_REVOCATION_BYTES: usize = 4 * 1024;

pub fn compile(spec: DatabaseGrantSpec) -> Result<DatabaseGrant, String> {
    let engine = spec.engine;
    if !valid_name(&spec.connection) {
        return Err(format!("connection {:?} must be 1-40 chars of a-z, 0-9, '-', '_'", spec.connection));
    }
    ident(engine, &spec.database).map_err(|e| format!("database: {e}"))?;
    let default_template = match engine {
        Engine::Postgres => "v_{{policy:8}}_{{sub:8}}_{{random}}_{{unix}}",
        Engine::Mysql => "v_{{policy:6}}_{{sub:6}}_{{random}}",
    };
    let username = UsernameTemplate::parse(spec.username.as_deref().unwrap_or(default_template), engine)
        .map_err(|e| format!("username: {e}"))?;
    let password = PasswordPolicy::compile(&spec.password)?;

    let structured = !spec.roles.is_empty() || !spec.privileges.is_empty();
    let creation = if spec.creation_statements.is_empty() {
        if engine == Engine::Mysql && spec.roles.len() > 1 {
            return Err("MySQL grants take at most one role (MariaDB activates one default role)".into());
        }
        for role in &spec.roles {
            ident(engine, role).map_err(|e| format!("roles: {e}"))?;
            if engine == Engine::Postgres && role.starts_with("pg_") && role != "pg_read_all_data" {
                // Predefined roles are powerful (pg_write_server_files, pg_execute_server_program…).
                return Err(format!("roles: {role:?} is a PostgreSQL predefined role; grant a role you own"));
            }
        }
        let objects = spec
            .privileges
            .iter()
            .enumerate()
            .map(|(i, p)| compile_privilege(engine, p).map_err(|e| format!("privileges[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        Creation::Privileges(Privileges { roles: spec.roles, objects })
    } else {
        if structured {
            return Err("give either roles/privileges or creation_statements, not both".into());
        }
        if spec.creation_statements.iter().map(String::len).sum::<usize>() > MAX_CREATION_BYTES {
            return Err(format!("creation_statements exceed {MAX_CREATION_BYTES} bytes"));
        }
        let all = [Placeholder::Name, Placeholder::Password, Placeholder::Expiration, Placeholder::Database];
        let templates = spec
            .creation_statements
            .iter()
            .enumerate()
            .map(|(i, s)| SqlTemplate::parse(s, &all).map_err(|e| format!("creation_statements[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if !templates[0].uses(Placeholder::Name) {
            return Err("the first creation statement must create {{name}}".into());
        }
        if !templates.iter().any(|t| t.uses(Placeholder::Password)) {
            return Err("creation_statements must set {{password}} (it is what the caller receives)".into());
        }
        if engine == Engine::Postgres && !templates.iter().any(|t| t.uses(Placeholder::Expiration)) {
            return Err(
                "PostgreSQL creation_statements must use VALID UNTIL {{expiration}} (the server-side backstop)"
                    .into(),
            );
        }
        Creation::Statements(templates)
    };

    if spec.revocation_statements.iter().map(String::len).sum::<usize>() > MAX_REVOCATION_BYTES {
        return Err(format!(
            "revocation_statements exceed {MAX_REVOCATION_BYTES} bytes (they are stored in every lease)"
        ));
    }
    for (i, s) in spec.revocation_statements.iter().enumerate() {
        SqlTemplate::parse(s, REVOCATION_PLACEHOLDERS)
            .map_err(|e| format!("revocation_statements[{i}]: {e}"))?;
    }
    Ok(DatabaseGrant {
        engine,
        connection: spec.connection,
        database: spec.database,
        username,
        password,
        creation: Arc::new(creation),
        revocation_statements: spec.revocation_statements,
    })
}

/// The target kinds of a privilege entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Tables,
    Schemas,
    AllTablesInSchemas,
    AllSequencesInSchemas,
}

impl TargetKind {
    fn field(self) -> &'static str {
        match self {
            Self::Tables => "tables",
            Self::Schemas => "schemas",
            Self::AllTablesInSchemas => "all_tables_in_schemas",
            Self::AllSequencesInSchemas => "all_sequences_in_schemas",
        }
    }

    /// The privilege keywords this kind of target takes, per engine.
    fn privileges(self, engine: Engine) -> Result<&'static [&'static str], String> {
        const PG_TABLE: &[&str] =
            &["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"];
        const MY_TABLE: &[&str] = &[
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "CREATE",
            "DROP",
            "INDEX",
            "ALTER",
            "REFERENCES",
            "TRIGGER",
            "CREATE VIEW",
            "SHOW VIEW",
        ];
        const MY_DATABASE: &[&str] = &[
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "CREATE",
            "DROP",
            "INDEX",
            "ALTER",
            "REFERENCES",
            "TRIGGER",
            "CREATE VIEW",
            "SHOW VIEW",
            "CREATE TEMPORARY TABLES",
            "LOCK TABLES",
            "EXECUTE",
            "CREATE ROUTINE",
            "ALTER ROUTINE",
            "EVENT",
        ];
        match (engine, self) {
            (Engine::Postgres, Self::Tables | Self::AllTablesInSchemas) => Ok(PG_TABLE),
            (Engine::Postgres, Self::Schemas) => Ok(&["USAGE", "CREATE"]),
            (Engine::Postgres, Self::AllSequencesInSchemas) => Ok(&["USAGE", "SELECT", "UPDATE"]),
            (Engine::Mysql, Self::Tables) => Ok(MY_TABLE),
            (Engine::Mysql, Self::AllTablesInSchemas) => Ok(MY_DATABASE),
            (Engine::Mysql, Self::Schemas | Self::AllSequencesInSchemas) => {
                Err(format!("{} is PostgreSQL-only", self.field()))
            }
        }
    }
}

fn compile_privilege(engine: Engine, spec: &PrivilegeSpec) -> Result<Vec<ObjectPrivilege>, String> {
    let lists = [
        (TargetKind::Tables, &spec.tables),
        (TargetKind::Schemas, &spec.schemas),
        (TargetKind::AllTablesInSchemas, &spec.all_tables_in_schemas),
        (TargetKind::AllSequencesInSchemas, &spec.all_sequences_in_schemas),
    ];
    let given: Vec<_> = lists.iter().filter(|(_, names)| !names.is_empty()).collect();
    let [(kind, names)] = given.as_slice() else {
        return Err(
            "name exactly one of tables, schemas, all_tables_in_schemas, all_sequences_in_schemas".into()
        );
    };
    let allowed = kind.privileges(engine)?;
    if spec.allow.is_empty() {
        return Err("allow must list at least one privilege".into());
    }
    let mut privileges = Vec::new();
    for raw in &spec.allow {
        let normalized = raw.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_uppercase();
        let keyword = allowed.iter().find(|k| **k == normalized).ok_or_else(|| {
            format!("privilege {raw:?} is not one of {} for {}", allowed.join(", "), kind.field())
        })?;
        if !privileges.contains(keyword) {
            privileges.push(*keyword);
        }
    }
    names
        .iter()
        .map(|name| {
            let target = match kind {
                TargetKind::Tables => table_target(engine, name)?,
                TargetKind::Schemas => Target::Schema(checked(engine, name)?),
                TargetKind::AllTablesInSchemas => Target::AllTablesInSchema(checked(engine, name)?),
                TargetKind::AllSequencesInSchemas => Target::AllSequencesInSchema(checked(engine, name)?),
            };
            Ok(ObjectPrivilege { privileges: privileges.clone(), target })
        })
        .collect()
}

/// `schema.table` (PostgreSQL: required; MySQL: `database.table`, or `table` in the grant's
/// database).
fn table_target(engine: Engine, name: &str) -> Result<Target, String> {
    let (schema, table) = match name.split_once('.') {
        Some((schema, table)) => (Some(schema), table),
        None if engine == Engine::Postgres => {
            return Err(format!("table {name:?}: write it as schema.table"));
        }
        None => (None, name),
    };
    if let Some(schema) = schema {
        ident(engine, schema).map_err(|e| format!("table {name:?}: {e}"))?;
    }
    ident(engine, table).map_err(|e| format!("table {name:?}: {e}"))?;
    Ok(Target::Table { schema: schema.map(str::to_owned), name: table.to_owned() })
}

fn checked(engine: Engine, name: &str) -> Result<String, String> {
    ident(engine, name).map(|()| name.to_owned())
}

/// Object and role names in policies: plain SQL-ish identifiers (they are quoted anyway, so
/// case is kept: write names as the server stores them, usually lower case).
fn ident(engine: Engine, name: &str) -> Result<(), String> {
    let max = match engine {
        Engine::Postgres => 63,
        Engine::Mysql => 64,
    };
    let mut chars = name.chars();
    let ok = (1..=max).contains(&name.len())
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_$-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an identifier (1-{max} chars of letters, digits, _ $ -, not starting with a digit)"
        ))
    }
}

fn valid_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Usernames: `[a-z0-9_]` only, starting with a letter, within the engine's limit, with the
/// lease id's 80 random bits (`{{random}}`).
///
/// Placeholders: `{{policy:N}}`, `{{grant:N}}`, `{{sub:N}}` (values lower-cased, characters
/// other than `a-z 0-9 _ -` dropped, `-` → `_`, at most N characters; N is required for `sub`),
/// `{{random}}` (16 characters), `{{unix}}` (10 digits: the lease's creation second).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameTemplate {
    parts: Vec<UserPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum UserPart {
    Literal(String),
    Policy(usize),
    Grant(usize),
    Subject(usize),
    Random,
    Unix,
}

/// Characters of the lease id's random part (ULID: 10 time characters, then 16 random).
const RANDOM_LEN: usize = 16;
const UNIX_LEN: usize = 10;

impl UsernameTemplate {
    pub fn parse(source: &str, engine: Engine) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut max_len = 0;
        while !rest.is_empty() {
            let (literal, tail) = rest.split_once("{{").unwrap_or((rest, ""));
            if !literal.is_empty() {
                if !literal.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                    return Err(format!("literal text {literal:?} may only use a-z, 0-9 and _"));
                }
                max_len += literal.len();
                parts.push(UserPart::Literal(literal.to_owned()));
            }
            if tail.is_empty() && !rest.contains("{{") {
                break;
            }
            let (inner, after) = tail.split_once("}}").ok_or("unclosed placeholder")?;
            let (name, cap) = match inner.trim().split_once(':') {
                Some((name, cap)) => {
                    let cap: usize =
                        cap.trim().parse().map_err(|_| format!("bad length in {{{{{inner}}}}}"))?;
                    if cap == 0 {
                        return Err(format!("zero length in {{{{{inner}}}}}"));
                    }
                    (name.trim(), Some(cap))
                }
                None => (inner.trim(), None),
            };
            let part = match (name, cap) {
                ("policy", cap) => UserPart::Policy(cap.unwrap_or(40).min(40)),
                ("grant", cap) => UserPart::Grant(cap.unwrap_or(40).min(40)),
                ("sub", Some(cap)) => UserPart::Subject(cap),
                ("sub", None) => return Err("{{sub}} needs a length: {{sub:8}}".into()),
                ("random", None) => UserPart::Random,
                ("unix", None) => UserPart::Unix,
                ("random" | "unix", Some(_)) => return Err(format!("{{{{{name}}}}} has a fixed length")),
                (other, _) => {
                    return Err(format!(
                        "unknown placeholder {{{{{other}}}}}; usernames know policy, grant, sub, random, unix"
                    ));
                }
            };
            max_len += match part {
                UserPart::Policy(n) | UserPart::Grant(n) | UserPart::Subject(n) => n,
                UserPart::Random => RANDOM_LEN,
                UserPart::Unix => UNIX_LEN,
                UserPart::Literal(_) => 0,
            };
            parts.push(part);
            rest = after;
        }
        if parts.iter().filter(|p| **p == UserPart::Random).count() != 1 {
            return Err("the template must contain {{random}} exactly once (it makes names unique)".into());
        }
        if !matches!(parts.first(), Some(UserPart::Literal(l)) if l.starts_with(|c: char| c.is_ascii_lowercase()))
        {
            return Err("the template must start with a literal letter (e.g. \"v_\")".into());
        }
        if engine == Engine::Postgres && source.starts_with("pg_") {
            return Err("PostgreSQL reserves role names starting with pg_".into());
        }
        if max_len > engine.max_username_len() {
            return Err(format!(
                "names can reach {max_len} characters; {engine} allows {} (shorten the caps)",
                engine.max_username_len()
            ));
        }
        Ok(Self { parts })
    }

    pub fn render(&self, inputs: &PlanInputs<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                UserPart::Literal(text) => out.push_str(text),
                UserPart::Policy(n) => out.push_str(&sanitize(inputs.policy, *n)),
                UserPart::Grant(n) => out.push_str(&sanitize(inputs.grant, *n)),
                UserPart::Subject(n) => out.push_str(&sanitize(inputs.subject, *n)),
                UserPart::Random => {
                    let random = inputs.lease_id.get(10..).unwrap_or(inputs.lease_id);
                    out.push_str(&sanitize(random, RANDOM_LEN));
                }
                UserPart::Unix => {
                    let _ = write!(out, "{:010}", inputs.now.timestamp().clamp(0, 9_999_999_999));
                }
            }
        }
        out
    }
}

/// Lower case, `a-z 0-9 _` only (`-` becomes `_`, anything else is dropped), at most `max`.
fn sanitize(value: &str, max: usize) -> String {
    value
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            '-' => Some('_'),
            _ => None,
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn inputs(subject: &str) -> PlanInputs<'_> {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        PlanInputs {
            policy: "ci-deploy",
            grant: "reader",
            subject,
            lease_id: "01KAXB3J8Z7Q4M2N6P8R0T2V4W",
            now,
            expires_at: now + chrono::TimeDelta::minutes(15),
        }
    }

    fn grant(engine: &str, extra: &str) -> Result<DatabaseGrant, String> {
        let text = format!("engine = \"{engine}\"\nconnection = \"main\"\ndatabase = \"app\"\n{extra}");
        let spec: DatabaseGrantSpec = toml::from_str(&text).map_err(|e| e.to_string())?;
        compile(spec)
    }

    #[test]
    fn default_usernames_fit_and_carry_the_lease_randomness() {
        let pg = grant("postgres", "roles = [\"app_read\"]").unwrap();
        let name = pg.username.render(&inputs("repo:Acme/app:ref:refs/heads/main"));
        assert_eq!(name, "v_ci_deplo_repoacme_7q4m2n6p8r0t2v4w_1795608000");
        let my = grant("mysql", "roles = [\"app_read\"]").unwrap();
        let name = my.username.render(&inputs("system:serviceaccount:ci:runner"));
        assert_eq!(name, "v_ci_dep_system_7q4m2n6p8r0t2v4w");
        assert!(name.len() <= 32);
    }

    /// Hostile subjects only ever contribute `[a-z0-9_]`, whatever their size or script.
    #[test]
    fn hostile_subjects_reduce_to_safe_characters() {
        let pg = grant("postgres", "").unwrap();
        let long = format!("{}'\"; DROP ROLE postgres; --", "x".repeat(10 * 1024));
        let cases = [
            ("single quote", "a'b"),
            ("double quote", "a\"b"),
            ("semicolon and comment", "x'; DROP TABLE users; --"),
            ("backslash", "a\\'b"),
            ("dollar quoting", "$$; DROP ROLE postgres; $$"),
            ("unicode", "ünïcødé-サブジェクト-🙂"),
            ("NUL and controls", "a\0b\n\tc"),
            ("10 kB", long.as_str()),
            ("empty", ""),
        ];
        for (name, subject) in cases {
            let rendered = pg.username.render(&inputs(subject));
            assert!(rendered.len() <= 63, "{name}");
            assert!(
                rendered.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}: {rendered}"
            );
        }
    }

    #[test]
    fn structured_grants_compile() {
        let g = grant(
            "postgres",
            r#"
roles = ["app_read"]
privileges = [
  { allow = ["select", "Insert"], tables = ["public.orders"] },
  { allow = ["USAGE"], schemas = ["reporting"] },
  { allow = ["SELECT"], all_tables_in_schemas = ["reporting"] },
]
revocation_statements = ["REVOKE ALL ON SCHEMA reporting FROM {{name}}"]
"#,
        )
        .unwrap();
        let Creation::Privileges(p) = g.creation.as_ref() else { panic!("privileges") };
        assert_eq!(p.objects.len(), 3);
        assert_eq!(p.objects[0].privileges, vec!["SELECT", "INSERT"]);
        assert_eq!(
            p.objects[0].target,
            Target::Table { schema: Some("public".into()), name: "orders".into() }
        );
        let plan = g.plan(&inputs("repo:acme/app"));
        assert_eq!(plan.revocation_statements.len(), 1);
        assert_eq!(plan.backend_ref().kind(), crate::backend::BackendKind::Database);
    }

    #[test]
    fn load_errors_name_the_problem() {
        let cases = [
            ("unknown field", "postgres", "rolez = []", "rolez"),
            (
                "bad privilege",
                "postgres",
                "privileges = [{ allow = [\"SUPERUSER\"], tables = [\"public.t\"] }]",
                "SUPERUSER",
            ),
            (
                "privilege injection",
                "postgres",
                "privileges = [{ allow = [\"SELECT; DROP\"], tables = [\"public.t\"] }]",
                "not one of",
            ),
            (
                "two target kinds",
                "postgres",
                "privileges = [{ allow = [\"SELECT\"], tables = [\"public.t\"], schemas = [\"s\"] }]",
                "exactly one",
            ),
            (
                "unqualified pg table",
                "postgres",
                "privileges = [{ allow = [\"SELECT\"], tables = [\"t\"] }]",
                "schema.table",
            ),
            ("bad identifier", "postgres", "roles = [\"a\\\"; DROP ROLE x; --\"]", "not an identifier"),
            ("predefined role", "postgres", "roles = [\"pg_execute_server_program\"]", "predefined"),
            (
                "schema grant on mysql",
                "mysql",
                "privileges = [{ allow = [\"USAGE\"], schemas = [\"s\"] }]",
                "PostgreSQL-only",
            ),
            ("two mysql roles", "mysql", "roles = [\"a\", \"b\"]", "at most one role"),
            (
                "both modes",
                "postgres",
                "roles = [\"a\"]\ncreation_statements = [\"CREATE ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{expiration}}\"]",
                "either",
            ),
            (
                "quoted placeholder",
                "postgres",
                "creation_statements = [\"CREATE ROLE '{{name}}' PASSWORD {{password}} VALID UNTIL {{expiration}}\"]",
                "quotes",
            ),
            (
                "claims in SQL",
                "postgres",
                "creation_statements = [\"CREATE ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{expiration}}\", \"COMMENT ON ROLE {{name}} IS {{claims.team}}\"]",
                "never spliced",
            ),
            (
                "no expiration on pg",
                "postgres",
                "creation_statements = [\"CREATE ROLE {{name}} LOGIN PASSWORD {{password}}\"]",
                "VALID UNTIL",
            ),
            ("no password", "mysql", "creation_statements = [\"CREATE USER {{name}}\"]", "{{password}}"),
            (
                "password in revocation",
                "postgres",
                "revocation_statements = [\"ALTER ROLE {{name}} PASSWORD {{password}}\"]",
                "not available",
            ),
            ("weak password", "postgres", "password = { length = 16, alphabet = \"abcdefghij\" }", "entropy"),
            (
                "mysql name too long",
                "mysql",
                "username = \"v_{{policy:8}}_{{sub:8}}_{{random}}\"",
                "allows 32",
            ),
            ("no random", "postgres", "username = \"v_{{sub:8}}_{{unix}}\"", "{{random}}"),
            ("uncapped sub", "postgres", "username = \"v_{{sub}}_{{random}}\"", "needs a length"),
            ("unsafe literal", "postgres", "username = \"V-{{random}}\"", "a-z"),
            (
                "claims in username",
                "postgres",
                "username = \"v_{{claims.team:4}}_{{random}}\"",
                "unknown placeholder",
            ),
            ("leading placeholder", "postgres", "username = \"{{random}}\"", "start with a literal"),
            ("reserved prefix", "postgres", "username = \"pg_{{random}}\"", "reserves"),
            ("bad connection", "postgres", "", ""),
        ];
        for (name, engine, extra, needle) in cases {
            if name == "bad connection" {
                let spec: DatabaseGrantSpec =
                    toml::from_str("engine = \"postgres\"\nconnection = \"Main DB\"\ndatabase = \"app\"")
                        .unwrap();
                assert!(compile(spec).unwrap_err().contains("connection"));
                continue;
            }
            let err = grant(engine, extra).expect_err(name);
            assert!(err.contains(needle), "{name}: {err}");
        }
    }
}
