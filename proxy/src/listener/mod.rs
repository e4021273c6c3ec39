//! Accepting downstream connections and serving HTTP/1.1 and HTTP/2 on them: h2c with prior
//! knowledge on plain listeners, ALPN on TLS listeners (with mTLS when configured).

pub mod capture;
pub mod http;
mod stop;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn};

use tokio_rustls::TlsAcceptor;

use crate::config::{ListenerConfig, ListenerProtocol};
use crate::proxy::ListenerProxy;
use crate::tls::{PeerIdentity, TlsSession};

use self::http::{HttpSettings, Peer, serve_http};

/// What a listener serves with: the proxy for its requests, the HTTP settings for its
/// connections, and its TLS settings. A reload swaps it whole; connections read it once,
/// requests once each.
pub struct Serving {
    pub proxy: Arc<ListenerProxy>,
    http: HttpSettings,
    tls: Option<ListenerTls>,
    protocol: ListenerProtocol,
    /// Capture listener: connections go where their client dialed.
    original_destination: bool,
    /// TCP listeners: how long a connection may carry no bytes.
    tcp_idle_timeout: Duration,
}

/// How a TLS listener shakes hands.
pub struct ListenerTls {
    pub acceptor: TlsAcceptor,
    pub handshake_timeout: Duration,
}

