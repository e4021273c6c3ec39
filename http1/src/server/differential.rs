//! The same request bytes through hyper's HTTP/1.1 server and ours: whatever both accept, the
//! service is given the same request (method, target, version, fields, body, trailers), and
//! nothing hyper refuses is accepted by ours. Ours may refuse more: that is the strict side
//! (Content-Length with chunked, codings before chunked, a target that does not fit its method).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, duplex};
use tokio::sync::oneshot;

use super::{Config, RequestBody, serve};
use crate::test_inputs;

/// What a service was given, written out; `None` when no request reached it.
type Reading = Option<String>;

/// The request as the service sees it, whatever engine parsed it.
async fn reading<B>(req: Request<B>) -> String
where
    B: http_body::Body<Data = Bytes>,
{
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned().unwrap_or_default();
            format!("{:?} trailers={trailers:?}", collected.to_bytes())
        }
        Err(_) => "<body error>".to_owned(),
    };
    let fields: Vec<(String, Bytes)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    format!(
        "{} {} {:?} {fields:?} {body}",
        parts.method, parts.uri, parts.version
    )
}

/// Where a service writes the first request it is given.
type Slot = Arc<Mutex<Option<oneshot::Sender<String>>>>;

/// A one-shot slot the service writes the first request it is given into.
fn recorder() -> (Slot, oneshot::Receiver<String>) {
    let (sender, receiver) = oneshot::channel();
    (Arc::new(Mutex::new(Some(sender))), receiver)
}

async fn record(slot: &Slot, seen: String) {
    if let Some(sender) = slot.lock().unwrap().take() {
        let _ = sender.send(seen);
    }
}

/// Writes `input` and half-closes, then waits (with a deadline) for what the service saw.
async fn first_request(
    input: &[u8],
    mut client: tokio::io::DuplexStream,
    seen: oneshot::Receiver<String>,
) -> Reading {
    let _ = client.write_all(input).await;
    let _ = client.shutdown().await;
    let reading = tokio::time::timeout(Duration::from_secs(5), seen)
        .await
        .expect("the engine ends or calls the service");
    drop(client);
    reading.ok()
}

async fn read_with_ours(input: &[u8]) -> Reading {
    let (client, server) = duplex(1 << 20);
    let (slot, seen) = recorder();
    tokio::spawn(async move {
        let (reader, writer) = tokio::io::split(server);
        let config = Config {
            header_timeout: Duration::from_secs(5),
            max_head: 64 * 1024,
            max_headers: 100,
        };
        serve(
            Box::new(reader),
            Box::new(writer),
            &config,
            std::future::pending(),
            move |req: Request<RequestBody>| {
                let slot = Arc::clone(&slot);
                async move {
                    record(&slot, reading(req).await).await;
                    Response::new(Full::new(Bytes::from_static(b"ok")))
                }
            },
        )
        .await;
    });
    first_request(input, client, seen).await
}

async fn read_with_hyper(input: &[u8]) -> Reading {
    let (client, server) = duplex(1 << 20);
    let (slot, seen) = recorder();
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| {
            let slot = Arc::clone(&slot);
            async move {
                record(&slot, reading(req).await).await;
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"ok",
                ))))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(TokioIo::new(server), service)
            .await;
    });
    first_request(input, client, seen).await
}

/// Request shapes both engines must read alike (or, for the last ones, ours refuses).
const SHAPES: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /path?query=1&b=%20 HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: Value\r\n\r\n",
    b"GET http://example.test:8080/abs?x HTTP/1.1\r\nHost: example.test:8080\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n",
    b"PUT /x HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: a\r\nx-empty:\r\nx-tab: a\tb\r\ncookie: a=1\r\ncookie: b=2\r\n\r\n",
    b"DELETE /thing HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"PATCH /p HTTP/1.1\r\nHost: a\r\ntransfer-encoding: CHUNKED\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
];

/// A request built from random parts: method, target, version, fields, a body framed by length
/// or by chunks.
fn generated(rng: &mut fastrand::Rng) -> Vec<u8> {
    let method = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"][rng.usize(..6)];
    let version = if rng.u8(..8) == 0 { "1.0" } else { "1.1" };
    let mut out = format!(
        "{method} /p{}?q={} HTTP/{version}\r\nHost: h\r\n",
        rng.u16(..),
        rng.u8(..)
    )
    .into_bytes();
    test_inputs::fields(rng, &mut out);
    let by_length = version == "1.0" || rng.bool();
    test_inputs::body(rng, by_length, &mut out);
    out
}

#[tokio::test]
async fn requests_read_the_same_as_hyper_reads_them() {
    let inputs = test_inputs::inputs(0x5e4e_d1ff, SHAPES, generated);
    let mut both = 0;
    let mut stricter = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let ours = read_with_ours(input).await;
        let theirs = read_with_hyper(input).await;
        let shown = String::from_utf8_lossy(input);
        match (&ours, &theirs) {
            (Some(ours), Some(theirs)) => {
                both += 1;
                assert_eq!(ours, theirs, "input {i}: {shown:?}");
            }
            (Some(_), None) => panic!("input {i}: accepted, hyper refuses it: {shown:?}"),
            (None, Some(_)) => stricter.push(shown.to_string()),
            (None, None) => {}
        }
        if (SHAPES.len()..SHAPES.len() + 300).contains(&i) {
            assert!(ours.is_some(), "input {i}, well formed, refused: {shown:?}");
        }
    }
    eprintln!(
        "{both} read alike; refused {} hyper reads: {stricter:?}",
        stricter.len()
    );
    assert!(both > 500, "only {both} inputs were read by both");
    assert!(
        stricter.len() < 60,
        "refused {} requests hyper reads",
        stricter.len()
    );
}
