//! Keep-alive connections to one endpoint.
//!
//! HTTP/1.1 (Switchyard's own engine, the `switchyard-http1` crate): a stack of idle connections; a
//! connection is lent to one request, held by its response body, and back on the stack as soon as
//! that body has been read to the end; the most recently used is reused first, after a check that
//! the endpoint has not closed it meanwhile. HTTP/2: one multiplexed connection shared by all requests,
//! re-established when it closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::TryFutureExt;
use futures_util::future::Either;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::limits::{Admission, ClusterLimits};
use super::stream::UpstreamStream;
use crate::body::{BodyError, ProxyBody};
use crate::config::{ClusterConfig, UpstreamProtocol};
use crate::tls::client::UpstreamTls;
use switchyard_http1 as http1;
use switchyard_http1::client::{
    AddedField, Connection, Keep, PassedFields, ResponseBody, ResponseFields, SendError, Upgraded,
};
use switchyard_http1::coarse_clock::CoarseInstant;

/// Why a request could not be sent to an endpoint or got no response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the cluster's {limit} limit is reached")]
    Overloaded { limit: &'static str },
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("{addr} sent no response head by the attempt's deadline")]
    TimedOut { addr: SocketAddr },
    #[error("{addr} closed or reset the connection before answering: {source}")]
    Reset {
        addr: SocketAddr,
        source: ExchangeError,
    },
}

impl UpstreamError {
    /// Whether no connection could be made at all (as opposed to one failing mid-request).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::ConnectTimeout { .. }
                | Self::Handshake { .. }
                | Self::Tls { .. }
        )
    }
}

/// When an HTTP/1.1 request is written to its connection.
///
/// Measured (docs/performance.md, tenth pass, again in the seventeenth): with plugins, whose
/// hooks run between a request's read and its write, writing each request at once wakes the
/// endpoint for each, and costs over three times the context switches and 3-25% of the
/// requests/s; without plugins, yielding first costs a little instead (~0.5 us a request, 5% of
/// requests/s). The proxy's own requests pause earlier, at the start of their attempts (fewer
/// levels for the task's second poll to go through), and are sent with `Now`; a plugin's call
/// out pauses here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// At once.
    Now,
    /// After the other requests ready in this turn of the runtime, so they reach the endpoint
    /// together.
    AfterReadyRequests,
}

/// How a pool connects and how long it keeps idle connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSettings {
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

impl From<&ClusterConfig> for PoolSettings {
    fn from(c: &ClusterConfig) -> Self {
        Self {
            protocol: c.protocol,
            connect_timeout: c.connect_timeout,
            idle_timeout: c.idle_timeout,
            max_idle: c.max_idle_per_endpoint,
        }
    }
}

/// An HTTP/1.1 connection to an endpoint, as the pool keeps it.
pub type Http1Connection = Connection<UpstreamStream>;

/// A response body from an endpoint, read as the client takes it.
pub type Http1Body = ResponseBody<UpstreamStream, ProxyBody, BackToPool>;

/// A connection switched to another protocol after a 101.
pub type Http1Upgraded = Upgraded<UpstreamStream, BackToPool>;

/// Where an HTTP/1.1 connection goes when the response on it has ended and it can carry another
/// request: back on its pool's idle stack, still counted against the cluster's connection limit.
/// Dropped instead (the body abandoned, the connection not reusable), the connection closes and
/// its place under the limit is freed. It holds the pool itself (an endpoint's pool lives on
/// until its last response ends; one that left the cluster meanwhile closes the connection as
/// it drops): an `Arc` clone and drop a request, against a weak reference's four atomic steps.
#[derive(Debug)]
pub struct BackToPool {
    pool: Arc<Pool>,
    open: Admission,
}

impl Keep<UpstreamStream> for BackToPool {
    fn keep(self, connection: Http1Connection) {
        self.pool.checkin(connection, self.open);
    }
}

/// A response body as an endpoint sends it: read by Switchyard's own HTTP/1.1 engine, or by
/// hyper from the shared HTTP/2 connection.
#[derive(Debug)]
pub enum UpstreamBody {
    Http1(Http1Body),
    Http2(Incoming),
}