impl Serving {
    pub fn new(config: &ListenerConfig, proxy: ListenerProxy, tls: Option<ListenerTls>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            http: HttpSettings::new(config),
            tls,
            protocol: config.protocol,
            original_destination: config.original_destination,
            tcp_idle_timeout: config.tcp_idle_timeout,
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
    /// Open downstream connections (saturation), and all accepted so far.
    open_connections: metrics::Gauge,
    accepted: metrics::Counter,
}

/// Counts a connection as open until dropped.
struct OpenConnection(metrics::Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Listener {
    /// Binds the listener's address; fails if it is taken.
    pub async fn bind(config: &ListenerConfig, serving: Serving) -> std::io::Result<Self> {
        let socket = TcpListener::bind(config.listen).await?;
        let local_addr = socket.local_addr()?;
        let label = config.name.clone();
        Ok(Self {
            name: config.name.clone(),
            local_addr,
            socket,
            slot: Arc::new(ArcSwap::from_pointee(serving)),
            open_connections: metrics::gauge!("switchyard_downstream_connections", "listener" => label.clone()),
            accepted: metrics::counter!("switchyard_downstream_connections_total", "listener" => label),
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
                Ok((stream, peer)) => {
                    self.spawn_connection(stream, peer, graceful.watcher(), stop.clone());
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(listener = %self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        info!(listener = %self.name, "stopped accepting");
    }

    fn spawn_connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        watcher: Watcher,
        stop: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let slot = Arc::clone(&self.slot);
        let listener = self.name.clone();
        self.accepted.increment(1);
        self.open_connections.increment(1.0);
        let open = OpenConnection(self.open_connections.clone());
        tokio::spawn(async move {
            let _open = open;
            let serving = slot.load_full();
            let dialed = serving
                .original_destination
                .then(|| crate::listener::capture::original_destination(&stream))
                .flatten();
            let as_tcp = serving.protocol == ListenerProtocol::Tcp
                || (serving.original_destination && !speaks_http(&serving, &stream, dialed).await);
            if as_tcp {
                // Held until the connection ends, so shutdown drains TCP connections as it does
                // HTTP ones: they get up to `runtime.drain_timeout` to finish.
                let _draining = watcher;
                return serve_tcp(&serving, stream, peer, dialed, &listener).await;
            }
            let peer = Peer {
                addr: peer,
                tls: None,
                dialed,
                alpn_h2: false,
            };
            match &serving.tls {
                None => {
                    let (reader, writer) = stream.into_split();
                    let halves = (Box::new(reader) as _, Box::new(writer) as _);
                    serve_http(&serving.http, slot, halves, peer, watcher, stop).await;
                }
                Some(tls) => {
                    let Some((stream, session)) =
                        handshake(tls, stream, peer.addr, &listener).await
                    else {
                        return;
                    };
                    let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let peer = Peer {
                        tls: Some(Arc::new(session)),
                        alpn_h2,
                        ..peer
                    };
                    let (reader, writer) = tokio::io::split(stream);
                    let halves = (Box::new(reader) as _, Box::new(writer) as _);
                    serve_http(&serving.http, slot, halves, peer, watcher, stop).await;
                }
            }
        });
    }
}

/// How long an HTTP capture listener waits for a connection's first bytes to tell HTTP from
/// anything else (a server-first protocol sends nothing: it is proxied as TCP after this).
const PROTOCOL_DETECTION_TIMEOUT: Duration = Duration::from_millis(100);

/// Whether a connection captured on an HTTP listener should be served as HTTP: it was dialed to
/// an address a cluster serves (anything else passes through as TCP, as Istio's
/// PassthroughCluster does) and its first bytes are an HTTP/1 request line or the HTTP/2
/// preface. TLS listeners are HTTP(S) by configuration.
async fn speaks_http(serving: &Serving, stream: &TcpStream, dialed: Option<SocketAddr>) -> bool {
    if serving.tls.is_some() {
        return true;
    }
    let known = match dialed {
        Some(addr) => serving
            .proxy
            .scope
            .clusters
            .by_service_address(addr)
            .is_some(),
        None => true, // dialed directly, not captured: the listener's own protocol
    };
    if !known {
        return false;
    }
    let mut first = [0u8; 16];
    let peeked = tokio::time::timeout(PROTOCOL_DETECTION_TIMEOUT, async {
        // Wait until enough has arrived to decide (or the client stops sending).
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 || n == first.len() || looks_like_http(&first[..n]).is_some() {
                return Some(n);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    match peeked {
        Ok(Some(n)) => looks_like_http(&first[..n]).unwrap_or(false),
        _ => false,
    }
}

/// `Some(true)` for the start of an HTTP/1 request line (`TOKEN SP`) or the HTTP/2 preface,
/// `Some(false)` when it cannot be either, `None` when too few bytes tell.
fn looks_like_http(bytes: &[u8]) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    if PREFACE.starts_with(bytes) {
        return (bytes.len() >= 4).then_some(true).or(None);
    }
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b' ' if i > 0 => return Some(true),
            b'A'..=b'Z' | b'-' if i < 12 => {}
            _ => return Some(false),
        }
    }
    None
}

/// Proxies a connection as TCP, after the TLS handshake on TLS listeners: a `protocol = "tcp"`
/// listener's, or one an HTTP capture listener found not to be HTTP.
async fn serve_tcp(
    serving: &Serving,
    stream: TcpStream,
    peer: SocketAddr,
    dialed: Option<SocketAddr>,
    listener: &str,
) {
    match &serving.tls {
        None => {
            crate::listener::tcp::proxy_connection(
                &serving.proxy,
                stream,
                peer,
                dialed,
                serving.tcp_idle_timeout,
            )
            .await
        }
        Some(tls) => {
            if let Some((stream, _session)) = handshake(tls, stream, peer, listener).await {
                crate::listener::tcp::proxy_connection(
                    &serving.proxy,
                    stream,
                    peer,
                    dialed,
                    serving.tcp_idle_timeout,
                )
                .await;
            }
        }
    }
}

/// The TLS handshake, bounded in time; failures are logged with the peer and the reason and
/// counted by reason.
async fn handshake(
    tls: &ListenerTls,
    stream: TcpStream,
    peer: SocketAddr,
    listener: &str,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, TlsSession)> {
    let result = tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream)).await;
    let failure = match result {
        Ok(Ok(stream)) => {
            let (_, connection) = stream.get_ref();
            let session = TlsSession {
                sni: connection.server_name().map(str::to_owned),
                identity: connection
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(PeerIdentity::from_cert),
            };
            metrics::counter!("switchyard_tls_handshakes_total", "listener" => listener.to_owned(), "result" => "ok").increment(1);
            return Some((stream, session));
        }
        Ok(Err(e)) => (handshake_failure_reason(&e), e.to_string()),
        Err(_) => (
            "timeout",
            format!("no handshake within {:?}", tls.handshake_timeout),
        ),
    };
    let (reason, detail) = failure;
    warn!(%listener, %peer, reason, error = %detail, "TLS handshake failed");
    metrics::counter!("switchyard_tls_handshakes_total", "listener" => listener.to_owned(), "result" => "error").increment(1);
    metrics::counter!("switchyard_tls_handshake_errors_total", "listener" => listener.to_owned(), "reason" => reason).increment(1);
    crate::telemetry::golden::error_counter(listener, None, crate::telemetry::ErrorKind::Tls)
        .increment(1);
    None
}

/// A short, bounded label for why a handshake failed.
fn handshake_failure_reason(error: &std::io::Error) -> &'static str {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_cert",
        rustls::Error::InvalidCertificate(cert) => {
            match cert {
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. } => "expired_cert",
                rustls::CertificateError::NotValidYet
                | rustls::CertificateError::NotValidYetContext { .. } => "cert_not_yet_valid",
                // A CA with the same name but another key shows as a bad signature.
                rustls::CertificateError::UnknownIssuer
                | rustls::CertificateError::BadSignature => "unknown_ca",
                _ => "bad_cert",
            }
        }
        rustls::Error::AlertReceived(_) => "alert_received",
        rustls::Error::PeerIncompatible(_) => "incompatible",
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => "not_tls",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_http;

    #[test]
    fn http_is_told_from_other_protocols_by_its_first_bytes() {
        assert_eq!(looks_like_http(b"GET / HTTP/1.1\r\n"), Some(true));
        assert_eq!(looks_like_http(b"M-SEARCH * HTTP/1.1"), Some(true));
        assert_eq!(looks_like_http(b"PRI * HTTP/2.0\r\n\r\nSM"), Some(true));
        assert_eq!(looks_like_http(b"GE"), None, "too short to tell");
        assert_eq!(looks_like_http(b"PRI"), None);
        assert_eq!(
            looks_like_http(&[0x16, 0x03, 0x01]),
            Some(false),
            "a TLS ClientHello"
        );
        assert_eq!(
            looks_like_http(b"\0\0\0\x08"),
            Some(false),
            "a binary protocol"
        );
        assert_eq!(looks_like_http(b"ping\r\n"), Some(false));
        assert_eq!(looks_like_http(b" GET"), Some(false));
    }
}
