//! Tokens whose signature this instance has already verified, so a client sending the same JWT
//! on every request pays for one RSA or ECDSA verification, not one per request (an RS256 check
//! costs about a millisecond of Wasm CPU; a hit costs one SHA-256 of the token).
//!
//! Only the signature is remembered: the claims (`exp`, `nbf`, `iss`, `aud`) are checked on every
//! request. An entry lives for [`TTL`], so a key removed from a JWKS stops being honoured within
//! that time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How long a verified signature is trusted without checking it again.
pub const TTL: Duration = Duration::from_secs(60);
/// Entries kept per instance; when full, the cache starts over.
const MAX_ENTRIES: usize = 4096;

/// Verified tokens by SHA-256, with the provider that verified them and when.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: RefCell<HashMap<[u8; 32], (usize, Duration)>>,
}

impl VerifiedTokens {
    /// The provider whose key verified `token` within the last [`TTL`] before `now`.
    pub fn provider(&self, token: &str, now: Duration) -> Option<usize> {
        let key = digest(token);
        let entries = self.entries.borrow();
        let (provider, at) = entries.get(&key)?;
        (now.saturating_sub(*at) < TTL).then_some(*provider)
    }

    /// Remembers that `provider`'s key verified `token` at `now`.
    pub fn remember(&self, token: &str, provider: usize, now: Duration) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(digest(token), (provider, now));
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_are_per_token() {
        let cache = VerifiedTokens::default();
        let t0 = Duration::from_secs(100);
        cache.remember("a.b.c", 1, t0);
        assert_eq!(cache.provider("a.b.c", t0 + Duration::from_secs(59)), Some(1));
        assert_eq!(cache.provider("a.b.c", t0 + TTL), None);
        assert_eq!(cache.provider("a.b.d", t0), None);
    }
}
