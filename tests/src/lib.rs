//! Shared harness for the integration tests: LocalStack clients, a test OIDC issuer served
//! over HTTP, a minimal Lambda runtime-API emulator, and helpers to run the real binaries.
//!
//! The integration tests need the services `scripts/test.sh` starts; when one is missing they
//! fail with a message saying so (they never skip).

pub mod bench;
pub mod db;
pub mod lambda;
pub mod oidc;
pub mod process;

use std::time::Duration;

use aws_credential_types::Credentials;

/// LocalStack's endpoint (`CREDBROKER_TEST_AWS_ENDPOINT`, default `http://127.0.0.1:4566`).
pub fn aws_endpoint() -> String {
    std::env::var("CREDBROKER_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// SDK configuration for LocalStack, after checking that it answers.
pub async fn localstack_sdk_config() -> aws_config::SdkConfig {
    let endpoint = aws_endpoint();
    let health = format!("{endpoint}/_localstack/health");
    let reachable = reqwest::Client::new()
        .get(&health)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(reachable, "LocalStack not reachable at {endpoint}: run scripts/test.sh (it starts LocalStack)");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .load()
        .await
}

/// A name unique to this test run, for tables, prefixes and roles.
pub fn unique_name(prefix: &str) -> String {
    let mut random = [0u8; 6];
    aws_lc_rs::rand::fill(&mut random).expect("random");
    let suffix = random.iter().fold(String::new(), |mut hex, b| {
        let _ = std::fmt::Write::write_fmt(&mut hex, format_args!("{b:02x}"));
        hex
    });
    format!("{prefix}-{suffix}")
}

/// Creates an IAM role in LocalStack that anyone may assume; returns its ARN.
pub async fn create_test_role(iam: &aws_sdk_iam::Client, role_name: &str) -> String {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role()
        .role_name(role_name)
        .assume_role_policy_document(trust)
        .send()
        .await
        .expect("create role")
        .role
        .expect("role")
        .arn
}

/// Creates a Secrets Manager secret (named `<prefix>-<unique>`) holding `value`; its ARN.
pub async fn create_secret(secrets: &aws_sdk_secretsmanager::Client, prefix: &str, value: String) -> String {
    secrets
        .create_secret()
        .name(unique_name(prefix))
        .secret_string(value)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("arn")
}

/// What a role's `credbroker-revocations` policy denies, read back from IAM: the session names
/// (lease ids) and the `aws:TokenIssueTime` cut-off; `None` when the role has no such policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedSessions {
    pub sessions: Vec<String>,
    pub cutoff: Option<String>,
}

pub async fn denied_sessions(iam: &aws_sdk_iam::Client, role_name: &str) -> Option<DeniedSessions> {
    let output = iam
        .get_role_policy()
        .role_name(role_name)
        .policy_name(credbroker::denylist::DENY_POLICY_NAME)
        .send()
        .await
        .ok()?;
    let document: serde_json::Value =
        serde_json::from_str(&percent_decode(&output.policy_document)).expect("the deny policy is JSON");
    let statements = document["Statement"].as_array().expect("statements");
    let mut sessions: Vec<String> = statements
        .iter()
        .filter_map(|s| s["Condition"]["StringLike"]["aws:userid"].as_array())
        .flatten()
        .map(|id| id.as_str().expect("user id").trim_start_matches("*:").to_owned())
        .collect();
    sessions.sort();
    let cutoff = statements
        .iter()
        .find_map(|s| s["Condition"]["DateLessThan"]["aws:TokenIssueTime"].as_str().map(str::to_owned));
    Some(DeniedSessions { sessions, cutoff })
}

/// IAM returns policy documents URL-encoded (RFC 3986); LocalStack returns them as written.
pub fn percent_decode(raw: &str) -> String {
    if raw.trim_start().starts_with('{') {
        return raw.to_owned();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| {
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        if let Some(byte) = hex {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
