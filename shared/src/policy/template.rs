//! `{{placeholder}}` templates for session policies, session tags and source identities.
//!
//! Placeholders: `{{sub}}`, `{{iss}}`, `{{lease_id}}`, `{{policy}}`, `{{grant}}` and
//! `{{claims.NAME}}`, where NAME must be a claim the policy constrains with a pattern (so every
//! interpolated value has been checked). Anything else is a load-time error.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    Subject,
    Issuer,
    LeaseId,
    Policy,
    Grant,
    Claim(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// How interpolated values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Inside a JSON string literal of an IAM policy: quotes, backslashes and control
    /// characters escaped, and IAM's wildcards and policy-variable sigil written as IAM's
    /// escapes (`*` → `${*}`, `?` → `${?}`, `$` → `${$}`), so that a value matches only
    /// itself: a claim `*` inside `arn:aws:s3:::b/{{claims.x}}/*` must not grant the bucket.
    IamPolicyString,
    /// Verbatim (the caller validates the result).
    None,
}

/// Values available while rendering.
pub trait Vars {
    fn get(&self, var: &Var) -> Option<String>;
}

impl Template {
    /// Parses `source`; `constrained_claims` are the claim names a placeholder may use.
    pub fn parse(source: &str, constrained_claims: &BTreeSet<String>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end =
                after.find("}}").ok_or_else(|| format!("unclosed placeholder in template {source:?}"))?;
            let name = after[..end].trim();
            parts.push(Part::Var(parse_var(name, constrained_claims)?));
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("stray '}}}}' in template {source:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Renders; a missing value is an error naming the placeholder.
    pub fn render(&self, vars: &dyn Vars, escape: Escape) -> Result<String, Var> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(var) => {
                    let value = vars.get(var).ok_or_else(|| var.clone())?;
                    match escape {
                        Escape::None => out.push_str(&value),
                        Escape::IamPolicyString => out.push_str(&iam_policy_escape(&value)),
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Literal(_) => None,
        })
    }
}

fn parse_var(name: &str, constrained_claims: &BTreeSet<String>) -> Result<Var, String> {
    Ok(match name {
        "sub" => Var::Subject,
        "iss" => Var::Issuer,
        "lease_id" => Var::LeaseId,
        "policy" => Var::Policy,
        "grant" => Var::Grant,
        other => {
            let Some(claim) = other.strip_prefix("claims.") else {
                return Err(format!(
                    "unknown placeholder {{{{{other}}}}}; known: sub, iss, lease_id, policy, grant, claims.NAME"
                ));
            };
            if !constrained_claims.contains(claim) {
                return Err(format!(
                    "placeholder {{{{claims.{claim}}}}} uses a claim the policy does not constrain; \
                     add `claims.{claim} = {{ glob = \"*\" }}` (or a tighter pattern) to the policy"
                ));
            }
            Var::Claim(claim.to_owned())
        }
    })
}

/// The body of a JSON string literal for `value` (without the surrounding quotes), with IAM's
/// special characters escaped. IAM reads `${*}`, `${?}` and `${$}` as the literal character in
/// the elements that take policy variables (`Resource`, `Condition` values, policy version
/// 2012-10-17); elsewhere, or under version 2008-10-17, the escape stays literal text and
/// matches nothing: either way the value can only narrow the session, never widen it.
fn iam_policy_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => escaped.push_str("${*}"),
            '?' => escaped.push_str("${?}"),
            '$' => escaped.push_str("${$}"),
            _ => escaped.push(c),
        }
    }
    let quoted = serde_json::Value::String(escaped).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Vars for Fixed {
        fn get(&self, var: &Var) -> Option<String> {
            match var {
                Var::Subject => Some("repo:acme/app".into()),
                Var::Claim(name) if name == "evil" => Some("x\",\"Effect\":\"Allow\\\n".into()),
                Var::Claim(name) if name == "wild" => Some("*/${aws:username}/?".into()),
                _ => None,
            }
        }
    }

    fn claims(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn renders_placeholders_with_whitespace() {
        let t = Template::parse("s3:::b/{{ sub }}/*", &claims(&[])).unwrap();
        assert_eq!(t.render(&Fixed, Escape::None).unwrap(), "s3:::b/repo:acme/app/*");
    }

    #[test]
    fn json_escaping_keeps_hostile_values_inside_the_string() {
        let t = Template::parse(r#"{"a":"{{claims.evil}}"}"#, &claims(&["evil"])).unwrap();
        let rendered = t.render(&Fixed, Escape::IamPolicyString).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(parsed["a"], "x\",\"Effect\":\"Allow\\\n");
        assert_eq!(parsed.as_object().unwrap().len(), 1);
    }

    /// A claim value of `*` once widened `arn:aws:s3:::b/{{claims.x}}/*` to the whole bucket;
    /// IAM's wildcards and variables in a value are now its literal-character escapes.
    #[test]
    fn claim_values_cannot_widen_an_iam_policy() {
        let t = Template::parse(r#"{"Resource":"arn:aws:s3:::b/{{claims.wild}}/*"}"#, &claims(&["wild"]))
            .unwrap();
        let rendered = t.render(&Fixed, Escape::IamPolicyString).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(parsed["Resource"], "arn:aws:s3:::b/${*}/${$}{aws:username}/${?}/*");
        // Outside IAM policies (tags, source identity) values stay verbatim, validated there.
        assert_eq!(
            Template::parse("{{claims.wild}}", &claims(&["wild"]))
                .unwrap()
                .render(&Fixed, Escape::None)
                .unwrap(),
            "*/${aws:username}/?"
        );
    }

    #[test]
    fn load_errors() {
        let cases = [
            ("unknown placeholder", "{{nope}}"),
            ("unconstrained claim", "{{claims.repo}}"),
            ("unclosed", "{{sub"),
            ("stray close", "sub}}"),
        ];
        for (name, source) in cases {
            assert!(Template::parse(source, &claims(&[])).is_err(), "{name}");
        }
    }

    #[test]
    fn missing_value_names_the_placeholder() {
        let t = Template::parse("{{iss}}", &claims(&[])).unwrap();
        assert_eq!(t.render(&Fixed, Escape::None), Err(Var::Issuer));
    }
}
