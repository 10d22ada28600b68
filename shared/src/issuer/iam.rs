//! The IAM side of STS session revocation: puts and deletes the `credbroker-revocations`
//! inline policy of a role ([`RolePolicyWriter`]). Only the revoker function links it, and
//! only its role may call `iam:PutRolePolicy`/`iam:DeleteRolePolicy`.

use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};

use crate::aws_failure::AwsFailure;
use crate::backend::IssueError;
use crate::denylist::{DENY_POLICY_NAME, RoleRef};
use crate::issuer::aws_revocation::RolePolicyWriter;

#[derive(Debug, Clone)]
pub struct IamRolePolicies {
    client: aws_sdk_iam::Client,
}

impl IamRolePolicies {
    pub fn new(client: aws_sdk_iam::Client) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl RolePolicyWriter for IamRolePolicies {
    async fn put(&self, role: &RoleRef, document: &str) -> Result<(), IssueError> {
        self.client
            .put_role_policy()
            .role_name(&role.name)
            .policy_name(DENY_POLICY_NAME)
            .policy_document(document)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn delete(&self, role: &RoleRef) -> Result<(), IssueError> {
        match self
            .client
            .delete_role_policy()
            .role_name(&role.name)
            .policy_name(DENY_POLICY_NAME)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_no_such_entity(&err) => Ok(()),
            Err(err) => Err(classify(err)),
        }
    }
}

fn is_no_such_entity<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(err, SdkError::ServiceError(e) if e.err().code() == Some("NoSuchEntity"))
}

fn classify<E: ProvideErrorMetadata, R: std::fmt::Debug>(err: SdkError<E, R>) -> IssueError {
    let failure = AwsFailure::from(err);
    match failure.code() {
        Some("Throttling" | "ServiceFailure" | "ServiceUnavailable" | "ConcurrentModification") | None => {
            IssueError::Unavailable(failure.to_string())
        }
        Some(_) => IssueError::Rejected(failure.to_string()),
    }
}
