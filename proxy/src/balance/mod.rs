//! Load balancing: picking one endpoint of a cluster for each request.
//!
//! Each policy lives in its own module. They work over any [`Target`] (in the proxy, an upstream
//! endpoint) so their distributions are unit-tested without sockets. A [`Balancer`] is rebuilt
//! whenever a cluster's endpoint set changes; picking takes no lock except `ewma`'s per-endpoint
//! estimate.

mod ewma;
mod hash;
mod least_request;
mod random;
mod ring_hash;
mod round_robin;

use std::time::Instant;

pub use ewma::PeakEwma;
pub use hash::hash_bytes;

use crate::config::LbPolicy;

/// What a balancer needs to know about an endpoint.
pub trait Target {
    /// Configured weight, at least 1.
    fn weight(&self) -> u32;
    /// Requests sent and not yet finished.
    fn in_flight(&self) -> u32;
    /// The peak-EWMA latency estimate in nanoseconds, decayed to `now`.
    fn latency_estimate(&self, now: Instant) -> f64;
    /// A stable identity for consistent hashing (the endpoint's address).
    fn hash_identity(&self) -> String;
}

/// A policy with the state it precomputed for one endpoint set.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(round_robin::RoundRobin),
    LeastRequest,
    Ewma,
    Random(random::Random),
    RingHash(ring_hash::Ring),
}

impl Balancer {
    /// Precomputes what `policy` needs for `targets`.
    pub fn new<T: Target>(policy: LbPolicy, targets: &[T]) -> Self {
        let weights: Vec<u32> = targets.iter().map(Target::weight).collect();
        match policy {
            LbPolicy::RoundRobin => Self::RoundRobin(round_robin::RoundRobin::new(&weights)),
            LbPolicy::LeastRequest => Self::LeastRequest,
            LbPolicy::Ewma => Self::Ewma,
            LbPolicy::Random => Self::Random(random::Random::new(&weights)),
            LbPolicy::RingHash => Self::RingHash(ring_hash::Ring::new(targets)),
        }
    }

    /// Index of the target to use, or `None` when there are none. `hash` is the request's key for
    /// `ring_hash`; other policies ignore it.
    pub fn pick<T: Target>(&self, targets: &[T], hash: Option<u64>) -> Option<usize> {
        match targets.len() {
            0 => return None,
            1 => return Some(0),
            _ => {}
        }
        let picked = match self {
            Self::RoundRobin(rr) => rr.pick(),
            Self::LeastRequest => least_request::pick(targets),
            Self::Ewma => ewma::pick(targets, Instant::now()),
            Self::Random(r) => r.pick(),
            Self::RingHash(ring) => match hash {
                Some(h) => ring.pick(h),
                None => fastrand::usize(..targets.len()),
            },
        };
        Some(picked.min(targets.len() - 1))
    }
}

/// Two distinct random indices out of `n >= 2`, for power-of-two-choices policies.
fn two_choices(n: usize) -> (usize, usize) {
    let a = fastrand::usize(..n);
    let mut b = fastrand::usize(..n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::cell::Cell;
    use std::time::Instant;

    /// A target whose load the test sets directly.
    #[derive(Debug, Default)]
    pub struct FakeTarget {
        pub name: String,
        pub weight: u32,
        pub in_flight: Cell<u32>,
        pub latency_ns: Cell<f64>,
    }

    impl FakeTarget {
        pub fn new(name: &str, weight: u32) -> Self {
            Self {
                name: name.to_owned(),
                weight,
                ..Default::default()
            }
        }
    }

    impl super::Target for FakeTarget {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn in_flight(&self) -> u32 {
            self.in_flight.get()
        }
        fn latency_estimate(&self, _now: Instant) -> f64 {
            self.latency_ns.get()
        }
        fn hash_identity(&self) -> String {
            self.name.clone()
        }
    }

    /// How many of `rounds` picks went to each target.
    pub fn histogram(b: &super::Balancer, targets: &[FakeTarget], rounds: usize) -> Vec<usize> {
        let mut counts = vec![0; targets.len()];
        for _ in 0..rounds {
            let i = b
                .pick(targets, Some(fastrand::u64(..)))
                .unwrap_or(usize::MAX);
            counts[i] += 1;
        }
        counts
    }
}
