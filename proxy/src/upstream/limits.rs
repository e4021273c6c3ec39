//! Circuit breaking per cluster: at most so many connections, requests waiting for a
//! connection, requests in flight and retries in flight. Past a limit the request gets a 503 at
//! once (`x-switchyard-overloaded` says which limit) instead of queueing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::CircuitBreakerConfig;

/// The counters and limits of one cluster, shared by its pools.
#[derive(Debug, Default)]
pub struct ClusterLimits {
    config: CircuitBreakerConfig,
    connections: AtomicUsize,
    pending: AtomicUsize,
    requests: AtomicUsize,
    retries: AtomicUsize,
}

/// Holds one unit of a counter until dropped.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<ClusterLimits>,
    which: Which,
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Connections,
    Pending,
    Requests,
    Retries,
}

impl ClusterLimits {
    pub fn new(config: CircuitBreakerConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            ..Self::default()
        })
    }

    /// A request in flight, until the guard drops (with its response body).
    pub fn admit_request(self: &Arc<Self>) -> Option<Admission> {
        self.take(Which::Requests, self.config.max_requests)
    }

    /// A retry in flight.
    pub fn admit_retry(self: &Arc<Self>) -> Option<Admission> {
        self.take(Which::Retries, self.config.max_retries)
    }

    /// A request waiting for a new connection.
    pub fn admit_pending(self: &Arc<Self>) -> Option<Admission> {
        self.take(Which::Pending, self.config.max_pending_requests)
    }

    /// An open upstream connection, until its task ends.
    pub fn admit_connection(self: &Arc<Self>) -> Option<Admission> {
        self.take(Which::Connections, self.config.max_connections)
    }

    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests waiting for a new connection now.
    pub fn pending_requests(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Requests in flight now (admitted, response not yet finished).
    pub fn active_requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    fn counter(&self, which: Which) -> &AtomicUsize {
        match which {
            Which::Connections => &self.connections,
            Which::Pending => &self.pending,
            Which::Requests => &self.requests,
            Which::Retries => &self.retries,
        }
    }

    fn take(self: &Arc<Self>, which: Which, limit: Option<usize>) -> Option<Admission> {
        let counter = self.counter(which);
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if limit.is_some_and(|limit| before >= limit) {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission {
            limits: Arc::clone(self),
            which,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limits
            .counter(self.which)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_admits_up_to_its_size_and_frees_on_drop() {
        let limits = ClusterLimits::new(CircuitBreakerConfig {
            max_requests: Some(2),
            ..Default::default()
        });
        let a = limits.admit_request().unwrap();
        let _b = limits.admit_request().unwrap();
        assert!(limits.admit_request().is_none());
        drop(a);
        assert!(limits.admit_request().is_some());
        assert!(limits.admit_retry().is_some(), "no retry limit set");
    }
}
