use chrono::TimeZone;
use serde_json::json;

use super::*;

const POLICY: &str = r#"
issuer = "https://token.actions.githubusercontent.com"
audience = ["credbroker"]
subject = { glob = "repo:acme/*:ref:refs/heads/main" }

[claims]
repository_owner = { exact = "acme" }
repository = { regex = "acme/[a-z-]+" }

[conditions]
source_cidrs = ["10.0.0.0/8"]
time_windows = [{ start = "00:00", end = "23:00", zone = "UTC" }]

[ttl]
default = "20m"
max = "1h"

[grants.deploy]
type = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/deploy"
session_policy = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::b/{{claims.repository}}/*"}]}'
session_tags = { repo = "{{claims.repository}}" }

[grants.api]
type = "signed_token"
audience = "internal-api"
scopes = ["read", "write"]
"#;

fn set(policy_text: &str) -> PolicySet {
    let mut set = PolicySet::default();
    set.insert(Policy::from_toml("gha", policy_text).unwrap()).unwrap();
    set
}

#[allow(clippy::needless_pass_by_value)] // call sites read better with `json!` inline
fn identity(claims: serde_json::Value) -> Identity {
    let mut all = json!({
        "iss": "https://token.actions.githubusercontent.com",
        "sub": "repo:acme/app:ref:refs/heads/main",
        "aud": "credbroker",
        "repository_owner": "acme",
        "repository": "acme/app",
    });
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    let map = all.as_object().unwrap().clone();
    Identity {
        issuer: map["iss"].as_str().unwrap().to_owned(),
        subject: map["sub"].as_str().unwrap().to_owned(),
        audiences: vec![map["aud"].as_str().unwrap().to_owned()],
        claims: map,
        jti: Some("j".into()),
        expires_at: Utc::now(),
        issued_at: None,
    }
}

fn ctx() -> RequestContext {
    RequestContext {
        source_ip: Some("10.1.2.3".parse().unwrap()),
        now: Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
        requested_ttl: None,
    }
}

fn grant(name: &str) -> GrantRef {
    GrantRef::parse(&format!("gha/{name}")).unwrap()
}

#[test]
fn allows_matching_request_with_default_ttl() {
    let set = set(POLICY);
    let allowed = set.evaluate(&grant("deploy"), &identity(json!({})), &ctx()).unwrap();
    assert_eq!(allowed.grant_name, "deploy");
    assert_eq!(allowed.ttl, Duration::from_mins(20));
}

#[test]
#[allow(clippy::too_many_lines)] // one table row per reason code reads best in one place
fn every_policy_reason_code() {
    let set = set(POLICY);
    let strict = POLICY.replace("max = \"1h\"", "max = \"1h\"\nstrict = true");
    let strict_set = self::set(&strict);
    let late = RequestContext { now: Utc.with_ymd_and_hms(2026, 11, 25, 23, 30, 0).unwrap(), ..ctx() };
    let outside = RequestContext { source_ip: Some("192.0.2.1".parse().unwrap()), ..ctx() };
    let unknown_ip = RequestContext { source_ip: None, ..ctx() };
    let long = RequestContext { requested_ttl: Some(Duration::from_hours(2)), ..ctx() };
    let cases: Vec<(&str, &PolicySet, GrantRef, Identity, RequestContext, ReasonCode)> = vec![
        (
            "unknown policy",
            &set,
            GrantRef::parse("nope/deploy").unwrap(),
            identity(json!({})),
            ctx(),
            ReasonCode::UnknownGrant,
        ),
        ("unknown grant", &set, grant("nope"), identity(json!({})), ctx(), ReasonCode::UnknownGrant),
        (
            "other issuer",
            &set,
            grant("deploy"),
            Identity { issuer: "https://evil".into(), ..identity(json!({})) },
            ctx(),
            ReasonCode::IssuerUntrusted,
        ),
        (
            "wrong audience",
            &set,
            grant("deploy"),
            Identity { audiences: vec!["sts.amazonaws.com".into()], ..identity(json!({})) },
            ctx(),
            ReasonCode::AudienceMismatch,
        ),
        (
            "no audience",
            &set,
            grant("deploy"),
            Identity { audiences: vec![], ..identity(json!({})) },
            ctx(),
            ReasonCode::AudienceMismatch,
        ),
        (
            "other branch",
            &set,
            grant("deploy"),
            Identity { subject: "repo:acme/app:ref:refs/heads/dev".into(), ..identity(json!({})) },
            ctx(),
            ReasonCode::SubjectMismatch,
        ),
        (
            "subject case differs",
            &set,
            grant("deploy"),
            Identity { subject: "repo:ACME/app:ref:refs/heads/main".into(), ..identity(json!({})) },
            ctx(),
            ReasonCode::SubjectMismatch,
        ),
        (
            "claim value differs",
            &set,
            grant("deploy"),
            identity(json!({"repository_owner": "evil"})),
            ctx(),
            ReasonCode::ClaimMismatch("repository_owner".into()),
        ),
        (
            "claim substring smuggling",
            &set,
            grant("deploy"),
            identity(json!({"repository": "acme/app/../evil"})),
            ctx(),
            ReasonCode::ClaimMismatch("repository".into()),
        ),
        (
            "claim missing",
            &set,
            grant("deploy"),
            {
                let mut i = identity(json!({}));
                i.claims.remove("repository");
                i
            },
            ctx(),
            ReasonCode::ClaimMismatch("repository".into()),
        ),
        (
            "claim is an array",
            &set,
            grant("deploy"),
            identity(json!({"repository_owner": ["acme"]})),
            ctx(),
            ReasonCode::ClaimMismatch("repository_owner".into()),
        ),
        (
            "source outside CIDRs",
            &set,
            grant("deploy"),
            identity(json!({})),
            outside,
            ReasonCode::SourceIpDenied,
        ),
        (
            "source unknown",
            &set,
            grant("deploy"),
            identity(json!({})),
            unknown_ip,
            ReasonCode::SourceIpDenied,
        ),
        (
            "outside time window",
            &set,
            grant("deploy"),
            identity(json!({})),
            late,
            ReasonCode::OutsideTimeWindow,
        ),
        (
            "ttl above max, strict",
            &strict_set,
            grant("api"),
            identity(json!({})),
            long,
            ReasonCode::TtlExceedsMax,
        ),
    ];
    for (name, set, grant, identity, ctx, expected) in cases {
        let got = set.evaluate(&grant, &identity, &ctx).map(|a| a.grant_name.to_owned());
        assert_eq!(got, Err(expected), "{name}");
    }
}

#[test]
fn ttl_is_clamped_never_exceeded() {
    let set = set(POLICY);
    let id = identity(json!({}));
    let ask = |secs| RequestContext { requested_ttl: Some(Duration::from_secs(secs)), ..ctx() };
    assert_eq!(set.evaluate(&grant("api"), &id, &ask(7200)).unwrap().ttl, Duration::from_hours(1));
    assert_eq!(set.evaluate(&grant("api"), &id, &ask(60)).unwrap().ttl, Duration::from_mins(1));
    // STS minimum session length.
    assert_eq!(set.evaluate(&grant("deploy"), &id, &ask(60)).unwrap().ttl, AWS_MIN_TTL);
}

#[test]
fn load_time_errors_name_the_problem() {
    let cases = [
        ("unknown top-level field", POLICY.replace("[claims]", "issuer_typo = 1\n[claims]"), "issuer_typo"),
        ("unknown grant field", POLICY.replace("scopes = [", "scope_typo = 1\nscopes = ["), "scope_typo"),
        ("unknown grant type", POLICY.replace("type = \"signed_token\"", "type = \"magic\""), "magic"),
        (
            "unknown placeholder",
            POLICY.replace("{{claims.repository}}/*", "{{nope}}/*"),
            "unknown placeholder",
        ),
        (
            "unconstrained claim in template",
            POLICY.replace("repo = \"{{claims.repository}}\"", "repo = \"{{claims.actor}}\""),
            "does not constrain",
        ),
        (
            "placeholder outside a JSON string",
            POLICY.replace("\"arn:aws:s3:::b/{{claims.repository}}/*\"", "{{claims.repository}}"),
            "not valid JSON",
        ),
        (
            "bad role ARN",
            POLICY.replace("arn:aws:iam::123456789012:role/deploy", "arn:aws:iam::1:user/x"),
            "role_arn",
        ),
        ("bad regex", POLICY.replace("acme/[a-z-]+", "acme/[a-z"), "claims.repository"),
        ("bad CIDR", POLICY.replace("10.0.0.0/8", "10.0.0.0/99"), "source_cidrs"),
        ("default above max", POLICY.replace("default = \"20m\"", "default = \"2h\""), "ttl.default"),
        (
            "AWS max below STS minimum",
            POLICY.replace("max = \"1h\"", "max = \"5m\"").replace("default = \"20m\"", "default = \"5m\""),
            "15m",
        ),
        ("bad tag key", POLICY.replace("session_tags = { repo", "session_tags = { \"re*po\""), "tag key"),
    ];
    for (name, text, needle) in cases {
        let err = Policy::from_toml("gha", &text).expect_err(name);
        assert!(err.contains(needle), "{name}: {err}");
    }
}

#[test]
fn error_messages_carry_the_line() {
    let err = Policy::from_toml("gha", &POLICY.replace("[claims]", "oops = 1\n[claims]")).unwrap_err();
    assert!(err.contains("line"), "{err}");
}

#[test]
fn grant_refs_and_names() {
    assert!(GrantRef::parse("a/b").is_some());
    for bad in ["a", "/b", "a/", "A/b", "a/b/c", "a b/c", "../x/y"] {
        assert!(GrantRef::parse(bad).is_none(), "{bad}");
    }
    assert!(Policy::from_toml("Bad Name", POLICY).is_err());
}

#[test]
fn example_policies_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let set = PolicySet::load_dir(&dir).unwrap();
    set.validate_consistency().unwrap();
    assert!(!set.trusted_issuers().is_empty());
}

/// A deployment's roles are those under its `role_arn_prefix`: a policy naming any other role
/// (another account, another path) is refused at load, since the broker could neither assume
/// it nor deny its sessions when a lease is revoked.
#[test]
fn roles_outside_the_deployment_prefix_are_refused_at_load() {
    let mut set = PolicySet::default();
    set.insert(Policy::from_toml("gha", POLICY).unwrap()).unwrap();
    // POLICY's role is arn:aws:iam::123456789012:role/deploy.
    set.check_role_arns("arn:aws:iam::123456789012:role/").unwrap();
    let err = set.check_role_arns("arn:aws:iam::999999999999:role/").unwrap_err();
    assert!(
        err.contains("grant deploy") && err.contains("outside the roles this deployment may use"),
        "{err}"
    );
    assert!(set.check_role_arns("arn:aws:iam::123456789012:role/credbroker/").is_err(), "another path");
}

/// The shipped GitHub Actions example against GitHub-shaped tokens: acme's repository is
/// allowed whichever subject form GitHub sends for it; a repository whose owner and name match
/// but whose IDs are another's (a recycled name) is refused, naming the claim or the subject.
#[test]
fn github_example_takes_both_subject_forms_and_refuses_recycled_names() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let set = PolicySet::load_dir(&dir).unwrap();
    let grant = GrantRef::parse("github-actions/deploy").unwrap();
    // Tuesday 10:00 in Berlin: inside the example's office hours.
    let ctx = RequestContext {
        source_ip: Some("203.0.113.9".parse().unwrap()),
        now: Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap(),
        requested_ttl: None,
    };
    let github = |sub: &str, owner_id: &str, repo_id: &str| {
        identity(json!({
            "sub": sub,
            "repository_owner_id": owner_id,
            "repository_id": repo_id,
            "event_name": "push",
            "ref": "refs/heads/main",
        }))
    };
    for (form, sub) in [
        (github::SubjectForm::Names, "repo:acme/app:ref:refs/heads/main"),
        (github::SubjectForm::Immutable, "repo:acme@1234567/app@7654321:ref:refs/heads/main"),
    ] {
        assert_eq!(github::SubjectForm::of(sub), Some(form));
        let allowed = set.evaluate(&grant, &github(sub, "1234567", "7654321"), &ctx);
        assert!(allowed.is_ok(), "{form:?} form: {:?}", allowed.err());
    }
    let recycled = [
        (
            "names, another owner ID",
            "repo:acme/app:ref:refs/heads/main",
            "999",
            ReasonCode::ClaimMismatch("repository_owner_id".into()),
        ),
        (
            "immutable, another owner ID",
            "repo:acme@999/app@7654321:ref:refs/heads/main",
            "999",
            ReasonCode::SubjectMismatch,
        ),
    ];
    for (name, sub, owner_id, reason) in recycled {
        assert_eq!(
            set.evaluate(&grant, &github(sub, owner_id, "7654321"), &ctx).err(),
            Some(reason),
            "{name}"
        );
    }
    assert!(set.get("github-actions").unwrap().warnings.is_empty(), "the example pins the owner's ID");
}

#[test]
fn name_only_github_policies_load_with_a_warning() {
    let policy = Policy::from_toml("gha", POLICY).unwrap();
    assert_eq!(policy.warnings.len(), 1, "{:?}", policy.warnings);
    assert!(
        policy.warnings[0].contains("recycled") || policy.warnings[0].contains("registers"),
        "{:?}",
        policy.warnings
    );
    let pinned = POLICY.replace("[claims]", "[claims]\nrepository_owner_id = { exact = \"1234567\" }");
    assert!(Policy::from_toml("gha", &pinned).unwrap().warnings.is_empty());
}

#[test]
fn replay_modes_compile_strictly() {
    let with = |replay: &str| POLICY.replace("[ttl]", &format!("[replay]\n{replay}\n[ttl]"));
    assert_eq!(Policy::from_toml("p", POLICY).unwrap().replay, Replay::Once, "the default");
    assert_eq!(
        Policy::from_toml("p", &with("mode = \"once_per_grant\"")).unwrap().replay,
        Replay::OncePerGrant
    );
    assert_eq!(
        Policy::from_toml("p", &with("mode = \"until_expiry\"\nmax_uses = 5")).unwrap().replay,
        Replay::UntilExpiry { max_uses: Some(5) }
    );
    for (bad, needle) in [
        ("mode = \"forever\"", "forever"),
        ("mode = \"once\"\nmax_uses = 3", "until_expiry"),
        ("mode = \"until_expiry\"\nmax_uses = 0", "at least 1"),
        ("mode = \"once\"\nwindow = \"1h\"", "window"),
    ] {
        let err = Policy::from_toml("p", &with(bad)).unwrap_err();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}

/// Built with database support the grant is compiled in full (a typo fails the load); built
/// without it (token-exchange) the grant is known by its kind only, and never planned.
#[test]
fn database_grants_are_read_only_where_database_users_are_made() {
    let with_grant = |body: &str| format!("{POLICY}\n[grants.reports]\ntype = \"database\"\n{body}");
    let good =
        with_grant("engine = \"postgres\"\nconnection = \"main\"\ndatabase = \"app\"\nroles = [\"reader\"]");
    let typo =
        with_grant("engine = \"postgres\"\nconnection = \"main\"\ndatabase = \"app\"\nrolez = [\"reader\"]");
    let set = set(&good);
    assert_eq!(set.grant_kind(&grant("reports")), Some(GrantKind::Database));
    let allowed = set.evaluate(&grant("reports"), &identity(json!({})), &ctx()).unwrap();
    let now = Utc::now();
    let plan = allowed.plan(&identity(json!({})), "01KAXB3J8Z7Q4M2N6P8R0T2V4W", now, now);
    if cfg!(feature = "database") {
        assert!(matches!(plan, Ok(IssuePlan::Database(_))), "{plan:?}");
        let err = Policy::from_toml("gha", &typo).unwrap_err();
        assert!(err.contains("rolez"), "{err}");
    } else {
        let denial = plan.unwrap_err();
        assert_eq!(denial.reason, ReasonCode::UnknownGrant);
        assert!(denial.detail.contains("without database support"), "{}", denial.detail);
        assert!(Policy::from_toml("gha", &typo).is_ok(), "left to the functions that read it");
    }
}
