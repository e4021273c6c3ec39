//! Traffic over time, in fixed slots: what the per-proxy dashboard's charts and the control
//! plane's mesh view are drawn from.
//!
//! A [`Sample`] is the requests of one span of time (counts, latency buckets, gRPC statuses); it
//! travels in a proxy's report and is the unit of every sum. A [`Series`] keeps samples in slots
//! of a fixed resolution, compactly ([`Slot`]: 96 bytes, only for slots that saw traffic), so a
//! window of 15 minutes at 10 s costs at most 8.6 KiB per series.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in milliseconds; one more bucket counts the rest.
pub const LATENCY_BOUNDS_MS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0,
];
/// Latency buckets, the overflow included.
pub const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;
/// gRPC status codes (0 OK to 16 UNAUTHENTICATED).
pub const GRPC_CODES: usize = 17;

/// The bucket a request that took `ms` milliseconds is counted in.
pub fn bucket_of(ms: f64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|bound| ms <= *bound)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// Requests in one span of time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub requests: u64,
    /// 5xx answers, and gRPC calls that did not end with status 0 (OK), as Linkerd counts them.
    pub failures: u64,
    /// Requests whose caller proved a mesh identity (inbound), or that went out over mesh mTLS.
    pub mtls: u64,
    /// Requests per latency bucket ([`LATENCY_BOUNDS_MS`], then the rest); empty when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<u64>,
    /// gRPC status → calls, for gRPC requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grpc: BTreeMap<u8, u64>,
}

impl Sample {
    /// Adds `other`'s requests to these.
    pub fn add(&mut self, other: &Sample) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.mtls += other.mtls;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
        for (code, calls) in &other.grpc {
            *self.grpc.entry(*code).or_default() += calls;
        }
    }

    /// What was added since `before` (counters read twice; a counter that went back, as after a
    /// restart, counts from zero).
    pub fn since(&self, before: &Sample) -> Sample {
        let diff = |now: u64, then: u64| now.checked_sub(then).unwrap_or(now);
        let latency = self
            .latency
            .iter()
            .enumerate()
            .map(|(i, n)| diff(*n, before.latency.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>();
        Sample {
            requests: diff(self.requests, before.requests),
            failures: diff(self.failures, before.failures),
            mtls: diff(self.mtls, before.mtls),
            latency: if latency.iter().all(|n| *n == 0) {
                Vec::new()
            } else {
                latency
            },
            grpc: self
                .grpc
                .iter()
                .map(|(code, n)| (*code, diff(*n, before.grpc.get(code).copied().unwrap_or(0))))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// The share of requests that did not fail; `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| 1.0 - self.failures as f64 / self.requests as f64)
    }

    /// The share of requests over mesh mTLS; `None` without requests.
    pub fn mtls_share(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.mtls as f64 / self.requests as f64)
    }

    /// The `q` quantile of latency in milliseconds, interpolated within its bucket (as
    /// Prometheus' `histogram_quantile`); `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, n) in self.latency.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 {
                    0.0
                } else {
                    LATENCY_BOUNDS_MS[i - 1]
                };
                let Some(upper) = LATENCY_BOUNDS_MS.get(i) else {
                    // Above the last bound: all that is known is "more than it".
                    return Some(lower);
                };
                let within = (rank - seen as f64) / *n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            seen += n;
        }
        LATENCY_BOUNDS_MS.last().copied()
    }

    /// The summary a table row or a chart point shows, over `seconds`.
    pub fn summary(&self, seconds: f64) -> Summary {
        Summary {
            requests: self.requests,
            rps: if seconds > 0.0 {
                self.requests as f64 / seconds
            } else {
                0.0
            },
            success_rate: self.success_rate(),
            mtls_share: self.mtls_share(),
            p50_ms: self.quantile_ms(0.5),
            p95_ms: self.quantile_ms(0.95),
            p99_ms: self.quantile_ms(0.99),
        }
    }
}

