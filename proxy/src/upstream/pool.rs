//! Keep-alive connections to one endpoint.
//!
//! HTTP/1.1: a stack of idle connections; a connection is lent to one request ([`Lent`]) and
//! returns to the stack once its response body is finished (hyper reports it ready), and the most
//! recently used is reused first. HTTP/2: one multiplexed connection shared by all requests,
//! re-established when it closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use super::limits::{Admission, ClusterLimits};
use super::stream::UpstreamStream;
use crate::body::ProxyBody;
use crate::config::{ClusterConfig, UpstreamProtocol};
use crate::tls::client::UpstreamTls;

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
    #[error("{addr} closed or reset the connection before answering: {source}")]
    Reset {
        addr: SocketAddr,
        source: hyper::Error,
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

/// An HTTP/1.1 connection lent to one request. Dropped once the response body has been read to
/// the end — the usual case — it is back on the idle stack at once; dropped earlier (the body
/// still streaming, or abandoned), a task waits until hyper has it ready again, or lets it go if
/// it closes. Requests on the shared HTTP/2 connection borrow nothing.
#[derive(Debug)]
pub struct Lent {
    sender: Option<http1::SendRequest<ProxyBody>>,
    pool: Weak<Pool>,
}

impl Lent {
    fn shared() -> Self {
        Self {
            sender: None,
            pool: Weak::new(),
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            if let Some(pool) = self.pool.upgrade() {
                pool.checkin(sender);
            }
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = std::mem::take(&mut self.pool);
        runtime.spawn(async move {
            if sender.ready().await.is_err() {
                return; // closed, upgraded, or the body was abandoned mid-way
            }
            if let Some(pool) = pool.upgrade() {
                pool.checkin(sender);
            }
        });
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
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
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

    /// Sends one request; the connection stays lent to it until the returned [`Lent`] is dropped
    /// (hold it as long as the response body is read).
    pub async fn send(
        self: &Arc<Self>,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Lent), UpstreamError> {
        match self.settings.protocol {
            UpstreamProtocol::Http1 => self.send_http1(req).await,
            UpstreamProtocol::Http2 => Ok((self.send_http2(req).await?, Lent::shared())),
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Lent), UpstreamError> {
        loop {
            let (mut sender, reused) = match self.checkout_http1() {
                Some(sender) => (sender, true),
                None => (self.connect_http1().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let lent = Lent {
                        sender: Some(sender),
                        pool: Arc::downgrade(self),
                    };
                    return Ok((response, lent));
                }
                Err(mut e) => match e.take_message() {
                    // A pooled connection the upstream had closed: the request was never written,
                    // so it is safe to send it again on another connection.
                    Some(unsent) if reused => req = unsent,
                    _ => {
                        return Err(UpstreamError::Reset {
                            addr: self.addr,
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
    }

    fn checkout_http1(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() < self.settings.idle_timeout && conn.sender.is_ready() {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Puts a connection that can take another request on the idle stack.
    fn checkin(&self, sender: http1::SendRequest<ProxyBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.settings.max_idle {
            idle.push(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Keep-alive connections waiting for a request now.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Closes idle connections older than the idle timeout.
    pub fn evict_expired(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.settings.idle_timeout;
        idle.retain(|c| c.since.elapsed() < timeout && !c.sender.is_closed());
    }

    async fn connect_http1(&self) -> Result<http1::SendRequest<ProxyBody>, UpstreamError> {
        let (io, open) = self.connect_tcp().await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake {
                addr: self.addr,
                source,
            })?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                debug!(%addr, error = %e, "upstream connection ended with an error");
            }
            drop(open);
        });
        Ok(sender)
    }

    async fn send_http2(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = match self.checkout_http2() {
            Some(sender) => sender,
            None => self.connect_http2().await?,
        };
        sender
            .send_request(req)
            .await
            .map_err(|source| UpstreamError::Reset {
                addr: self.addr,
                source,
            })
    }

    fn checkout_http2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let shared = self.shared_h2.lock().unwrap_or_else(|p| p.into_inner());
        shared.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_http2(&self) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        let (io, open) = self.connect_tcp().await?;
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

    /// A new connection, counted against the cluster's `max_connections` for as long as the
    /// returned guard lives; waiting for it counts against `max_pending_requests`.
    async fn connect_tcp(&self) -> Result<(TokioIo<UpstreamStream>, Admission), UpstreamError> {
        let (stream, open) = self.connect_stream().await?;
        Ok((TokioIo::new(stream), open))
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
