//! Serving HTTP on an accepted connection: HTTP/1.1 with Switchyard's own engine, HTTP/2 (prior
//! knowledge, or ALPN `h2` on TLS) with hyper. Both call the listener's current proxy for each
//! request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::Request;
use http_body_util::Either;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use switchyard_http1::server::{self as http1, Ended, Reader, Rewound, Writer};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::body::ClientBody;
use crate::config::ListenerConfig;
use crate::proxy::Client;
use crate::telemetry::ErrorKind;
use crate::tls::TlsSession;

use super::ServingSlot;
use super::stop::stopped;

/// HTTP/2 streams one client may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// How a listener speaks HTTP, with safe limits: slow heads are cut off, oversized heads get
/// 431.
pub struct HttpSettings {
    http1: http1::Config,
    http2: http2::Builder<TokioExecutor>,
}

impl HttpSettings {
    pub fn new(config: &ListenerConfig) -> Self {
        let http1 = http1::Config {
            header_timeout: config.request_header_timeout,
            max_head: config.max_request_head,
            max_headers: config.max_request_headers,
        };
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.max_request_head).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(Some(50))
            .max_local_error_reset_streams(Some(256))
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        Self { http1, http2 }
    }
}

/// What a served connection is: who is on the other end, over what.
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: Option<Arc<TlsSession>>,
    /// Where a captured connection was dialed.
    pub dialed: Option<SocketAddr>,
    /// TLS negotiated `h2` with ALPN.
    pub alpn_h2: bool,
}

/// Serves HTTP on an accepted (and, for TLS, handshaken) connection, given as its two halves,
/// until it closes or `stop` flips (then the request in flight finishes and the connection
/// closes).
pub async fn serve_http(
    settings: &HttpSettings,
    slot: ServingSlot,
    (reader, writer): (Reader, Writer),
    peer: Peer,
    watcher: Watcher,
    stop: watch::Receiver<bool>,
) {
    let cancels = Arc::new(CancelTracker::default());
    let tracker = Arc::clone(&cancels);
    let Peer {
        addr,
        tls,
        dialed,
        alpn_h2,
    } = peer;
    let listener = Arc::clone(&slot.load().proxy.scope.listener);
    // Each request takes the listener's current proxy, so a long-lived keep-alive or h2
    // connection follows reloads, while a request in flight keeps the one it started on.
    // The proxy's future is neither wrapped in an async block nor mapped: either would be a
    // second copy of it to move (it is kilobytes). The guard rides in the closure the proxy runs
    // when the response is ready, so a request dropped before its response counts as cancelled.
    let client = Client::new(addr, tls, dialed);
    let io = if alpn_h2 {
        Rewound::new(bytes::Bytes::new(), reader, writer)
    } else {
        // On HTTP/1.1 a cancelled request ends its connection: there is no rapid reset to count.
        let ended = http1::serve(reader, writer, &settings.http1, stopped(stop), |req| {
            let proxy = Arc::clone(&slot.load().proxy);
            proxy.handle(
                &client,
                req.map(Either::Left),
                answered(CancelGuard::none()),
            )
        })
        .await;
        match ended {
            Ended::Closed => return,
            Ended::Refused(refusal) => {
                debug!(peer = %addr, status = %refusal.status, reason = refusal.reason, "refused a request head");
                crate::telemetry::golden::error_counter(&listener, None, ErrorKind::Malformed)
                    .increment(1);
                return;
            }
            Ended::Http2(io) => io,
        }
    };
    // `map`, not an async block around the future: the block would hold it twice (as what it
    // captured and as what it awaits), doubling what hyper moves per stream.
    let handle = move |req: Request<ClientBody>| {
        let proxy = Arc::clone(&slot.load().proxy);
        let guard = CancelGuard::new(Arc::clone(&tracker));
        proxy.handle(&client, req, answered(guard))
    };
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        handle(req.map(Either::Right)).map(Ok::<_, Infallible>)
    });
    let connection = settings.http2.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = watcher.watch(connection) => {
            if let Err(e) = result {
                debug!(peer = %addr, error = %e, "downstream connection ended with an error");
            }
        }
        () = cancels.abusive.notified() => {
            warn!(peer = %addr, "closing a connection that cancels requests as fast as it sends them (rapid reset)");
            metrics::counter!("switchyard_downstream_rapid_reset_closed_total").increment(1);
        }
    }
}

/// Requests a client cancels in a short time on one connection — HTTP/2 rapid reset
/// (CVE-2023-44487): each costs the proxy work and the client nothing. Past the limit the
/// connection is closed.
#[derive(Default)]
struct CancelTracker {
    /// (window start in ms since the connection began, cancels in the window)
    window: std::sync::Mutex<(u64, u32)>,
    started: std::sync::OnceLock<std::time::Instant>,
    abusive: tokio::sync::Notify,
}

/// Cancelled requests per second on one connection that close it.
const MAX_CANCELS_PER_SECOND: u32 = 100;

impl CancelTracker {
    fn cancelled(&self) {
        let started = *self.started.get_or_init(std::time::Instant::now);
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_sub(window.0) > 1000 {
            *window = (now, 0);
        }
        window.1 += 1;
        if window.1 > MAX_CANCELS_PER_SECOND {
            self.abusive.notify_one();
        }
    }
}

/// Marks a request whose handler was dropped before it finished: the client cancelled it.
struct CancelGuard {
    /// Where cancels are counted; none on HTTP/1.1.
    tracker: Option<Arc<CancelTracker>>,
    completed: bool,
}

/// What the proxy calls when the request got its response (one type for both protocols, so
/// the proxy's request future is made once).
fn answered(mut guard: CancelGuard) -> impl FnOnce() + Send + 'static {
    move || guard.complete()
}

impl CancelGuard {
    fn new(tracker: Arc<CancelTracker>) -> Self {
        Self {
            tracker: Some(tracker),
            completed: false,
        }
    }

    /// A guard that counts nothing.
    fn none() -> Self {
        Self {
            tracker: None,
            completed: false,
        }
    }

    /// The request got its response: not a cancellation.
    fn complete(&mut self) {
        self.completed = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(tracker) = &self.tracker
            && !self.completed
        {
            tracker.cancelled();
        }
    }
}
