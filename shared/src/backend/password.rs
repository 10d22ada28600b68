//! Passwords for minted users: uniform over an alphabet, from the OS CSPRNG (aws-lc-rs).

use aws_lc_rs::rand;
use secrecy::SecretString;
use serde::Deserialize;

/// Letters and digits: safe in URLs, shells, connection strings and SQL literals.
pub const DEFAULT_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const DEFAULT_LENGTH: usize = 32;
/// Policies cannot ask for weaker passwords than this: it is what makes a low SCRAM iteration
/// count safe (`docs/databases.md`).
pub const MIN_ENTROPY_BITS: f64 = 128.0;

/// `password = { length = 32, alphabet = "…" }` in a database grant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSpec {
    #[serde(default)]
    pub length: Option<usize>,
    /// The characters to draw from (each at most once). Printable ASCII only, without
    /// quotes, backslash or space.
    #[serde(default)]
    pub alphabet: Option<String>,
}

/// A checked password policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    alphabet: Vec<u8>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { length: DEFAULT_LENGTH, alphabet: DEFAULT_ALPHABET.as_bytes().to_vec() }
    }
}

impl PasswordPolicy {
    pub fn compile(spec: &PasswordSpec) -> Result<Self, String> {
        let length = spec.length.unwrap_or(DEFAULT_LENGTH);
        let alphabet = spec.alphabet.as_deref().unwrap_or(DEFAULT_ALPHABET);
        if !(16..=128).contains(&length) {
            return Err("password.length must be between 16 and 128".into());
        }
        let mut seen = [false; 128];
        for b in alphabet.bytes() {
            if !b.is_ascii_graphic() || b"'\"`\\".contains(&b) {
                return Err(format!(
                    "password.alphabet: {:?} is not allowed (printable ASCII without quotes, backslash, space)",
                    char::from(b)
                ));
            }
            if std::mem::replace(&mut seen[usize::from(b)], true) {
                return Err(format!("password.alphabet lists {:?} twice", char::from(b)));
            }
        }
        if alphabet.len() < 10 {
            return Err("password.alphabet needs at least 10 characters".into());
        }
        let policy = Self { length, alphabet: alphabet.as_bytes().to_vec() };
        if policy.entropy_bits() < MIN_ENTROPY_BITS {
            return Err(format!(
                "password policy gives {:.0} bits of entropy; at least {MIN_ENTROPY_BITS} are required \
                 (raise length or widen the alphabet)",
                policy.entropy_bits()
            ));
        }
        Ok(policy)
    }

    #[allow(clippy::cast_precision_loss)] // lengths and alphabets are tiny
    pub fn entropy_bits(&self) -> f64 {
        self.length as f64 * (self.alphabet.len() as f64).log2()
    }

    /// A fresh password. Rejection sampling keeps every character uniform.
    pub fn generate(&self) -> Result<SecretString, aws_lc_rs::error::Unspecified> {
        let n = self.alphabet.len();
        // Largest multiple of n that fits in a byte: bytes at or above it are redrawn.
        let limit = 256 - (256 % n);
        let mut out = String::with_capacity(self.length);
        let mut buf = [0u8; 64];
        while out.len() < self.length {
            rand::fill(&mut buf)?;
            for &b in &buf {
                if usize::from(b) < limit && out.len() < self.length {
                    out.push(char::from(self.alphabet[usize::from(b) % n]));
                }
            }
        }
        Ok(SecretString::from(out))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn default_policy_is_strong_and_uniformish() {
        let p = PasswordPolicy::default();
        assert!(p.entropy_bits() > 190.0);
        let mut counts = [0usize; 128];
        for _ in 0..200 {
            let pw = p.generate().unwrap();
            assert_eq!(pw.expose_secret().len(), 32);
            for b in pw.expose_secret().bytes() {
                assert!(b.is_ascii_alphanumeric());
                counts[usize::from(b)] += 1;
            }
        }
        // 6,400 draws over 62 symbols: every symbol appears, none dominates.
        let used: Vec<usize> = counts.iter().copied().filter(|c| *c > 0).collect();
        assert_eq!(used.len(), 62);
        assert!(used.iter().all(|c| (40..=180).contains(c)), "{used:?}");
    }

    #[test]
    fn compile_refuses_weak_or_unsafe_policies() {
        let cases = [
            (PasswordSpec { length: Some(8), alphabet: None }, "between 16"),
            (PasswordSpec { length: Some(16), alphabet: Some("0123456789".into()) }, "entropy"),
            (PasswordSpec { length: None, alphabet: Some("abcdefghij'".into()) }, "not allowed"),
            (PasswordSpec { length: None, alphabet: Some("abcdefghijj".into()) }, "twice"),
            (PasswordSpec { length: None, alphabet: Some("abc".into()) }, "at least 10"),
        ];
        for (spec, needle) in cases {
            let err = PasswordPolicy::compile(&spec).expect_err(needle);
            assert!(err.contains(needle), "{err}");
        }
        let custom = PasswordPolicy::compile(&PasswordSpec {
            length: Some(40),
            alphabet: Some("abcdef0123456789".into()),
        })
        .unwrap();
        assert!(custom.generate().unwrap().expose_secret().bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
