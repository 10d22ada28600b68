use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::fixture::{FailureMaker, harness, harness_with};
use super::*;
use crate::backend::IssuePlan;
use crate::lease::DueLeases;

#[tokio::test]
async fn signed_token_grant_issues_verifiable_token_and_active_lease() {
    let h = harness();
    let done = h.exchange(h.token(|_| {}), "ci/api").await.unwrap();
    assert_eq!(done.lease.status, LeaseStatus::Active);
    let stored = h.store.get(&done.lease.id).await.unwrap().unwrap();
    assert_eq!(stored, done.lease);
    let Credential::AccessToken(token) = &done.credential else { panic!("expected a token") };
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(h.keys.jwks()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["internal-api"]);
    validation.validate_exp = false;
    let claims =
        jsonwebtoken::decode::<Value>(secrecy::ExposeSecret::expose_secret(&token.token), &key, &validation)
            .unwrap()
            .claims;
    assert_eq!(claims["sub"], "repo:acme/app");
    assert_eq!(claims["jti"], done.lease.id.as_str());
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["iss"], "https://broker.test");
    let event = h.last_audit();
    assert_eq!(event.decision, Decision::Allow);
    assert_eq!(event.reason, "granted");
    assert_eq!(event.lease_id.as_deref(), Some(done.lease.id.as_str()));
    assert_eq!(event.ttl_seconds, Some(15 * 60));
    assert_eq!(h.audit.events().len(), 1, "exactly one event per decision");
}

#[tokio::test]
async fn aws_grant_renders_plan_from_claims_with_escaping() {
    let h = harness();
    let hostile = "acme/app\"],\"Effect\":\"Allow";
    let done = h.exchange(h.token(|c| c["repository"] = json!(hostile)), "ci/deploy").await;
    // The hostile value cannot be a session tag value (quotes): refused, nothing issued.
    assert_eq!(done.unwrap_err().reason, ReasonCode::ClaimUnusable("session_tags.repo".into()));
    assert!(h.aws.plans.lock().unwrap().is_empty());

    let done = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap();
    let plans = h.aws.plans.lock().unwrap().clone();
    let IssuePlan::AwsSession(plan) = &plans[0] else { panic!("expected an AWS plan") };
    assert_eq!(plan.session_name, done.lease.id.as_str());
    assert_eq!(plan.duration, crate::policy::AWS_MIN_TTL);
    assert_eq!(plan.session_tags, vec![("repo".to_owned(), "acme/app".to_owned())]);
    assert_eq!(plan.source_identity, crate::policy::aws::source_identity("repo:acme/app"));
    let policy: Value = serde_json::from_str(plan.session_policy.as_deref().unwrap()).unwrap();
    assert_eq!(policy["Statement"][0]["Resource"], "arn:aws:s3:::b/acme/app/*");
    assert!(
        matches!(done.lease.backend, crate::backend::BackendRef::AwsSession { ref session_name, .. } if session_name == done.lease.id.as_str())
    );
}

#[tokio::test]
async fn session_policy_escapes_claim_values() {
    let h = harness();
    // Allowed in a tag value, but must stay inside the JSON string of the session policy.
    let tricky = "acme/a=b+c@d";
    h.exchange(h.token(|c| c["repository"] = json!(tricky)), "ci/deploy").await.unwrap();
    let plans = h.aws.plans.lock().unwrap().clone();
    let IssuePlan::AwsSession(plan) = &plans[0] else { panic!() };
    let policy: Value = serde_json::from_str(plan.session_policy.as_deref().unwrap()).unwrap();
    assert_eq!(policy["Statement"][0]["Resource"], format!("arn:aws:s3:::b/{tricky}/*"));
}

#[test]
fn requests_never_print_the_workload_token() {
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl".to_owned();
    let request = super::fixture::Harness::request(token.clone(), "ci/deploy");
    let printed = format!("{request:?}");
    assert!(!printed.contains(&token) && !printed.contains("eyJ"), "{printed}");
    assert!(printed.contains(&format!("<redacted, {} bytes>", token.len())), "{printed}");
}

