//! The upstream engine on in-memory connections: what it writes, what it reads back, when it
//! keeps a connection, and a differential run against hyper's client on the same responses.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use super::client::{Connection, Error, Keep, ResponseFields};
use super::test_inputs;

/// Records the connection the engine hands back.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Option<Connection<DuplexStream>>>>);

impl Keep<DuplexStream> for Kept {
    fn keep(self, connection: Connection<DuplexStream>) {
        *self.0.lock().unwrap() = Some(connection);
    }
}

impl Kept {
    fn taken(&self) -> Option<Connection<DuplexStream>> {
        self.0.lock().unwrap().take()
    }
}

/// A request body fed from a channel, to send while the response streams.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// What a peer received up to the end of a request head, and the head's length.
async fn read_head(peer: &mut DuplexStream, seen: &mut Vec<u8>) -> usize {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            return end + 4;
        }
        let n = peer.read(&mut buf).await.unwrap();
        assert!(n > 0, "the engine closed before a whole head");
        seen.extend_from_slice(&buf[..n]);
    }
}

struct Outcome {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// Sends `req` on a fresh connection whose peer answers `response` once the head arrived.
async fn exchange<B>(
    req: Request<B>,
    response: &'static [u8],
    keeper: Kept,
) -> (Result<Outcome, String>, Vec<u8>)
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (ours, mut peer) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        read_head(&mut peer, &mut seen).await;
        peer.write_all(response).await.unwrap();
        // The end of the stream ends a close-delimited body, and shows a cut-short one.
        peer.shutdown().await.unwrap();
        (peer, seen)
    });
    let outcome = match Connection::new(ours)
        .send(req, &[], keeper, ResponseFields::Map, None)
        .await
    {
        Ok(response) => {
            let (head, body) = response.into_parts();
            match body.collect().await {
                Ok(collected) => {
                    let trailers = collected.trailers().cloned();
                    Ok(Outcome {
                        status: head.status,
                        headers: head.headers,
                        body: collected.to_bytes(),
                        trailers,
                    })
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.error.to_string()),
    };
    let (_peer, seen) = server.await.unwrap();
    (outcome, seen)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/path?q=1")
        .header("host", "upstream")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn the_head_and_a_small_body_go_out_in_one_write_with_their_length() {
    let req = Request::post("/submit")
        .header("host", "upstream")
        .header("x-one", "1")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let kept = Kept::default();
    let (outcome, seen) = exchange(
        req,
        b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nx-a: b\r\n\r\nok",
        kept.clone(),
    )
    .await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.status, StatusCode::CREATED);
    assert_eq!(outcome.headers["x-a"], "b");
    assert_eq!(outcome.body, "ok");
    let seen = String::from_utf8(seen).unwrap();
    assert!(
        seen.starts_with("POST /submit HTTP/1.1\r\nhost: upstream\r\nx-one: 1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("content-length: 5\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\nhello"), "{seen}");
    assert!(
        kept.taken().is_some(),
        "a finished response keeps its connection"
    );
}

#[tokio::test]
async fn a_body_of_unknown_length_is_chunked_and_sent_while_the_response_streams() {
    let (ours, mut peer) = duplex(1 << 16);
    let (tx, rx) = mpsc::channel(4);
    let req = Request::put("/stream")
        .header("host", "upstream")
        .body(ChannelBody(rx))
        .unwrap();
    let kept = Kept::default();
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let send =
        tokio::spawn(Connection::new(ours).send(req, &[], kept.clone(), ResponseFields::Map, None));
    let mut seen = Vec::new();
    let head = read_head(&mut peer, &mut seen).await;
    assert!(
        String::from_utf8_lossy(&seen[..head]).contains("transfer-encoding: chunked\r\n"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    // The endpoint answers before the request body has ended (full duplex).
    peer.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nreply\r\n")
        .await
        .unwrap();
    let response = send.await.unwrap().unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "reply");
    // More of the request goes out as the response body is read.
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let reader = tokio::spawn(async move { body.collect().await.map(|c| c.to_bytes()) });
    let mut buf = [0u8; 256];
    while !seen.ends_with(b"0\r\n\r\n") {
        let n = peer.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&seen[head..], b"5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n");
    peer.write_all(b"0\r\nx-t: 1\r\n\r\n").await.unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), "");
    assert!(kept.taken().is_some(), "both directions ended: kept");
}

#[tokio::test]
async fn a_chunked_responses_trailers_arrive_after_its_data() {
    let kept = Kept::default();
    let (outcome, _) = exchange(
        get(),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\ngrpc-status: 7\r\n\r\n",
        kept.clone(),
    )
    .await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.body, "ok");
    assert_eq!(outcome.trailers.unwrap()["grpc-status"], "7");
    assert!(kept.taken().is_some());
}

#[tokio::test]
async fn interim_responses_are_skipped_and_bodiless_answers_keep_the_connection_at_once() {
    let kept = Kept::default();
    let (outcome, _) = exchange(
        get(),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\nx: y\r\n\r\n",
        kept.clone(),
    )
    .await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.status, StatusCode::NO_CONTENT);
    assert!(!outcome.headers.contains_key("link"));
    assert!(kept.taken().is_some());

    // HEAD: a content-length, and no body after it.
    let kept = Kept::default();
    let head = Request::head("/").body(Full::new(Bytes::new())).unwrap();
    let (outcome, _) = exchange(
        head,
        b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n",
        kept.clone(),
    )
    .await;
    assert_eq!(outcome.unwrap().body, "");
    assert!(kept.taken().is_some());
}

