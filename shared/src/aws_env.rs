//! The AWS SDK configuration of a Lambda function, from its environment alone.
//!
//! Lambda hands a function its execution role's credentials and its region as environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`),
//! and nothing else can supply them there. `aws-config`'s default chain would look in the same
//! place first, but it also links every other provider — profiles, SSO, IMDS, and an STS client
//! for web-identity and assume-role profiles — so a function that must never call STS would
//! carry STS code, and every function would pay its start-up work. Local mode keeps the
//! default chain (`app::aws_sdk_config`): developers use profiles.
//!
//! The endpoint is `[aws].endpoint_url` (`CREDBROKER_AWS_ENDPOINT_URL`), else `AWS_ENDPOINT_URL`
//! (what LocalStack sets for the functions it runs). HTTP client, retries, timeouts and sleep are
//! the SDK's defaults for the behavior version.

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_types::SdkConfig;
use aws_types::region::Region;

use crate::config::AwsConfig;

/// Why the environment cannot configure the SDK.
#[derive(Debug, thiserror::Error)]
#[error("AWS configuration: {0} is not set (Lambda sets it for every function)")]
pub struct MissingVariable(pub &'static str);

/// The SDK configuration from `aws` and the process environment.
pub fn sdk_config(aws: &AwsConfig) -> Result<SdkConfig, MissingVariable> {
    sdk_config_from(aws, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// [`sdk_config`] with the environment given as a lookup (tests).
pub fn sdk_config_from(
    aws: &AwsConfig,
    var: impl Fn(&str) -> Option<String>,
) -> Result<SdkConfig, MissingVariable> {
    let required = |name: &'static str| var(name).ok_or(MissingVariable(name));
    let region = match &aws.region {
        Some(region) => region.clone(),
        None => {
            var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).ok_or(MissingVariable("AWS_REGION"))?
        }
    };
    let credentials = Credentials::new(
        required("AWS_ACCESS_KEY_ID")?,
        required("AWS_SECRET_ACCESS_KEY")?,
        var("AWS_SESSION_TOKEN"),
        None,
        "lambda-environment",
    );
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials));
    if let Some(endpoint) = aws.endpoint_url.clone().or_else(|| var("AWS_ENDPOINT_URL")) {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_credential_types::provider::ProvideCredentials;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[tokio::test]
    async fn lambda_environment_configures_region_credentials_and_endpoint() {
        let lambda = [
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ];
        let config = sdk_config_from(&AwsConfig::default(), env(&lambda)).unwrap();
        assert_eq!(config.region().map(Region::as_ref), Some("eu-west-1"));
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:4566"));
        let credentials = config.credentials_provider().unwrap().provide_credentials().await.unwrap();
        assert_eq!(
            (credentials.access_key_id(), credentials.session_token()),
            ("ASIAEXAMPLE", Some("token"))
        );

        let configured = AwsConfig {
            role_arn_prefix: None,
            endpoint_url: Some("http://localhost:4599".into()),
            region: Some("us-east-2".into()),
        };
        let config = sdk_config_from(&configured, env(&lambda)).unwrap();
        assert_eq!(config.endpoint_url(), Some("http://localhost:4599"), "the broker config wins");
        assert_eq!(config.region().map(Region::as_ref), Some("us-east-2"));
    }

    #[test]
    fn missing_credentials_or_region_are_named() {
        let err = sdk_config_from(&AwsConfig::default(), env(&[("AWS_REGION", "eu-west-1")])).unwrap_err();
        assert_eq!(err.0, "AWS_ACCESS_KEY_ID");
        let err = sdk_config_from(
            &AwsConfig::default(),
            env(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")]),
        )
        .unwrap_err();
        assert_eq!(err.0, "AWS_REGION");
    }
}