#[tokio::test]
async fn verification_and_replay_reasons_are_audited_without_leases() {
    let h = harness();
    let valid = h.token(|_| {});
    let tampered = {
        let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        let mut claims: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1]).unwrap(),
        )
        .unwrap();
        claims["sub"] = json!("repo:acme/admin");
        parts[1] =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims.to_string());
        parts.join(".")
    };
    let expired = h.token(|c| c["exp"] = json!(h.clock.now().timestamp() - 3600));
    let wrong_aud = h.token(|c| c["aud"] = json!("sts.amazonaws.com"));
    let cases = [
        ("tampered payload", tampered, ReasonCode::InvalidSignature),
        ("expired", expired, ReasonCode::TokenExpired),
        ("wrong audience", wrong_aud, ReasonCode::AudienceMismatch),
        ("not a JWT", "garbage".to_owned(), ReasonCode::MalformedToken),
    ];
    for (name, token, reason) in cases {
        let denial = h.exchange(token, "ci/api").await.unwrap_err();
        assert_eq!(denial.reason, reason, "{name}");
        let event = h.last_audit();
        assert_eq!(event.reason, reason.as_str(), "{name}");
        assert_eq!(event.decision, Decision::Deny);
        assert!(event.lease_id.is_none(), "{name}: no lease for a refused token");
    }
    assert!(h.store.is_empty());

    h.exchange(valid.clone(), "ci/api").await.unwrap();
    let replay = h.exchange(valid, "ci/api").await.unwrap_err();
    assert_eq!(replay.reason, ReasonCode::ReplayedToken);
    assert_eq!(h.store.len(), 1, "only the first use made a lease");
}

#[tokio::test]
async fn backend_failure_leaves_a_due_pending_lease_and_no_credential() {
    for (fail, reason) in [
        (IssueError::Unavailable as FailureMaker, ReasonCode::BackendUnavailable),
        (IssueError::Rejected as FailureMaker, ReasonCode::BackendRejected),
    ] {
        let h = harness();
        *h.aws.fail_with.lock().unwrap() = Some(fail);
        let denial = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap_err();
        assert_eq!(denial.reason, reason);
        let event = h.last_audit();
        let lease_id = LeaseId::parse(event.lease_id.as_deref().unwrap()).unwrap();
        let lease = h.store.get(&lease_id).await.unwrap().unwrap();
        assert_eq!(lease.status, LeaseStatus::Pending, "the revoker decides, idempotently");
        assert!(lease.last_error.as_deref().unwrap().contains("injected"));
        let due = h.store.list_due(h.clock.now(), 10).await.unwrap().leases;
        assert_eq!(due.iter().map(|l| &l.id).collect::<Vec<_>>(), vec![&lease_id]);
    }
}

#[tokio::test]
async fn unconfigured_backend_is_unavailable_before_any_lease() {
    let h = harness_with(false);
    let denial = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap_err();
    assert_eq!(denial.reason, ReasonCode::BackendUnavailable);
    assert!(h.store.is_empty());
}

