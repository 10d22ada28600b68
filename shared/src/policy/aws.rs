//! `type = "aws_role"` grants rendered for one request: the session policy (claims escaped,
//! whitespace dropped), session tags (checked against STS's rules) and `SourceIdentity`.

use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::template::{Escape, Template, Vars};
use super::{AwsRoleGrant, sts_tag_char};
use crate::backend::AwsSessionPlan;
use crate::reason::{Denial, ReasonCode};

impl AwsRoleGrant {
    /// The session to create for one request; the session is named after the lease.
    pub fn plan(
        &self,
        vars: &impl Vars,
        lease_id: &str,
        duration: Duration,
    ) -> Result<AwsSessionPlan, Denial> {
        let render = |t: &Template, escape| {
            t.render(vars, escape)
                .map_err(|var| Denial::new(ReasonCode::Internal, format!("no value for placeholder {var:?}")))
        };
        let session_policy = self
            .session_policy
            .as_ref()
            .map(|t| render(t, Escape::IamPolicyString).map(|rendered| compact_json(&rendered)))
            .transpose()?;
        let mut session_tags = Vec::with_capacity(self.session_tags.len());
        for (key, template) in &self.session_tags {
            let value = render(template, Escape::None)?;
            if value.chars().count() > 256 || !value.chars().all(sts_tag_char) {
                return Err(Denial::new(
                    ReasonCode::ClaimUnusable(format!("session_tags.{key}")),
                    format!("value for session tag {key} is longer than 256 or has characters STS refuses"),
                ));
            }
            session_tags.push((key.clone(), value));
        }
        Ok(AwsSessionPlan {
            role_arn: self.role_arn.clone(),
            session_name: lease_id.to_owned(),
            session_policy,
            session_tags,
            source_identity: source_identity(&render(&self.source_identity, Escape::None)?),
            duration,
        })
    }
}

/// `json` without the whitespace between its tokens: STS counts a session policy's characters,
/// whitespace included. A rendered session policy is valid JSON (the policy loader checks that
/// the template renders to JSON, and claim values are escaped into its strings), so this only
/// needs to know where its strings are. Parsing it into a `serde_json::Value` and printing that
/// again, as before, was a sizeable share of the broker's own time per exchange.
pub(crate) fn compact_json(json: &str) -> String {
    let mut compact = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        compact.push(c);
    }
    debug_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&compact).is_ok(), "{compact}");
    compact
}

/// STS `SourceIdentity` allows 2–64 characters of `[A-Za-z0-9_+=,.@-]`. Subjects such as
/// GitHub's `repo:acme/app:ref:refs/heads/main` do not fit, so other characters become `_`
/// and long values keep a prefix plus a hash of the whole, staying unique and recognisable.
pub fn source_identity(raw: &str) -> String {
    const MAX_LEN: usize = 64;
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    let cleaned: String = raw.chars().map(|c| if allowed(c) { c } else { '_' }).collect();
    if cleaned == raw && (2..=MAX_LEN).contains(&raw.len()) {
        return cleaned;
    }
    // Changed or out of bounds: a recognisable prefix plus 80 bits of a hash of the original
    // keeps distinct subjects distinct; fewer bits could be searched for a branch name whose
    // identity collides with another's.
    let hash = Sha256::digest(raw.as_bytes())[..10].iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    let prefix: String = cleaned.chars().take(MAX_LEN - hash.len() - 1).collect();
    format!("{prefix}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_identity_fits_sts_rules() {
        let cases = [("clean stays as is", "alice@example.com", "alice@example.com")];
        for (name, raw, expected) in cases {
            assert_eq!(source_identity(raw), expected, "{name}");
        }
        assert!(source_identity("a").starts_with("a-"), "too short gets a hash suffix");
        let github = source_identity("repo:acme/app:ref:refs/heads/main");
        assert!(github.starts_with("repo_acme_app_ref_refs_heads_main-"), "{github}");
        // 80 bits of hash: a colliding branch name is out of reach of a search (32 bits were not).
        let suffix = &github["repo_acme_app_ref_refs_heads_main-".len()..];
        assert!(suffix.len() == 20 && suffix.chars().all(|c| c.is_ascii_hexdigit()), "{github}");
        assert_ne!(
            github,
            source_identity("repo_acme/app:ref:refs/heads/main"),
            "substitution keeps values distinct"
        );
        let long = source_identity(&"x/".repeat(100));
        assert_eq!(long.len(), 64);
        for value in [github, long] {
            assert!(value.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)), "{value}");
        }
    }

    #[test]
    fn session_policies_lose_the_whitespace_between_tokens_only() {
        let pretty = "{\n  \"Version\": \"2012-10-17\",\n\t\"Statement\": [ { \"Sid\": \"a \\\" b\\\\\", \"Resource\": \"x y\" } ]\r\n}";
        assert_eq!(
            compact_json(pretty),
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"a \" b\\","Resource":"x y"}]}"#
        );
    }
}
