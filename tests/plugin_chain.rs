//! Plugin chains through the real proxy with real .wasm plugins built from plugins/ and
//! tests/plugins/: order, short-circuit, routing, callouts, retries, the hello plugin.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::config::{cluster, listener};
use crate::support::proxy::{admin_get, plugin_path};
use crate::support::upstream::closed_port;
use crate::support::{Proxy, Upstream, get, get_with};

/// A `[[plugin]]` entry for the testkit plugin with an inline config table. These tests are not
/// about deadlines, so the CPU limit is generous: a loaded CI machine must not make them flaky.
fn testkit(name: &str, config: &str) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\nlimits = {{ time = \"1s\" }}\nconfig = {{ {config} }}\n",
        plugin_path("testkit").display()
    )
}

/// A `[[plugin]]` entry for the caller plugin (callouts from hooks and ticks).
fn caller(name: &str, config: &str) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\nlimits = {{ time = \"1s\" }}\nconfig = {{ {config} }}\n",
        plugin_path("caller").display()
    )
}

#[tokio::test]
async fn three_plugins_run_in_order_and_in_reverse_on_the_way_back() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(
        &[
            listener("public", "app", &["a", "b", "c"]),
            cluster("app", &[app.addr.to_string()], ""),
            testkit("a", r#"tag = "a""#),
            testkit("b", r#"tag = "b""#),
            testkit("c", r#"tag = "c""#),
        ]
        .join("\n"),
    );

    let reply = get(proxy.addr(), "/").await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = &reply.json()["headers"];
    assert_eq!(seen["x-chain"], serde_json::json!(["a", "b", "c"]));
    // Plugins that change other headers leave the proxy's own fields beside the map; they are
    // still sent, once each.
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert_eq!(seen["via"], "1.1 switchyard", "{seen}");
    assert_eq!(
        seen["x-request-id"].as_str().map(str::len),
        Some(36),
        "{seen}"
    );
    let back = reply.header_values("x-chain-response");
    assert_eq!(back, vec!["c", "b", "a"]);
}

#[tokio::test]
async fn a_plugin_reads_its_own_changes_back_in_the_order_it_made_them() {
    // The SDK sends a hook's header, context and metric changes to the proxy in one call and
    // keeps the path it read for the rest of the hook; what the hook reads in between must still
    // see every change made before the read, on every request an instance serves.
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(
        &[
            listener("public", "app", &["mine", "next"]),
            cluster("app", &[app.addr.to_string()], ""),
            testkit("mine", "read_back = true"),
            testkit("next", r#"tag = "next""#),
        ]
        .join("\n"),
    );

    for round in 0..4 {
        let reply = get_with(proxy.addr(), "/here", &[("x-user", "alice")]).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["path"], "/moved/here", "{}", reply.text());
        let headers = &reply.json()["headers"];
        assert_eq!(
            headers["x-read-back"],
            "alice>changed|example.test>moved.example|set|set+added|none|kept|invalid header name \"bad name\"|/moved/here",
            "request {round}: {headers}"
        );
        assert_eq!(
            headers["x-forwarding-read"], "127.0.0.1|1.1 switchyard|http|4 listed|same id true",
            "request {round}: {headers}"
        );
        // Replaced by the plugin, not sent twice.
        assert_eq!(headers["x-forwarded-proto"], "plugin", "{headers}");
        assert_eq!(headers["x-user"], "changed", "{headers}");
        assert_eq!(headers["x-mine"], serde_json::Value::Null, "{headers}");
        assert_eq!(headers["x-chain"], "next");
    }
}

#[tokio::test]
async fn a_route_named_by_the_routing_plugin_skips_and_adds_plugins() {
    let app = Upstream::echo("app").await;
    let routing = format!(
        "[[plugin]]\nname = \"routing\"\npath = \"{}\"\n\
         [[plugin.config.routes]]\nname = \"public-api\"\nmatch = {{ path_prefix = \"/public/\" }}\n\
         [[plugin.config.routes]]\nname = \"internal\"\nmatch = {{ path_prefix = \"/\" }}\n",
        plugin_path("routing").display()
    );
    let proxy = Proxy::start(
        &[
            listener("public", "app", &["routing", "a", "b"]),
            "[[listener.route]]\nname = \"public-api\"\nskip = [\"b\"]\nadd = [\"c\"]\n".to_owned(),
            cluster("app", &[app.addr.to_string()], ""),
            routing,
            testkit("a", r#"tag = "a""#),
            testkit("b", r#"tag = "b""#),
            testkit("c", r#"tag = "c""#),
        ]
        .join("\n"),
    );

    // The route's plan: b skipped, c added after the listener's chain; back in reverse.
    let reply = get(proxy.addr(), "/public/items").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json()["headers"]["x-chain"],
        serde_json::json!(["a", "c"])
    );
    assert_eq!(reply.header_values("x-chain-response"), vec!["c", "a"]);

    // Another route (no plan for it): the listener's chain.
    let reply = get(proxy.addr(), "/orders").await;
    assert_eq!(
        reply.json()["headers"]["x-chain"],
        serde_json::json!(["a", "b"])
    );
    assert_eq!(reply.header_values("x-chain-response"), vec!["b", "a"]);
}

#[test]
fn route_plans_name_plugins_that_exist_where_they_can_apply() {
    let config = [
        listener("public", "app", &["a"]),
        "[[listener.route]]\nname = \"r\"\nskip = [\"b\"]\nadd = [\"a\", \"nope\"]\n".to_owned(),
        cluster("app", &["127.0.0.1:9"], ""),
        testkit("a", r#"tag = "a""#),
        testkit("b", r#"tag = "b""#),
    ]
    .join("\n");
    let stderr = crate::support::proxy::refused(&config);
    for expected in [
        "listener[0].route[0].skip[0]: \"b\" is not in this listener's plugins",
        "listener[0].route[0].add[0]: \"a\" is in this listener's plugins already",
        "listener[0].route[0].add[1]: plugin \"nope\" is not defined",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
}

#[tokio::test]
async fn a_plugin_ticks_once_per_proxy_with_callouts_and_shared_state() {
    let app = Upstream::echo("app").await;
    let target = Upstream::echo("tick-target").await;
    let proxy = Proxy::start(
        &[
            format!(
                "[runtime]\nworker_threads = 2\nplugin_cache = \"{}\"\n",
                crate::support::proxy::plugin_cache().display()
            ),
            listener("public", "app", &["ticker", "tick-caller"]),
            cluster("app", &[app.addr.to_string()], ""),
            cluster("tick-target", &[target.addr.to_string()], ""),
            testkit("ticker", "tick_ms = 50"),
            caller(
                "tick-caller",
                r#"tick_ms = 50, tick_callout = "tick-target""#,
            ),
        ]
        .join("\n"),
    );
    let ticks = async || {
        let reply = get(proxy.addr(), "/").await;
        let ticks: u64 = reply
            .header("x-ticks")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        (
            ticks,
            reply.header("x-tick-callout").map(str::to_owned),
            Instant::now(),
        )
    };
    // Ticks come, and their callouts reach the cluster.
    let mut first = (0, None, Instant::now());
    let ticking = crate::support::eventually(Duration::from_secs(5), async || {
        first = ticks().await;
        first.0 >= 2 && first.1.as_deref() == Some("200")
    })
    .await;
    assert!(
        ticking,
        "ticks {} callout {:?}\n{}",
        first.0,
        first.1,
        proxy.logs()
    );
    // Once per proxy, though it runs two worker threads: about one tick per 50 ms.
    let mut later = first.clone();
    let more = crate::support::eventually(Duration::from_secs(5), async || {
        later = ticks().await;
        later.0 >= first.0 + 10
    })
    .await;
    assert!(more, "ticks stopped at {}", later.0);
    let elapsed = later.2.duration_since(first.2);
    let most = elapsed.as_millis() as u64 / 50 + 2;
    assert!(
        later.0 - first.0 <= most,
        "{} ticks in {elapsed:?}: more than one schedule",
        later.0 - first.0
    );
    let metrics = admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains(r#"switchyard_plugin_hook_calls_total{plugin="ticker",hook="on_tick"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_plugin_rewrites_response_bodies_chunk_by_chunk() {
    let chunked = Upstream::raw(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let sized = Upstream::echo("sized").await;
    let proxy = Proxy::start(
        &[
            listener("chunked", "chunked", &["upper"]),
            listener("sized", "sized", &["upper"]),
            cluster("chunked", &[chunked.addr.to_string()], ""),
            cluster("sized", &[sized.addr.to_string()], ""),
            testkit("upper", "stream_upper = true"),
        ]
        .join("\n"),
    );

    let reply = get(proxy.listener("chunked"), "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "HELLO WORLD<END>");

    // A body with a content-length: rewritten too, and sent without the old length.
    let reply = get(proxy.listener("sized"), "/").await;
    assert_eq!(reply.header("content-length"), None, "{:?}", reply.headers);
    let text = reply.text();
    assert!(
        text.contains("\"SIZED\"") && text.ends_with("<END>"),
        "{text}"
    );
    let metrics = admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains(
            r#"switchyard_plugin_hook_calls_total{plugin="upper",hook="on_response_chunk"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failing_chunk_hook_follows_the_failure_policy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = Upstream::echo("app").await;
    let plugin = |on_error: &str| {
        format!(
            "[[plugin]]\nname = \"failing\"\npath = \"{}\"\non_error = \"{on_error}\"\nconfig = {{ stream_fail = true }}\n",
            plugin_path("testkit").display()
        )
    };
    // Fail open: the chunk passes as it was, and the failure is logged.
    let open = Proxy::start(
        &[
            listener("public", "app", &["failing"]),
            cluster("app", &[app.addr.to_string()], ""),
            plugin("fail_open"),
        ]
        .join("\n"),
    );
    let reply = get(open.addr(), "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.echo_name(), "app", "the body passed unchanged");
    assert!(
        open.wait_for_log("testkit fails on response chunks", Duration::from_secs(5))
            .await
    );

    // Fail closed: the response is cut off (no last chunk): its head was committed already.
    let closed = Proxy::start(
        &[
            listener("public", "app", &["failing"]),
            cluster("app", &[app.addr.to_string()], ""),
            plugin("fail_closed"),
        ]
        .join("\n"),
    );
    let mut stream = tokio::net::TcpStream::connect(closed.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: example.test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let answer = String::from_utf8_lossy(&answer);
    // (hyper sends the head with the first chunk, so the client may get nothing at all.)
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    assert!(
        !answer.ends_with("0\r\n\r\n"),
        "the body was not cut off: {answer}"
    );
}

#[tokio::test]
async fn a_plugin_rewrites_request_bodies_chunk_by_chunk() {
    use http_body_util::{BodyExt, Full};
    // Answers with the body it got, and how it came (content-length or chunked).
    let mirror = Upstream::serve(|req: http::Request<hyper::body::Incoming>| async move {
        let headers = req.headers();
        let framing = match (
            headers.get("content-length"),
            headers.get("transfer-encoding"),
        ) {
            (Some(length), _) => format!("length {}", length.to_str().unwrap_or("?")),
            (None, Some(coding)) => coding.to_str().unwrap_or("?").to_owned(),
            (None, None) => "none".to_owned(),
        };
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut response = http::Response::new(Full::new(body));
        response
            .headers_mut()
            .insert("x-framing", framing.parse().unwrap());
        response
    })
    .await;
    let proxy = Proxy::start(
        &[
            listener("public", "mirror", &["lower"]),
            cluster("mirror", &[mirror.addr.to_string()], ""),
            testkit("lower", "stream_lower_requests = true"),
        ]
        .join("\n"),
    );

    let upload = http::Request::post("/upload")
        .header("host", "example.test")
        .body(Full::new(bytes::Bytes::from_static(b"Hello WORLD")))
        .unwrap();
    let reply = crate::support::client::send(proxy.addr(), upload).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "hello world<end>");
    assert_eq!(reply.header("x-framing"), Some("chunked"));

    // A request without a body is sent as it came.
    let reply = get(proxy.addr(), "/").await;
    assert_eq!(reply.text(), "");
    assert_ne!(
        reply.header("x-framing"),
        Some("no length"),
        "{:?}",
        reply.headers
    );
}

#[tokio::test]
async fn a_plugin_built_on_the_bare_filter_world_runs_beside_sdk_plugins() {
    let app = Upstream::echo("app").await;
    let legacy = format!(
        "[[plugin]]\nname = \"legacy\"\npath = \"{}\"\n",
        plugin_path("legacy").display()
    );
    let proxy = Proxy::start(
        &[
            listener("public", "app", &["legacy", "a"]),
            cluster("app", &[app.addr.to_string()], ""),
            legacy,
            testkit("a", r#"tag = "a", tick_ms = 50"#),
        ]
        .join("\n"),
    );
    let reply = get(proxy.addr(), "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let headers = &reply.json()["headers"];
    assert_eq!(headers["x-legacy"], "filter-world", "{headers}");
    assert_eq!(headers["x-chain"], "a", "{headers}");
}

#[tokio::test]
async fn a_plugin_failing_on_request_still_gets_the_response_hooks_of_those_before_it() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(
        &[
            listener("public", "app", &["a", "bad"]),
            cluster("app", &[app.addr.to_string()], ""),
            testkit("a", r#"tag = "a""#),
            testkit("bad", r#"misbehave = "trap""#),
        ]
        .join("\n"),
    );
    let reply = get(proxy.addr(), "/").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("x-switchyard-error"), Some("plugin bad"));
    // As when a plugin fails in on_request_body or answers itself: the answer goes back
    // through the response hooks of the plugins that saw the request.
    assert_eq!(reply.header_values("x-chain-response"), vec!["a"]);
}

#[tokio::test]
async fn respond_short_circuits_the_chain_and_the_upstream() {
    let (app, mut arrived) = Upstream::announcing(Duration::ZERO).await;
    let proxy = Proxy::start(
        &[
            listener("public", "app", &["a", "deny", "c"]),
            cluster("app", &[app.addr.to_string()], ""),
            testkit("a", r#"tag = "a""#),
            testkit("deny", r#"tag = "deny", respond = 403"#),
            testkit("c", r#"tag = "c""#),
        ]
        .join("\n"),
    );

    let reply = get(proxy.addr(), "/secret").await;

    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.text(), "answered by deny\n");
    assert!(
        arrived.try_recv().is_err(),
        "the upstream must not see a refused request"
    );
    let back = reply.header_values("x-chain-response");
    assert!(!back.contains(&"c"), "c never saw the request: {back:?}");
    assert!(
        back.contains(&"a"),
        "response hooks still run for the local reply: {back:?}"
    );
}

#[tokio::test]
async fn a_plugin_overrides_the_destination() {
    let (v1, v2) = (Upstream::echo("v1").await, Upstream::echo("v2").await);
    let proxy = Proxy::start(
        &[
            listener("public", "v1", &["route"]),
            cluster("v1", &[v1.addr.to_string()], ""),
            cluster("v2", &[v2.addr.to_string()], ""),
            testkit("route", r#"destination = "v2""#),
        ]
        .join("\n"),
    );

    for _ in 0..5 {
        assert_eq!(get(proxy.addr(), "/").await.echo_name(), "v2");
    }
}

#[tokio::test]
async fn a_destination_that_names_no_cluster_is_a_500_naming_the_plugin() {
    let v1 = Upstream::echo("v1").await;
    let proxy = Proxy::start(
        &[
            listener("public", "v1", &["route"]),
            cluster("v1", &[v1.addr.to_string()], ""),
            testkit("route", r#"destination = "nowhere""#),
        ]
        .join("\n"),
    );

    let reply = get(proxy.addr(), "/").await;

    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.header("x-switchyard-error"),
        Some("unknown-destination")
    );
    assert!(
        reply
            .text()
            .contains("plugin \"route\" chose cluster \"nowhere\""),
        "{}",
        reply.text()
    );
    assert!(
        proxy
            .wait_for_log(
                "plugin chose a cluster that does not exist",
                Duration::from_secs(5)
            )
            .await,
        "{}",
        proxy.logs()
    );
}

/// Sends `requests` requests at once through a plugin that makes a 100 ms callout for each;
/// returns how long they all took. Every one must succeed.
async fn callout_burst(requests: usize) -> Duration {
    let app = Upstream::echo("app").await;
    let auth = Upstream::slow_echo("auth", Duration::from_millis(100)).await;
    let proxy = Proxy::start(&format!(
        "[runtime]\nworker_threads = 2\nplugin_cache = \"{}\"\n\n{}",
        crate::support::proxy::plugin_cache().display(),
        [
            listener("public", "app", &["check"]),
            cluster("app", &[app.addr], ""),
            cluster("auth", &[auth.addr], ""),
            caller("check", r#"callout = "auth""#),
        ]
        .join("\n")
    ));
    let addr = proxy.addr();

    let started = Instant::now();
    let all: Vec<_> = (0..requests)
        .map(|_| tokio::spawn(async move { get(addr, "/").await }))
        .collect();
    for request in all {
        let reply = request.await.expect("request task");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["headers"]["x-callout-status"], "200");
    }
    started.elapsed()
}

#[tokio::test]
async fn callouts_do_not_block_other_requests() {
    // Serialized, 100 callouts of 100 ms would take 10 s.
    let took = callout_burst(100).await;
    eprintln!("100 concurrent requests with a 100 ms callout each took {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "callouts serialized: {took:?}"
    );
}

#[tokio::test]
async fn more_concurrent_callouts_than_instance_slots_wait_instead_of_failing() {
    // 300 hooks waiting on callouts at once is more than the engine's 256 instance slots.
    let took = callout_burst(300).await;
    eprintln!("300 concurrent requests with a 100 ms callout each took {took:?}");
}

#[tokio::test]
async fn a_plugin_retries_a_failed_attempt_on_another_endpoint() {
    let app = Upstream::echo("app").await;
    let dead = closed_port().await;
    let proxy = Proxy::start(
        &[
            listener("public", "app", &["retry"]),
            cluster("app", &[dead, app.addr], r#"lb = "round_robin""#),
            testkit("retry", "retries = 2"),
        ]
        .join("\n"),
    );

    let mut attempts = Vec::new();
    for _ in 0..6 {
        let reply = get(proxy.addr(), "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        attempts.push(reply.header("x-attempts").unwrap_or("?").to_owned());
    }
    assert!(
        attempts.iter().any(|a| a == "2"),
        "some requests needed a retry: {attempts:?}"
    );
}

#[tokio::test]
async fn the_hello_plugin_adds_its_header_and_counts_in_metrics() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&format!(
        "{}\n{}\n[[plugin]]\nname = \"hello\"\npath = \"{}\"\n[plugin.config]\ngreeting = \"hi\"\n",
        listener("public", "app", &["hello"]),
        cluster("app", &[app.addr.to_string()], ""),
        plugin_path("hello").display()
    ));

    for _ in 1..=3 {
        let reply = get(proxy.addr(), "/").await;
        assert_eq!(reply.header("x-hello"), Some("hi"));
    }

    let metrics = admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains(r#"switchyard_plugin_requests{plugin="hello"} 3"#),
        "{metrics}"
    );
    // The compiled plugin (its core module, on the core entry) is cached on disk under the
    // .wasm's sha256.
    let logs = proxy.logs();
    let sha = logs
        .split("sha256=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the load log line names the sha256");
    let cached = std::fs::read_dir(crate::support::proxy::plugin_cache())
        .expect("the plugin cache exists")
        .filter_map(|e| e.ok())
        .any(|e| {
            let name = e.file_name();
            name.to_string_lossy().starts_with(&format!("{sha}-core-"))
        });
    assert!(
        cached,
        "no cached compile of the core module for sha256 {sha}"
    );
    assert!(
        metrics
            .contains(r#"switchyard_plugin_hook_calls_total{plugin="hello",hook="on_response"} 3"#),
        "{metrics}"
    );
    // Hooks hello does not implement were called once, then never again.
    assert!(
        metrics
            .contains(r#"switchyard_plugin_hook_calls_total{plugin="hello",hook="on_request"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_switchyard_perf_map_the_plugins_compiled_code_is_mapped_for_perf() {
    let app = Upstream::echo("app").await;
    let config = crate::support::proxy::scratch_dir().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\nplugin_cache = \"{}\"\n{}\n{}\n\
             [[plugin]]\nname = \"hello\"\npath = \"{}\"\n",
            crate::support::proxy::plugin_cache().display(),
            listener("public", "app", &["hello"]),
            cluster("app", &[app.addr.to_string()], ""),
            plugin_path("hello").display()
        ),
    )
    .expect("write config");
    let map_of = |proxy: &Proxy| std::path::PathBuf::from(format!("/tmp/perf-{}.map", proxy.pid()));

    let mapped = Proxy::start_with_env(config.clone(), 1, &[("SWITCHYARD_PERF_MAP", "1".as_ref())]);
    assert_eq!(get(mapped.addr(), "/").await.status, StatusCode::OK);
    // perf's convention: one "START SIZE NAME" line per function, in /tmp/perf-PID.map. The
    // shipped plugins are stripped, so their functions are named by index; one built with its
    // name section gets its own names.
    let map = std::fs::read_to_string(map_of(&mapped)).unwrap_or_default();
    let _ = std::fs::remove_file(map_of(&mapped));
    let functions = map
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            fields.len() == 3
                && fields[0].starts_with("0x")
                && u64::from_str_radix(fields[1], 16).is_ok_and(|size| size > 0)
                && fields[2].starts_with("wasm[")
        })
        .count();
    assert!(
        functions > 10,
        "{} lines, {functions} plugin functions:\n{map}",
        map.lines().count()
    );

    let unmapped = Proxy::start_at(config);
    assert_eq!(get(unmapped.addr(), "/").await.status, StatusCode::OK);
    assert!(
        !map_of(&unmapped).exists(),
        "a perf map without SWITCHYARD_PERF_MAP"
    );
}