#[tokio::test]
async fn connections_that_cannot_carry_another_request_are_not_kept() {
    let cases: [(&str, &'static [u8]); 5] = [
        ("connection: close", b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"),
        ("HTTP/1.0 without keep-alive", b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        ("delimited by the close", b"HTTP/1.1 200 OK\r\n\r\nok"),
        ("both framings", b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
        ("bytes past the response", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"),
    ];
    for (what, response) in cases {
        let kept = Kept::default();
        let ours = tokio::spawn(exchange(get(), response, kept.clone()));
        let (outcome, _) = ours.await.unwrap();
        if let Ok(outcome) = outcome {
            assert_eq!(outcome.body, "ok", "{what}");
            assert!(!outcome.headers.contains_key("content-length") || what != "both framings");
        }
        assert!(kept.taken().is_none(), "{what}: kept");
    }
    let kept = Kept::default();
    let (outcome, _) = exchange(
        get(),
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        kept.clone(),
    )
    .await;
    assert_eq!(outcome.unwrap().body, "ok");
    assert!(kept.taken().is_some(), "HTTP/1.0 with keep-alive is kept");
}

#[tokio::test]
async fn malformed_responses_are_errors_not_guesses() {
    let cases: [(&str, &'static [u8], &str); 5] = [
        (
            "two lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            "content-length",
        ),
        (
            "a signed length",
            b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
            "content-length",
        ),
        (
            "a bad chunk",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "chunk",
        ),
        (
            "not HTTP",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            "malformed response head",
        ),
        (
            "cut short",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok",
            "before the response body ended",
        ),
    ];
    for (what, response, expected) in cases {
        let (outcome, _) = exchange(get(), response, Kept::default()).await;
        let error = outcome.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(error.contains(expected), "{what}: {error}");
    }
}

#[tokio::test]
async fn an_upgraded_connection_keeps_the_bytes_that_came_with_the_101() {
    let (ours, mut peer) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        read_head(&mut peer, &mut seen).await;
        peer.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\nearly",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 4];
        peer.read_exact(&mut buf).await.unwrap();
        buf
    });
    let req = Request::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = Connection::new(ours)
        .send(req, &[], Kept::default(), ResponseFields::Map, None)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut upgraded = response.into_body().into_upgraded().unwrap();
    let mut early = [0u8; 5];
    upgraded.read_exact(&mut early).await.unwrap();
    assert_eq!(&early, b"early");
    upgraded.write_all(b"ping").await.unwrap();
    assert_eq!(&server.await.unwrap(), b"ping");
}

#[tokio::test]
async fn a_closed_connection_and_a_failing_request_body_say_which_it_was() {
    let (ours, peer) = duplex(1024);
    drop(peer);
    let error = Connection::new(ours)
        .send(get(), &[], Kept::default(), ResponseFields::Map, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error.error, Error::Closed | Error::Io(_)),
        "{}",
        error.error
    );
    assert_eq!(
        error.unanswered.unwrap().uri,
        "/path?q=1",
        "a bodiless request comes back"
    );

    let (ours, _peer) = duplex(1 << 16);
    let req = Request::post("/")
        .header("content-length", "10")
        .body(Full::new(Bytes::from_static(b"short")))
        .unwrap();
    let error = Connection::new(ours)
        .send(req, &[], Kept::default(), ResponseFields::Map, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error.error, Error::RequestBodyLength),
        "{}",
        error.error
    );
    assert!(error.unanswered.is_none());
}

/// Response shapes both engines must read alike; the generated ones are built from these parts.
const SHAPES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Mixed-Case: Value\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;name=value\r\nabc\r\nA\r\n0123456789\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nabc",
    b"HTTP/1.1 500 Internal Server Error\r\nx-empty:\r\nx-tab: a\tb\r\ncontent-length: 1\r\n\r\n!",
    b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
    b"HTTP/1.1 200\r\ncontent-length: 1\r\n\r\nx",
    b"HTTP/1.1 999 Whatever\r\ncontent-length: 1\r\n\r\nx",
    b"HTTP/2.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nbad header: x\r\ncontent-length: 1\r\n\r\nx",
    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n",
];

/// How a client read one response: status, fields, body, trailers.
type Read = (u16, Vec<(String, Vec<u8>)>, Bytes, Option<HeaderMap>);

/// `None` when the client refused the response.
type Reading = Option<Read>;

async fn read_with_ours(response: Vec<u8>) -> Reading {
    let (ours, mut peer) = duplex(1 << 20);
    tokio::spawn(async move {
        let mut seen = Vec::new();
        read_head(&mut peer, &mut seen).await;
        let _ = peer.write_all(&response).await;
    });
    let response = Connection::new(ours)
        .send(get(), &[], Kept::default(), ResponseFields::Map, None)
        .await
        .ok()?;
    let (head, body) = response.into_parts();
    let collected = body.collect().await.ok()?;
    Some(reading(head, collected))
}

async fn read_with_hyper(response: Vec<u8>) -> Reading {
    let (theirs, mut peer) = duplex(1 << 20);
    tokio::spawn(async move {
        let mut seen = Vec::new();
        read_head(&mut peer, &mut seen).await;
        let _ = peer.write_all(&response).await;
    });
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(theirs))
        .await
        .ok()?;
    tokio::spawn(connection);
    let response = sender.send_request(get()).await.ok()?;
    let (head, body) = response.into_parts();
    let collected = body.collect().await.ok()?;
    Some(reading(head, collected))
}

