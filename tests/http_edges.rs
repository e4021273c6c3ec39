//! HTTP edge cases real clients hit: path normalization before plugins (a prefix rule cannot be
//! bypassed with dot segments or escapes), Host rules of RFC 9112, trailers end to end,
//! `Expect: 100-continue` and pipelining.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::{cluster, listener};
use crate::support::proxy::example_config;
use crate::support::{Proxy, Upstream, get, get_with, raw_exchange};

/// The shipped routing example: `/v2/` (GET) goes to api-v2 with the prefix stripped, the rest
/// to api-v1.
async fn routing_proxy(listener_extra: &str) -> (Proxy, Upstream, Upstream) {
    let v1 = Upstream::echo("api-v1").await;
    let v2 = Upstream::echo("api-v2").await;
    let mut config = example_config(
        "routing.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", v1.addr.to_string()),
            ("127.0.0.1:9002", v2.addr.to_string()),
        ],
    );
    if !listener_extra.is_empty() {
        config = config.replacen(
            "[[listener]]\n",
            &format!("[[listener]]\n{listener_extra}\n"),
            1,
        );
    }
    (Proxy::start(&config), v1, v2)
}

/// Sends raw bytes and returns the whole answer's head and what body arrived within 5 s.
fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[tokio::test]
async fn dot_segments_cannot_bypass_a_prefix_route() {
    let (proxy, _v1, _v2) = routing_proxy("").await;

    // Without normalization this matched `/v2/` and reached api-v2 as `/../admin`.
    let api = [("host", "api.example.com")];
    let reply = get_with(proxy.addr(), "/v2/users", &api).await;
    assert_eq!(reply.echo_name(), "api-v2", "the route itself works");
    let reply = get_with(proxy.addr(), "/v2/../admin?x=/../y", &api).await;
    assert_eq!(reply.echo_name(), "api-v1", "{}", reply.text());
    assert_eq!(reply.json()["path"], "/admin");
    assert_eq!(reply.json()["query"], "x=/../y", "the query is left alone");

    // Escaped unreserved characters are decoded before plugins see the path.
    let reply = get_with(proxy.addr(), "/%76%32/users", &api).await;
    assert_eq!(reply.echo_name(), "api-v2", "{}", reply.text());
    assert_eq!(reply.json()["path"], "/users");
    let reply = get_with(proxy.addr(), "/v2/%2e%2e/%2E%2E/etc/passwd", &api).await;
    assert_eq!(reply.echo_name(), "api-v1");
    assert_eq!(reply.json()["path"], "/etc/passwd");
}

#[tokio::test]
async fn encoded_slashes_are_kept_refused_or_decoded_as_configured() {
    let app = Upstream::echo("app").await;
    let config = |extra: &str| {
        listener("public", "app", &[]).replacen(
            "[[listener]]\n",
            &format!("[[listener]]\n{extra}\n"),
            1,
        ) + &cluster("app", &[app.addr], "")
    };

    let keep = Proxy::start(&config(""));
    let reply = get(keep.addr(), "/a%2f..%2fb").await;
    assert_eq!(reply.json()["path"], "/a%2F..%2Fb");

    let reject = Proxy::start(&config("escaped_slashes = \"reject\""));
    let reply = get(reject.addr(), "/api%2F..%2Fsecret").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(reply.header("x-switchyard-error"), Some("bad-request"));

    let decode = Proxy::start(&config(
        "escaped_slashes = \"decode\"\nmerge_slashes = true",
    ));
    let reply = get(decode.addr(), "//api%2F..%2F/secret").await;
    assert_eq!(reply.json()["path"], "/secret", "{}", reply.text());

    let off = Proxy::start(&config("normalize_path = false"));
    let reply = get(off.addr(), "/api/../secret").await;
    assert_eq!(reply.json()["path"], "/api/../secret");
}

#[tokio::test]
async fn http11_needs_exactly_one_host() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&(listener("public", "app", &[]) + &cluster("app", &[app.addr], "")));

    let missing = raw_exchange(&proxy, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&missing), 400, "{missing}");
    let twice = raw_exchange(
        &proxy,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&twice), 400, "{twice}");
    // HTTP/1.0 may omit it; HTTP/1.1 with one is served.
    let old = raw_exchange(&proxy, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&old), 200, "{old}");
    let reply = get_with(proxy.addr(), "/", &[("host", "example.com")]).await;
    assert_eq!(reply.status, StatusCode::OK);
}

const CHUNKED_WITH_TRAILER: &[u8] = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n";

