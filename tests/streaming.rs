//! Bodies stream through the proxy in both directions without being buffered.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::support::config::proxy_to;
use crate::support::{Proxy, Upstream, send};

const HUNDRED_MIB: u64 = 100 * 1024 * 1024;
/// Allowed growth of the proxy's resident memory while moving 100 MiB each way.
const MAX_GROWTH_KIB: u64 = 8 * 1024;

/// A request body of `remaining` bytes made on the fly, chunk by chunk.
struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }
}

#[tokio::test]
async fn hundred_mib_each_way_without_memory_growth() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&proxy_to(app.addr, ""));
    // Warm up connections and allocator arenas before the baseline.
    for _ in 0..3 {
        send(proxy.addr(), upload(1024 * 1024)).await;
    }
    let before = proxy.rss_kib();

    let reply = send(proxy.addr(), upload(HUNDRED_MIB)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["body_bytes"],
        HUNDRED_MIB,
        "upstream saw every byte"
    );

    let downloaded = download(proxy.addr(), HUNDRED_MIB).await;
    assert_eq!(downloaded, HUNDRED_MIB);

    let after = proxy.rss_kib();
    let growth = after.saturating_sub(before);
    eprintln!("proxy RSS: {before} KiB before, {after} KiB after 2 x 100 MiB");
    assert!(growth < MAX_GROWTH_KIB, "proxy RSS grew by {growth} KiB");
}

fn upload(bytes: u64) -> Request<Generated> {
    Request::post("/upload")
        .header("host", "example.test")
        .body(Generated {
            remaining: bytes,
            chunk: Bytes::from(vec![b'u'; 64 * 1024]),
        })
        .expect("request")
}

/// Streams a `bytes`-long response through the proxy, counting it without keeping it.
async fn download(addr: std::net::SocketAddr, bytes: u64) -> u64 {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("/download?bytes={bytes}"))
        .header("host", "example.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        total += frame
            .expect("frame")
            .data_ref()
            .map_or(0, |d| d.len() as u64);
    }
    total
}

/// A client that goes away in the middle of a response that streams slowly (server-sent events,
/// a long poll) ends the stream upstream too: the proxy closes its connection to the upstream
/// at once, not at the next event.
#[tokio::test]
async fn a_client_leaving_an_idle_stream_closes_the_upstream_connection() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let seen_closed = Arc::clone(&closed);
    tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy closed before sending its request");
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nd\r\ndata: first\n\n\r\n")
            .await
            .unwrap();
        // No more events: wait for the proxy to give up on the stream.
        if let Ok(0) | Err(_) = stream.read(&mut buf).await {
            seen_closed.store(true, Ordering::SeqCst);
        }
    });
    let proxy = Proxy::start(&proxy_to(upstream_addr, ""));
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("data: first") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the first event arrives")
            .unwrap();
        assert!(n > 0, "the proxy closed the stream");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(client);
    assert!(
        crate::support::eventually(Duration::from_secs(5), async || closed
            .load(Ordering::SeqCst))
        .await,
        "the upstream connection stayed open after the client left"
    );
}
