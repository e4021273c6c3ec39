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
    /// Pinned values (computed outside this code): a change here re-maps every key of every
    /// consistent-hash cluster on the next deploy.
    #[test]
    fn is_the_same_function_everywhere() {
        assert_eq!(super::hash_bytes(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(super::hash_bytes(b"user-1"), 0x41a2_fca5_c684_01c5);
        assert_eq!(super::hash_bytes(b"10.0.0.1:8080#0"), 0x6528_3bf9_882a_6167);
    }
}
