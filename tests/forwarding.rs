//! Proxy semantics over HTTP/1.1 and h2c: what reaches the upstream and what comes back.

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Empty;

use crate::support::config::proxy_to;
use crate::support::{Proxy, Upstream, get, get_with, h2c_send};

fn one_cluster(upstream: &Upstream, extra: &str) -> String {
    proxy_to(upstream.addr, extra)
}

#[tokio::test]
async fn http1_request_reaches_the_upstream_with_forwarding_headers() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&one_cluster(&app, ""));

    let reply = get(proxy.addr(), "/hello?x=1").await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["name"], "app");
    assert_eq!(seen["path"], "/hello");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(
        seen["headers"]["host"], "example.test",
        "Host must be preserved"
    );
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["via"], "1.1 switchyard");
    let id = seen["headers"]["x-request-id"]
        .as_str()
        .expect("a request id was generated");
    assert_eq!(id.len(), 36, "UUID-shaped request id, got {id}");
    assert_eq!(
        reply.header("x-request-id"),
        Some(id),
        "the client sees the same id"
    );
    assert_eq!(reply.header("via"), Some("1.1 switchyard"));
}

#[tokio::test]
async fn client_request_id_and_forwarded_for_are_kept_and_extended() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&one_cluster(&app, ""));

    let reply = get_with(
        proxy.addr(),
        "/",
        &[
            ("x-request-id", "abc-123"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
    )
    .await;

    let seen = reply.json();
    assert_eq!(seen["headers"]["x-request-id"], "abc-123");
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(reply.header("x-request-id"), Some("abc-123"));
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_proxied_to_an_http1_upstream() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&one_cluster(&app, ""));

    let req = Request::get("http://example.test/over-h2")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let reply = h2c_send(proxy.addr(), req).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.version, Version::HTTP_2);
    let seen = reply.json();
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["path"], "/over-h2");
    assert_eq!(
        seen["headers"]["host"], "example.test",
        ":authority becomes Host"
    );
    assert_eq!(seen["headers"]["via"], "2 switchyard");
}

#[tokio::test]
async fn http2_upstreams_get_http2() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&one_cluster(&app, r#"protocol = "http2""#));

    let reply = get(proxy.addr(), "/to-h2").await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["path"], "/to-h2");
    // The proxy's own fields (kept beside the map for HTTP/1.1) reach an HTTP/2 upstream too.
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["via"], "1.1 switchyard");
    assert_eq!(
        seen["headers"]["x-request-id"].as_str().map(str::len),
        Some(36)
    );
    assert_eq!(
        reply.version,
        Version::HTTP_11,
        "the client keeps its own protocol"
    );
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_stripped() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&one_cluster(&app, ""));

    let reply = get_with(
        proxy.addr(),
        "/",
        &[
            ("connection", "keep-alive, x-private-hop"),
            ("x-private-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;

    let headers = &reply.json()["headers"];
    for gone in [
        "connection",
        "x-private-hop",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the upstream: {headers}"
        );
    }
    assert_eq!(headers["x-end-to-end"], "kept");
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let app = Upstream::raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: x-upstream-hop\r\n\
          x-upstream-hop: secret\r\nKeep-Alive: timeout=5\r\nx-end-to-end: kept\r\n\r\nok\n",
    )
    .await;
    let proxy = Proxy::start(&one_cluster(&app, ""));

    let reply = get(proxy.addr(), "/").await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok\n");
    assert!(
        reply.header("x-upstream-hop").is_none(),
        "{:?}",
        reply.headers
    );
    assert!(reply.header("keep-alive").is_none(), "{:?}", reply.headers);
    assert_eq!(reply.header("x-end-to-end"), Some("kept"));
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&one_cluster(&app, ""));

    let mut peers = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let seen = get(proxy.addr(), "/").await.json();
        peers.insert(seen["peer"].as_str().expect("peer").to_owned());
    }

    // A connection goes back to the pool just after its response's last byte, so on a busy
    // machine the next request can now and then beat it and open a second one; without reuse
    // there would be 20.
    assert!(
        peers.len() <= 3,
        "requests did not reuse upstream connections: {} for 20 requests: {peers:?}",
        peers.len()
    );
}

