//! PostgreSQL SCRAM-SHA-256 verifiers computed by the broker (RFC 5802, RFC 7677).
//!
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64), exactly what
//! PostgreSQL stores in `pg_authid.rolpassword`. Sending the verifier instead of the password
//! keeps the password off the server entirely (statement logs, `log_min_error_statement`
//! output) and lets the broker choose the iteration count, which dominates the cost of a mint
//! (`docs/databases.md` and `docs/benchmarks.md` discuss the default).

use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2, rand};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// PostgreSQL's salt length.
pub const SALT_LEN: usize = 16;

/// A verifier for `password` with a fresh random salt.
///
/// The password must already be in SASLprep normal form; the broker's generated passwords are
/// printable ASCII, for which SASLprep is the identity.
pub fn verifier(password: &str, iterations: NonZeroU32) -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt)?;
    Ok(verifier_with_salt(password, &salt, iterations))
}

/// A verifier with a given salt (deterministic; used by tests against PostgreSQL's own).
pub fn verifier_with_salt(password: &str, salt: &[u8], iterations: NonZeroU32) -> String {
    let mut salted = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password.as_bytes(), &mut salted);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example (password `pencil`, its salt, 4096 iterations). These keys reproduce
    /// the RFC's `ServerSignature` (checked with Python's hashlib); the integration tests also
    /// log in to PostgreSQL with broker-made verifiers.
    #[test]
    fn matches_postgres() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = verifier_with_salt("pencil", &salt, NonZeroU32::new(4096).unwrap());
        assert_eq!(
            v,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
             wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn fresh_salt_each_time() {
        let one = NonZeroU32::new(1).unwrap();
        assert_ne!(verifier("x", one).unwrap(), verifier("x", one).unwrap());
        assert!(verifier("x", one).unwrap().starts_with("SCRAM-SHA-256$1:"));
    }
}
