//! The broker's signing key from Secrets Manager (LocalStack), as Lambda loads it at init: the
//! `AWSCURRENT` version signs, the `AWSPREVIOUS` version stays published in the JWKS so tokens
//! signed before a rotation still verify; a missing or malformed secret fails with its name.

use credbroker::keys::{KeyError, KeySource, SigningKey, StaticKeys};
use credbroker_tests::{create_secret, localstack_sdk_config, unique_name};
use serde_json::json;

fn seed_secret(seed: &str) -> String {
    json!({ "format": "ed25519-seed-sha256", "seed": seed }).to_string()
}

/// A seed of the length the templates generate (64 letters and digits).
fn fresh_seed() -> String {
    (0..4).map(|_| unique_name("seed").replace('-', "")).collect()
}

fn kid_of(seed: &str) -> String {
    SigningKey::from_secret_json(&seed_secret(seed)).expect("valid seed").kid().to_owned()
}

fn published_kids(keys: &StaticKeys) -> Vec<String> {
    keys.jwks()["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[tokio::test]
async fn current_version_signs_and_previous_version_stays_published() {
    let secrets = aws_sdk_secretsmanager::Client::new(&localstack_sdk_config().await);
    let (first, second) = (fresh_seed(), fresh_seed());
    let arn = create_secret(&secrets, "credbroker-test-signing", seed_secret(&first)).await;

    // One version: no AWSPREVIOUS yet, which is not an error.
    let keys = StaticKeys::from_secrets_manager(&secrets, &arn).await.expect("one version");
    assert_eq!(keys.signing_key().kid(), kid_of(&first));
    assert_eq!(published_kids(&keys), vec![kid_of(&first)]);

    // A rotation: the new value becomes AWSCURRENT, the old one AWSPREVIOUS.
    secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(seed_secret(&second))
        .send()
        .await
        .expect("rotate");
    let keys = StaticKeys::from_secrets_manager(&secrets, &arn).await.expect("two versions");
    assert_eq!(keys.signing_key().kid(), kid_of(&second), "the current version signs");
    assert_eq!(published_kids(&keys), vec![kid_of(&second), kid_of(&first)], "both are published");
}

#[tokio::test]
async fn a_missing_or_malformed_secret_is_an_error_naming_it() {
    let secrets = aws_sdk_secretsmanager::Client::new(&localstack_sdk_config().await);

    let missing = unique_name("credbroker-test-no-such-secret");
    let Err(KeyError::Secret(detail)) = StaticKeys::from_secrets_manager(&secrets, &missing).await else {
        panic!("a missing secret must fail");
    };
    assert!(detail.contains(&missing) && detail.contains("AWSCURRENT"), "{detail}");

    let arn = create_secret(&secrets, "credbroker-test-signing", "not a key".to_owned()).await;
    let Err(KeyError::Secret(detail)) = StaticKeys::from_secrets_manager(&secrets, &arn).await else {
        panic!("a malformed secret must fail");
    };
    assert!(detail.contains(&arn) && detail.contains("not a signing-key secret"), "{detail}");
}
