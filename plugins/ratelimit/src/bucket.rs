//! A token bucket kept in the plugin's shared store, so all instances spend from one bucket.
//! Stored as the token count (in millitokens, so slow rates refill smoothly) and the time it was
//! last brought up to date. A full bucket is the same as no entry, so idle buckets expire.

use std::time::Duration;

use switchyard_sdk::{clock, shared};

/// One rule's bucket shape; the buckets themselves are per key, in the shared store.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    capacity_milli: u64,
    /// Millitokens added per nanosecond is `refill_milli / per_ns`.
    refill_milli: u64,
    per_ns: u64,
}

/// Whether a request may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Empty; one token comes back after `retry_after`.
    Limited {
        retry_after: Duration,
    },
}

const MILLI: u64 = 1000;

impl Bucket {
    pub fn new(capacity: u32, refill: u32, per: Duration) -> Self {
        Self {
            capacity_milli: u64::from(capacity) * MILLI,
            refill_milli: u64::from(refill) * MILLI,
            per_ns: u64::try_from(per.as_nanos()).unwrap_or(u64::MAX).max(1),
        }
    }

    /// Takes a token from the bucket stored under `key`.
    pub fn take(&self, key: &str) -> Verdict {
        let now = u64::try_from(clock::monotonic().as_nanos()).unwrap_or(u64::MAX);
        let verdict = shared::kv_update(
            &format!("bucket/{key}"),
            Some(self.time_to_fill()),
            |stored| {
                let tokens = match stored.and_then(decode) {
                    Some((tokens, at)) => self.refilled(tokens, now.saturating_sub(at)),
                    None => self.capacity_milli,
                };
                if tokens >= MILLI {
                    (encode(tokens - MILLI, now), Verdict::Allowed)
                } else {
                    let missing = MILLI - tokens;
                    (
                        encode(tokens, now),
                        Verdict::Limited {
                            retry_after: self.time_for(missing),
                        },
                    )
                }
            },
        );
        // Contention so heavy that no update landed: let the request through rather than fail it
        // for the proxy's own bookkeeping.
        verdict.unwrap_or(Verdict::Allowed)
    }

    fn refilled(&self, tokens: u64, elapsed_ns: u64) -> u64 {
        let added =
            u128::from(elapsed_ns) * u128::from(self.refill_milli) / u128::from(self.per_ns);
        let added = u64::try_from(added).unwrap_or(u64::MAX);
        tokens.saturating_add(added).min(self.capacity_milli)
    }

    /// How long until `milli` millitokens have been added.
    fn time_for(&self, milli: u64) -> Duration {
        let ns =
            (u128::from(milli) * u128::from(self.per_ns)).div_ceil(u128::from(self.refill_milli));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// An empty bucket is full again after this; the stored entry may go then.
    fn time_to_fill(&self) -> Duration {
        self.time_for(self.capacity_milli) + Duration::from_secs(1)
    }
}

fn encode(tokens: u64, at_ns: u64) -> Vec<u8> {
    let mut bytes = tokens.to_le_bytes().to_vec();
    bytes.extend_from_slice(&at_ns.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let (tokens, at) = bytes.split_at_checked(8)?;
    Some((
        u64::from_le_bytes(tokens.try_into().ok()?),
        u64::from_le_bytes(at.try_into().ok()?),
    ))
}