#[tokio::test]
async fn store_outages_refuse_without_handing_out_credentials() {
    // Replay guard unavailable: refused before any lease or credential exists.
    let h = harness();
    h.store.fail_record_jti.store(true, Ordering::SeqCst);
    let denial = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap_err();
    assert_eq!(denial.reason, ReasonCode::StoreUnavailable);
    assert!(h.store.is_empty());
    assert!(h.aws.plans.lock().unwrap().is_empty());

    // Activation fails after the credential exists (a crash at that point looks the same): the
    // caller gets nothing, and the pending lease names the session and becomes due.
    let h = harness();
    h.store.fail_activate.store(true, Ordering::SeqCst);
    let denial = h.exchange(h.token(|_| {}), "ci/deploy").await.unwrap_err();
    assert_eq!(denial.reason, ReasonCode::StoreUnavailable);
    assert_eq!(h.aws.plans.lock().unwrap().len(), 1, "the credential was issued");
    let lease_id = LeaseId::parse(h.last_audit().lease_id.as_deref().unwrap()).unwrap();
    let lease = h.store.get(&lease_id).await.unwrap().unwrap();
    assert_eq!(lease.status, LeaseStatus::Pending);
    assert!(
        matches!(&lease.backend, crate::backend::BackendRef::AwsSession { session_name, .. } if session_name == lease_id.as_str())
    );
    let grace = h.clock.now() + delta(BrokerSettings::default().pending_grace);
    assert!(
        h.store.list_due(h.clock.now(), 10).await.unwrap().leases.is_empty(),
        "not due while issuance may still finish"
    );
    assert_eq!(h.store.list_due(grace, 10).await.unwrap().leases.len(), 1, "due for cleanup after the grace");
}

/// A policy of the test issuer with one replay mode and two signed-token grants.
fn replay_policy(subject: &str, replay: &str) -> String {
    format!(
        r#"
issuer = "{}"
audience = ["credbroker"]
subject = {{ glob = "{subject}" }}
{replay}
[ttl]
default = "10m"
max = "30m"

[grants.ledger]
type = "signed_token"
audience = "https://ledger.internal"

[grants.reports]
type = "signed_token"
audience = "https://reports.internal"
"#,
        super::fixture::ISSUER
    )
}

fn replay_harness() -> super::fixture::Harness {
    super::fixture::harness_with_policies(
        false,
        &[
            (
                "k8s",
                replay_policy(
                    "system:serviceaccount:billing:*",
                    "[replay]\nmode = \"until_expiry\"\nmax_uses = 3",
                ),
            ),
            ("gitlab", replay_policy("project_path:acme/*", "[replay]\nmode = \"once_per_grant\"")),
            ("gha", replay_policy("repo:acme/*", "")),
        ],
    )
}

/// A Kubernetes projected service-account token: `aud` a list, the pod under `kubernetes.io`,
/// a `jti` (1.30+), living an hour.
fn kubernetes_token(h: &super::fixture::Harness) -> String {
    let mut claims = h.issuer.claims("system:serviceaccount:billing:ledger-sync", h.clock.now());
    claims["aud"] = json!(["credbroker", "https://kubernetes.default.svc"]);
    claims["exp"] = json!((h.clock.now() + chrono::TimeDelta::hours(1)).timestamp());
    claims["kubernetes.io"] = json!({
        "namespace": "billing",
        "pod": { "name": "ledger-sync-7d9f", "uid": "1b2c" },
        "serviceaccount": { "name": "ledger-sync", "uid": "9e8f" },
    });
    h.issuer.sign(&claims)
}

#[tokio::test]
async fn until_expiry_lets_a_kubernetes_token_be_exchanged_up_to_max_uses() {
    let h = replay_harness();
    let token = kubernetes_token(&h);
    for n in 1..=3 {
        let grant = if n == 2 { "k8s/reports" } else { "k8s/ledger" };
        h.exchange(token.clone(), grant).await.unwrap_or_else(|d| panic!("use {n}: {d:?}"));
        let event = h.last_audit();
        assert_eq!((event.replay_mode, event.token_uses), (Some("until_expiry"), Some(n)), "use {n}");
        h.clock.advance(chrono::TimeDelta::minutes(10));
    }
    let denied = h.exchange(token, "k8s/ledger").await.unwrap_err();
    assert_eq!(denied.reason, ReasonCode::ReplayedToken);
    assert!(denied.detail.contains("3 times"), "{}", denied.detail);
    assert_eq!(h.last_audit().replay_mode, Some("until_expiry"));
}

