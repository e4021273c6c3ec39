//! gRPC through the proxy with a real Rust gRPC stack (tonic client and server), on the shipped
//! example config/examples/grpc.toml: retries of UNAVAILABLE with bodies kept for replay,
//! fault aborts as gRPC statuses, `grpc-timeout` deadlines, gRPC health checks and gRPC-Web.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use grpc_testkit::tonic::Request;
use grpc_testkit::{Behavior, Code, EchoClient, EchoReply, EchoRequest, TestServer, client};
use http::StatusCode;
use http_body_util::Full;
use prost::Message as _;

use crate::support::proxy::{admin_get, example_config, scratch_dir};
use crate::support::{Proxy, Upstream, eventually, h2c_send, prometheus_value, send};

struct Setup {
    proxy: Proxy,
    access_log: PathBuf,
}

/// The gRPC example in front of `endpoints` (the first replaces the example's), with `edit`
/// applied to the config text.
fn grpc_proxy(endpoints: &[std::net::SocketAddr], edit: impl FnOnce(String) -> String) -> Setup {
    let access_log = scratch_dir().join("access.log");
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let config = example_config(
        "grpc.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            ("\"127.0.0.1:50051\"", endpoints.join(", ")),
            (
                "/tmp/switchyard-grpc-access.log",
                access_log.display().to_string(),
            ),
        ],
    );
    Setup {
        proxy: Proxy::start(&edit(config)),
        access_log,
    }
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        count: 0,
    }
}

/// A test server whose first `calls` fail with UNAVAILABLE, the example proxy in front of it,
/// and a tonic client of the proxy.
async fn failing_first(calls: u32) -> (TestServer, Setup, EchoClient<grpc_testkit::Channel>) {
    let server = TestServer::start(Behavior {
        fail_first: calls,
        ..Behavior::default()
    })
    .await;
    let setup = grpc_proxy(&[server.addr], |c| c);
    let client = client(setup.proxy.addr()).await;
    (server, setup, client)
}

/// `n` requests of 1 KiB each, for client streams.
fn kibibyte_messages(n: usize) -> Vec<EchoRequest> {
    let chunk = "x".repeat(1024);
    (0..n).map(|_| request(&chunk)).collect()
}

fn metrics(proxy: &Proxy) -> String {
    admin_get(proxy.admin, "/metrics")
}

#[tokio::test]
async fn unavailable_is_retried_until_the_call_succeeds() {
    let (server, setup, mut client) = failing_first(2).await;

    let reply = client
        .unary(request("hello"))
        .await
        .unwrap_or_else(|e| panic!("the call failed: {e}\n{}", setup.proxy.logs()));
    assert_eq!(reply.into_inner().message, "hello");
    assert_eq!(server.calls(), 3, "two UNAVAILABLE answers, then OK");

    let counted = eventually(Duration::from_secs(5), async || {
        metrics(&setup.proxy).lines().any(|l| {
            l.starts_with("switchyard_requests_total{")
                && l.contains("grpc_status=\"0\"")
                && l.ends_with(" 1")
        })
    })
    .await;
    assert!(
        counted,
        "gRPC success counted as status 0:\n{}",
        metrics(&setup.proxy)
    );
}

#[tokio::test]
async fn a_client_stream_under_the_replay_cap_is_retried_whole() {
    let (server, setup, mut client) = failing_first(2).await;

    // 20 messages of 1 KiB: no Content-Length, under the 64 KiB cap.
    let reply = client
        .client_stream(grpc_testkit::stream_of(kibibyte_messages(20)))
        .await
        .unwrap_or_else(|e| panic!("the call failed: {e}\n{}", setup.proxy.logs()))
        .into_inner();
    assert_eq!(reply.received, 20, "the replay carried every message");
    assert_eq!(reply.message.len(), 20 * 1024);
    assert_eq!(server.calls(), 3);
}