#[tokio::test]
async fn a_kept_connection_the_upstream_closed_while_idle_costs_no_request() {
    // One answer per connection, then the upstream closes it without saying so (no
    // `connection: close`): every kept connection goes stale while idle.
    let (upstream, accepted) =
        Upstream::raw_counting(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").await;
    let proxy = Proxy::start(&proxy_to(upstream.addr, ""));
    // Each request finds the connection the last one kept, closed by now or closing as it is
    // reused: the proxy notices the close before sending, or sends a bodiless GET again on a new
    // connection when the close is all that comes back.
    for i in 0..30 {
        let reply = get(proxy.addr(), "/again").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i}: {}",
            reply.text()
        );
        assert_eq!(reply.text(), "ok\n");
    }
    assert!(accepted.load(std::sync::atomic::Ordering::Relaxed) >= 30);
}

/// The head a client gets for `request` (sent as it is, asking to close) on `listener`: the
/// status line, then each field as a `name: value` line with the name lowercased; and the body.
async fn head_and_body(listener: std::net::SocketAddr, request: &[u8]) -> (Vec<String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(listener)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the proxy closes after the answer")
    .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole head");
    let mut lines = head.split("\r\n");
    let mut head = vec![lines.next().unwrap_or_default().to_owned()];
    head.extend(lines.map(|line| match line.split_once(':') {
        Some((name, value)) => format!("{}: {}", name.to_ascii_lowercase(), value.trim()),
        None => line.to_owned(),
    }));
    (head, body.to_owned())
}

/// A proxy with two listeners in front of `app`: `passed` without plugins (the upstream's
/// response fields pass as they came) and `mapped`, whose plugin's response hook makes the proxy
/// build the response's header map.
fn passed_and_mapped(app: &Upstream) -> Proxy {
    let plugin = format!(
        "[[plugin]]\nname = \"add\"\npath = \"{}\"\n",
        crate::support::proxy::plugin_path("add-header").display()
    );
    Proxy::start(
        &(crate::support::config::listener("passed", "app", &[])
            + &crate::support::config::listener("mapped", "app", &["add"])
            + &crate::support::config::cluster("app", &[app.addr], "")
            + &plugin),
    )
}

/// [`head_and_body`] for `request` on both listeners of [`passed_and_mapped`]: passed, then
/// mapped less the header its plugin adds.
async fn both_listeners(
    proxy: &Proxy,
    request: &[u8],
) -> ((Vec<String>, String), (Vec<String>, String)) {
    let passed = head_and_body(proxy.listener("passed"), request).await;
    let (mut mapped, mapped_body) = head_and_body(proxy.listener("mapped"), request).await;
    mapped.retain(|line| line != "x-filtered-by: add-header");
    (passed, (mapped, mapped_body))
}

/// A head's fields by name, each name's values in order: what the head means, whatever order
/// its names come in and however a list is split over lines (`via` here).
fn by_name(head: &[String]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut fields = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (name, value) in head.iter().skip(1).filter_map(|l| l.split_once(": ")) {
        let values = fields.entry(name.to_owned()).or_default();
        if name == "via" {
            values.extend(value.split(", ").map(str::to_owned));
        } else {
            values.push(value.to_owned());
        }
    }
    fields
}