/// A [`Sample`] as people read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub mtls_share: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One point of a chart: a slot's start (Unix seconds) and what happened in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t: u64,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One slot of a [`Series`], in 32-bit counts (a slot is seconds long).
#[derive(Debug, Clone)]
struct Slot {
    /// Unix seconds / resolution.
    index: u64,
    requests: u32,
    failures: u32,
    mtls: u32,
    latency: [u32; BUCKETS],
    /// Only for gRPC traffic.
    grpc: Option<Box<[u32; GRPC_CODES]>>,
}

impl Slot {
    fn empty(index: u64) -> Self {
        Self {
            index,
            requests: 0,
            failures: 0,
            mtls: 0,
            latency: [0; BUCKETS],
            grpc: None,
        }
    }

    fn add(&mut self, sample: &Sample) {
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        self.requests = self.requests.saturating_add(narrow(sample.requests));
        self.failures = self.failures.saturating_add(narrow(sample.failures));
        self.mtls = self.mtls.saturating_add(narrow(sample.mtls));
        for (mine, n) in self.latency.iter_mut().zip(&sample.latency) {
            *mine = mine.saturating_add(narrow(*n));
        }
        for (code, n) in &sample.grpc {
            if let Some(count) = self
                .grpc
                .get_or_insert_with(|| Box::new([0; GRPC_CODES]))
                .get_mut(usize::from(*code))
            {
                *count = count.saturating_add(narrow(*n));
            }
        }
    }

    fn to_sample(&self) -> Sample {
        Sample {
            requests: self.requests.into(),
            failures: self.failures.into(),
            mtls: self.mtls.into(),
            latency: self.latency.iter().map(|n| u64::from(*n)).collect(),
            grpc: self
                .grpc
                .iter()
                .flat_map(|codes| codes.iter().enumerate())
                .filter(|(_, n)| **n > 0)
                .filter_map(|(code, n)| Some((u8::try_from(code).ok()?, u64::from(*n))))
                .collect(),
        }
    }
}

/// Samples in slots of `resolution` seconds, the last `slots` of them kept.
#[derive(Debug, Clone)]
pub struct Series {
    slots: VecDeque<Slot>,
    /// The most slots the window holds: the deque grows up to exactly this.
    limit: usize,
}

/// How a window is cut: the slot length and how many slots are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub slot_secs: u64,
    pub slots: u64,
}

impl Resolution {
    /// The slot `unix_secs` falls in.
    pub fn slot_of(self, unix_secs: u64) -> u64 {
        unix_secs / self.slot_secs.max(1)
    }

    /// The oldest slot still kept when `unix_secs` is now.
    pub fn oldest_kept(self, unix_secs: u64) -> u64 {
        self.slot_of(unix_secs)
            .saturating_sub(self.slots.saturating_sub(1))
    }

    /// The whole window in seconds.
    pub fn window_secs(self) -> u64 {
        self.slot_secs * self.slots
    }
}

impl Series {
    /// An empty series for a window of `resolution.slots` slots.
    pub fn new(resolution: Resolution) -> Self {
        Self {
            slots: VecDeque::new(),
            limit: usize::try_from(resolution.slots).unwrap_or(usize::MAX),
        }
    }

