//! Minimal HTTP clients over real sockets: HTTP/1.1 and h2c prior knowledge.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// Which echo upstream answered.
    pub fn echo_name(&self) -> String {
        self.header("x-echo-name").unwrap_or("<none>").to_owned()
    }
}

/// GET `path` over a new HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    get_with(addr, path, &[]).await
}

/// GET `path` with extra headers over a new HTTP/1.1 connection.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        req = req.header("host", "example.test");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .expect("test request is well formed");
    send(addr, req).await
}

/// Sends `req` over a new HTTP/1.1 connection and reads the whole response.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync,
{
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let response = sender.send_request(req).await.expect("send request");
    collect(response).await
}

/// Sends `req` over a new h2c (prior knowledge) connection.
pub async fn h2c_send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync,
{
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    tokio::spawn(conn);
    let response = sender.send_request(req).await.expect("send request");
    collect(response).await
}

/// One h2c connection many requests share at once, for tests that send thousands.
#[derive(Clone)]
pub struct H2Client {
    sender: http2::SendRequest<Empty<Bytes>>,
}

impl H2Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    /// GET `path` with `headers` (an `authority` sets the request's `:authority`).
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.try_get_with(path, headers)
            .await
            .expect("send request")
    }

    /// Like [`H2Client::get_with`], reporting a failed exchange instead of panicking.
    pub async fn try_get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, hyper::Error> {
        let mut req = Request::get(format!("http://example.test{path}"));
        for (name, value) in headers {
            if *name == "authority" {
                req = req.uri(format!("http://{value}{path}"));
            } else {
                req = req.header(*name, *value);
            }
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .expect("test request is well formed");
        let mut sender = self.sender.clone();
        sender.ready().await?;
        let response = sender.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }
}

async fn collect(response: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// Sends `request` to `proxy` as it is and reads the answer until the proxy closes (the request
/// asks it to) or 5 s pass.
pub async fn raw_exchange(proxy: &super::Proxy, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}
