//! Tokens whose signature this instance has already verified, so a client sending the same JWT
//! on every request pays for one RSA or ECDSA verification and one parse, not one per request (an
//! RS256 check costs about a millisecond of Wasm CPU; a hit costs a hash-map lookup).
//!
//! The whole token is the key — never a part of it, or a good signature could vouch for other
//! claims. Only the signature's verdict and the parsed claims are remembered: the claims (`exp`,
//! `nbf`, `iss`, `aud`) are checked on every request. An entry lives for [`TTL`], so a key removed
//! from a JWKS stops being honoured within that time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::rc::Rc;
use std::time::Duration;

use rustc_hash::FxHasher;
use serde_json::{Map, Value};

/// How long a verified signature is trusted without checking it again.
pub const TTL: Duration = Duration::from_secs(60);
/// Tokens kept per instance; when full, the cache starts over.
const MAX_ENTRIES: usize = 512;

/// What is remembered of a verified token.
pub struct Verified {
    /// The provider whose key verified it.
    pub provider: usize,
    pub alg: String,
    pub claims: Rc<Map<String, Value>>,
    at: Duration,
}

/// Verified tokens, by the token itself. Hashed with FxHash rather than SipHash, as a bearer token
/// is hundreds of bytes hashed on every request. A keyed hash is not needed — only tokens with a
/// good signature get in, so nobody can fill the map with colliding keys.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: RefCell<HashMap<Box<str>, Rc<Verified>, BuildHasherDefault<FxHasher>>>,
}

impl VerifiedTokens {
    /// What was remembered of `token`, if it was verified within the last [`TTL`] before `now`.
    pub fn get(&self, token: &str, now: Duration) -> Option<Rc<Verified>> {
        let entries = self.entries.borrow();
        let found = entries.get(token)?;
        (now.saturating_sub(found.at) < TTL).then(|| Rc::clone(found))
    }

    /// Remembers that `provider`'s key verified `token` at `now`.
    pub fn remember(
        &self,
        token: &str,
        provider: usize,
        alg: &str,
        claims: Rc<Map<String, Value>>,
        now: Duration,
    ) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        let verified = Verified {
            provider,
            alg: alg.to_owned(),
            claims,
            at: now,
        };
        entries.insert(token.into(), Rc::new(verified));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_are_per_token() {
        let cache = VerifiedTokens::default();
        let t0 = Duration::from_secs(100);
        cache.remember("a.b.c", 1, "RS256", Rc::default(), t0);
        let hit = cache.get("a.b.c", t0 + Duration::from_secs(59));
        assert_eq!(hit.map(|v| v.provider), Some(1));
        assert!(cache.get("a.b.c", t0 + TTL).is_none());
        assert!(cache.get("a.b.d", t0).is_none());
    }
}
