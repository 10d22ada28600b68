//! AWS STS sessions via `AssumeRole`.

use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::Tag;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::aws_failure::AwsFailure;

use crate::backend::{
    AwsCredentials, Backend, BackendKind, Credential, CredentialIssuer, IssueError, IssuePlan,
};

#[derive(Debug, Clone)]
pub struct StsIssuer {
    client: aws_sdk_sts::Client,
}

impl StsIssuer {
    pub fn new(client: aws_sdk_sts::Client) -> Self {
        Self { client }
    }
}

/// STS error codes that retrying cannot fix.
const REJECTIONS: &[&str] = &[
    "AccessDenied",
    "MalformedPolicyDocument",
    "PackedPolicyTooLarge",
    "RegionDisabledException",
    "ValidationError",
    "InvalidParameterValue",
    "ExpiredTokenException",
];

impl Backend for StsIssuer {
    fn backend(&self) -> BackendKind {
        BackendKind::AwsSession
    }
}

#[async_trait::async_trait]
impl CredentialIssuer for StsIssuer {
    async fn issue(&self, plan: &IssuePlan) -> Result<Credential, IssueError> {
        let IssuePlan::AwsSession(plan) = plan else {
            return Err(IssueError::WrongBackend { expected: BackendKind::AwsSession, got: plan.backend() });
        };
        let tags = plan
            .session_tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IssueError::Rejected(e.to_string()))?;
        let duration = i32::try_from(plan.duration.as_secs())
            .map_err(|_| IssueError::Rejected("session duration out of range".into()))?;
        let output = self
            .client
            .assume_role()
            .role_arn(&plan.role_arn)
            .role_session_name(&plan.session_name)
            .set_policy(plan.session_policy.clone())
            .set_tags((!tags.is_empty()).then_some(tags))
            .source_identity(&plan.source_identity)
            .duration_seconds(duration)
            .send()
            .await
            .map_err(classify)?;
        let creds = output
            .credentials
            .ok_or_else(|| IssueError::Unavailable("STS answered without credentials".into()))?;
        let assumed_role_arn = output.assumed_role_user.map(|u| u.arn).unwrap_or_default();
        let expiration = DateTime::<Utc>::from_timestamp(creds.expiration.secs(), 0)
            .ok_or_else(|| IssueError::Unavailable("STS returned an invalid expiration".into()))?;
        Ok(Credential::Aws(AwsCredentials {
            access_key_id: creds.access_key_id,
            secret_access_key: SecretString::from(creds.secret_access_key),
            session_token: SecretString::from(creds.session_token),
            expiration,
            assumed_role_arn,
        }))
    }
}

fn classify<E: ProvideErrorMetadata, R: std::fmt::Debug>(err: SdkError<E, R>) -> IssueError {
    let failure = AwsFailure::from(err);
    match failure.code() {
        Some(code) if REJECTIONS.contains(&code) => IssueError::Rejected(failure.to_string()),
        // Throttling and service faults, timeouts, connection failures: transient.
        _ => IssueError::Unavailable(failure.to_string()),
    }
}
