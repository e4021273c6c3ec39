//! Weighted round robin without locks: nginx's smooth weighted order, computed once per endpoint
//! set, walked by an atomic counter.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest precomputed schedule; larger weight sums are scaled down proportionally.
const MAX_SCHEDULE: u64 = 4096;

#[derive(Debug)]
pub struct RoundRobin {
    next: AtomicUsize,
    /// Empty when all weights are equal: then the counter itself is the index.
    schedule: Vec<usize>,
    len: usize,
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        Self {
            // Start at a random place so that many proxies do not all hit the first endpoint.
            next: AtomicUsize::new(fastrand::usize(..weights.len().max(1))),
            schedule: if uniform {
                Vec::new()
            } else {
                smooth_schedule(weights)
            },
            len: weights.len(),
        }
    }

    pub fn pick(&self) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.schedule.is_empty() {
            n % self.len.max(1)
        } else {
            self.schedule[n % self.schedule.len()]
        }
    }
}

/// nginx's smooth weighted round robin, unrolled: for weights 5,1,1 it yields a a b a c a a rather
/// than a a a a a b c, so a heavy endpoint never gets a burst.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let scale = if total > MAX_SCHEDULE {
        MAX_SCHEDULE as f64 / total as f64
    } else {
        1.0
    };
    let weights: Vec<i64> = weights
        .iter()
        .map(|&w| ((f64::from(w) * scale).round() as i64).max(1))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_take_turns() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let first: Vec<usize> = (0..6).map(|_| rr.pick()).collect();
        assert_eq!(first[0..3], first[3..6]);
        let mut turn = first[0..3].to_vec();
        turn.sort_unstable();
        assert_eq!(turn, vec![0, 1, 2]);
    }

    #[test]
    fn weights_are_smooth_and_proportional() {
        let schedule = smooth_schedule(&[5, 1, 1]);
        assert_eq!(schedule, vec![0, 0, 1, 0, 2, 0, 0]);
        let rr = RoundRobin::new(&[3, 1]);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[rr.pick()] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn huge_weight_sums_are_scaled() {
        let schedule = smooth_schedule(&[1000; 100]);
        assert!(schedule.len() as u64 <= MAX_SCHEDULE + 100);
    }
}