impl UpstreamBody {
    /// An HTTP/1.1 response's fields, when they were passed as they came.
    pub fn passed_fields(&self) -> Option<&PassedFields> {
        match self {
            Self::Http1(body) => body.passed_fields(),
            Self::Http2(_) => None,
        }
    }

    /// Takes the passed fields, to read them into the head's map after all.
    pub fn take_passed_fields(&mut self) -> Option<PassedFields> {
        match self {
            Self::Http1(body) => body.take_passed_fields(),
            Self::Http2(_) => None,
        }
    }

    /// After a 101 on HTTP/1.1: the connection, now carrying the new protocol.
    pub fn into_upgraded(self) -> Option<Http1Upgraded> {
        match self {
            Self::Http1(body) => body.into_upgraded(),
            Self::Http2(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http1(body) => body.is_end_stream(),
            Self::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http1(body) => body.size_hint(),
            Self::Http2(body) => body.size_hint(),
        }
    }
}

/// Why an exchange with an endpoint failed once the request was on its way.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Http1(#[from] http1::client::Error),
    #[error(transparent)]
    Http2(#[from] hyper::Error),
}

impl ExchangeError {
    /// Whether it was the request body (the client's side) that failed, not the endpoint.
    pub fn is_request_body(&self) -> bool {
        match self {
            Self::Http1(e) => matches!(
                e,
                http1::client::Error::RequestBody(_) | http1::client::Error::RequestBodyLength
            ),
            Self::Http2(e) => e.is_user(),
        }
    }
}

/// The connections to one endpoint.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    settings: PoolSettings,
    /// TLS to the endpoint (`[cluster.tls]`); plain TCP when absent.
    tls: Option<Arc<UpstreamTls>>,
    /// The cluster's circuit breakers (connections, requests waiting for one).
    limits: Arc<ClusterLimits>,
    idle: Mutex<Vec<IdleConnection>>,
    shared_h2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
}

#[derive(Debug)]
struct IdleConnection {
    connection: Http1Connection,
    open: Admission,
    /// When it was put back, on the coarse clock (idle timeouts are seconds).
    since: CoarseInstant,
}

impl IdleConnection {
    /// Whether the connection can still be used: not idle too long, and nothing (neither an
    /// end of stream nor stray bytes) has arrived on it since its last response.
    fn usable(&self, idle_timeout: Duration) -> bool {
        idle_short_enough(self.since.elapsed(), idle_timeout) && quiet(self.connection.io())
    }
}

/// Whether a connection idle for `idle` (on the coarse clock) is within `idle_timeout`: a tick
/// early rather than late (the endpoint may close it at its own idle timeout), but never so
/// early that a timeout shorter than a tick keeps nothing.
fn idle_short_enough(idle: Duration, idle_timeout: Duration) -> bool {
    let margin = CoarseInstant::RESOLUTION.min(idle_timeout / 2);
    idle + margin < idle_timeout
}

/// Whether nothing has arrived on an idle connection. Costs no system call in the usual case:
/// the runtime knows the socket has not become readable since the last read drained it.
fn quiet(stream: &UpstreamStream) -> bool {
    let tcp = match stream {
        UpstreamStream::Plain(tcp) => tcp,
        UpstreamStream::Tls(tls) => tls.get_ref().0,
    };
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    tcp.poll_peek(&mut cx, &mut buf).is_pending()
}

impl Pool {
    pub fn new(
        addr: SocketAddr,
        settings: PoolSettings,
        tls: Option<Arc<UpstreamTls>>,
        limits: Arc<ClusterLimits>,
    ) -> Arc<Self> {
        Arc::new(Self {
            addr,
            settings,
            tls,
            limits,
            idle: Mutex::new(Vec::new()),
            shared_h2: Mutex::new(None),
        })
    }

