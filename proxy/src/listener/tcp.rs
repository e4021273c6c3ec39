//! Plain TCP proxying for what is not HTTP (listener `protocol = "tcp"`): each downstream
//! connection is joined to one upstream connection, picked by the cluster's load balancer and
//! made with the cluster's TLS (so a sidecar upgrades plain TCP to mTLS). On a capture listener
//! (`original_destination = true`) the cluster is the one serving the address the client dialed,
//! and connections to addresses no cluster serves go straight through.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::proxy::ListenerProxy;
use crate::telemetry::ErrorKind;
use crate::upstream::{Admission, Cluster, InFlight, Observed, UpstreamError, UpstreamStream};

/// Connect timeout for passthrough connections (no cluster, so no `connect_timeout`).
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `cluster` label of connections that went straight to their original destination.
const PASSTHROUGH: &str = "passthrough";

/// Where one downstream connection goes.
enum Target {
    Cluster(Arc<Cluster>),
    /// A captured connection to an address no cluster serves: forwarded as it is.
    Passthrough(SocketAddr),
}

/// Proxies one accepted (and, on TLS listeners, handshaken) connection until either side
/// closes it.
pub async fn proxy_connection<S>(
    proxy: &ListenerProxy,
    downstream: S,
    peer: SocketAddr,
    original_destination: Option<SocketAddr>,
    idle_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let listener = &*proxy.scope.listener;
    let target = match (original_destination, &proxy.default_cluster) {
        (Some(dialed), _) => match proxy.scope.clusters.by_service_address(dialed) {
            Some(cluster) => Target::Cluster(Arc::clone(cluster)),
            None => Target::Passthrough(dialed),
        },
        (None, Some(cluster)) => Target::Cluster(Arc::clone(cluster)),
        (None, None) => {
            debug!(listener, %peer, "tcp connection with no destination; closing");
            count_error(listener, "none", ErrorKind::NoRoute);
            return;
        }
    };
    let cluster_label = match &target {
        Target::Cluster(cluster) => cluster.name().to_owned(),
        Target::Passthrough(_) => PASSTHROUGH.to_owned(),
    };
    let labels = [
        ("listener", listener.to_owned()),
        ("cluster", cluster_label.clone()),
    ];
    metrics::counter!("switchyard_tcp_connections_total", &labels).increment(1);
    let started = Instant::now();
    // Bytes are counted as they flow, so a long-lived connection shows up before it closes.
    let bytes = |direction: &'static str| {
        metrics::counter!(
            "switchyard_tcp_bytes_total",
            "listener" => listener.to_owned(),
            "cluster" => cluster_label.clone(),
            "direction" => direction,
        )
    };
    let activity = Activity::new();
    let mut downstream = Metered::new(downstream, bytes("upstream"), activity.clone());
    let upstream_bytes = bytes("downstream");
    let result = match target {
        Target::Cluster(cluster) => to_cluster(&cluster).await,
        Target::Passthrough(addr) => passthrough(addr).await,
    };
    let result = match result {
        Ok((upstream, _held)) => {
            let upstream = Metered::new(upstream, upstream_bytes, activity.clone());
            join(&mut downstream, upstream, &activity, idle_timeout).await
        }
        Err(kind) => Err(kind),
    };
    match result {
        Ok(()) => metrics::histogram!("switchyard_tcp_connection_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64()),
        Err(kind) => count_error(listener, &cluster_label, kind),
    }
}

/// A connection to an endpoint of `cluster`, held against its connection limit.
async fn to_cluster(cluster: &Cluster) -> Result<(UpstreamStream, Option<Held>), ErrorKind> {
    let Some(endpoint) = cluster.pick(None) else {
        warn!(cluster = cluster.name(), "tcp: no live endpoint");
        return Err(ErrorKind::NoEndpoint);
    };
    let in_flight = endpoint.start_request();
    let endpoint = in_flight.endpoint();
    let (stream, admission) = match endpoint.connect().await {
        Ok(connected) => connected,
        Err(e) => {
            warn!(cluster = cluster.name(), endpoint = %endpoint.addr, error = %e, "tcp: connect failed");
            if e.is_connect() {
                cluster.observe(endpoint, Observed::ConnectFailure);
            }
            return Err(error_kind(&e));
        }
    };
    Ok((stream, Some((admission, in_flight))))
}

async fn passthrough(addr: SocketAddr) -> Result<(UpstreamStream, Option<Held>), ErrorKind> {
    let upstream =
        match tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(%addr, error = %e, "tcp passthrough: connect failed");
                return Err(ErrorKind::Connect);
            }
            Err(_) => return Err(ErrorKind::Timeout),
        };
    let _ = upstream.set_nodelay(true);
    Ok((UpstreamStream::Plain(upstream), None))
}

/// Copies both ways until both sides are done or nothing moved for `idle_timeout` (then both
/// are closed, which is not an error); a broken connection counts as a reset.
async fn join<A, B>(
    downstream: &mut A,
    mut upstream: B,
    activity: &Activity,
    idle_timeout: Duration,
) -> Result<(), ErrorKind>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional(downstream, &mut upstream);
    tokio::select! {
        copied = copy => copied.map(drop).map_err(|e| {
            debug!(error = %e, "tcp connection ended with an error");
            ErrorKind::Reset
        }),
        () = activity.idle_for(idle_timeout) => {
            debug!(?idle_timeout, "tcp connection idle; closing");
            Ok(())
        }
    }
}

fn error_kind(error: &UpstreamError) -> ErrorKind {
    match error {
        UpstreamError::ConnectTimeout { .. } => ErrorKind::Timeout,
        UpstreamError::Tls { .. } => ErrorKind::Tls,
        UpstreamError::Overloaded { .. } => ErrorKind::Overloaded,
        _ => ErrorKind::Connect,
    }
}

fn count_error(listener: &str, cluster: &str, kind: ErrorKind) {
    metrics::counter!(
        "switchyard_errors_total",
        "listener" => listener.to_owned(),
        "cluster" => cluster.to_owned(),
        "kind" => kind.label(),
    )
    .increment(1);
}

/// What a connection to a cluster endpoint holds against the cluster's limits while it lives.
type Held = (Admission, InFlight);

/// When a connection last carried a byte either way (milliseconds since it opened).
#[derive(Clone)]
struct Activity {
    opened: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.opened + last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A stream that counts the bytes read from it and notes the activity.
struct Metered<S> {
    inner: S,
    read: metrics::Counter,
    activity: Activity,
}

impl<S> Metered<S> {
    fn new(inner: S, read: metrics::Counter, activity: Activity) -> Self {
        Self {
            inner,
            read,
            activity,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.read.increment(read as u64);
            this.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
