//! GitHub Actions' subjects, and the advice a policy for them gets at load.
//!
//! Since 15 July 2026 GitHub's default subject names the owner and the repository by name and
//! immutable ID for repositories created or renamed since (and for any whose admins opt in):
//! `repo:octocat@123456/my-repo@456789:ref:refs/heads/main` instead of
//! `repo:octocat/my-repo:ref:refs/heads/main`. Every token also carries the IDs as claims
//! (`repository_owner_id`, `repository_id`, numeric strings). Names can be recycled — whoever
//! registers a deleted or renamed organisation's or repository's name — IDs never are, so a
//! policy that matches names only can be satisfied by someone else's repository.

use super::{Pattern, Policy};

/// The issuer of GitHub.com's Actions tokens.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// The claims holding GitHub's immutable IDs.
pub const ID_CLAIMS: [&str; 2] = ["repository_owner_id", "repository_id"];

/// Which of GitHub's two subject forms `sub` is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectForm {
    /// `repo:owner/repo:…`: names only.
    Names,
    /// `repo:owner@<id>/repo@<id>:…`: names and immutable IDs.
    Immutable,
}

impl SubjectForm {
    /// The form of a GitHub `repo:` subject, or `None` for anything else.
    pub fn of(subject: &str) -> Option<Self> {
        let rest = subject.strip_prefix("repo:")?;
        let (owner, rest) = rest.split_once('/')?;
        let repository = rest.split(':').next()?;
        let with_id = |name: &str| name.rsplit_once('@').is_some_and(|(n, id)| !n.is_empty() && digits(id));
        match (with_id(owner), with_id(repository)) {
            (true, true) => Some(Self::Immutable),
            (false, false) => Some(Self::Names),
            _ => None,
        }
    }
}

fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `issuer` is GitHub's Actions issuer (GitHub.com, or GitHub Enterprise Server's
/// `https://<host>/_services/token`).
pub fn is_github_issuer(issuer: &str) -> bool {
    issuer == GITHUB_ACTIONS_ISSUER
        || (issuer.starts_with("https://") && issuer.ends_with("/_services/token"))
}

/// The advice for a GitHub policy that an owner or a repository by name alone satisfies: it
/// pins neither an ID claim (`{ exact = "<id>" }`) nor the immutable subject form (an `@<id>`
/// that is not optional). `None` for other issuers and pinned policies.
pub fn name_only_warning(policy: &Policy) -> Option<String> {
    if !is_github_issuer(&policy.issuer) {
        return None;
    }
    let pins_id = ID_CLAIMS
        .iter()
        .any(|claim| matches!(policy.claims.get(*claim), Some(Pattern::Exact(id)) if digits(id)));
    if pins_id || pins_immutable_subject(&policy.subject) {
        return None;
    }
    Some(format!(
        "policy {}: GitHub owners and repositories are matched by name only, so whoever registers a \
         deleted or renamed organisation's or repository's name satisfies it. Pin an immutable ID \
         (claims.repository_owner_id = {{ exact = \"<id>\" }}, or repository_id), or match the \
         subject form repo:<owner>@<id>/<repo>@<id>:… (docs/policies.md, \"GitHub Actions\")",
        policy.name
    ))
}

/// Whether every subject the pattern matches carries an owner ID: an exact subject or glob in
/// the immutable form, or a regex whose `@<digits>` is not in an optional group.
fn pins_immutable_subject(subject: &Pattern) -> bool {
    match subject {
        Pattern::Exact(value) => SubjectForm::of(value) == Some(SubjectForm::Immutable),
        Pattern::Glob(glob) => {
            let glob: String = glob.iter().collect();
            has_literal_owner_id(&glob)
        }
        Pattern::Regex { source, .. } => has_literal_owner_id(source) && !source.contains(")?"),
    }
}

/// `repo:<owner>@<digits>/` literally, the owner without wildcards.
fn has_literal_owner_id(pattern: &str) -> bool {
    let Some(rest) = pattern.strip_prefix("repo:") else { return false };
    let Some((owner, _)) = rest.split_once('/') else { return false };
    owner.rsplit_once('@').is_some_and(|(name, id)| !name.is_empty() && digits(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_forms() {
        assert_eq!(SubjectForm::of("repo:acme/app:ref:refs/heads/main"), Some(SubjectForm::Names));
        assert_eq!(SubjectForm::of("repo:acme@12/app@34:ref:refs/heads/main"), Some(SubjectForm::Immutable));
        assert_eq!(SubjectForm::of("repo:acme@12/app:ref:refs/heads/main"), None, "half a form");
        assert_eq!(SubjectForm::of("repo:acme@x/app@34:environment:prod"), None);
        assert_eq!(SubjectForm::of("system:serviceaccount:a:b"), None);
    }

    fn github_policy(subject: &str, claims: &str) -> Policy {
        let text = format!(
            "issuer = \"{GITHUB_ACTIONS_ISSUER}\"\naudience = [\"credbroker\"]\nsubject = {subject}\n[claims]\n{claims}\n\
             [grants.api]\ntype = \"signed_token\"\naudience = \"api\"\n"
        );
        Policy::from_toml("gha", &text).unwrap()
    }

    #[test]
    fn name_only_github_policies_are_warned_about_and_pinned_ones_are_not() {
        let warned = [
            github_policy(
                "{ glob = \"repo:acme/*:ref:refs/heads/main\" }",
                "repository_owner = { exact = \"acme\" }",
            ),
            github_policy("{ regex = \"repo:acme(@123)?/app(@4)?:ref:.*\" }", ""),
            github_policy("{ glob = \"repo:acme*/*\" }", "repository_id = { glob = \"*\" }"),
        ];
        for policy in &warned {
            let warning = name_only_warning(policy).expect("a warning");
            assert!(warning.contains("repository_owner_id"), "{warning}");
        }
        let pinned = [
            github_policy("{ glob = \"repo:acme/*\" }", "repository_owner_id = { exact = \"123\" }"),
            github_policy("{ glob = \"repo:*\" }", "repository_id = { exact = \"456\" }"),
            github_policy("{ glob = \"repo:acme@123/*:ref:refs/heads/main\" }", ""),
            github_policy("{ exact = \"repo:acme@123/app@456:ref:refs/heads/main\" }", ""),
            github_policy("{ regex = \"repo:acme@123/app@[0-9]+:ref:.*\" }", ""),
        ];
        for policy in &pinned {
            assert_eq!(name_only_warning(policy), None, "{:?}", policy.subject);
        }
        let mut other = github_policy("{ glob = \"repo:acme/*\" }", "");
        other.issuer = "https://gitlab.example.com".into();
        assert_eq!(name_only_warning(&other), None, "only GitHub's subjects are GitHub's");
    }
}
