//! Peak-EWMA latency, as linkerd2-proxy balances: power of two choices on
//! `latency estimate * (in-flight + 1) / weight`.
//!
//! The estimate jumps up at once on a slow response (peak) and decays toward recent values
//! otherwise; with nothing observed it also decays toward zero, so an endpoint that was slow once
//! gets probed again rather than starved forever.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Target, two_choices};

/// How quickly old observations fade (linkerd's default decay).
const DECAY: Duration = Duration::from_secs(10);
/// Estimate for an endpoint nothing is known about yet.
const DEFAULT_RTT: Duration = Duration::from_millis(30);

pub fn pick<T: Target>(targets: &[T], now: Instant) -> usize {
    let (a, b) = two_choices(targets.len());
    if cost(&targets[a], now) <= cost(&targets[b], now) {
        a
    } else {
        b
    }
}

fn cost<T: Target>(t: &T, now: Instant) -> f64 {
    t.latency_estimate(now) * f64::from(t.in_flight() + 1) / f64::from(t.weight().max(1))
}

/// One endpoint's latency estimate.
#[derive(Debug)]
pub struct PeakEwma {
    state: Mutex<Estimate>,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    rtt_ns: f64,
    stamp: Instant,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            state: Mutex::new(Estimate {
                rtt_ns: DEFAULT_RTT.as_nanos() as f64,
                stamp: Instant::now(),
            }),
        }
    }
}

impl PeakEwma {
    /// Records one response's latency.
    pub fn observe(&self, rtt: Duration) {
        let now = Instant::now();
        let rtt = rtt.as_nanos() as f64;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if rtt > s.rtt_ns {
            s.rtt_ns = rtt;
        } else {
            let w = decay_weight(now.saturating_duration_since(s.stamp));
            s.rtt_ns = s.rtt_ns * w + rtt * (1.0 - w);
        }
        s.stamp = now;
    }

    /// The estimate in nanoseconds as of `now`.
    pub fn estimate(&self, now: Instant) -> f64 {
        let s = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.rtt_ns * decay_weight(now.saturating_duration_since(s.stamp))
    }
}

fn decay_weight(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::super::Balancer;
    use super::super::test_support::{FakeTarget, histogram};
    use super::*;
    use crate::config::LbPolicy;

    #[test]
    fn avoids_the_slow_endpoint() {
        let targets = [FakeTarget::new("fast", 1), FakeTarget::new("slow", 1)];
        targets[0].latency_ns.set(1e6);
        targets[1].latency_ns.set(100e6);
        let b = Balancer::new(LbPolicy::Ewma, &targets);
        assert_eq!(histogram(&b, &targets, 100), vec![100, 0]);
    }

    #[test]
    fn peaks_at_once_and_decays_slowly() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(500));
        let now = Instant::now();
        assert!(e.estimate(now) > 400e6);
        e.observe(Duration::from_millis(1));
        assert!(
            e.estimate(Instant::now()) > 100e6,
            "one fast answer must not erase a peak"
        );
        assert!(
            e.estimate(now + Duration::from_secs(60)) < 10e6,
            "old peaks fade"
        );
    }
}
