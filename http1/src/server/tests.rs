//! The server engine on in-memory connections: a test client writes raw bytes and reads what
//! the engine answers, with a service that echoes what it was given.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;

use super::{Config, Ended, RequestBody, serve};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

fn config() -> Config {
    Config {
        header_timeout: Duration::from_secs(5),
        max_head: 8 * 1024,
        max_headers: 32,
    }
}

/// What the echo service saw of a request, written as the response body.
async fn describe(req: Request<RequestBody>) -> String {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await;
    let (body, trailers) = match collected {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (
                String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
                trailers,
            )
        }
        Err(e) => (format!("<body error: {e}>"), None),
    };
    let mut fields: Vec<String> = parts
        .headers
        .iter()
        .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("?")))
        .collect();
    fields.sort();
    let trailers = trailers.map_or(String::new(), |t: HeaderMap| {
        t.iter()
            .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(",")
    });
    format!(
        "{} {} {:?} [{}] body={body} trailers={trailers}",
        parts.method,
        parts.uri,
        parts.version,
        fields.join(",")
    )
}

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// Starts the engine on one end of an in-memory connection with the echo service; returns the
/// other end and how the engine ended.
fn start(config: Config) -> (DuplexStream, oneshot::Receiver<Ended>) {
    start_with(config, pending(), |req| async move {
        Response::new(full(describe(req).await))
    })
}

fn start_with<F, Fut>(
    config: Config,
    drain: impl std::future::Future<Output = ()> + Send + 'static,
    service: F,
) -> (DuplexStream, oneshot::Receiver<Ended>)
where
    F: FnMut(Request<RequestBody>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response<TestBody>> + Send,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (ended_tx, ended) = oneshot::channel();
    tokio::spawn(async move {
        let (reader, writer) = tokio::io::split(server);
        let ended = serve(Box::new(reader), Box::new(writer), &config, drain, service).await;
        let _ = ended_tx.send(ended);
    });
    (client, ended)
}

/// Reads one response: its head as text, its body (by content-length or chunked, decoded),
/// and the trailer lines.
async fn read_response(client: &mut DuplexStream) -> (String, String) {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(
            client.read(&mut byte).await.unwrap(),
            1,
            "EOF in a head: {bytes:?}"
        );
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).unwrap();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(at) = lower.find("content-length: ") {
        let len: usize = lower[at + 16..]
            .split("\r\n")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if !lower.starts_with("http/1.1 204") && !lower.starts_with("http/1.1 304") {
            body.resize(len, 0);
            client.read_exact(&mut body).await.unwrap();
        }
    } else if lower.contains("transfer-encoding: chunked") {
        // The whole chunked body, framing included, up to the empty line after the last chunk.
        loop {
            assert_eq!(
                client.read(&mut byte).await.unwrap(),
                1,
                "EOF in a chunked body: {head}{}",
                String::from_utf8_lossy(&body)
            );
            body.push(byte[0]);
            if body.ends_with(b"\r\n\r\n")
                && (body.starts_with(b"0\r\n") || body.windows(4).any(|w| w == b"\n0\r\n"))
            {
                break;
            }
        }
    }
    (head, String::from_utf8_lossy(&body).into_owned())
}

async fn read_to_end(client: &mut DuplexStream) -> String {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .expect("the engine closes the connection")
        .unwrap();
    String::from_utf8_lossy(&rest).into_owned()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (mut client, _ended) = start(config());
    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /three?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(
        body.starts_with("GET /one HTTP/1.1 [host=a] body="),
        "{body}"
    );
    let (_, body) = read_response(&mut client).await;
    assert!(
        body.starts_with("POST /two HTTP/1.1 [content-length=5,host=a] body=hello "),
        "{body}"
    );
    let (_, body) = read_response(&mut client).await;
    assert!(body.starts_with("GET /three?x=1 "), "{body}");
}

#[tokio::test]
async fn keep_alive_follows_the_version_and_the_connection_field() {
    // HTTP/1.0 closes unless asked to keep alive; then it is said in the answer.
    let (mut client, _ended) = start(config());
    client
        .write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.contains("connection: keep-alive\r\n"), "{head}");
    client.write_all(b"GET /b HTTP/1.0\r\n\r\n").await.unwrap();
    let (head, body) = read_response(&mut client).await;
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(body.starts_with("GET /b HTTP/1.0"), "{body}");
    assert_eq!(
        read_to_end(&mut client).await,
        "",
        "closed after the answer"
    );

    // HTTP/1.1 keeps alive unless told to close.
    let (mut client, _ended) = start(config());
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert_eq!(read_to_end(&mut client).await, "");
}

