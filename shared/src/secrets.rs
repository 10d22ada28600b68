//! Where secrets the broker itself needs come from (database admin passwords).
//!
//! A [`SecretSource`] is read lazily and may be read again (after a rotation), so adapters
//! never cache: callers decide when to refresh. Values are [`SecretString`]s end to end, so
//! they cannot reach a log line by accident.
//!
//! - [`SecretsManagerSecret`]: AWS Secrets Manager (the cloud source; LocalStack in tests).
//!   The secret string is either the password itself or a JSON object with a `password`
//!   field (the shape RDS-managed and rotation-Lambda secrets use).
//! - [`FileSecret`], [`EnvSecret`]: local mode only (a file kept out of the repository, or an
//!   environment variable).
//! - [`StaticSecret`]: a fixed value (tests, or servers with trust authentication: empty).

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

#[cfg(feature = "secrets-manager")]
use crate::aws_failure::AwsFailure;

/// How a bearer credential appears in `Debug` output: its length only. For values that are
/// handed on as plain strings (a workload's JWT), where a [`SecretString`] would only be
/// unwrapped again at once.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Try again later (network, throttling, the secret store is down).
    #[error("secret {source_name} unavailable: {detail}")]
    Unavailable { source_name: String, detail: String },
    /// The secret exists but cannot be used (missing, empty, wrong shape, no permission).
    #[error("secret {source_name} unusable: {detail}")]
    Invalid { source_name: String, detail: String },
}

/// A secret the broker reads for itself.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync + fmt::Debug {
    /// Reads the current value. Not cached: call again after a rotation.
    async fn fetch(&self) -> Result<SecretString, SecretError>;

    /// Where the secret comes from, for errors and logs (never the value).
    fn describe(&self) -> String;
}

/// A fixed value.
pub struct StaticSecret(SecretString);

impl StaticSecret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// No password (trust or peer authentication, local development only).
    pub fn empty() -> Self {
        Self::new(String::new())
    }
}

impl fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticSecret(<redacted>)")
    }
}

#[async_trait::async_trait]
impl SecretSource for StaticSecret {
    async fn fetch(&self) -> Result<SecretString, SecretError> {
        Ok(self.0.clone())
    }

    fn describe(&self) -> String {
        "static value".to_owned()
    }
}

/// A file holding the secret (trailing newline ignored). Local mode only.
#[derive(Debug, Clone)]
pub struct FileSecret {
    path: PathBuf,
}