#[tokio::test]
async fn once_per_grant_lets_a_gitlab_job_token_fetch_each_grant_once() {
    let h = replay_harness();
    let mut claims = h.issuer.claims("project_path:acme/app:ref_type:branch:ref:main", h.clock.now());
    claims["job_id"] = json!("8675309");
    let token = h.issuer.sign(&claims);
    h.exchange(token.clone(), "gitlab/ledger").await.unwrap();
    h.exchange(token.clone(), "gitlab/reports").await.expect("another grant with the same token");
    let denied = h.exchange(token, "gitlab/ledger").await.unwrap_err();
    assert_eq!(denied.reason, ReasonCode::ReplayedToken);
    assert!(denied.detail.contains("gitlab/ledger"), "{}", denied.detail);
    assert_eq!(h.last_audit().replay_mode, Some("once_per_grant"));
}

#[tokio::test]
async fn once_refuses_a_github_token_the_second_time_whatever_the_grant() {
    let h = replay_harness();
    let token = h.issuer.sign(&h.issuer.claims("repo:acme/app:ref:refs/heads/main", h.clock.now()));
    h.exchange(token.clone(), "gha/ledger").await.unwrap();
    let event = h.last_audit();
    assert_eq!((event.replay_mode, event.token_uses), (Some("once"), Some(1)), "the default mode");
    for grant in ["gha/ledger", "gha/reports"] {
        assert_eq!(
            h.exchange(token.clone(), grant).await.unwrap_err().reason,
            ReasonCode::ReplayedToken,
            "{grant}"
        );
    }
}

/// A token without `jti` cannot be counted: refused unless its policy says otherwise, in
/// which case it is exchanged uncounted (once accepted any number of times, in every mode).
#[tokio::test]
async fn a_token_without_jti_is_refused_unless_the_policy_accepts_it_uncounted() {
    let h = super::fixture::harness_with_policies(
        false,
        &[
            ("strict", replay_policy("repo:acme/*", "")),
            ("spiffe", replay_policy("spiffe://acme/*", "[replay]\nrequire_jti = false")),
        ],
    );
    let without_jti = |subject: &str| {
        let mut claims = h.issuer.claims(subject, h.clock.now());
        claims.as_object_mut().unwrap().remove("jti");
        h.issuer.sign(&claims)
    };
    let denied = h.exchange(without_jti("repo:acme/app"), "strict/ledger").await.unwrap_err();
    assert_eq!(denied.reason, ReasonCode::MissingClaim("jti"));
    assert!(denied.detail.contains("require_jti"), "{}", denied.detail);
    assert_eq!(h.last_audit().reason, "missing_claim:jti");

    let token = without_jti("spiffe://acme/billing");
    for _ in 0..2 {
        h.exchange(token.clone(), "spiffe/ledger").await.expect("accepted uncounted");
        assert_eq!(h.last_audit().token_uses, None);
    }
}

/// A token's count is the token's, not the policy's: used once under a `once` policy, it has
/// used one of an `until_expiry` policy's uses too.
#[tokio::test]
async fn a_token_counts_across_policies() {
    let h = super::fixture::harness_with_policies(
        false,
        &[
            (
                "k8s",
                replay_policy("system:serviceaccount:*", "[replay]\nmode = \"until_expiry\"\nmax_uses = 2"),
            ),
            ("strict", replay_policy("system:serviceaccount:*", "")),
        ],
    );
    let token = h.issuer.sign(&h.issuer.claims("system:serviceaccount:billing:x", h.clock.now()));
    h.exchange(token.clone(), "strict/ledger").await.unwrap();
    h.exchange(token.clone(), "k8s/ledger").await.expect("use 2 of 2");
    assert_eq!(h.last_audit().token_uses, Some(2));
    assert_eq!(h.exchange(token.clone(), "k8s/ledger").await.unwrap_err().reason, ReasonCode::ReplayedToken);
    assert_eq!(h.exchange(token, "strict/ledger").await.unwrap_err().reason, ReasonCode::ReplayedToken);
}