fn reading(head: http::response::Parts, collected: http_body_util::Collected<Bytes>) -> Read {
    let headers = head
        .headers
        .iter()
        // Where both framings came, we drop the length and hyper keeps it; neither frames by it.
        .filter(|(name, _)| *name != http::header::CONTENT_LENGTH)
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    let trailers = collected.trailers().cloned();
    (
        head.status.as_u16(),
        headers,
        collected.to_bytes(),
        trailers,
    )
}

/// A response built from random parts: status, fields, a body framed by length or by chunks.
fn generated(rng: &mut fastrand::Rng) -> Vec<u8> {
    let status = [200, 201, 204, 301, 404, 500, 503][rng.usize(..7)];
    let mut out = format!("HTTP/1.1 {status} Reason\r\n").into_bytes();
    test_inputs::fields(rng, &mut out);
    let by_length = status == 204 || rng.bool();
    test_inputs::body(rng, by_length, &mut out);
    out
}

/// The same bytes through hyper's client and ours: whatever both accept, they read alike, and
/// nothing hyper refuses is accepted by ours. (Ours may refuse more: that is the strict side.)
#[tokio::test]
async fn responses_read_the_same_as_hyper_reads_them() {
    let inputs = test_inputs::inputs(0x5317_c4a2, SHAPES, generated);
    let mut stricter = 0;
    for (i, input) in inputs.into_iter().enumerate() {
        let ours = read_with_ours(input.clone()).await;
        let theirs = read_with_hyper(input.clone()).await;
        let shown = String::from_utf8_lossy(&input);
        match (&ours, &theirs) {
            (Some(ours), Some(theirs)) => assert_eq!(ours, theirs, "input {i}: {shown:?}"),
            (Some(_), None) => panic!("input {i}: accepted, hyper refuses it: {shown:?}"),
            (None, Some(_)) => stricter += 1,
            (None, None) => {}
        }
        if i < SHAPES.len() + 300 && !shown.contains("fffffffff") {
            assert_eq!(ours.is_some(), theirs.is_some(), "input {i}: {shown:?}");
        }
    }
    eprintln!("refused {stricter} responses hyper reads");
    assert!(stricter < 60, "refused {stricter} responses hyper reads");
}

