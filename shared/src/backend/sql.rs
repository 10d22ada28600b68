//! Quoting, and the only way values get into SQL text.
//!
//! DDL (`CREATE ROLE`, `GRANT`, `VALID UNTIL`) cannot take bind parameters, so identifiers and
//! literals are quoted here, per engine, and nowhere else. Values that quoting cannot make safe
//! in every server mode (NUL bytes; backslashes in MySQL, whose meaning depends on
//! `NO_BACKSLASH_ESCAPES`) are refused rather than escaped. Nothing from a token claim reaches
//! these functions except through the username, which is reduced to `[a-z0-9_]` first.

/// Why a value cannot be quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("empty identifier")]
    Empty,
    #[error("identifier longer than {max} bytes (the server would silently truncate it)")]
    TooLong { max: usize },
    #[error("NUL byte in a SQL value")]
    Nul,
    #[error("backslash in a MySQL literal (its meaning depends on the server's sql_mode)")]
    Backslash,
    #[error("MySQL identifiers cannot hold characters beyond U+FFFF")]
    Supplementary,
}

/// PostgreSQL: identifiers up to 63 bytes (NAMEDATALEN - 1), `"…"` with `"` doubled; literals
/// `'…'` with `'` doubled, or `E'…'` when backslashes must be escaped too.
pub mod postgres {
    use super::QuoteError;

    pub const MAX_IDENTIFIER_BYTES: usize = 63;

    pub fn quote_ident(ident: &str) -> Result<String, QuoteError> {
        if ident.is_empty() {
            return Err(QuoteError::Empty);
        }
        if ident.len() > MAX_IDENTIFIER_BYTES {
            return Err(QuoteError::TooLong { max: MAX_IDENTIFIER_BYTES });
        }
        if ident.contains('\0') {
            return Err(QuoteError::Nul);
        }
        Ok(format!("\"{}\"", ident.replace('"', "\"\"")))
    }

    /// Correct whatever `standard_conforming_strings` is: a value with a backslash uses the
    /// escape-string syntax, where backslashes are always escapes.
    pub fn quote_literal(value: &str) -> Result<String, QuoteError> {
        if value.contains('\0') {
            return Err(QuoteError::Nul);
        }
        let doubled = value.replace('\'', "''");
        if value.contains('\\') {
            Ok(format!("E'{}'", doubled.replace('\\', "\\\\")))
        } else {
            Ok(format!("'{doubled}'"))
        }
    }
}

/// MySQL / MariaDB: identifiers up to 64 characters in backticks with `` ` `` doubled;
/// literals `'…'` with `'` doubled (backslashes refused, see the module docs).
pub mod mysql {
    use super::QuoteError;

    pub const MAX_IDENTIFIER_CHARS: usize = 64;

    pub fn quote_ident(ident: &str) -> Result<String, QuoteError> {
        if ident.is_empty() {
            return Err(QuoteError::Empty);
        }
        if ident.chars().count() > MAX_IDENTIFIER_CHARS {
            return Err(QuoteError::TooLong { max: MAX_IDENTIFIER_CHARS });
        }
        if ident.contains('\0') {
            return Err(QuoteError::Nul);
        }
        if ident.chars().any(|c| u32::from(c) > 0xFFFF) {
            return Err(QuoteError::Supplementary);
        }
        Ok(format!("`{}`", ident.replace('`', "``")))
    }

    pub fn quote_literal(value: &str) -> Result<String, QuoteError> {
        if value.contains('\0') {
            return Err(QuoteError::Nul);
        }
        if value.contains('\\') {
            return Err(QuoteError::Backslash);
        }
        Ok(format!("'{}'", value.replace('\'', "''")))
    }

    /// `'user'@'host'`.
    pub fn account(user: &str, host: &str) -> Result<String, QuoteError> {
        Ok(format!("{}@{}", quote_literal(user)?, quote_literal(host)?))
    }
}

/// A placeholder of a grant's own SQL statements. Each is replaced by a complete, quoted SQL
/// token (an identifier or a literal), so statements never put quotes around placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The minted user: PostgreSQL `"name"`, MySQL `'name'@'host'`.
    Name,
    /// PostgreSQL: the SCRAM verifier literal (the password never reaches the server);
    /// MySQL: the password literal.
    Password,
    /// When the credential must stop working: a timestamp literal in UTC.
    Expiration,
    /// The grant's database, as an identifier.
    Database,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

/// A statement written by a policy author, with `{{name}}`, `{{password}}`,
/// `{{expiration}}` and `{{database}}`. Claims are deliberately not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTemplate {
    parts: Vec<Part>,
}

