//! What clients get when the proxy cannot forward, and when their request is malformed.

use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::{cluster_raw, listener};
use crate::support::upstream::closed_port;
use crate::support::{Proxy, Upstream, get};

fn config(endpoints_toml: &str, extra: &str) -> String {
    listener("public", "app", &[]) + &cluster_raw("app", endpoints_toml, extra)
}

#[tokio::test]
async fn connect_failure_is_502_naming_the_cluster() {
    let nobody = closed_port().await;
    let proxy = Proxy::start(&config(&format!("\"{nobody}\""), ""));

    let reply = get(proxy.addr(), "/").await;

    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("x-switchyard-error"), Some("connect-failure"));
    assert!(reply.text().contains("cluster \"app\""), "{}", reply.text());
}

#[tokio::test]
async fn upstream_reset_before_answering_is_502() {
    let resets = Upstream::raw(b"").await;
    let proxy = Proxy::start(&config(&format!("\"{}\"", resets.addr), ""));

    let reply = get(proxy.addr(), "/").await;

    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("x-switchyard-error"), Some("upstream-reset"));
}

#[tokio::test]
async fn no_endpoint_is_503() {
    // A name that never resolves leaves the cluster with no endpoints.
    let proxy = Proxy::start(&config("\"does-not-exist.invalid:80\"", ""));

    let reply = get(proxy.addr(), "/").await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("x-switchyard-error"), Some("no-endpoint"));
    assert!(reply.text().contains("cluster \"app\""), "{}", reply.text());
}

#[tokio::test]
async fn slow_upstream_is_504_after_the_cluster_timeout() {
    let slow = Upstream::slow_echo("slow", Duration::from_secs(5)).await;
    let proxy = Proxy::start(&config(
        &format!("\"{}\"", slow.addr),
        r#"timeout = "200ms""#,
    ));

    let started = Instant::now();
    let reply = get(proxy.addr(), "/").await;

    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.header("x-switchyard-error"), Some("upstream-timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn listener_without_a_route_is_404() {
    let proxy = Proxy::start(
        r#"
[[listener]]
name = "nowhere"
listen = "127.0.0.1:0"
"#,
    );

    let reply = get(proxy.addr(), "/").await;

    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.header("x-switchyard-error"), Some("no-route"));
}

/// Writes raw bytes to the proxy and returns the status code of its answer.
async fn raw_status(proxy: &Proxy, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("the proxy answers malformed requests promptly")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&config(&format!("\"{}\"", app.addr), ""));

    for bad in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n"[..],
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ] {
        assert_eq!(
            raw_status(&proxy, bad).await,
            400,
            "for {:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        get(proxy.addr(), "/").await.status,
        StatusCode::OK,
        "still serving"
    );
    // Refused before they became requests, they are counted as errors of the listener.
    let admin = proxy.admin;
    let counted = crate::support::eventually(Duration::from_secs(5), async || {
        crate::support::prometheus_value(
            &crate::support::proxy::admin_get(admin, "/metrics"),
            r#"switchyard_errors_total{listener="public",cluster="",kind="malformed"}"#,
        ) == Some(3.0)
    })
    .await;
    assert!(
        counted,
        "{}",
        crate::support::proxy::admin_get(admin, "/metrics")
    );
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&config(&format!("\"{}\"", app.addr), ""));

    let huge = "a".repeat(100 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nx-huge: {huge}\r\n\r\n");

    assert_eq!(raw_status(&proxy, request.as_bytes()).await, 431);
}
