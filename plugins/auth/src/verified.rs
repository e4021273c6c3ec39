//! Tokens whose signature this instance has already verified, so a client sending the same JWT
//! on every request pays for one RSA or ECDSA verification and one parse, not one per request (an
//! RS256 check costs about a millisecond of Wasm CPU; a hit costs a hash-map lookup).
//!
//! The whole token decides a hit — never a part of it, or a good signature could vouch for other
//! claims: entries are found by a hash of the token's length and last bytes, then compared whole,
//! eight bytes at a time (Wasm's `memcmp` compares a byte per loop turn: ~0.8 us a request for a
//! 400-byte token).
//! Remembered are the signature's verdict, the parsed claims and what the claims checks read from
//! them for the provider ([`ClaimFacts`]); the checks themselves (expiry, not-before, issuer,
//! audience) run on every request. An entry lives for [`TTL`], so a key removed from a JWKS stops
//! being honoured within that time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::rc::Rc;
use std::time::Duration;

use rustc_hash::FxHasher;
use serde_json::{Map, Value};
use switchyard_sdk::text;

use crate::jwt::ClaimFacts;

/// How long a verified signature is trusted without checking it again.
pub const TTL: Duration = Duration::from_secs(60);
/// Tokens kept per instance; when full, the cache starts over.
const MAX_ENTRIES: usize = 512;

/// What is remembered of a verified token.
pub struct Verified {
    /// The token itself: an entry found by hash is only this token's if the bytes match.
    token: Box<str>,
    /// The provider whose key verified it.
    pub provider: usize,
    pub alg: String,
    pub claims: Rc<Map<String, Value>>,
    /// What the claims checks read from `claims` for the provider's expectations.
    pub facts: ClaimFacts,
    /// Monotonic time when it was verified.
    at: Duration,
    /// The wall clock (ms since the epoch) at `at`.
    wall_ms_at: u64,
}

impl Verified {
    /// The wall clock in seconds at monotonic `now`, from the one read when the token was
    /// verified and the monotonic time since (under [`TTL`]): a hit then needs one clock read from
    /// the host, not two. A step of the system clock since is not seen until the entry expires;
    /// nor can one revive an expired token for a cached entry.
    pub fn wall_secs(&self, now: Duration) -> u64 {
        let since_ms = u64::try_from(now.saturating_sub(self.at).as_millis()).unwrap_or(u64::MAX);
        self.wall_ms_at.saturating_add(since_ms) / 1000
    }
}

/// Both clocks, read when a token is verified.
#[derive(Debug, Clone, Copy)]
pub struct ClockReading {
    pub monotonic: Duration,
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
}

type Fx = BuildHasherDefault<FxHasher>;

/// Verified tokens, by [`key`], hashed with FxHash rather than SipHash (a lookup on every request).
/// A keyed hash is not needed: a token whose key matches another's is told apart by the
/// comparison of the whole token, and a later token with the same key only replaces the earlier
/// entry.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: RefCell<HashMap<u64, Rc<Verified>, Fx>>,
}

impl VerifiedTokens {
    /// What was remembered of `token`, if it was verified within the last [`TTL`] before `now`.
    pub fn get(&self, token: &str, now: Duration) -> Option<Rc<Verified>> {
        let entries = self.entries.borrow();
        let found = entries.get(&key(token))?;
        (text::same(found.token.as_bytes(), token.as_bytes()) && now.saturating_sub(found.at) < TTL)
            .then(|| Rc::clone(found))
    }

    /// Remembers that `provider`'s key verified `token` at `now`.
    pub fn remember(
        &self,
        token: &str,
        provider: usize,
        alg: &str,
        claims: Rc<Map<String, Value>>,
        facts: ClaimFacts,
        now: ClockReading,
    ) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        let verified = Verified {
            token: token.into(),
            provider,
            alg: alg.to_owned(),
            claims,
            facts,
            at: now.monotonic,
            wall_ms_at: now.wall_ms,
        };
        entries.insert(key(token), Rc::new(verified));
    }
}

/// The map's key for `token`: the hash of its length and its last 64 bytes, which are signature
/// (as good as random across tokens). Hashing all of a 400-byte token was the slowest part of a
/// lookup; entries are compared whole anyway, so the key only has to spread them.
fn key(token: &str) -> u64 {
    let bytes = token.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    Fx::default().hash_one((bytes.len(), tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(monotonic: Duration) -> ClockReading {
        ClockReading {
            monotonic,
            wall_ms: 0,
        }
    }

    #[test]
    fn entries_expire_and_are_per_token() {
        let cache = VerifiedTokens::default();
        let t0 = Duration::from_secs(100);
        let facts = ClaimFacts::read(&Map::new(), &crate::jwt::Expectations::default());
        cache.remember("a.b.c", 1, "RS256", Rc::default(), facts, at(t0));
        let hit = cache.get("a.b.c", t0 + Duration::from_secs(59));
        assert_eq!(hit.map(|v| v.provider), Some(1));
        assert!(cache.get("a.b.c", t0 + TTL).is_none());
        assert!(cache.get("a.b.d", t0).is_none());
    }

    #[test]
    fn a_token_sharing_the_key_of_another_is_not_taken_for_it() {
        let cache = VerifiedTokens::default();
        let t0 = Duration::from_secs(100);
        let tail = "s".repeat(80);
        let (first, second) = (format!("A.{tail}"), format!("B.{tail}"));
        assert_eq!(key(&first), key(&second), "same length and last 64 bytes");
        let facts = ClaimFacts::read(&Map::new(), &crate::jwt::Expectations::default());
        cache.remember(&first, 1, "RS256", Rc::default(), facts, at(t0));
        assert_eq!(cache.get(&first, t0).map(|v| v.provider), Some(1));
        assert!(cache.get(&second, t0).is_none(), "compared whole");
        cache.remember(&second, 2, "RS256", Rc::default(), facts, at(t0));
        assert_eq!(cache.get(&second, t0).map(|v| v.provider), Some(2));
        assert!(cache.get(&first, t0).is_none(), "replaced, not confused");
    }

    #[test]
    fn a_hit_knows_the_wall_clock_from_the_monotonic_time_since_it_was_verified() {
        let cache = VerifiedTokens::default();
        let t0 = Duration::from_secs(100);
        let facts = ClaimFacts::read(&Map::new(), &crate::jwt::Expectations::default());
        let verified_at = ClockReading {
            monotonic: t0,
            wall_ms: 1_700_000_000_500,
        };
        cache.remember("a.b.c", 1, "RS256", Rc::default(), facts, verified_at);
        let later = t0 + Duration::from_millis(2_600);
        let hit = cache.get("a.b.c", later).expect("within the TTL");
        assert_eq!(hit.wall_secs(later), 1_700_000_003);
        assert_eq!(hit.wall_secs(t0), 1_700_000_000);
    }
}