#[tokio::test]
async fn a_client_stream_over_the_replay_cap_is_not_retried_and_says_why() {
    let (server, setup, mut client) = failing_first(1).await;

    // 100 KiB streamed: over the cap, so the retry the plugin asks for cannot be made.
    let status = client
        .client_stream(grpc_testkit::stream_of(kibibyte_messages(100)))
        .await
        .expect_err("the one try failed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(server.calls(), 1, "not retried");

    let series = r#"switchyard_retries_refused_total{cluster="echo",reason="body-too-large"}"#;
    let counted = eventually(Duration::from_secs(5), async || {
        prometheus_value(&metrics(&setup.proxy), series) == Some(1.0)
    })
    .await;
    assert!(counted, "{}", metrics(&setup.proxy));
    let logged = eventually(Duration::from_secs(5), async || {
        std::fs::read_to_string(&setup.access_log)
            .is_ok_and(|log| log.contains(r#""retry_refused":"body-too-large""#))
    })
    .await;
    assert!(
        logged,
        "{}",
        std::fs::read_to_string(&setup.access_log).unwrap_or_default()
    );
    let log = std::fs::read_to_string(&setup.access_log).unwrap_or_default();
    assert!(log.contains(r#""grpc_status":14"#), "{log}");
}

#[tokio::test]
async fn a_fault_abort_reaches_the_client_as_its_grpc_status() {
    let server = TestServer::start(Behavior::default()).await;
    let setup = grpc_proxy(&[server.addr], |c| c);
    let mut client = client(setup.proxy.addr()).await;

    let mut call = Request::new(request("hello"));
    call.metadata_mut()
        .insert("x-fault", "quota".parse().expect("ascii"));
    let status = client.unary(call).await.expect_err("aborted");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "quota exceeded");
    assert_eq!(server.calls(), 0);

    // The abort is one HEADERS frame that ends the stream (a valid trailers-only response).
    let tcp = tokio::net::TcpStream::connect(setup.proxy.addr())
        .await
        .expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let abort = http::Request::post(format!(
        "http://{}/switchyard.test.Echo/Unary",
        setup.proxy.addr()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("x-fault", "quota")
    .body(())
    .expect("request");
    let (response, _) = h2.send_request(abort, true).expect("send");
    let response = response.await.expect("response");
    assert_eq!(response.headers()["grpc-status"], "8");
    assert!(
        response.body().is_end_stream(),
        "END_STREAM on the HEADERS frame"
    );
}

#[tokio::test]
async fn grpc_timeout_bounds_the_call_and_the_upstream_sees_the_rest_of_it() {
    let server = TestServer::start(Behavior {
        delay: Duration::from_secs(1),
        ..Behavior::default()
    })
    .await;
    let setup = grpc_proxy(&[server.addr], |c| c);

    // The call by hand: a tonic client would arm its own timer for the same deadline and cancel
    // the call itself, hiding what the proxy does.
    let started = Instant::now();
    let reply = h2c_send(
        setup.proxy.addr(),
        grpc_call("Unary", &request("slow"), "100m"),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "gRPC errors are HTTP 200");
    assert_eq!(
        reply.header("grpc-status"),
        Some("4"),
        "DEADLINE_EXCEEDED: {:?}",
        reply.headers
    );
    assert!(took < Duration::from_millis(600), "took {took:?}");

    let seen = server
        .last_timeout()
        .expect("the upstream got a grpc-timeout");
    let seen = parse_grpc_timeout(&seen);
    assert!(
        seen > Duration::ZERO && seen <= Duration::from_millis(100),
        "the upstream saw {seen:?} left"
    );
    let cancelled = eventually(Duration::from_secs(5), async || server.cancelled() == 1).await;
    assert!(cancelled, "the upstream's handler was cancelled");
}

/// A unary gRPC call to `method` of Echo with a `grpc-timeout`, as raw HTTP/2.
fn grpc_call(method: &str, message: &EchoRequest, timeout: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://grpc.example/switchyard.test.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(framed(message)))
        .expect("request")
}

#[tokio::test]
async fn the_proxy_enforces_grpc_timeout_against_an_upstream_that_ignores_it() {
    // A gRPC-speaking upstream that takes a second whatever the deadline.
    let upstream = Upstream::serve(|_req| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut response = http::Response::new(Full::new(Bytes::new()));
        response
            .headers_mut()
            .insert("content-type", "application/grpc".parse().expect("value"));
        response
            .headers_mut()
            .insert("grpc-status", "0".parse().expect("value"));
        response
    })
    .await;
    let setup = grpc_proxy(&[upstream.addr], |c| c);

    let started = Instant::now();
    let request = http::Request::post(format!(
        "http://{}/switchyard.test.Echo/Unary",
        setup.proxy.addr()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", "100m")
    .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
    .expect("request");
    let reply = h2c_send(setup.proxy.addr(), request).await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "gRPC errors are HTTP 200");
    assert_eq!(reply.header("grpc-status"), Some("4"), "DEADLINE_EXCEEDED");
    assert_eq!(reply.header("x-switchyard-error"), Some("upstream-timeout"));
    assert!(took < Duration::from_millis(600), "took {took:?}");
}

#[tokio::test]
async fn grpc_health_checks_take_a_not_serving_endpoint_out() {
    let healthy = TestServer::start(Behavior::default()).await;
    let sick = TestServer::start(Behavior::default()).await;
    // Checks every 100 ms; two failures in a row take an endpoint out, so one slow check of the
    // healthy endpoint on a busy machine does not.
    let setup = grpc_proxy(&[healthy.addr, sick.addr], |c| {
        c.replace(
            "interval = \"1s\"",
            "interval = \"100ms\"\ntimeout = \"2s\"",
        )
        .replace("unhealthy_threshold = 1", "unhealthy_threshold = 2")
    });
    sick.set_serving(false).await;

    let out = eventually(Duration::from_secs(10), async || {
        let clusters = admin_get(setup.proxy.admin, "/clusters");
        endpoint_healthy(&clusters, sick.addr) == Some(false)
    })
    .await;
    assert!(out, "{}", admin_get(setup.proxy.admin, "/clusters"));

    let mut client = client(setup.proxy.addr()).await;
    for _ in 0..20 {
        client.unary(request("hi")).await.expect("served");
    }
    assert_eq!(
        sick.calls(),
        0,
        "the NOT_SERVING endpoint got no calls: {}",
        admin_get(setup.proxy.admin, "/clusters")
    );
    assert_eq!(healthy.calls(), 20);

    sick.set_serving(true).await;
    let back = eventually(Duration::from_secs(10), async || {
        endpoint_healthy(&admin_get(setup.proxy.admin, "/clusters"), sick.addr) == Some(true)
    })
    .await;
    assert!(back, "{}", admin_get(setup.proxy.admin, "/clusters"));
}

/// Whether `/clusters` shows `addr` as healthy.
fn endpoint_healthy(clusters: &str, addr: std::net::SocketAddr) -> Option<bool> {
    let json: serde_json::Value = serde_json::from_str(clusters).ok()?;
    let endpoint = json["echo"]["endpoint_health"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == addr.to_string())?
        .clone();
    endpoint["healthy"].as_bool()
}

#[tokio::test]
async fn grpc_web_unary_and_server_streaming_calls_reach_a_grpc_server() {
    let server = TestServer::start(Behavior::default()).await;
    let setup = grpc_proxy(&[server.addr], |c| c);

    // Binary gRPC-Web over HTTP/1.1, as a browser sends it.
    let reply = send(
        setup.proxy.addr(),
        grpc_web_request("Unary", "application/grpc-web+proto", &request("web")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/grpc-web+proto")
    );
    let (messages, trailers) = grpc_web_frames(reply.body.clone());
    assert_eq!(messages.len(), 1);
    assert_eq!(
        EchoReply::decode(messages[0].clone())
            .expect("an EchoReply")
            .message,
        "web"
    );
    assert!(trailers.contains("grpc-status: 0"), "{trailers}");

    // Text (base64) gRPC-Web, server streaming.
    let streaming = EchoRequest {
        message: "tick".into(),
        count: 3,
    };
    let reply = send(
        setup.proxy.addr(),
        grpc_web_request("ServerStream", "application/grpc-web-text", &streaming),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/grpc-web-text")
    );
    let decoded = decode_base64_chunks(&reply.body);
    let (messages, trailers) = grpc_web_frames(decoded);
    let texts: Vec<String> = messages
        .into_iter()
        .map(|m| EchoReply::decode(m).expect("an EchoReply").message)
        .collect();
    assert_eq!(texts, ["tick 0", "tick 1", "tick 2"]);
    assert!(trailers.contains("grpc-status: 0"), "{trailers}");
}

/// A gRPC-Web POST of one message to `method` of the Echo service.
fn grpc_web_request(
    method: &str,
    content_type: &str,
    message: &EchoRequest,
) -> http::Request<Full<Bytes>> {
    let framed = framed(message);
    let body = if content_type.contains("-text") {
        use base64::Engine as _;
        Bytes::from(base64::engine::general_purpose::STANDARD.encode(&framed))
    } else {
        framed
    };
    http::Request::post(format!("/switchyard.test.Echo/{method}"))
        .header("host", "grpc.example")
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(Full::new(body))
        .expect("request")
}

/// One uncompressed, length-prefixed gRPC message.
fn framed(message: &EchoRequest) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + encoded.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(encoded.len()).expect("small"));
    framed.put_slice(&encoded);
    framed.freeze()
}

/// Splits a gRPC-Web body into its messages and its trailer block.
fn grpc_web_frames(mut body: Bytes) -> (Vec<Bytes>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let frame = body.split_to(len.min(body.len()));
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(&frame));
        } else {
            messages.push(frame);
        }
    }
    (messages, trailers)
}

/// Base64 that may come as several padded chunks, one after another.
fn decode_base64_chunks(text: &[u8]) -> Bytes {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let data = rest.iter().position(|b| *b == b'=').unwrap_or(rest.len());
        let padding = rest[data..].iter().take_while(|b| **b == b'=').count();
        let (chunk, tail) = rest.split_at(data + padding);
        base64::engine::general_purpose::STANDARD
            .decode_vec(chunk, &mut out)
            .expect("base64");
        rest = tail;
    }
    Bytes::from(out)
}

/// A `grpc-timeout` value as a duration.
fn parse_grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().expect("digits");
    match unit {
        "n" => Duration::from_nanos(n),
        "u" => Duration::from_micros(n),
        "m" => Duration::from_millis(n),
        "S" => Duration::from_secs(n),
        other => panic!("unit {other}"),
    }
}