/// Arbitrary bytes, most of them near HTTP, through the head parser and the chunked decoder:
/// answers or errors, never a panic, and never more consumed than was given.
#[test]
fn arbitrary_bytes_are_answered_or_refused_never_a_panic() {
    use super::chunked::{ChunkedDecoder, Decoded};
    use bytes::BytesMut;

    const PIECES: &[&[u8]] = &[
        b"HTTP/1.1 ",
        b"200 OK",
        b"\r\n",
        b"\n",
        b"content-length: ",
        b"transfer-encoding: ",
        b"chunked",
        b"0",
        b"ffffffffffffffff",
        b"5",
        b";x=y",
        b"hello",
        b": ",
        b" ",
        b"\t",
        b"\x00",
        b"\xff",
        b"101 Switching",
        b"204",
        b"connection: close",
    ];
    let mut rng = fastrand::Rng::with_seed(0x0b5e_55ed);
    for _ in 0..20_000 {
        let mut input = Vec::new();
        for _ in 0..rng.usize(..24) {
            if rng.u8(..8) == 0 {
                input.push(rng.u8(..));
            } else {
                input.extend_from_slice(PIECES[rng.usize(..PIECES.len())]);
            }
        }
        let mut head = BytesMut::from(&input[..]);
        let wanted = if rng.bool() {
            ResponseFields::Passed
        } else {
            ResponseFields::Map
        };
        let _ = super::client::parse_head(&mut head, rng.bool(), wanted);
        assert!(head.len() <= input.len());

        let mut body = BytesMut::from(&input[..]);
        let mut decoder = ChunkedDecoder::default();
        for _ in 0..64 {
            let before = body.len();
            match decoder.decode(&mut body) {
                Ok(Decoded::Data(data)) => assert!(data.len() <= before),
                Ok(Decoded::NeedMore | Decoded::End | Decoded::Trailers(_)) | Err(_) => break,
            }
        }
    }
}

/// A kept connection answered once, then asked again with `deadline` and never answered: when
/// the exchange failed, and how.
async fn unanswered_on_a_kept_connection(
    first_deadline: Duration,
    deadline: Duration,
) -> (Duration, Option<String>) {
    let (ours, mut peer) = duplex(1 << 16);
    let kept = Kept::default();
    let first = Connection::new(ours).send(
        get(),
        &[],
        kept.clone(),
        ResponseFields::Map,
        Some(Instant::now() + first_deadline),
    );
    let answer = async {
        let mut seen = Vec::new();
        read_head(&mut peer, &mut seen).await;
        peer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
    };
    let (response, ()) = tokio::join!(first, answer);
    assert_eq!(response.unwrap().status(), StatusCode::NO_CONTENT);
    let connection = kept
        .taken()
        .expect("an empty response keeps its connection");
    let started = std::time::Instant::now();
    let second = connection
        .send(
            get(),
            &[],
            Kept::default(),
            ResponseFields::Map,
            Some(Instant::now() + deadline),
        )
        .await;
    let took = started.elapsed();
    drop(peer);
    (took, second.err().map(|e| e.error.to_string()))
}

#[tokio::test]
async fn a_response_head_that_does_not_come_by_the_deadline_times_out_on_time() {
    let timed_out = Some(Error::TimedOut.to_string());
    // The connection's timer was set for a later deadline by the first request: moved earlier.
    let (took, error) =
        unanswered_on_a_kept_connection(Duration::from_secs(30), Duration::from_millis(100)).await;
    assert_eq!(error, timed_out);
    assert!(
        (Duration::from_millis(100)..Duration::from_secs(10)).contains(&took),
        "timed out after {took:?}"
    );
    // Set for an earlier deadline: it fires first and is moved on, not taken as this one.
    let (took, error) =
        unanswered_on_a_kept_connection(Duration::from_millis(20), Duration::from_millis(300))
            .await;
    assert_eq!(error, timed_out);
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(10)).contains(&took),
        "timed out after {took:?}"
    );
}