#[tokio::test]
async fn a_chunked_request_body_arrives_with_its_trailers() {
    let (mut client, _ended) = start(config());
    client
        .write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 42\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (_, body) = read_response(&mut client).await;
    assert!(
        body.contains("body=hello world trailers=x-sum=42"),
        "{body}"
    );
    let (_, body) = read_response(&mut client).await;
    assert!(
        body.starts_with("GET /next "),
        "the connection went on: {body}"
    );
}

/// A streamed response of unknown length, ending with trailers.
fn streamed_with_trailers() -> TestBody {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"abc"))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

#[tokio::test]
async fn unknown_lengths_are_chunked_and_trailers_go_only_to_clients_that_take_them() {
    let (mut client, _ended) = start_with(config(), pending(), |_req| async move {
        Response::new(streamed_with_trailers())
    });
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut client).await;
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert_eq!(body, "3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (_, body) = read_response(&mut client).await;
    assert_eq!(
        body, "3\r\nabc\r\n0\r\n\r\n",
        "no trailers without TE: trailers"
    );

    // HTTP/1.0 has no chunks: the body ends with the connection.
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let rest = read_to_end(&mut client).await;
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.contains("connection: close\r\n"), "{rest}");
    assert!(!rest.contains("transfer-encoding"), "{rest}");
    assert!(rest.ends_with("\r\n\r\nabc"), "{rest:?}");
}

#[tokio::test]
async fn expect_100_continue_gets_a_100_when_the_body_is_read() {
    let (mut client, _ended) = start(config());
    client
        .write_all(
            b"PUT /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut interim))
        .await
        .expect("a 100 before the body is sent")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"data").await.unwrap();
    let (head, body) = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("body=data "), "{body}");
}

