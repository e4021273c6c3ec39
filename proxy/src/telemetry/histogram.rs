//! Fixed-bucket histograms behind the `metrics` facade.
//!
//! The Prometheus exporter's own histograms keep every sample — the value and an `Instant`, 24
//! bytes, plus a clock read to take it — until the next scrape or upkeep folds them into buckets.
//! A proxy records several samples per request (request time, attempt time, each plugin hook), so
//! at tens of thousands of requests a second that is megabytes held between scrapes and memory
//! that never goes back. These histograms count into their buckets as samples arrive, in the
//! recording thread's own shard ([`super::shard`]): a plain add for the bucket and one for the
//! sum, and memory fixed when the series is registered.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::HistogramFn;

use super::shard::Sharded;

/// The most buckets a histogram has: its bounds, and one above them all.
const MAX_BUCKETS: usize = 24;

/// One histogram series: per shard, a count per bucket (not cumulative; the last counted is over
/// every bound) and the sum of the samples, as `f64` bits.
#[derive(Debug)]
pub struct BucketHistogram {
    bounds: &'static [f64],
    shards: Sharded<Counts>,
}

/// One shard's counts.
#[derive(Debug)]
struct Counts {
    buckets: [AtomicU64; MAX_BUCKETS],
    sum_bits: AtomicU64,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl BucketHistogram {
    /// A histogram with upper bounds `bounds` (ascending; past `MAX_BUCKETS - 1` the rest are
    /// left out), plus one bucket above them all.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds: &bounds[..bounds.len().min(MAX_BUCKETS - 1)],
            shards: Sharded::default(),
        }
    }

    /// Cumulative counts per upper bound (Prometheus `le`), then the total count and the sum.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let count = |i: usize| {
            self.shards
                .iter()
                .map(|shard| shard.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += count(i);
            buckets.push((*bound, cumulative));
        }
        let total = cumulative + count(self.bounds.len());
        let sum = self
            .shards
            .iter()
            .map(|shard| f64::from_bits(shard.sum_bits.load(Ordering::Relaxed)))
            .sum();
        (buckets, total, sum)
    }
}

impl HistogramFn for BucketHistogram {
    fn record(&self, value: f64) {
        // A sample equal to a bound belongs to that bound's bucket (`le`); NaN goes above all.
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        let (counts, writer) = self.shards.local();
        if let Some(count) = counts.buckets.get(bucket) {
            writer.add(count, 1);
        }
        writer.add_f64(&counts.sum_bits, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    #[test]
    fn samples_land_in_cumulative_buckets_with_sum_and_count() {
        let histogram = BucketHistogram::new(BOUNDS);
        for value in [0.0005, 0.001, 0.002, 0.05, 5.0] {
            histogram.record(value);
        }
        let (buckets, count, sum) = histogram.snapshot();
        assert_eq!(buckets, vec![(0.001, 2), (0.01, 3), (0.1, 4)]);
        assert_eq!(count, 5);
        assert!((sum - 5.0535).abs() < 1e-9, "{sum}");
    }
}
