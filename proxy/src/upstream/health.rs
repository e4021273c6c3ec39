//! Whether an endpoint should get traffic: active health checks and passive outlier detection
//! each can take it out; the cluster rebuilds its live set when that changes. All state is
//! atomics on the endpoint, so the request path never locks for it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::{HealthCheckConfig, OutlierConfig};

/// What one attempt at an endpoint showed, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A response with this status.
    Status(u16),
    /// The connection could not be made (or the TLS handshake failed).
    ConnectFailure,
    /// The connection broke or timed out: not counted either way.
    Other,
}

/// An endpoint's health, as checks and real traffic have shown it.
#[derive(Debug, Default)]
pub struct Health {
    /// Active checks currently say it fails.
    check_failed: AtomicBool,
    /// Consecutive check results that disagree with `check_failed`.
    check_streak: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_connect_failures: AtomicU32,
    /// Milliseconds since [`epoch`] until which the endpoint is ejected; 0 when it is not.
    ejected_until_ms: AtomicU64,
    /// How many times it has been ejected (an ejection lasts longer each time).
    ejections: AtomicU32,
}

/// A process-wide instant the ejection deadlines count from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Health {
    /// Whether the endpoint may get traffic now.
    pub fn available(&self) -> bool {
        !self.check_failed.load(Ordering::Relaxed) && !self.ejected()
    }

    pub fn check_failed(&self) -> bool {
        self.check_failed.load(Ordering::Relaxed)
    }

    pub fn ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Time left in the current ejection.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        (until != 0 && now < until).then(|| Duration::from_millis(until - now))
    }

    /// Records one active check; returns true when the endpoint's check state flipped.
    pub fn record_check(&self, passed: bool, config: &HealthCheckConfig) -> bool {
        let failing = self.check_failed.load(Ordering::Relaxed);
        if passed != failing {
            // The result agrees with the current state.
            self.check_streak.store(0, Ordering::Relaxed);
            return false;
        }
        let streak = self.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if failing {
            config.healthy_threshold
        } else {
            config.unhealthy_threshold
        };
        if streak < needed {
            return false;
        }
        self.check_streak.store(0, Ordering::Relaxed);
        self.check_failed.store(!failing, Ordering::Relaxed);
        true
    }

    /// Records one real request's outcome; returns true when it crosses an ejection threshold
    /// (the caller decides whether the cluster may eject it).
    pub fn record_outcome(&self, observed: Observed, config: &OutlierConfig) -> bool {
        match observed {
            Observed::Status(status) if status >= 500 => {
                self.consecutive_connect_failures
                    .store(0, Ordering::Relaxed);
                self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1 >= config.consecutive_5xx
            }
            Observed::Status(_) => {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
                self.consecutive_connect_failures
                    .store(0, Ordering::Relaxed);
                false
            }
            Observed::ConnectFailure => {
                self.consecutive_connect_failures
                    .fetch_add(1, Ordering::Relaxed)
                    + 1
                    >= config.consecutive_connect_failures
            }
            Observed::Other => false,
        }
    }

    /// Takes the endpoint out for `base * times ejected` (capped at ten times the base).
    pub fn eject(&self, base: Duration) -> Duration {
        let times = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = base * times.min(10);
        let until = now_ms()
            .saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_connect_failures
            .store(0, Ordering::Relaxed);
        length
    }

    /// Ends an ejection whose time is up; returns true if one ended.
    pub fn expire_ejection(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0
            && now_ms() >= until
            && self
                .ejected_until_ms
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 3,
            consecutive_connect_failures: 2,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
            panic_threshold: 50,
        }
    }

    #[test]
    fn consecutive_failures_cross_the_threshold_and_a_success_resets() {
        let h = Health::default();
        let o = outlier();
        assert!(!h.record_outcome(Observed::Status(503), &o));
        assert!(!h.record_outcome(Observed::Status(200), &o));
        assert!(!h.record_outcome(Observed::Status(500), &o));
        assert!(!h.record_outcome(Observed::Status(502), &o));
        assert!(h.record_outcome(Observed::Status(504), &o));
        assert!(!h.record_outcome(Observed::ConnectFailure, &o));
        assert!(h.record_outcome(Observed::ConnectFailure, &o));
    }

    #[test]
    fn ejections_grow_and_expire() {
        let h = Health::default();
        assert_eq!(
            h.eject(Duration::from_millis(10)),
            Duration::from_millis(10)
        );
        assert!(h.ejected() && !h.available());
        assert_eq!(
            h.eject(Duration::from_millis(10)),
            Duration::from_millis(20)
        );
        assert!(!h.expire_ejection(), "not yet");
    }

    #[test]
    fn checks_flip_after_their_thresholds() {
        let config = HealthCheckConfig {
            path: "/".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_statuses: vec![],
            grpc_service: None,
        };
        let h = Health::default();
        assert!(!h.record_check(false, &config));
        assert!(!h.record_check(false, &config));
        assert!(h.record_check(false, &config), "third failure");
        assert!(h.check_failed());
        assert!(!h.record_check(true, &config));
        assert!(h.record_check(true, &config), "second pass");
        assert!(h.available());
    }
}
