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
