//! Staying up when upstreams fail and clients misbehave: health checks, outlier ejection,
//! circuit breaking, slowloris, request smuggling, HTTP/2 rapid reset, and a chaos soak.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::{cluster, listener};
use crate::support::proxy::admin_get;
use crate::support::{Proxy, Upstream, eventually, get};

/// An upstream named `name` whose `/healthz` answers 200 while `healthy` is set, else 503.
async fn checkable(name: &'static str, healthy: Arc<AtomicBool>) -> Upstream {
    Upstream::serve(move |req| {
        let healthy = Arc::clone(&healthy);
        async move {
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            if req.uri().path() == "/healthz" && !healthy.load(Ordering::SeqCst) {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            response
                .headers_mut()
                .insert("x-echo-name", name.parse().unwrap());
            response
        }
    })
    .await
}

/// Names of the upstreams that answered `n` sequential requests.
async fn names(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(addr, "/").await.echo_name());
    }
    out
}

#[tokio::test]
async fn an_endpoint_failing_health_checks_leaves_within_two_intervals_and_comes_back() {
    let a_healthy = Arc::new(AtomicBool::new(true));
    let a = checkable("a", Arc::clone(&a_healthy)).await;
    let b = checkable("b", Arc::new(AtomicBool::new(true))).await;
    let proxy = Proxy::start(
        &(listener("public", "app", &[])
            + &cluster(
                "app",
                &[a.addr, b.addr],
                "[cluster.health_check]\npath = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nunhealthy_threshold = 2\nhealthy_threshold = 1\n",
            )),
    );
    assert!(names(proxy.addr(), 10).await.contains(&"a".to_owned()));

    a_healthy.store(false, Ordering::SeqCst);
    let flipped = Instant::now();
    let gone = eventually(Duration::from_secs(3), async || {
        names(proxy.addr(), 6).await.iter().all(|n| n == "b")
    })
    .await;
    let took = flipped.elapsed();
    assert!(gone, "a still gets traffic; log:\n{}", proxy.logs());
    // Two failed checks at a 300 ms interval, plus the time to see it.
    assert!(took < Duration::from_millis(1_200), "took {took:?}");
    let clusters = admin_get(proxy.admin, "/clusters");
    assert!(clusters.contains(r#""healthy": false"#), "{clusters}");

    a_healthy.store(true, Ordering::SeqCst);
    let back = eventually(Duration::from_secs(3), async || {
        names(proxy.addr(), 6).await.contains(&"a".to_owned())
    })
    .await;
    assert!(back, "a never came back");
}

#[tokio::test]
async fn five_consecutive_5xx_eject_an_endpoint_and_traffic_moves() {
    let bad = Upstream::echo_with(switchyard::echo::EchoOptions {
        name: "bad".into(),
        status: Some(StatusCode::SERVICE_UNAVAILABLE),
        ..Default::default()
    })
    .await;
    let good = Upstream::echo("good").await;
    let proxy = Proxy::start(
        &(listener("public", "app", &[])
            + &cluster(
                "app",
                &[bad.addr, good.addr],
                "[cluster.outlier]\nconsecutive_5xx = 5\nbase_ejection_time = \"30s\"\n",
            )),
    );

    // Round robin alternates: 10 requests give "bad" its 5 failures.
    let first = names(proxy.addr(), 10).await;
    assert_eq!(first.iter().filter(|n| *n == "bad").count(), 5, "{first:?}");

    let after = names(proxy.addr(), 20).await;
    assert!(after.iter().all(|n| n == "good"), "{after:?}");
    let clusters = admin_get(proxy.admin, "/clusters");
    assert!(clusters.contains(r#""ejected": true"#), "{clusters}");
    let metrics = admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains(r#"switchyard_outlier_ejections_total{cluster="app"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn requests_over_max_requests_get_503_at_once_while_admitted_ones_succeed() {
    let slow = Upstream::slow_echo("slow", Duration::from_millis(800)).await;
    let proxy = Proxy::start(
        &(listener("public", "app", &[])
            + &cluster(
                "app",
                &[slow.addr],
                "[cluster.circuit_breaker]\nmax_requests = 2\n",
            )),
    );
    let addr = proxy.addr();

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..6 {
        requests.spawn(async move {
            let started = Instant::now();
            let reply = get(addr, "/").await;
            (reply, started.elapsed())
        });
        // Let the first two be admitted before the rest arrive.
        tokio::task::yield_now().await;
    }
    let results = requests.join_all().await;
    let ok = results
        .iter()
        .filter(|(r, _)| r.status == StatusCode::OK)
        .count();
    let refused: Vec<_> = results
        .iter()
        .filter(|(r, _)| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(ok, 2, "two admitted");
    assert_eq!(refused.len(), 4);
    for (reply, took) in refused {
        assert_eq!(reply.header("x-switchyard-overloaded"), Some("requests"));
        assert!(
            *took < Duration::from_millis(500),
            "refused after {took:?}: not at once"
        );
    }
}

#[tokio::test]
async fn a_slowloris_does_not_stop_a_normal_request_and_is_cut_off() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(
        &(listener("public", "app", &[]).replace(
            "plugins = []",
            "plugins = []\nrequest_header_timeout = \"2s\"",
        ) + &cluster("app", &[app.addr], "")),
    );
    let addr = proxy.addr();

    // 500 connections, each dribbling a request head a byte a second.
    let closed = Arc::new(AtomicUsize::new(0));
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..500 {
        let closed = Arc::clone(&closed);
        slow.spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            let head = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ";
            for byte in head.iter().cycle().take(30) {
                if stream.write_all(&[*byte]).await.is_err() {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let mut buf = [0u8; 256];
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                    Ok(Ok(_)) | Ok(Err(_)) => {
                        // Closed by the proxy (EOF, or a 408 then EOF).
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Err(_) => {} // still open: send the next byte
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the connections pile up
    let started = Instant::now();
    let reply = get(addr, "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "normal request took {:?}",
        started.elapsed()
    );

    let cut = eventually(Duration::from_secs(8), async || {
        closed.load(Ordering::SeqCst) >= 500
    })
    .await;
    assert!(
        cut,
        "only {} of 500 slow connections were closed",
        closed.load(Ordering::SeqCst)
    );
    slow.shutdown().await;
}

/// Sends raw bytes on a new connection; returns the status line and whether the proxy closed
/// the connection afterwards.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .is_ok();
    let text = String::from_utf8_lossy(&answer).into_owned();
    (text.lines().next().unwrap_or_default().to_owned(), closed)
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_nothing_ambiguous_reaches_the_upstream() {
    // Every request the upstream gets: its Content-Length and Transfer-Encoding.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let app = Upstream::serve(move |req: http::Request<hyper::body::Incoming>| {
        let framing = (
            req.headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap_or("?").to_owned()),
            req.headers()
                .get("transfer-encoding")
                .map(|v| v.to_str().unwrap_or("?").to_owned()),
        );
        log.lock().unwrap().push(framing);
        async { Response::new(Full::new(Bytes::from_static(b"ok\n"))) }
    })
    .await;
    let proxy = Proxy::start(&(listener("public", "app", &[]) + &cluster("app", &[app.addr], "")));

    let shapes: [(&str, &[u8]); 6] = [
        (
            "conflicting Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n",
        ),
        (
            "invalid header name",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",
        ),
        (
            "a transfer coding that is not chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        ),
        (
            "space before the colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (what, bytes) in shapes {
        let (status, closed) = raw_exchange(proxy.addr(), bytes).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{what}: {status:?}");
        assert!(closed, "{what}: the connection stayed open");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "a smuggling shape reached the upstream"
    );

    // Content-Length with chunked: which one ends the body is exactly what two parsers can
    // disagree on, so the request is refused (RFC 9112 §6.1 allows it) and the connection
    // closed, so no second request can hide in the body.
    let (status, closed) = raw_exchange(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 400"), "CL+TE: {status:?}");
    assert!(closed, "CL+TE: the connection stayed open");
    assert!(
        seen.lock().unwrap().is_empty(),
        "CL+TE reached the upstream"
    );

    // A bad chunk size is only seen mid-body: the client still gets 400 and a closed connection.
    let (status, closed) = raw_exchange(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        status.starts_with("HTTP/1.1 400"),
        "bad chunk size: {status:?}"
    );
    assert!(closed, "bad chunk size: the connection stayed open");
    assert_eq!(
        get(proxy.addr(), "/").await.status,
        StatusCode::OK,
        "still serving"
    );
}

#[tokio::test]
async fn an_http2_rapid_reset_burst_is_contained() {
    let slow = Upstream::slow_echo("slow", Duration::from_secs(1)).await;
    let proxy = Proxy::start(&(listener("public", "app", &[]) + &cluster("app", &[slow.addr], "")));

    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client;
    let mut sent = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let Ok(ready) = client.ready().await else {
            break;
        };
        client = ready;
        let request = http::Request::get(format!("http://{}/", proxy.addr()))
            .body(())
            .unwrap();
        match client.send_request(request, true) {
            // Dropping the response future resets the stream at once.
            Ok((response, _)) => drop(response),
            Err(_) => break,
        }
        sent += 1;
        if sent % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .is_ok();
    assert!(
        closed,
        "the connection survived {sent} resets in {:?}",
        started.elapsed()
    );
    assert!(
        sent < 20_000,
        "{sent} streams before the connection was closed"
    );
    assert_eq!(
        get(proxy.addr(), "/").await.status,
        StatusCode::OK,
        "proxy healthy"
    );
    // Either hyper's h2 limit on reset streams or the proxy's own cancel counter closed it.
    let logged = eventually(Duration::from_secs(5), async || {
        let logs = proxy.logs();
        logs.contains("rapid reset") || logs.contains("reached limit")
    })
    .await;
    assert!(logged, "{}", proxy.logs());
}

#[tokio::test]
async fn a_chaos_soak_answers_every_request_without_leaking() {
    let ok = Upstream::echo("ok").await;
    let failing = Upstream::echo_with(switchyard::echo::EchoOptions {
        name: "failing".into(),
        status: Some(StatusCode::SERVICE_UNAVAILABLE),
        ..Default::default()
    })
    .await;
    let hanging = Upstream::slow_echo("hanging", Duration::from_secs(30)).await;
    let resetting = Upstream::raw(b"").await;
    let proxy = Proxy::start(
        &(listener("public", "app", &[])
            + &cluster(
                "app",
                &[ok.addr, failing.addr, hanging.addr, resetting.addr],
                "timeout = \"300ms\"\nlb = \"random\"\n",
            )),
    );
    let addr = proxy.addr();

    let answered = Arc::new(AtomicUsize::new(0));
    let unanswered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (answered, unanswered, stop) = (
            Arc::clone(&answered),
            Arc::clone(&unanswered),
            Arc::clone(&stop),
        );
        clients.spawn(async move {
            let client = crate::support::client::H2Client::connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                match client.try_get_with("/", &[]).await {
                    Ok(_) => answered.fetch_add(1, Ordering::Relaxed),
                    Err(_) => unanswered.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    let soak = Duration::from_secs(60);
    let started = Instant::now();
    tokio::time::sleep(soak / 3).await; // let allocations reach their working set
    let rss_early = proxy.rss_kib();
    tokio::time::sleep(soak - started.elapsed()).await; // the rest of the 60 s soak
    let rss_late = proxy.rss_kib();
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}

    let (answered, unanswered) = (
        answered.load(Ordering::Relaxed),
        unanswered.load(Ordering::Relaxed),
    );
    eprintln!(
        "soak: {answered} requests answered, RSS {rss_early} KiB at 20 s, {rss_late} KiB at 60 s"
    );
    assert_eq!(
        unanswered, 0,
        "{unanswered} requests got no answer ({answered} did)"
    );
    assert!(answered > 1_000, "only {answered} requests in 60 s");
    assert!(
        rss_late < rss_early + 20 * 1024,
        "RSS grew from {rss_early} KiB to {rss_late} KiB during the soak"
    );
    assert!(!proxy.logs().contains("panicked"), "{}", proxy.logs());
    assert_eq!(admin_get(proxy.admin, "/live"), "live\n", "still alive");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(
        &(listener("public", "app", &[]).replace(
            "plugins = []",
            "plugins = []\nrequest_header_timeout = \"1s\"",
        ) + &cluster("app", &[app.addr], "")),
    );
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let idle = Instant::now();
    let eof = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "an idle connection stayed open");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
}
