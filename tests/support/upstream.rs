//! Upstream servers for tests, running on the test's own runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchyard::echo::EchoOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("tests can bind 127.0.0.1:0")
}

impl Upstream {
    /// The `switchyard echo` server, answering as `name`.
    pub async fn echo(name: &str) -> Self {
        Self::echo_with(EchoOptions {
            name: name.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// An echo server that waits `delay` before every answer.
    pub async fn slow_echo(name: &str, delay: Duration) -> Self {
        Self::echo_with(EchoOptions {
            name: name.to_owned(),
            delay: Some(delay),
            ..Default::default()
        })
        .await
    }

    pub async fn echo_with(options: EchoOptions) -> Self {
        let socket = bind().await;
        let addr = socket.local_addr().expect("bound socket has an address");
        let task = tokio::spawn(switchyard::echo::serve(socket, options));
        Self { addr, task }
    }

    /// Reads one request head per connection, then writes `answer` verbatim and closes. An empty
    /// answer plays an upstream that resets the connection.
    pub async fn raw(answer: &'static [u8]) -> Self {
        Self::raw_counting(answer).await.0
    }

    /// [`Upstream::raw`], with the number of connections it has accepted.
    pub async fn raw_counting(answer: &'static [u8]) -> (Self, Arc<AtomicUsize>) {
        let socket = bind().await;
        let addr = socket.local_addr().expect("bound socket has an address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = socket.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(answer).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (Self { addr, task }, accepted)
    }

    /// An HTTP server that reports each request's path on `arrived` as it comes in, then answers
    /// after `delay`: lets a test act while a request is known to be in flight.
    pub async fn announcing(delay: Duration) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = move |req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(req.uri().path().to_owned());
                tokio::time::sleep(delay).await;
                Response::new(Full::new(Bytes::from_static(b"finished\n")))
            }
        };
        (Self::serve(handler).await, rx)
    }

    /// Answers with the request body's trailer `name` (or `none`) in `x-seen-trailer`.
    pub async fn reporting_trailer(name: &'static str) -> Self {
        use http_body_util::BodyExt;
        Self::serve(move |req: Request<Incoming>| async move {
            let collected = req.into_body().collect().await.ok();
            let seen = collected
                .as_ref()
                .and_then(|c| c.trailers())
                .and_then(|t| t.get(name))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            response
                .headers_mut()
                .insert("x-seen-trailer", seen.parse().expect("value"));
            response
        })
        .await
    }

    /// An HTTP/1.1 + h2c server answering with `handler`.
    pub async fn serve<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let socket = bind().await;
        let addr = socket.local_addr().expect("bound socket has an address");
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            let http = Arc::new(auto::Builder::new(TokioExecutor::new()));
            loop {
                let Ok((stream, _)) = socket.accept().await else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                let http = Arc::clone(&http);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let handler = Arc::clone(&handler);
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = http
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }
}

/// An address nothing listens on, where a connection is refused. The port stays bound (not
/// listening) for the rest of the test process: released, it could be handed to the next
/// listener bound to port 0 — the proxy's own, which then forwarded to itself until its request
/// head was too large (a 431 instead of the 502 a test expected).
pub async fn closed_port() -> SocketAddr {
    let reserved = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    reserved
        .bind(any_port)
        .expect("bind a port, without listening");
    let addr = reserved.local_addr().expect("bound socket has an address");
    std::mem::forget(reserved);
    addr
}
