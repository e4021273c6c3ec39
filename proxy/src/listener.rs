//! Accepting downstream connections and serving HTTP/1.1 and HTTP/2 (h2c prior knowledge) on them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::ListenerConfig;
use crate::proxy::ListenerProxy;

/// HTTP/2 streams one client may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// What a listener serves with: the proxy for its requests and the HTTP settings for its
/// connections. A reload swaps it whole; connections read it once, requests once each.
pub struct Serving {
    pub proxy: Arc<ListenerProxy>,
    http: auto::Builder<TokioExecutor>,
}

impl Serving {
    pub fn new(config: &ListenerConfig, proxy: ListenerProxy) -> Self {
        Self {
            proxy: Arc::new(proxy),
            http: http_builder(config),
        }
    }
}

/// The swappable [`Serving`] of one listener.
pub type ServingSlot = Arc<ArcSwap<Serving>>;

/// A bound listener, ready to accept.
pub struct Listener {
    pub name: String,
    pub local_addr: SocketAddr,
    socket: TcpListener,
    slot: ServingSlot,
}

impl Listener {
    /// Binds the listener's address; fails if it is taken.
    pub async fn bind(config: &ListenerConfig, serving: Serving) -> std::io::Result<Self> {
        let socket = TcpListener::bind(config.listen).await?;
        let local_addr = socket.local_addr()?;
        Ok(Self {
            name: config.name.clone(),
            local_addr,
            socket,
            slot: Arc::new(ArcSwap::from_pointee(serving)),
        })
    }

    /// Where a reload puts this listener's new [`Serving`].
    pub fn slot(&self) -> ServingSlot {
        Arc::clone(&self.slot)
    }

    /// Accepts until `stop` flips to true; each connection is watched for graceful shutdown.
    pub async fn serve(self, mut stop: watch::Receiver<bool>, graceful: Arc<GracefulShutdown>) {
        info!(listener = %self.name, addr = %self.local_addr, "listening");
        loop {
            let accepted = tokio::select! {
                accepted = self.socket.accept() => accepted,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            match accepted {
                Ok((stream, peer)) => self.spawn_connection(stream, peer, graceful.watcher()),
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(listener = %self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        info!(listener = %self.name, "stopped accepting");
    }

    fn spawn_connection(&self, stream: TcpStream, peer: SocketAddr, watcher: Watcher) {
        let _ = stream.set_nodelay(true);
        let slot = Arc::clone(&self.slot);
        tokio::spawn(async move {
            let serving = slot.load_full();
            // Each request takes the listener's current proxy, so a long-lived keep-alive or h2
            // connection follows reloads, while a request in flight keeps the one it started on.
            let service = service_fn(move |req| {
                let proxy = Arc::clone(&slot.load().proxy);
                async move { Ok::<_, Infallible>(proxy.handle(peer, req).await) }
            });
            let connection = serving
                .http
                .serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                debug!(%peer, error = %e, "downstream connection ended with an error");
            }
        });
    }
}

/// HTTP settings with safe limits: slow heads are cut off, oversized heads get 431.
fn http_builder(config: &ListenerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.request_header_timeout)
        .max_buf_size(config.max_request_head)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_request_head).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}