impl SqlTemplate {
    /// Parses one statement; `allowed` lists the placeholders this kind of statement may use.
    pub fn parse(source: &str, allowed: &[Placeholder]) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("empty statement".into());
        }
        if source.contains('\0') {
            return Err("NUL byte in statement".into());
        }
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            let before = &rest[..start];
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("unclosed placeholder in {source:?}"))?;
            let name = after[..end].trim();
            let placeholder = match name {
                "name" => Placeholder::Name,
                "password" => Placeholder::Password,
                "expiration" => Placeholder::Expiration,
                "database" => Placeholder::Database,
                other if other.starts_with("claims.") || ["sub", "iss"].contains(&other) => {
                    return Err(format!(
                        "{{{{{other}}}}}: token claims are never spliced into SQL; \
                         use them in the username template or in policy patterns"
                    ));
                }
                other => {
                    return Err(format!(
                        "unknown placeholder {{{{{other}}}}}; SQL statements know name, password, \
                         expiration, database"
                    ));
                }
            };
            if !allowed.contains(&placeholder) {
                return Err(format!("{{{{{name}}}}} is not available in this statement"));
            }
            let next = after[end + 2..].chars().next();
            let quoted = |c: Option<char>| matches!(c, Some('\'' | '"' | '`'));
            if quoted(before.chars().next_back()) || quoted(next) {
                return Err(format!(
                    "{{{{{name}}}}} is replaced by an already quoted SQL value: remove the quotes around it"
                ));
            }
            if !before.is_empty() {
                parts.push(Part::Literal(before.to_owned()));
            }
            parts.push(Part::Placeholder(placeholder));
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("stray '}}}}' in {source:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    pub fn uses(&self, placeholder: Placeholder) -> bool {
        self.parts.contains(&Part::Placeholder(placeholder))
    }

    /// Renders with `value` giving the quoted SQL token for each placeholder.
    pub fn render<E>(&self, mut value: impl FnMut(Placeholder) -> Result<String, E>) -> Result<String, E> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Placeholder(p) => out.push_str(&value(*p)?),
            }
        }
        Ok(out)
    }
}

/// Replaces every occurrence of the secrets in a server message (a syntax error may quote the
/// statement it choked on).
pub fn redact(message: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .fold(message.to_owned(), |msg, secret| msg.replace(secret, "<redacted>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_quoting() {
        assert_eq!(postgres::quote_ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(postgres::quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(postgres::quote_literal("a\\'b").unwrap(), "E'a\\\\''b'");
        assert_eq!(postgres::quote_ident(&"x".repeat(64)), Err(QuoteError::TooLong { max: 63 }));
        assert_eq!(postgres::quote_ident(""), Err(QuoteError::Empty));
        assert_eq!(postgres::quote_literal("a\0b"), Err(QuoteError::Nul));
    }

    #[test]
    fn mysql_quoting() {
        assert_eq!(mysql::quote_ident("a`b").unwrap(), "`a``b`");
        assert_eq!(mysql::account("u'x", "%").unwrap(), "'u''x'@'%'");
        assert_eq!(mysql::quote_literal("a\\b"), Err(QuoteError::Backslash));
        assert!(mysql::quote_ident(&"é".repeat(64)).is_ok());
        assert!(mysql::quote_ident(&"é".repeat(65)).is_err());
        assert_eq!(mysql::quote_ident("a🙂"), Err(QuoteError::Supplementary));
    }

    #[test]
    fn templates() {
        let all = [Placeholder::Name, Placeholder::Password, Placeholder::Expiration, Placeholder::Database];
        let t = SqlTemplate::parse("CREATE ROLE {{ name }} LOGIN PASSWORD {{password}};", &all).unwrap();
        assert!(t.uses(Placeholder::Password));
        let rendered = t
            .render(|p| Ok::<_, ()>(if p == Placeholder::Name { "\"n\"".into() } else { "'v'".into() }))
            .unwrap();
        assert_eq!(rendered, "CREATE ROLE \"n\" LOGIN PASSWORD 'v';");

        let cases = [
            ("quoted placeholder", "CREATE USER '{{name}}'", "remove the quotes"),
            ("claims", "GRANT x TO {{claims.team}}", "never spliced"),
            ("subject", "COMMENT ON ROLE {{name}} IS {{sub}}", "never spliced"),
            ("unknown", "{{nope}}", "unknown placeholder"),
            ("unclosed", "{{name", "unclosed"),
            ("empty", "  ", "empty"),
        ];
        for (name, source, needle) in cases {
            let err = SqlTemplate::parse(source, &all).expect_err(name);
            assert!(err.contains(needle), "{name}: {err}");
        }
        let err = SqlTemplate::parse("DROP ROLE {{name}} {{password}}", &[Placeholder::Name]).unwrap_err();
        assert!(err.contains("not available"), "{err}");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("near 'hunter22' at line 1", &["hunter22"]), "near '<redacted>' at line 1");
    }
}