    /// Sends one request and waits for the response head. On HTTP/1.1 the response body holds
    /// the connection until it has been read to the end.
    ///
    /// The protocol's own future, not one wrapping it (see [`super::Endpoint::send`]).
    /// Sends `req` with the `added` fields after its map's (see `forwarding`). Without a
    /// response head by `deadline`, fails with [`UpstreamError::TimedOut`].
    pub fn send<'a>(
        self: &'a Arc<Self>,
        mut req: Request<ProxyBody>,
        added: &'a [AddedField<'a>],
        pace: Pace,
        fields: ResponseFields,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a {
        match self.settings.protocol {
            UpstreamProtocol::Http1 => {
                Either::Left(self.send_http1(req, added, pace, fields, deadline))
            }
            UpstreamProtocol::Http2 => {
                // hyper writes the map only.
                for (name, value) in added {
                    req.headers_mut().append(*name, (*value).clone());
                }
                Either::Right(
                    self.by_deadline(deadline, self.send_http2(req))
                        .map_ok(|response| response.map(UpstreamBody::Http2)),
                )
            }
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        req: Request<ProxyBody>,
        added: &[AddedField<'_>],
        pace: Pace,
        fields: ResponseFields,
        deadline: Option<Instant>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if pace == Pace::AfterReadyRequests {
            // Let the other requests ready in this turn of the runtime reach this point first,
            // so the endpoint gets their requests together and wakes once for all of them.
            // (Today's tokio resumes the task after it has polled for I/O events, so the idle
            // connections' state is fresh too; correctness does not depend on it.)
            tokio::task::yield_now().await;
        }
        let (connection, open, reused) = match self.checkout_http1() {
            Some((connection, open)) => (connection, open, true),
            None => {
                // Boxed: connecting is the rare path, and its future would otherwise make every
                // request's future (part of each connection's task) a kilobyte and more larger.
                let (connection, open) =
                    Box::pin(self.by_deadline(deadline, self.connect_http1())).await?;
                (connection, open, false)
            }
        };
        // Pinned where it is made: awaited as a value, the client's send future is moved twice.
        let sent = pin!(connection.send(req, added, self.back_to_pool(open), fields, deadline));
        match sent.await {
            Ok(response) => Ok(response.map(UpstreamBody::Http1)),
            // A kept connection the endpoint closed while it sat idle, seen only now: nothing
            // was answered, so a request without a body and safe to repeat goes again, once,
            // on a new connection.
            Err(SendError {
                unanswered: Some(head),
                ..
            }) if reused && head.method.is_idempotent() => {
                debug!(addr = %self.addr, "a kept connection had closed; sending on a new one");
                Box::pin(self.resend_http1(head, added, fields, deadline)).await
            }
            Err(e) => Err(self.failed(e.error)),
        }
    }

    /// The rare second try of [`Pool::send_http1`], on a new connection. Its own (boxed)
    /// future: inline, a second send's state would make every request's future (part of each
    /// connection's task) a kilobyte larger.
    async fn resend_http1(
        self: &Arc<Self>,
        head: http::request::Parts,
        added: &[AddedField<'_>],
        fields: ResponseFields,
        deadline: Option<Instant>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (connection, open) = self.by_deadline(deadline, self.connect_http1()).await?;
        let req = Request::from_parts(head, ProxyBody::Empty);
        let keeper = self.back_to_pool(open);
        match connection.send(req, added, keeper, fields, deadline).await {
            Ok(response) => Ok(response.map(UpstreamBody::Http1)),
            Err(e) => Err(self.failed(e.error)),
        }
    }

    /// `future`, failing with [`UpstreamError::TimedOut`] if it has not ended by `deadline`
    /// (the HTTP/1.1 engine keeps its own deadline for the response head).
    async fn by_deadline<T>(
        &self,
        deadline: Option<Instant>,
        future: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, future)
                .await
                .unwrap_or(Err(UpstreamError::TimedOut { addr: self.addr })),
            None => future.await,
        }
    }

    /// A new HTTP/1.1 connection, counted against the cluster's connection limit.
    async fn connect_http1(&self) -> Result<(Http1Connection, Admission), UpstreamError> {
        let (stream, open) = self.connect_stream().await?;
        Ok((Connection::new(stream), open))
    }

    /// Where a connection goes back to once a response on it has ended.
    fn back_to_pool(self: &Arc<Self>, open: Admission) -> BackToPool {
        BackToPool {
            pool: Arc::clone(self),
            open,
        }
    }

    /// What a failed HTTP/1.1 exchange is to the attempt: a missed deadline, or a reset.
    fn failed(&self, error: http1::client::Error) -> UpstreamError {
        if let http1::client::Error::TimedOut = error {
            return UpstreamError::TimedOut { addr: self.addr };
        }
        UpstreamError::Reset {
            addr: self.addr,
            source: error.into(),
        }
    }

    /// The most recently used idle connection that is still usable; older or closed ones met
    /// on the way are dropped.
    fn checkout_http1(&self) -> Option<(Http1Connection, Admission)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.usable(self.settings.idle_timeout) {
                return Some((conn.connection, conn.open));
            }
        }
        None
    }

    /// Puts a connection that can take another request on the idle stack.
    fn checkin(&self, connection: Http1Connection, open: Admission) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.settings.max_idle {
            idle.push(IdleConnection {
                connection,
                open,
                since: CoarseInstant::now(),
            });
        }
    }

    /// Keep-alive connections waiting for a request now.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Closes idle connections older than the idle timeout, or closed by the endpoint.
    pub fn evict_expired(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.settings.idle_timeout;
        idle.retain(|c| c.usable(timeout));
    }

    async fn send_http2(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = match self.checkout_http2() {
            Some(sender) => sender,
            None => Box::pin(self.connect_http2()).await?,
        };
        sender
            .send_request(req)
            .await
            .map_err(|source| UpstreamError::Reset {
                addr: self.addr,
                source: source.into(),
            })
    }

    fn checkout_http2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let shared = self.shared_h2.lock().unwrap_or_else(|p| p.into_inner());
        shared.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_http2(&self) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        let (stream, open) = self.connect_stream().await?;
        let io = TokioIo::new(stream);
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake {
                addr: self.addr,
                source,
            })?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%addr, error = %e, "upstream h2 connection ended with an error");
            }
            drop(open);
        });
        *self.shared_h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    /// A new connection (TLS when the cluster has it), counted against the cluster's
    /// `max_connections` for as long as the returned guard lives.
    pub async fn connect_stream(&self) -> Result<(UpstreamStream, Admission), UpstreamError> {
        let addr = self.addr;
        let _pending = self
            .limits
            .admit_pending()
            .ok_or(UpstreamError::Overloaded { limit: "pending" })?;
        let open = self
            .limits
            .admit_connection()
            .ok_or(UpstreamError::Overloaded {
                limit: "connections",
            })?;
        let timeout = self.settings.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout { addr, timeout })?
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        // Proxied requests are small writes that must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok((UpstreamStream::Plain(stream), open));
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
        let stream =
            tokio::time::timeout(timeout, connector.connect(tls.server_name.clone(), stream))
                .await
                .map_err(|_| UpstreamError::ConnectTimeout { addr, timeout })?
                .map_err(|e| {
                    let reason = e
                        .get_ref()
                        .map_or_else(|| e.to_string(), |inner| inner.to_string());
                    UpstreamError::Tls { addr, reason }
                })?;
        Ok((UpstreamStream::Tls(Box::new(stream)), open))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_dropped_a_tick_early_and_short_timeouts_still_keep_some() {
        let minute = Duration::from_secs(60);
        assert!(idle_short_enough(Duration::ZERO, minute));
        assert!(idle_short_enough(Duration::from_secs(59), minute));
        assert!(!idle_short_enough(
            minute - Duration::from_millis(5),
            minute
        ));
        assert!(!idle_short_enough(minute, minute));
        let short = Duration::from_millis(4);
        assert!(idle_short_enough(Duration::ZERO, short));
        assert!(!idle_short_enough(Duration::from_millis(2), short));
    }
}