    /// Adds `sample` to slot `index` (slots arrive in order; a late one is merged where it
    /// belongs, or dropped when it is older than every slot kept).
    pub fn add(&mut self, index: u64, sample: &Sample) {
        if sample.requests == 0 {
            return;
        }
        match self.slots.back_mut() {
            Some(last) if last.index == index => return last.add(sample),
            Some(last) if last.index > index => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.index == index) {
                    slot.add(sample);
                }
                return;
            }
            _ => {}
        }
        let mut slot = Slot::empty(index);
        slot.add(sample);
        if self.slots.len() == self.slots.capacity() {
            // Doubling, but never past the window: a full window holds exactly `limit` slots.
            let target = (self.slots.len() * 2).max(4).min(self.limit);
            self.slots
                .reserve_exact(target.saturating_sub(self.slots.len()).max(1));
        }
        self.slots.push_back(slot);
    }

    /// Drops slots before `oldest`; true when nothing is left.
    pub fn prune(&mut self, oldest: u64) -> bool {
        while self.slots.front().is_some_and(|s| s.index < oldest) {
            self.slots.pop_front();
        }
        self.slots.is_empty()
    }

    /// Everything from slot `from` on, summed.
    pub fn total(&self, from: u64) -> Sample {
        let mut total = Sample::default();
        for slot in self.slots.iter().filter(|s| s.index >= from) {
            total.add(&slot.to_sample());
        }
        total
    }

    /// One point per slot from `from` to `to` (inclusive), empty slots at zero requests.
    pub fn points(&self, from: u64, to: u64, slot_secs: u64) -> Vec<Point> {
        let mut kept = self.slots.iter().filter(|s| s.index >= from).peekable();
        (from..=to)
            .map(|index| {
                let sample = match kept.peek() {
                    Some(slot) if slot.index == index => {
                        kept.next().map(Slot::to_sample).unwrap_or_default()
                    }
                    _ => Sample::default(),
                };
                Point {
                    t: index * slot_secs,
                    rps: sample.requests as f64 / slot_secs.max(1) as f64,
                    success_rate: sample.success_rate(),
                    p50_ms: sample.quantile_ms(0.5),
                    p99_ms: sample.quantile_ms(0.99),
                }
            })
            .collect()
    }

    /// Bytes this series holds on the heap (for the documented memory bound).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.slots.iter().filter(|s| s.grpc.is_some()).count()
                * std::mem::size_of::<[u32; GRPC_CODES]>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, failures: u64, ms: f64) -> Sample {
        let mut latency = vec![0; BUCKETS];
        latency[bucket_of(ms)] = requests;
        Sample {
            requests,
            failures,
            mtls: requests,
            latency,
            grpc: BTreeMap::new(),
        }
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let mut s = sample(90, 0, 0.8); // (0.5, 1.0] ms
        s.add(&sample(10, 10, 40.0)); // (25, 50] ms
        let p50 = s.quantile_ms(0.5).unwrap();
        assert!(p50 > 0.5 && p50 <= 1.0, "{p50}");
        let p99 = s.quantile_ms(0.99).unwrap();
        assert!(p99 > 25.0 && p99 <= 50.0, "{p99}");
        assert_eq!(s.success_rate(), Some(0.9));
        assert_eq!(Sample::default().quantile_ms(0.5), None);
    }

    #[test]
    fn a_delta_is_what_was_added_and_a_counter_reset_counts_from_zero() {
        let before = sample(10, 1, 3.0);
        let mut now = before.clone();
        now.add(&sample(5, 2, 3.0));
        let delta = now.since(&before);
        assert_eq!((delta.requests, delta.failures), (5, 2));
        assert_eq!(delta.latency[bucket_of(3.0)], 5);
        let restarted = sample(3, 0, 3.0).since(&before);
        assert_eq!(restarted.requests, 3);
    }

    #[test]
    fn a_series_keeps_its_window_and_sums_it() {
        let res = Resolution {
            slot_secs: 10,
            slots: 3,
        };
        let mut series = Series::new(res);
        for t in [100, 105, 110, 120, 130] {
            series.add(res.slot_of(t), &sample(1, 0, 1.0));
        }
        assert_eq!(series.total(0).requests, 5);
        assert!(!series.prune(res.oldest_kept(130)));
        assert_eq!(series.total(0).requests, 3, "slots 11, 12, 13 are kept");
        let points = series.points(11, 13, 10);
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].t, 110);
        assert!((points[0].rps - 0.1).abs() < 1e-9);
        // A late sample for a kept slot lands in it; one for a dropped slot is dropped.
        series.add(11, &sample(2, 2, 1.0));
        series.add(5, &sample(2, 2, 1.0));
        assert_eq!(series.total(0).requests, 5);
        assert_eq!(series.total(0).failures, 2);
        assert!(series.prune(100));
    }

    #[test]
    fn a_slot_is_small() {
        assert!(
            std::mem::size_of::<Slot>() <= 96,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }
}
