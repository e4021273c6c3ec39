//! A small, stable 64-bit hash for consistent hashing: the same key maps to the same endpoint on
//! every proxy and across restarts, which `std`'s randomly seeded hasher would not give.

/// FNV-1a over `bytes`, then a murmur3 finalizer so nearby inputs spread over the whole ring.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_stable_and_spreads() {
        assert_eq!(super::hash_bytes(b"user-1"), super::hash_bytes(b"user-1"));
        assert_ne!(super::hash_bytes(b"user-1"), super::hash_bytes(b"user-2"));
    }
}
