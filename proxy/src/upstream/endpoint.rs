//! One upstream address: its weight, its load as the balancers see it, and its connection pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};

use super::ResponseFields;
use super::health::Health;
use super::limits::Admission;
use super::pool::{Pace, Pool, UpstreamBody, UpstreamError};
use super::stream::UpstreamStream;
use crate::balance::{PeakEwma, Target};
use crate::body::ProxyBody;
use switchyard_http1::client::AddedField;

/// An address of a cluster that requests are sent to.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    in_flight: AtomicU32,
    latency: PeakEwma,
    /// Shared with the endpoint's successor when only its weight changes, so connections survive.
    pool: Arc<Pool>,
    /// Health checks and outlier detection.
    pub health: Health,
}

impl Endpoint {
    pub(super) fn new(addr: SocketAddr, weight: u32, pool: Arc<Pool>) -> Self {
        Self {
            addr,
            weight,
            in_flight: AtomicU32::new(0),
            latency: PeakEwma::default(),
            pool,
            health: Health::default(),
        }
    }

    pub(super) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Counts a request as in flight until the returned guard, which holds the endpoint, is
    /// dropped.
    pub fn start_request(self: Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records how long the endpoint took to answer (or to fail), for `ewma` balancing.
    pub fn observe_latency(&self, rtt: Duration) {
        self.latency.observe(rtt);
    }

    /// A new byte stream to the endpoint (TLS when the cluster has it), for TCP proxying; held
    /// against the cluster's connection limit while the guard lives.
    pub async fn connect(&self) -> Result<(UpstreamStream, Admission), UpstreamError> {
        self.pool.connect_stream().await
    }

    /// Sends one request over a pooled (or new) connection, held by the response body until
    /// it has been read. `fields`: how an HTTP/1.1 response's fields come back (HTTP/2's are
    /// always in the map). Without a response head by `deadline`, fails with
    /// [`UpstreamError::TimedOut`].
    ///
    /// The pool's future itself, not one wrapping it: a future returned by a plain function is
    /// moved into its caller's state when awaited, and each level of wrapping adds such a copy
    /// of all it holds.
    pub fn send<'a>(
        &'a self,
        req: Request<ProxyBody>,
        added: &'a [AddedField<'a>],
        pace: Pace,
        fields: ResponseFields,
        deadline: Option<tokio::time::Instant>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a {
        self.pool.send(req, added, pace, fields, deadline)
    }
}

impl Target for Arc<Endpoint> {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
    fn latency_estimate(&self, now: Instant) -> f64 {
        self.latency.estimate(now)
    }
    fn hash_identity(&self) -> String {
        self.addr.to_string()
    }
}

/// Holds one unit of an endpoint's in-flight count, and the endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    /// The endpoint the request is in flight to.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
