//! `switchyard echo`: a tiny upstream for demos, tests and trying things out.
//!
//! Every request gets a JSON answer naming the server, the method, path, query and headers it saw,
//! and how many body bytes it read (the body is counted as it streams, never buffered). Query
//! parameters shape the answer: `status=503`, `delay=250ms`, `bytes=N` (a streamed body of N bytes
//! instead of JSON).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{debug, info};

/// How an echo server behaves for every request (query parameters can still override).
#[derive(Debug, Clone, Default)]
pub struct EchoOptions {
    /// Reported in every answer and in the `x-echo-name` header.
    pub name: String,
    /// Wait this long before answering, to play a slow service.
    pub delay: Option<Duration>,
    /// Answer with this status, to play a failing service.
    pub status: Option<StatusCode>,
}

/// Runs an echo server on its own runtime until Ctrl-C.
pub fn run_blocking(listen: SocketAddr, options: EchoOptions) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let socket = TcpListener::bind(listen).await?;
        let addr = socket.local_addr()?;
        info!(%addr, name = %options.name, "echo server listening");
        println!("echo {:?} listening on {addr}", options.name);
        tokio::select! {
            _ = serve(socket, options) => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        Ok(())
    })
}

/// Serves echo answers on `socket` (HTTP/1.1 and h2c) until the task is dropped.
pub async fn serve(socket: TcpListener, options: EchoOptions) {
    let options = Arc::new(options);
    let http = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((stream, peer)) = socket.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let options = Arc::clone(&options);
        let http = Arc::clone(&http);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let options = Arc::clone(&options);
                async move { Ok::<_, Infallible>(answer(&options, peer, req).await) }
            });
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                debug!(%peer, error = %e, "echo connection error");
            }
        });
    }
}

/// Query parameters that shape an answer.
#[derive(Debug, Default)]
struct Knobs {
    status: Option<StatusCode>,
    delay: Option<Duration>,
    bytes: Option<u64>,
}

impl Knobs {
    fn from_query(query: Option<&str>) -> Self {
        let mut knobs = Self::default();
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("status", v)) => {
                    knobs.status = v.parse().ok().and_then(|s| StatusCode::from_u16(s).ok())
                }
                Some(("delay", v)) => knobs.delay = crate::config::parse_duration(v),
                Some(("bytes", v)) => knobs.bytes = v.parse().ok(),
                _ => {}
            }
        }
        knobs
    }
}

async fn answer(
    options: &EchoOptions,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<EchoBody> {
    let name = options.name.as_str();
    let mut knobs = Knobs::from_query(req.uri().query());
    knobs.delay = knobs.delay.or(options.delay);
    knobs.status = knobs.status.or(options.status);
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    if let Some(delay) = knobs.delay {
        tokio::time::sleep(delay).await;
    }

    let mut response = match knobs.bytes {
        Some(n) => {
            let mut r = Response::new(EchoBody::Repeat(n));
            r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(n));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        None => {
            let json = serde_json::json!({
                "name": name,
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "version": format!("{:?}", parts.version),
                "peer": peer.to_string(),
                "headers": headers_json(&parts.headers),
                "body_bytes": body_bytes,
            });
            let mut text = serde_json::to_vec_pretty(&json).unwrap_or_default();
            text.push(b'\n');
            let mut r = Response::new(EchoBody::Full(Some(text.into())));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    };
    *response.status_mut() = knobs.status.unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(name) {
        response.headers_mut().insert("x-echo-name", v);
    }
    response
}

/// Header names to values; a repeated header becomes an array.
fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<serde_json::Value> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        let value = match <[serde_json::Value; 1]>::try_from(values) {
            Ok([one]) => one,
            Err(many) => many.into(),
        };
        map.insert(name.as_str().to_owned(), value);
    }
    map.into()
}

/// The echo server's answers: JSON, or `bytes=N` streamed from one static chunk.
#[derive(Debug)]
pub enum EchoBody {
    Full(Option<Bytes>),
    Repeat(u64),
}

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            Self::Full(bytes) => bytes.take().map(Frame::data),
            Self::Repeat(0) => None,
            Self::Repeat(remaining) => {
                let n = (*remaining).min(CHUNK.len() as u64);
                *remaining -= n;
                Some(Frame::data(Bytes::from_static(&CHUNK[..n as usize])))
            }
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None) | Self::Repeat(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Repeat(n) => SizeHint::with_exact(*n),
        }
    }
}
