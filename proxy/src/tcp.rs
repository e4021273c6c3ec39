//! Plain TCP proxying for what is not HTTP (listener `protocol = "tcp"`): each downstream
//! connection is joined to one upstream connection, picked by the cluster's load balancer and
//! made with the cluster's TLS (so a sidecar upgrades plain TCP to mTLS). On a capture listener
//! (`original_destination = true`) the cluster is the one serving the address the client dialed,
//! and connections to addresses no cluster serves go straight through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::proxy::ListenerProxy;
use crate::telemetry::ErrorKind;
use crate::upstream::{Cluster, Observed, UpstreamError};

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
    mut downstream: S,
    peer: SocketAddr,
    original_destination: Option<SocketAddr>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let listener = &*proxy.listener;
    let target = match (original_destination, &proxy.default_cluster) {
        (Some(dialed), _) => match proxy.clusters.by_service_address(dialed) {
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
    let started = Instant::now();
    let result = match target {
        Target::Cluster(cluster) => to_cluster(&cluster, &mut downstream).await,
        Target::Passthrough(addr) => passthrough(addr, &mut downstream).await,
    };
    let labels = [
        ("listener", listener.to_owned()),
        ("cluster", cluster_label.clone()),
    ];
    match result {
        Ok((sent, received)) => {
            metrics::counter!("switchyard_tcp_connections_total", &labels).increment(1);
            let bytes = |direction: &'static str| {
                metrics::counter!(
                    "switchyard_tcp_bytes_total",
                    "listener" => listener.to_owned(),
                    "cluster" => cluster_label.clone(),
                    "direction" => direction,
                )
            };
            bytes("upstream").increment(sent);
            bytes("downstream").increment(received);
            metrics::histogram!("switchyard_tcp_connection_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
        }
        Err(kind) => {
            metrics::counter!("switchyard_tcp_connections_total", &labels).increment(1);
            count_error(listener, &cluster_label, kind);
        }
    }
}

/// Joins `downstream` to an endpoint of `cluster`; returns the bytes sent each way.
async fn to_cluster<S>(cluster: &Cluster, downstream: &mut S) -> Result<(u64, u64), ErrorKind>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(endpoint) = cluster.pick(None) else {
        warn!(cluster = cluster.name(), "tcp: no live endpoint");
        return Err(ErrorKind::NoEndpoint);
    };
    let _in_flight = endpoint.start_request();
    let (mut upstream, _admission) = match endpoint.connect().await {
        Ok(connected) => connected,
        Err(e) => {
            warn!(cluster = cluster.name(), endpoint = %endpoint.addr, error = %e, "tcp: connect failed");
            if e.is_connect() {
                cluster.observe(&endpoint, Observed::ConnectFailure);
            }
            return Err(error_kind(&e));
        }
    };
    join(downstream, &mut upstream).await
}

async fn passthrough<S>(addr: SocketAddr, downstream: &mut S) -> Result<(u64, u64), ErrorKind>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream =
        match tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(%addr, error = %e, "tcp passthrough: connect failed");
                return Err(ErrorKind::Connect);
            }
            Err(_) => return Err(ErrorKind::Timeout),
        };
    let _ = upstream.set_nodelay(true);
    join(downstream, &mut upstream).await
}

/// Copies both ways until both sides are done; a broken connection counts as a reset.
async fn join<A, B>(downstream: &mut A, upstream: &mut B) -> Result<(u64, u64), ErrorKind>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional(downstream, upstream)
        .await
        .map_err(|e| {
            debug!(error = %e, "tcp connection ended with an error");
            ErrorKind::Reset
        })
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
