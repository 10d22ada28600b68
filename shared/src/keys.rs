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
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("key file {0} does not hold an Ed25519 PKCS#8 private key")]
    Invalid(String),
    #[error("key generation failed")]
    Generation,
    #[error("signing failed: {0}")]
    Signing(String),
}

/// One Ed25519 signing key with its published form.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public_jwk: Value,
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
        Ok(Self { kid, encoding: EncodingKey::from_ed_der(pkcs8), public_jwk })
    }

    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Generation)?;
        Ok(pair.to_pkcs8().map_err(|_| KeyError::Generation)?.as_ref().to_vec())
    }

    /// Loads the key at `path`, creating it (0600, atomically) if it does not exist yet.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io { path: path.display().to_string(), source };
        let pkcs8 = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = Self::generate_pkcs8()?;
                write_private(path, &bytes).map_err(io)?;
                bytes
            }
            Err(e) => return Err(io(e)),
        };
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
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| KeyError::Signing(e.to_string()))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    // Rename is atomic: two processes starting at once end up with one key, never half a file.
    std::fs::rename(&tmp, path)
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

    #[test]
    fn signed_token_verifies_with_published_jwk() {
        let key = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap();
        let token = key.sign("JWT", &json!({"sub": "x", "exp": 4_000_000_000u64})).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk().clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pk8");
        std::fs::write(&path, b"not a key").unwrap();
        assert!(matches!(SigningKey::load_or_generate(&path), Err(KeyError::Invalid(_))));
    }
}
