//! A monotonic clock that costs a fifth of `Instant::now`, at the kernel tick's resolution (a
//! few milliseconds): for deadlines counted in seconds that are checked on every request — the
//! wait for a request head, a pooled connection's idle time — where reading the precise clock
//! (~20 ns) each time is a measurable share of a request's CPU.

use std::ops::Add;
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// A reading of the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CoarseInstant(Duration);

impl CoarseInstant {
    /// The clock now: at most one tick ([`CoarseInstant::RESOLUTION`] or less) behind the
    /// precise clock.
    pub fn now() -> Self {
        let t = clock_gettime(ClockId::MonotonicCoarse);
        Self(Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        ))
    }

    /// The longest a kernel tick lasts (at 100 Hz, the slowest clock a kernel is built with),
    /// and so how far apart two readings taken at the same moment by the two clocks can be:
    /// what a deadline that must not come early adds.
    pub const RESOLUTION: Duration = Duration::from_millis(10);

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: CoarseInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// Time since this reading.
    pub fn elapsed(self) -> Duration {
        Self::now().saturating_duration_since(self)
    }
}

impl Add<Duration> for CoarseInstant {
    type Output = CoarseInstant;

    fn add(self, rhs: Duration) -> CoarseInstant {
        CoarseInstant(self.0.saturating_add(rhs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_keeps_up_with_the_precise_clock_within_a_tick() {
        let coarse = CoarseInstant::now();
        let precise = std::time::Instant::now();
        // Waits on a condition with a deadline: the coarse clock moves within a tick or two.
        while coarse.elapsed() < Duration::from_millis(30) {
            assert!(
                precise.elapsed() < Duration::from_secs(5),
                "the coarse clock did not move"
            );
            std::thread::yield_now();
        }
        let precise_took = precise.elapsed();
        assert!(
            precise_took + CoarseInstant::RESOLUTION >= Duration::from_millis(30),
            "coarse 30 ms passed in {precise_took:?} of the precise clock"
        );
    }

    #[test]
    fn later_readings_are_not_earlier() {
        let first = CoarseInstant::now();
        let second = CoarseInstant::now();
        assert!(second >= first);
        assert_eq!(
            first.saturating_duration_since(second + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            (first + Duration::from_secs(2)).saturating_duration_since(first),
            Duration::from_secs(2)
        );
    }
}
