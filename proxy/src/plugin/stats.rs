//! Per-plugin call statistics for the admin API (`GET /plugins`): calls, failures, and hook-time
//! percentiles from a lock-free log2 histogram (the Prometheus histograms on /metrics are the
//! precise view; this one answers "is this plugin slow right now" without a scrape).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::telemetry::shard::{self, Sharded};

/// Buckets by powers of two of nanoseconds: bucket i holds durations below 2^i ns (up to ~4 s).
const BUCKETS: usize = 32;

/// Counters one plugin updates on every hook call, in shards ([`crate::telemetry::shard`]).
#[derive(Debug, Default)]
pub struct PluginStats {
    shards: Sharded<Counts>,
}

/// One shard of [`PluginStats`].
#[derive(Debug)]
struct Counts {
    calls: AtomicU64,
    failures: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl PluginStats {
    /// Counts a call; `took` is its hook time when the call was one of the timed sample.
    pub fn record(&self, took: Option<Duration>, failed: bool) {
        let (counts, writer) = self.shards.local();
        writer.add(&counts.calls, 1);
        if failed {
            writer.add(&counts.failures, 1);
        }
        let Some(took) = took else {
            return;
        };
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let bucket = (64 - ns.leading_zeros() as usize).min(BUCKETS - 1);
        writer.add(&counts.buckets[bucket], 1);
    }

    pub fn calls(&self) -> u64 {
        shard::sum(&self.shards, |c| &c.calls)
    }

    /// Hook calls that trapped, ran out of time or memory, or could not start an instance.
    pub fn failures(&self) -> u64 {
        shard::sum(&self.shards, |c| &c.failures)
    }

    /// The hook time `q` (0..1) of calls took at most: the upper bound of its bucket, so within
    /// a factor of two.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = (0..BUCKETS)
            .map(|i| shard::sum(&self.shards, |c| &c.buckets[i]))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_nanos(1u64 << i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let stats = PluginStats::default();
        for _ in 0..99 {
            stats.record(Some(Duration::from_micros(3)), false);
        }
        stats.record(Some(Duration::from_millis(5)), true);
        assert_eq!(stats.calls(), 100);
        assert_eq!(stats.failures(), 1);
        let p50 = stats.quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_micros(3) && p50 < Duration::from_micros(8),
            "{p50:?}"
        );
        let p100 = stats.quantile(1.0).unwrap();
        assert!(
            p100 >= Duration::from_millis(5) && p100 < Duration::from_millis(11),
            "{p100:?}"
        );
        assert_eq!(PluginStats::default().quantile(0.5), None);
    }
}