#[tokio::test]
async fn a_service_that_answers_without_reading_the_body_gets_no_100_sent() {
    let (mut client, _ended) = start_with(config(), pending(), |_req| async move {
        let mut response = Response::new(full("no"));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
    });
    client
        .write_all(
            b"PUT /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // The body never came: where the next request starts is unknown, so the connection closes.
    assert_eq!(read_to_end(&mut client).await, "");
}

#[tokio::test]
async fn an_unread_body_already_in_the_buffer_is_skipped_and_the_connection_kept() {
    let (mut client, _ended) = start_with(
        config(),
        pending(),
        |req: Request<RequestBody>| async move { Response::new(full(req.uri().path().to_owned())) },
    );
    client
        .write_all(b"POST /ignored HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut client).await.1, "/ignored");
    assert_eq!(read_response(&mut client).await.1, "/after");
}

/// The status line the engine answers `request` with (it must close the connection after).
async fn answer_to(request: &[u8]) -> String {
    let (mut client, _ended) = start(config());
    client.write_all(request).await.unwrap();
    let all = read_to_end(&mut client).await;
    all.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn ambiguous_or_malformed_heads_are_refused_with_the_right_status() {
    let many_fields: String = (0..40).map(|i| format!("x-f{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many_fields}\r\n");
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-long: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("CL with TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "400"),
        ("TE not ending in chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), "400"),
        ("chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n".to_vec(), "400"),
        ("another coding before chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), "501"),
        ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "400"),
        ("lengths that disagree", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(), "400"),
        ("a signed length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc".to_vec(), "400"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), "400"),
        ("space before the colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n".to_vec(), "400"),
        ("garbage", b"GARBAGE\r\n\r\n".to_vec(), "400"),
        ("CONNECT with a path", b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "400"),
        ("asterisk for GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "400"),
        ("HTTP/2.0 in a request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n".to_vec(), "505"),
        ("too many fields", many.into_bytes(), "431"),
        ("a head over the limit", long.into_bytes(), "431"),
    ];
    for (what, request, status) in cases {
        let line = answer_to(&request).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {line:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_chunk_fails_the_body_and_the_connection_closes() {
    let (mut client, _ended) = start(config());
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        .await
        .unwrap();
    let rest = read_to_end(&mut client).await;
    assert!(
        rest.contains("<body error: malformed chunked request body"),
        "{rest}"
    );
}

/// The header timeout runs from when the engine starts waiting for each head: a timer still set
/// for an earlier head's deadline (the engine does not move it for every head) does not cut the
/// next head short.
#[tokio::test]
async fn each_head_gets_the_whole_header_timeout() {
    let timeout = Duration::from_millis(1_000);
    let (mut client, _ended) = start(Config {
        header_timeout: timeout,
        ..config()
    });
    // The engine waits for the first head from the start: its timer is set for about 1 s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    client
        .write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut client).await;
    // The second head is waited for from about 0.4 s, so it may take until about 1.4 s: it
    // starts before the first deadline and ends after it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.write_all(b"GET /2 HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.write_all(b"st: a\r\n\r\n").await.unwrap();
    let (head, body) = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(body.starts_with("GET /2 "), "{body}");
}

#[tokio::test]
async fn a_slow_head_gets_408_and_an_idle_connection_just_closes() {
    let quick = Config {
        header_timeout: Duration::from_millis(200),
        ..config()
    };
    let (mut client, _ended) = start(quick.clone());
    client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let rest = read_to_end(&mut client).await;
    assert!(rest.starts_with("HTTP/1.1 408 "), "{rest}");

    let (mut client, _ended) = start(quick);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut client).await;
    let started = std::time::Instant::now();
    assert_eq!(read_to_end(&mut client).await, "", "closed without a word");
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn the_http2_preface_hands_the_connection_back_with_its_bytes() {
    let (mut client, ended) = start(config());
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04")
        .await
        .unwrap();
    let Ok(Ended::Http2(mut io)) = ended.await else {
        panic!("not handed over as HTTP/2");
    };
    let mut first = [0u8; 28];
    io.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04");
}

#[tokio::test]
async fn a_101_hands_the_connection_to_the_request_with_what_came_after_the_head() {
    let (mut client, _ended) = start_with(
        config(),
        pending(),
        |mut req: Request<RequestBody>| async move {
            let on_upgrade = req
                .extensions_mut()
                .remove::<super::OnUpgrade>()
                .expect("an upgrade request carries its upgrade");
            tokio::spawn(async move {
                let mut io = on_upgrade.upgraded().await.expect("upgraded");
                let mut hello = [0u8; 5];
                io.read_exact(&mut hello).await.unwrap();
                io.write_all(&hello.to_ascii_uppercase()).await.unwrap();
            });
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            response
                .headers_mut()
                .insert("upgrade", "echo".parse().unwrap());
            response
        },
    );
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nhel",
        )
        .await
        .unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    client.write_all(b"lo").await.unwrap();
    let mut echoed = [0u8; 5];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"HELLO");
}

#[tokio::test]
async fn a_client_that_closes_while_waiting_cancels_the_request() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&dropped);
    struct CountsDrop(Arc<AtomicUsize>);
    impl Drop for CountsDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (mut client, ended) = start_with(config(), pending(), move |_req| {
        let guard = CountsDrop(Arc::clone(&seen));
        async move {
            let _guard = guard;
            pending::<()>().await;
            Response::new(full(""))
        }
    });
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(client);
    let ended = tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the engine notices the close");
    assert!(matches!(ended, Ok(Ended::Closed)));
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the service was dropped");
}

#[tokio::test]
async fn draining_closes_idle_connections_and_answers_the_one_in_flight_with_close() {
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    let drain = async move {
        let _ = drain_rx.await;
    };
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (mut client, _ended) = start_with(config(), drain, move |_req| {
        let mut release = release_rx.clone();
        async move {
            let _ = release.wait_for(|r| *r).await;
            Response::new(full("done"))
        }
    });
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drain_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    release_tx.send(true).unwrap();
    let rest = read_to_end(&mut client).await;
    assert!(rest.contains("connection: close\r\n"), "{rest}");
    assert!(rest.ends_with("done"), "{rest}");
}

#[tokio::test]
async fn head_and_bodiless_statuses_carry_no_body() {
    let (mut client, _ended) = start_with(
        config(),
        pending(),
        |req: Request<RequestBody>| async move {
            let status = match req.uri().path() {
                "/204" => StatusCode::NO_CONTENT,
                "/304" => StatusCode::NOT_MODIFIED,
                _ => StatusCode::OK,
            };
            let mut response = Response::new(full("twelve bytes"));
            *response.status_mut() = status;
            response
        },
    );
    client
        .write_all(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_end(&mut client).await;
    let answers: Vec<&str> = all.split("HTTP/1.1 ").filter(|a| !a.is_empty()).collect();
    assert_eq!(answers.len(), 3, "{all}");
    assert!(
        answers[0].contains("content-length: 12\r\n"),
        "HEAD tells the length: {all}"
    );
    assert!(answers[0].ends_with("\r\n\r\n"), "but sends no body: {all}");
    assert!(answers[1].starts_with("204"), "{all}");
    assert!(!answers[1].contains("content-length"), "{all}");
    assert!(answers[2].ends_with("twelve bytes"), "{all}");
}

#[tokio::test]
async fn a_client_that_closes_during_a_streamed_response_stops_the_stream() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&dropped);
    /// A body that sends one piece and then nothing, ever; counts its drop.
    struct Endless(Arc<AtomicUsize>, bool);
    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            if std::mem::replace(&mut self.1, true) {
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                b"data: first\n\n",
            )))))
        }
    }
    impl Drop for Endless {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (mut client, ended) = start_with(config(), pending(), move |_req| {
        let body = Endless(Arc::clone(&seen), false).boxed_unsync();
        async move { Response::new(body) }
    });
    client
        .write_all(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 512];
    let n = client.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    drop(client);
    let ended = tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the engine notices the close while the stream is idle");
    assert!(matches!(ended, Ok(Ended::Closed)));
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the stream was dropped");
}