impl FileSecret {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[async_trait::async_trait]
impl SecretSource for FileSecret {
    async fn fetch(&self) -> Result<SecretString, SecretError> {
        let text = tokio::fs::read_to_string(&self.path).await.map_err(|e| SecretError::Invalid {
            source_name: self.describe(),
            detail: e.kind().to_string(),
        })?;
        let value = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        Ok(SecretString::from(value.to_owned()))
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// An environment variable holding the secret. Local mode only (Lambda environment variables
/// are visible to anyone who can read the function's configuration).
#[derive(Debug, Clone)]
pub struct EnvSecret {
    var: String,
}

impl EnvSecret {
    pub fn new(var: impl Into<String>) -> Self {
        Self { var: var.into() }
    }
}

#[async_trait::async_trait]
impl SecretSource for EnvSecret {
    async fn fetch(&self) -> Result<SecretString, SecretError> {
        std::env::var(&self.var)
            .map(SecretString::from)
            .map_err(|e| SecretError::Invalid { source_name: self.describe(), detail: e.to_string() })
    }

    fn describe(&self) -> String {
        format!("environment variable {}", self.var)
    }
}

/// A Secrets Manager secret (`AWSCURRENT` version).
#[cfg(feature = "secrets-manager")]
#[derive(Debug, Clone)]
pub struct SecretsManagerSecret {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

#[cfg(feature = "secrets-manager")]
impl SecretsManagerSecret {
    /// `secret_id`: the secret's ARN (or name).
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        Self { client, secret_id: secret_id.into() }
    }
}

/// Secrets Manager error codes that retrying cannot fix.
#[cfg(feature = "secrets-manager")]
const SECRETS_MANAGER_REJECTIONS: &[&str] = &[
    "ResourceNotFoundException",
    "AccessDeniedException",
    "DecryptionFailure",
    "InvalidParameterException",
    "InvalidRequestException",
];

#[cfg(feature = "secrets-manager")]
#[async_trait::async_trait]
impl SecretSource for SecretsManagerSecret {
    async fn fetch(&self) -> Result<SecretString, SecretError> {
        let output =
            self.client.get_secret_value().secret_id(&self.secret_id).send().await.map_err(|err| {
                let failure = AwsFailure::from(err);
                let source_name = self.describe();
                let detail = failure.to_string();
                match failure.code() {
                    Some(code) if SECRETS_MANAGER_REJECTIONS.contains(&code) => {
                        SecretError::Invalid { source_name, detail }
                    }
                    _ => SecretError::Unavailable { source_name, detail },
                }
            })?;
        let raw = output.secret_string.ok_or_else(|| SecretError::Invalid {
            source_name: self.describe(),
            detail: "the secret has no SecretString (binary secrets are not supported)".into(),
        })?;
        password_from_secret_string(SecretString::from(raw))
            .map_err(|detail| SecretError::Invalid { source_name: self.describe(), detail })
    }

    fn describe(&self) -> String {
        format!("Secrets Manager secret {}", self.secret_id)
    }
}

/// A secret string is either the password itself or a JSON object with a string `password`
/// (RDS and the rotation templates store `{"username": …, "password": …, …}`).
#[cfg(feature = "secrets-manager")]
fn password_from_secret_string(raw: SecretString) -> Result<SecretString, String> {
    let text = secrecy::ExposeSecret::expose_secret(&raw);
    if !text.trim_start().starts_with('{') {
        return Ok(raw);
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(
        |_| "the secret looks like JSON but does not parse (error withheld: it would quote the secret)",
    )?;
    value
        .get("password")
        .and_then(serde_json::Value::as_str)
        .map(|p| SecretString::from(p.to_owned()))
        .ok_or_else(|| "the secret is a JSON object without a string \"password\" field".to_owned())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn secret_strings_are_passwords_or_json_with_a_password() {
        let plain = password_from_secret_string(SecretString::from("s3cret".to_owned())).unwrap();
        assert_eq!(plain.expose_secret(), "s3cret");
        let json = password_from_secret_string(SecretString::from(
            r#"{"username":"admin","password":"p\"w","engine":"postgres"}"#.to_owned(),
        ))
        .unwrap();
        assert_eq!(json.expose_secret(), "p\"w");
        let err = password_from_secret_string(SecretString::from(r#"{"user":"x"}"#.to_owned())).unwrap_err();
        assert!(err.contains("password"));
        let err =
            password_from_secret_string(SecretString::from("{not json hunter2".to_owned())).unwrap_err();
        assert!(!err.contains("hunter2"), "parse errors must not quote the secret: {err}");
    }

    #[tokio::test]
    async fn file_and_env_sources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        assert_eq!(FileSecret::new(&path).fetch().await.unwrap().expose_secret(), "from-file");
        let missing = FileSecret::new(dir.path().join("missing")).fetch().await.unwrap_err();
        assert!(matches!(missing, SecretError::Invalid { .. }), "{missing}");
        let unset = EnvSecret::new("CREDBROKER_TEST_SURELY_UNSET_VAR").fetch().await.unwrap_err();
        assert!(unset.to_string().contains("CREDBROKER_TEST_SURELY_UNSET_VAR"));
        assert_eq!(format!("{:?}", StaticSecret::new("x")), "StaticSecret(<redacted>)");
    }
}
