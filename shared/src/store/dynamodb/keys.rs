//! Keys of the lease table's items and index entries: stable encodings, pinned by tests (a
//! change would strand existing items where no reader looks).

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::lease::{LeaseHolder, LeaseId};

/// Above this many bytes `holder` is hashed (GSI partition keys may hold at most 2048).
const HOLDER_KEY_MAX: usize = 1024;
/// Above this many bytes a lock name is hashed in the lock item's key.
const LOCK_NAME_MAX: usize = 1024;

/// The partition-key value of a lock item: `lock#<name>`, or `lock#sha256#<hex>` of the name
/// when it is longer than 1024 bytes or itself starts with `sha256#` (so the two forms never
/// collide).
pub fn lock_key(name: &str) -> String {
    if name.len() <= LOCK_NAME_MAX && !name.starts_with("sha256#") {
        format!("lock#{name}")
    } else {
        format!("lock#sha256#{}", hex(&Sha256::digest(name.as_bytes())))
    }
}

/// The partition-key value of a lease item.
pub(super) fn lease_pk(id: &LeaseId) -> String {
    format!("lease#{id}")
}

/// The `due` shard of a lease: FNV-1a (64-bit) of the id's bytes modulo `shards`. Stable
/// across Rust versions and platforms (unlike `std`'s hasher), so every writer agrees.
pub fn shard_of(id: &LeaseId, shards: u16) -> u16 {
    let shard = fnv1a_64(id.as_str().as_bytes()) % u64::from(shards.max(1));
    u16::try_from(shard).unwrap_or(0)
}

/// FNV-1a, 64-bit: stable across releases and platforms (unlike `std`'s hasher).
pub(super) fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The `holder` GSI partition key: `<byte length of iss>#<iss>#<sub>`, or `sha256#<hex>` of
/// that text when it is longer than 1024 bytes.
pub fn holder_key(holder: &LeaseHolder) -> String {
    let plain = format!("{}#{}#{}", holder.issuer.len(), holder.issuer, holder.subject);
    if plain.len() <= HOLDER_KEY_MAX {
        plain
    } else {
        format!("sha256#{}", hex(&Sha256::digest(plain.as_bytes())))
    }
}

/// The `identity` GSI sort key: zero-padded creation second, then the id, so newest-first
/// order is total. Times outside 1970..=33658 AD are clamped (order stays monotone).
pub(super) fn created_sk(created_at: DateTime<Utc>, id: &LeaseId) -> String {
    let secs = created_at.timestamp().clamp(0, 999_999_999_999);
    format!("{secs:012}#{id}")
}

/// The replay-guard item's partition key: `jti#` + hex SHA-256 of
/// `u64be(len(iss)) ‖ iss ‖ jti`.
pub fn jti_key(issuer: &str, jti: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(u64::try_from(issuer.len()).unwrap_or(u64::MAX).to_be_bytes());
    digest.update(issuer.as_bytes());
    digest.update(jti.as_bytes());
    format!("jti#{}", hex(&digest.finalize()))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> LeaseId {
        LeaseId::parse(raw).expect("valid ULID")
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        let lease = id("01JD0000000000000000000000");
        // Pinned (computed independently): a change here would strand existing leases in
        // partitions no reader queries.
        assert_eq!(shard_of(&lease, 8), 4);
        assert_eq!(shard_of(&lease, 3), 1);
        assert_eq!(shard_of(&lease, 1), 0);
        assert_eq!(shard_of(&lease, 0), 0, "0 shards is treated as 1");
        for i in 0..200u32 {
            let raw = format!("01JD{i:0>22}");
            assert!(shard_of(&id(&raw), 8) < 8);
        }
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Reference test vectors of FNV-1a 64.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn holder_key_is_unambiguous_and_bounded() {
        let a = LeaseHolder { issuer: "a#b".into(), subject: "c".into() };
        let b = LeaseHolder { issuer: "a".into(), subject: "b#c".into() };
        assert_eq!(holder_key(&a), "3#a#b#c");
        assert_eq!(holder_key(&b), "1#a#b#c");
        let long = LeaseHolder { issuer: "i".repeat(600), subject: "s".repeat(600) };
        let key = holder_key(&long);
        assert!(key.starts_with("sha256#") && key.len() == 7 + 64, "{key}");
    }

    #[test]
    fn jti_key_is_unambiguous_and_bounded() {
        assert_ne!(jti_key("a#b", "c"), jti_key("a", "b#c"));
        assert_eq!(jti_key("iss", &"j".repeat(5000)).len(), 4 + 64);
    }

    #[test]
    fn created_sk_sorts_like_time() {
        let x = id("01JD0000000000000000000000");
        let early = DateTime::from_timestamp(999, 0).expect("time");
        let late = DateTime::from_timestamp(1_000, 0).expect("time");
        assert!(created_sk(early, &x) < created_sk(late, &x));
        assert_eq!(created_sk(late, &x), "000000001000#01JD0000000000000000000000");
    }
}
