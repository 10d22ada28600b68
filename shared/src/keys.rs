//! Signing keys for broker-issued tokens (and the local development issuer).
//!
//! Ed25519 (`EdDSA`): small keys, fast, deterministic signatures. Locally the private key is a
//! PKCS#8 file created on first start (mode 0600); in the cloud it comes from Secrets Manager
//! (deployment issue). Public keys are published as a JWKS.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("key file {0} does not hold an Ed25519 PKCS#8 private key")]
    Invalid(String),
    #[error("key file {path} is readable by other users (mode {mode:04o}): chmod 600 {path}")]
    Exposed { path: String, mode: u32 },
    #[error("key generation failed")]
    Generation,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("signing key secret {0}")]
    Secret(String),
}

/// One Ed25519 signing key with its published form.
///
/// The key pair is parsed once and kept: signing is a JSON header, the claims and one Ed25519
/// signature, assembled here rather than by a JWT library that would re-parse the PKCS#8 key
/// on every token (and add its code to every function binary, `docs/benchmarks.md`).
pub struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
    public_jwk: Value,
}

/// The protected header of a broker-signed token.
#[derive(Serialize)]
struct JwsHeader<'a> {
    alg: &'static str,
    typ: &'a str,
    kid: &'a str,
}

impl std::fmt::Debug for SigningKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| e.to_string())?;
        let public = pair.public_key().as_ref();
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(public))[..16].to_owned();
        let public_jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(public),
            "kid": kid,
            "alg": "EdDSA",
            "use": "sig",
        });
        Ok(Self { kid, pair, public_jwk })
    }

    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Generation)?;
        Ok(pair.to_pkcs8().map_err(|_| KeyError::Generation)?.as_ref().to_vec())
    }

    /// A key from a deployment secret: `{"format": "ed25519-seed-hex", "seed": "<64 hex>"}` (the
    /// 32-byte seed itself, as the Terraform module writes it) or `{"format":
    /// "ed25519-seed-sha256", "seed": "<at least 32 random characters>"}` (the seed is the
    /// SHA-256 of the text, as Secrets Manager's password generator can produce it).
    pub fn from_secret_json(raw: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SeedSecret {
            format: String,
            seed: String,
        }
        let secret: SeedSecret =
            serde_json::from_str(raw).map_err(|e| format!("not a signing-key secret: {e}"))?;
        let seed: Vec<u8> = match secret.format.as_str() {
            "ed25519-seed-hex" => {
                let hex = secret.seed.as_bytes();
                if hex.len() != 64 {
                    return Err("ed25519-seed-hex needs 64 hex characters".into());
                }
                hex.chunks(2)
                    .map(|pair| {
                        std::str::from_utf8(pair)
                            .ok()
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or("seed is not hex")
                    })
                    .collect::<Result<_, _>>()?
            }
            "ed25519-seed-sha256" => {
                if secret.seed.len() < 32 {
                    return Err("ed25519-seed-sha256 needs at least 32 characters of seed".into());
                }
                Sha256::digest(secret.seed.as_bytes()).to_vec()
            }
            other => return Err(format!("unknown signing-key format {other:?}")),
        };
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| e.to_string())?;
        let pkcs8 = pair.to_pkcs8().map_err(|_| "cannot encode the key".to_owned())?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Loads the key at `path`, creating it (0600, atomically) if it does not exist yet; an
    /// existing key file others can read is refused (`KeyError::Exposed`).
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        match Self::load(path) {
            Ok(key) => {
                check_private(path)?;
                Ok(key)
            }
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let bytes = Self::generate_pkcs8()?;
                write_private(path, &bytes)
                    .map_err(|source| KeyError::Io { path: path.display().to_string(), source })?;
                Self::from_pkcs8(&bytes).map_err(|_| KeyError::Invalid(path.display().to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the PKCS#8 key file at `path`; a missing file is an error. What a Lambda function
    /// does: a key generated there would live in one sandbox only, and every other sandbox
    /// would sign with a key of its own that the published JWKS of the first does not hold.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pkcs8 = std::fs::read(path)
            .map_err(|source| KeyError::Io { path: path.display().to_string(), source })?;
        Self::from_pkcs8(&pkcs8).map_err(|_| KeyError::Invalid(path.display().to_string()))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// Signs `claims` as a compact JWS with this key's `kid` and the given `typ`.
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        let header = serde_json::to_vec(&JwsHeader { alg: "EdDSA", typ, kid: &self.kid })
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        let claims = serde_json::to_vec(claims).map_err(|e| KeyError::Signing(e.to_string()))?;
        let mut token = String::with_capacity((header.len() + claims.len() + 64) * 4 / 3 + 4);
        URL_SAFE_NO_PAD.encode_string(header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A temporary name of this process's own, created exclusively: a fixed `*.tmp` could be a
    // symlink planted by another user (followed, the key would be written where it points) or
    // another process's half-written key. `create_new` (O_CREAT | O_EXCL) never follows one.
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    tmp_name.push(format!(".{}.{}.tmp", std::process::id(), nonce.subsec_nanos()));
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    // Rename is atomic: two processes starting at once end up with one key, never half a file.
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

/// A private key file others can read is refused, as ssh refuses one: the key would already be
/// another user's to sign with. Local mode only (a Lambda package's files belong to the
/// function's one user whatever their mode).
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path)
        .map_err(|source| KeyError::Io { path: path.display().to_string(), source })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed { path: path.display().to_string(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

/// Where broker-signed tokens get their key, and which public keys the JWKS publishes.
pub trait KeySource: Send + Sync + std::fmt::Debug {
    fn signing_key(&self) -> Arc<SigningKey>;
    /// The JWKS document: the current key plus keys still valid for tokens already issued.
    fn jwks(&self) -> Value;
}

/// A key set fixed at start-up.
#[derive(Debug, Clone)]
pub struct StaticKeys {
    current: Arc<SigningKey>,
    retired: Vec<Value>,
}

impl StaticKeys {
    pub fn new(current: SigningKey) -> Self {
        Self { current: Arc::new(current), retired: Vec::new() }
    }

    /// The current key plus keys that still verify tokens issued before a rotation.
    pub fn with_retired(current: SigningKey, retired: &[SigningKey]) -> Self {
        let retired = retired.iter().filter(|k| k.kid != current.kid).map(|k| k.public_jwk.clone()).collect();
        Self { current: Arc::new(current), retired }
    }

    /// Keys from a Secrets Manager secret: `AWSCURRENT` signs, `AWSPREVIOUS` (if any) stays in
    /// the JWKS so tokens signed before a rotation keep verifying. See [`SigningKey::from_secret_json`].
    #[cfg(feature = "secrets-manager")]
    pub async fn from_secrets_manager(
        client: &aws_sdk_secretsmanager::Client,
        secret_id: &str,
    ) -> Result<Self, KeyError> {
        let fetch = |stage: &'static str| async move {
            match client.get_secret_value().secret_id(secret_id).version_stage(stage).send().await {
                Ok(output) => output
                    .secret_string
                    .map(|raw| SigningKey::from_secret_json(&raw))
                    .transpose()
                    .map_err(|e| KeyError::Secret(format!("{secret_id} ({stage}): {e}"))),
                Err(err) => {
                    let failure = crate::aws_failure::AwsFailure::from(err);
                    if failure.code() == Some("ResourceNotFoundException") && stage == "AWSPREVIOUS" {
                        Ok(None)
                    } else {
                        Err(KeyError::Secret(format!("{secret_id} ({stage}): {failure}")))
                    }
                }
            }
        };
        // Both stages at once: at init each fetch is a round trip (the first also a TLS
        // handshake), and nothing about the second depends on the first.
        let (current, previous) = tokio::join!(fetch("AWSCURRENT"), fetch("AWSPREVIOUS"));
        let current = current?.ok_or_else(|| KeyError::Secret(format!("{secret_id} has no SecretString")))?;
        let previous = previous?;
        Ok(Self::with_retired(current, previous.as_slice()))
    }
}

impl KeySource for StaticKeys {
    fn signing_key(&self) -> Arc<SigningKey> {
        Arc::clone(&self.current)
    }

    fn jwks(&self) -> Value {
        let mut keys = vec![self.current.public_jwk.clone()];
        keys.extend(self.retired.iter().cloned());
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_its_file_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.pk8");
        let first = SigningKey::load_or_generate(&path).unwrap();
        let again = SigningKey::load_or_generate(&path).unwrap();
        assert_eq!(first.kid(), again.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{first:?}").contains(first.public_jwk()["x"].as_str().unwrap()));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private_and_never_written_through_a_planted_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The old fixed temporary name, planted as a symlink: nothing may be written through it.
        let path = dir.path().join("signing.pk8");
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.path().join("signing.tmp")).unwrap();
        SigningKey::load_or_generate(&path).unwrap();
        assert!(!target.exists(), "written through the planted link");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("signing.pk8."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKey::load_or_generate(&path).unwrap_err().to_string();
        assert!(err.contains("readable by other users") && err.contains("0644"), "{err}");
    }

    #[test]
    fn signed_token_verifies_with_published_jwk() {
        let key = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap();
        let token = key.sign("JWT", &json!({"sub": "x", "exp": 4_000_000_000u64})).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk().clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
        assert_eq!(data.header.typ.as_deref(), Some("JWT"));
    }

    #[test]
    fn secret_formats() {
        let hex = format!(r#"{{"format":"ed25519-seed-hex","seed":"{}"}}"#, "ab".repeat(32));
        let a = SigningKey::from_secret_json(&hex).unwrap();
        assert_eq!(a.kid(), SigningKey::from_secret_json(&hex).unwrap().kid(), "deterministic");
        let text = r#"{"format":"ed25519-seed-sha256","seed":"k3j4h5g6f7d8s9a0q1w2e3r4t5y6u7i8o9p0"}"#;
        assert_ne!(SigningKey::from_secret_json(text).unwrap().kid(), a.kid());
        for bad in [
            r#"{"format":"ed25519-seed-hex","seed":"zz"}"#,
            r#"{"format":"ed25519-seed-sha256","seed":"short"}"#,
            r#"{"format":"rsa","seed":"x"}"#,
            r#"{"seed":"x"}"#,
            "not json",
        ] {
            assert!(SigningKey::from_secret_json(bad).is_err(), "{bad}");
        }
        let keys = StaticKeys::with_retired(
            SigningKey::from_secret_json(text).unwrap(),
            &[SigningKey::from_secret_json(&hex).unwrap()],
        );
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 2, "previous key stays published");
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pk8");
        std::fs::write(&path, b"not a key").unwrap();
        assert!(matches!(SigningKey::load_or_generate(&path), Err(KeyError::Invalid(_))));
        assert!(matches!(SigningKey::load(&path), Err(KeyError::Invalid(_))));
    }

    #[test]
    fn load_never_creates_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.pk8");
        let err = SigningKey::load(&path).unwrap_err();
        assert!(err.to_string().contains("absent.pk8"), "{err}");
        assert!(!path.exists(), "no key was written");
        let generated = SigningKey::load_or_generate(&path).unwrap();
        assert_eq!(SigningKey::load(&path).unwrap().kid(), generated.kid(), "the same key, read back");
    }
}
