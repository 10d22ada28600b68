//! Credential backends: one adapter per [`BackendKind`](crate::backend::BackendKind),
//! implementing the ports of [`crate::backend`].
//!
//! - [`aws`]: STS sessions (`AssumeRole`); feature `sts`.
//! - [`aws_revocation`]: ending STS sessions with a deny policy on their role, rendered from the
//!   deny lists the lease store keeps; IAM (feature `iam`) only in the revoker.
//! - [`db`]: PostgreSQL and MySQL/MariaDB users over sqlx; feature `database`.
//! - [`token`]: broker-signed access tokens.

#[cfg(feature = "sts")]
pub mod aws;
pub mod aws_revocation;
#[cfg(feature = "database")]
pub mod db;
#[cfg(feature = "iam")]
pub mod iam;
pub mod token;