/// Without plugins that read responses, an upstream's fields go to the client as they came,
/// without a header map in between; what the client gets means what it gets when a plugin's
/// response hook makes the proxy build the map: the same fields (in the upstream's order),
/// hop-by-hop fields dropped, the upstream's own `x-request-id` and `date` kept (not doubled),
/// `via` extended (by a line of its own), and the length framed.
#[tokio::test]
async fn response_fields_passed_as_they_came_read_as_those_built_into_a_map() {
    let app = Upstream::raw(
        b"HTTP/1.1 200 OK\r\nServer: origin/1\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\
          X-Empty:\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\n\
          Proxy-Connection: x\r\nx-request-id: from-upstream\r\nVia: 1.1 edge\r\n\
          Date: Sun, 06 Dec 2026 18:00:00 GMT\r\nContent-Type: text/plain\r\n\
          Content-Length: 3\r\n\r\nok\n",
    )
    .await;
    let proxy = passed_and_mapped(&app);
    let get = b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";

    let ((passed, passed_body), (mapped, mapped_body)) = both_listeners(&proxy, get).await;
    assert_eq!(
        by_name(&passed),
        by_name(&mapped),
        "{passed:#?} against {mapped:#?}"
    );
    // The upstream's order stays (a map reorders fields as it removes some).
    assert!(
        passed.starts_with(&[
            "HTTP/1.1 200 OK".into(),
            "server: origin/1".into(),
            "set-cookie: a=1".into(),
            "set-cookie: b=2".into(),
            "x-empty: ".into()
        ]),
        "{passed:#?}"
    );
    assert_eq!(
        (passed_body.as_str(), mapped_body.as_str()),
        ("ok\n", "ok\n")
    );
    let has = |line: &str| passed.iter().filter(|l| *l == line).count();
    for kept in [
        "server: origin/1",
        "set-cookie: a=1",
        "set-cookie: b=2",
        "x-empty: ",
        "x-request-id: from-upstream",
        "date: Sun, 06 Dec 2026 18:00:00 GMT",
        "content-length: 3",
        "connection: close",
    ] {
        assert_eq!(has(kept), 1, "{kept:?} once in {passed:#?}");
    }
    for dropped in ["keep-alive", "upgrade", "proxy-connection"] {
        assert!(
            !passed.iter().any(|l| l.starts_with(&format!("{dropped}:"))),
            "{dropped} in {passed:#?}"
        );
    }
    assert_eq!(by_name(&passed)["via"][0], "1.1 edge", "{passed:#?}");
    // Passed, the proxy's hop is a line of its own; the map joins it to the upstream's.
    let via_lines = |head: &[String]| head.iter().filter(|l| l.starts_with("via: ")).count();
    assert_eq!((via_lines(&passed), via_lines(&mapped)), (2, 1));

    // A HEAD's answer says the length the body would have had.
    let head = b"HEAD / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
    let (passed, body) = head_and_body(proxy.listener("passed"), head).await;
    assert!(
        passed.contains(&"content-length: 3".to_owned()),
        "{passed:#?}"
    );
    assert_eq!(body, "");
}

/// A chunked response to an HTTP/1.0 client (which cannot take chunks: the body is delimited by
/// the close) and to an HTTP/1.1 one reads the same passed as through the map.
#[tokio::test]
async fn a_passed_chunked_response_is_framed_for_each_client_as_through_the_map() {
    let app = Upstream::raw(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
          X-Kept: 1\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await;
    let proxy = passed_and_mapped(&app);
    for request in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"[..],
    ] {
        let ((passed, passed_body), (mapped, mapped_body)) = both_listeners(&proxy, request).await;
        let case = String::from_utf8_lossy(request);
        assert_eq!(passed[0], mapped[0], "{case}");
        let (mut passed_fields, mut mapped_fields) = (by_name(&passed), by_name(&mapped));
        // Each has its own request id; the rest is the same.
        passed_fields.remove("x-request-id");
        mapped_fields.remove("x-request-id");
        passed_fields.remove("date");
        mapped_fields.remove("date");
        assert_eq!(passed_fields, mapped_fields, "{case}: {passed:#?}");
        assert_eq!(passed_body, mapped_body, "{case}");
        assert!(passed_fields.contains_key("x-kept"), "{case}: {passed:#?}");
        let chunked = passed_fields.get("transfer-encoding") == Some(&vec!["chunked".to_owned()]);
        if request.ends_with(b"HTTP/1.0\r\n\r\n") {
            assert!(
                !chunked && passed_body == "abcde",
                "{case}: {passed:#?} {passed_body:?}"
            );
        } else {
            assert!(
                chunked && passed_body.contains("abc"),
                "{case}: {passed:#?}"
            );
        }
    }
}