#[tokio::test]
async fn a_chunked_requests_trailers_reach_http1_and_http2_upstreams() {
    for protocol in ["http1", "http2"] {
        let upstream = Upstream::reporting_trailer("x-checksum").await;
        let proxy = Proxy::start(
            &(listener("public", "app", &[])
                + &cluster(
                    "app",
                    &[upstream.addr],
                    &format!("protocol = \"{protocol}\""),
                )),
        );
        let answer = raw_exchange(&proxy, CHUNKED_WITH_TRAILER).await;
        assert_eq!(status_of(&answer), 200, "{protocol}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("x-seen-trailer: abc123"),
            "{protocol}: {answer}"
        );
    }
}

#[tokio::test]
async fn an_http1_upstreams_trailers_reach_a_client_that_accepts_them() {
    let upstream = Upstream::raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-digest\r\nConnection: close\r\n\r\n4\r\nbody\r\n0\r\nx-digest: d1\r\n\r\n",
    )
    .await;
    let proxy =
        Proxy::start(&(listener("public", "app", &[]) + &cluster("app", &[upstream.addr], "")));
    let answer = raw_exchange(
        &proxy,
        b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\n0\r\nx-digest: d1\r\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn an_http2_grpc_upstreams_trailers_reach_an_http1_client_that_sent_te_trailers() {
    let server = grpc_testkit::TestServer::start(grpc_testkit::Behavior::default()).await;
    let proxy = Proxy::start(
        &(listener("public", "app", &[]) + &cluster("app", &[server.addr], "protocol = \"http2\"")),
    );
    // One empty EchoRequest, framed.
    let call = |te: &str| {
        format!(
            "POST /switchyard.test.Echo/Unary HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\n{te}Content-Length: 5\r\nConnection: close\r\n\r\n\0\0\0\0\0"
        )
    };
    let answer = raw_exchange(&proxy, call("TE: trailers\r\n").as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("\r\n0\r\ngrpc-status: 0\r\n"), "{answer}");

    // A client that did not ask for trailers gets none.
    let answer = raw_exchange(&proxy, call("").as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(!answer.contains("grpc-status: 0"), "{answer}");
}

/// A frame longer than SETTINGS_MAX_FRAME_SIZE (16 KiB by default) is a connection error
/// FRAME_SIZE_ERROR: the proxy answers GOAWAY with code 6 (RFC 9113 §4.2).
#[tokio::test]
async fn an_oversized_http2_frame_is_a_connection_error() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&(listener("public", "app", &[]) + &cluster("app", &[app.addr], "")));
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    // A DATA frame on stream 1 of 16385 bytes.
    let len: u32 = 16_385;
    bytes.extend_from_slice(&len.to_be_bytes()[1..]);
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
    bytes.extend(std::iter::repeat_n(0u8, len as usize));
    stream.write_all(&bytes).await.expect("write");

    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    // Find the GOAWAY frame (type 7) and its error code.
    let mut rest = &received[..];
    let mut goaway_code = None;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let kind = rest[3];
        let Some(payload) = rest.get(9..9 + len) else {
            break;
        };
        if kind == 7 && payload.len() >= 8 {
            goaway_code = Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
        rest = &rest[9 + len..];
    }
    assert_eq!(
        goaway_code,
        Some(6),
        "GOAWAY FRAME_SIZE_ERROR; got {received:?}"
    );
}

/// Reads from `stream` until `needle` has arrived (or fails after 5 s), returning all read.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert_eq!(found, Ok(true), "{needle:?} never came: {text:?}");
    text
}

/// curl sends `Expect: 100-continue` with any body over 1 KiB and waits for the 100 before
/// sending it: the proxy gives it when it starts forwarding the body.
#[tokio::test]
async fn a_client_expecting_100_continue_gets_it_and_its_body_reaches_the_upstream() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&(listener("public", "app", &[]) + &cluster("app", &[app.addr], "")));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2048\r\n\r\n")
        .await
        .unwrap();
    let interim = read_until(&mut stream, "\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{interim:?}"
    );
    stream.write_all(&[b'x'; 2048]).await.unwrap();
    let answer = read_until(&mut stream, "\"body_bytes\": 2048").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

/// Requests a client sends back to back on one connection, before any answer, are answered in
/// order.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&(listener("public", "app", &[]) + &cluster("app", &[app.addr], "")));
    let answer = raw_exchange(
        &proxy,
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let at = |path: &str| {
        answer
            .find(&format!("\"path\": \"{path}\""))
            .unwrap_or_else(|| panic!("no answer for {path}: {answer}"))
    };
    assert!(
        at("/one") < at("/two") && at("/two") < at("/three"),
        "{answer}"
    );
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
}
