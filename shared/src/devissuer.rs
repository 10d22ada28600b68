//! A development-only OIDC issuer, served by `credbroker serve` under `/dev/oidc`.
//!
//! It lets a newcomer try the whole exchange without a real identity provider. It is never
//! constructed in Lambda: only the local `serve` command creates one, and its tokens are only
//! trusted by policies that name its URL (see `policies/examples/local-dev.toml`).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::keys::{KeyError, SigningKey};
use crate::lease::LeaseId;

/// Path of the dev issuer under the broker's base URL.
pub const DEV_ISSUER_PATH: &str = "/dev/oidc";
/// File name of the dev issuer's key inside the state directory.
pub const DEV_KEY_FILE: &str = "dev-issuer.pk8";

#[derive(Debug)]
pub struct DevIssuer {
    issuer: String,
    key: SigningKey,
}

impl DevIssuer {
    /// Loads (or creates) the key in `state_dir`; `base_url` is the broker's own URL.
    pub fn load(state_dir: &Path, base_url: &str) -> Result<Self, KeyError> {
        let key = SigningKey::load_or_generate(&state_dir.join(DEV_KEY_FILE))?;
        Ok(Self { issuer: issuer_url(base_url), key })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks.json", self.issuer),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "x-credbroker-development-only": true,
        })
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.public_jwk()] })
    }

    /// A workload-style token (`jti` fresh each time, so each token can be exchanged once).
    pub fn mint(
        &self,
        subject: &str,
        audience: &str,
        extra_claims: &Map<String, Value>,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<String, KeyError> {
        let jti = LeaseId::generate(now).map_err(|_| KeyError::Generation)?;
        let mut claims = extra_claims.clone();
        let exp = now.timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        for (k, v) in [
            ("iss", json!(self.issuer)),
            ("sub", json!(subject)),
            ("aud", json!(audience)),
            ("iat", json!(now.timestamp())),
            ("nbf", json!(now.timestamp())),
            ("exp", json!(exp)),
            ("jti", json!(jti.as_str())),
        ] {
            claims.insert(k.to_owned(), v);
        }
        self.key.sign("JWT", &Value::Object(claims))
    }
}

pub fn issuer_url(base_url: &str) -> String {
    format!("{}{DEV_ISSUER_PATH}", base_url.trim_end_matches('/'))
}
