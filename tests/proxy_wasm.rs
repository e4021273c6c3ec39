//! Unmodified proxy-wasm filters, built from the `proxy-wasm` crate (tests/proxy-wasm), run
//! through the proxy in chains with Switchyard's own plugins: headers both ways, a local answer,
//! a callout that resumes or denies, ticks with shared data, bodies rewritten whole; and a filter
//! importing what no host has is refused at load, naming the import.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use crate::support::proxy::{admin_get, admin_send, plugin_path, scratch_dir};
use crate::support::{Proxy, Upstream, eventually, get_with, raw_exchange, send};

/// A proxy whose `public` listener runs `chain` in front of `app`, with `authz` as a second
/// cluster for callouts; `plugins` are `[[plugin]]` tables.
fn proxy(app: &Upstream, authz: &Upstream, chain: &[&str], plugins: &str) -> Proxy {
    let chain = chain
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Proxy::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"app\"\nplugins = [{chain}]\n\n[[cluster]]\nname = \"app\"\nendpoints = [\"{}\"]\n\n[[cluster]]\nname = \"authz\"\nendpoints = [\"{}\"]\n\n{plugins}",
        app.addr, authz.addr
    ))
}

fn plugin(name: &str, file: &str, config: &str) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\n{config}\n",
        plugin_path(file).display()
    )
}

#[tokio::test]
async fn a_header_filter_runs_in_a_chain_with_our_own_plugins() {
    let app = Upstream::echo("app").await;
    let authz = Upstream::echo("authz").await;
    let plugins = plugin(
        "add",
        "pw-add-header",
        "[plugin.config]\nvalue = \"from-config\"",
    ) + &plugin("hello", "hello", "[plugin.config]\ngreeting = \"hi\"");
    let proxy = proxy(&app, &authz, &["hello", "add"], &plugins);

    let reply = get_with(proxy.addr(), "/orders/7?x=1", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = &reply.json()["headers"];
    assert_eq!(
        seen["x-proxy-wasm"], "from-config",
        "the filter's config reached it: {seen}"
    );
    assert_eq!(
        seen["x-seen-path"], "/orders/7?x=1",
        "it read the :path pseudo-header"
    );
    assert_eq!(reply.header("x-filtered-by"), Some("add-header"));
    assert_eq!(
        reply.header("x-hello"),
        Some("hi"),
        "our own plugin ran too"
    );

    // The filter's metric, and the hook counters every plugin has.
    let metrics = admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.lines().any(|l| l.contains("add_header_requests")
            && l.contains("plugin=\"add\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("switchyard_plugin_hook_calls_total{plugin=\"add\",hook=\"on_request\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_filter_answers_requests_itself_with_send_local_response() {
    let app = Upstream::echo("app").await;
    let authz = Upstream::echo("authz").await;
    let plugins = plugin("deny", "pw-deny", "") + &plugin("hello", "hello", "");
    let proxy = proxy(&app, &authz, &["deny", "hello"], &plugins);

    let denied = get_with(proxy.addr(), "/", &[("x-deny", "1")]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("x-denied-by"), Some("deny"));
    assert!(
        denied.text().starts_with("denied for 127.0.0.1:"),
        "{}",
        denied.text()
    );
    assert_eq!(
        denied.header("x-hello"),
        None,
        "plugins after it never saw the request"
    );
    let allowed = get_with(proxy.addr(), "/", &[]).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.echo_name(), "app");
}

#[tokio::test]
async fn a_filter_calls_a_cluster_and_resumes_or_denies_on_its_answer() {
    let app = Upstream::echo("app").await;
    let authz = Upstream::echo("authz-service").await;
    let plugins = plugin("authz", "pw-callout", "") + &plugin("hello", "hello", "");
    let proxy = proxy(&app, &authz, &["authz", "hello"], &plugins);

    let allowed = get_with(proxy.addr(), "/", &[("x-user", "alice")]).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(
        allowed.json()["headers"]["x-authz"],
        "authz-service",
        "set from the callout's answer"
    );
    assert_eq!(
        allowed.header("x-hello"),
        Some("hello"),
        "our plugin after it ran"
    );
    let refused = get_with(proxy.addr(), "/", &[("x-user", "mallory")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("x-authz-status"), Some("403"));

    // Many at once: each paused request gets its own answer.
    let mut all = tokio::task::JoinSet::new();
    for i in 0..40 {
        let addr = proxy.addr();
        all.spawn(async move {
            let user = if i % 4 == 0 { "mallory" } else { "alice" };
            (user, get_with(addr, "/", &[("x-user", user)]).await.status)
        });
    }
    while let Some(done) = all.join_next().await {
        let (user, status) = done.unwrap();
        assert_eq!(status, if user == "mallory" { 403 } else { 200 }, "{user}");
    }
}

#[tokio::test]
async fn a_filter_ticks_and_keeps_shared_data() {
    let app = Upstream::echo("app").await;
    let authz = Upstream::echo("authz").await;
    let plugins = plugin("hello", "hello", "") + &plugin("ticks", "pw-tick-shared", "");
    let proxy = proxy(&app, &authz, &["hello", "ticks"], &plugins);
    let mut ticks = 0;
    let counted = eventually(Duration::from_secs(10), async || {
        let reply = get_with(proxy.addr(), "/", &[]).await;
        ticks = reply.json()["headers"]["x-ticks"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        ticks >= 5
    })
    .await;
    assert!(counted, "ticks every 50 ms never reached 5 (last {ticks})");
}

#[tokio::test]
async fn a_filter_rewrites_whole_bodies_both_ways() {
    // An upstream that answers with the body it got.
    let app = Upstream::serve(|req: Request<hyper::body::Incoming>| async move {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut reply = b"you said: ".to_vec();
        reply.extend_from_slice(&body);
        reply.extend_from_slice(b" and hello to you");
        http::Response::new(Full::new(Bytes::from(reply)))
    })
    .await;
    let authz = Upstream::echo("authz").await;
    let plugins = plugin("rewrite", "pw-body-rewrite", "") + &plugin("hello", "hello", "");
    let proxy = proxy(&app, &authz, &["rewrite", "hello"], &plugins);
    // A body in several pieces: the filter holds them until the end, then rewrites the whole.
    let pieces: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> =
        ["hel", "lo, wor", "ld; hello"]
            .into_iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from(p))))
            .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(pieces));
    let req = Request::post("/echo")
        .header("host", "app")
        .body(body)
        .unwrap();
    let reply = send(proxy.addr(), req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        "you said: HELLO, world; HELLO and HELLO to you"
    );
    assert_eq!(
        reply.header("x-hello"),
        Some("hello"),
        "our plugin after it ran"
    );
}

/// `switchyard validate` on a config whose listener runs plugin `name`: whether it passed, and
/// what it said.
fn validate_with(name: &str, plugin_table: &str) -> (bool, String) {
    let dir = scratch_dir();
    let config = dir.join("validate.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"c\"\nplugins = [\"{name}\"]\n\n[[cluster]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n\n{plugin_table}"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("validate")
        .arg(&config)
        .env("SWITCHYARD_PLUGIN_CACHE", dir.join("cache"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_filter_importing_what_no_host_has_is_refused_naming_the_import() {
    let (passed, stderr) = validate_with("secret", &plugin("secret", "pw-unsupported", ""));
    assert!(!passed, "a filter with an unknown import was accepted");
    assert!(
        stderr.contains("plugin \"secret\"") && stderr.contains("env.proxy_get_secret_key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_misbehaving_filter_fails_one_request_under_the_sandbox_and_its_instance_is_replaced() {
    let app = Upstream::echo("app").await;
    let authz = Upstream::echo("authz").await;
    let limits = "limits = { time = \"50ms\", memory = \"16MiB\" }";
    let plugins = plugin(
        "closed",
        "pw-misbehave",
        &format!("on_error = \"fail_closed\"\n{limits}"),
    ) + &plugin("hello", "hello", "");
    let proxy = proxy(&app, &authz, &["closed", "hello"], &plugins);
    assert_eq!(get_with(proxy.addr(), "/", &[]).await.status, 200);
    for (header, kind) in [
        ("x-panic", "trap"),
        ("x-spin", "timeout"),
        ("x-hog", "out_of_memory"),
    ] {
        let started = std::time::Instant::now();
        let reply = get_with(proxy.addr(), "/", &[(header, "1")]).await;
        assert_eq!(reply.status, 503, "{header}: {}", reply.text());
        assert_eq!(
            reply.header("x-switchyard-error"),
            Some("plugin closed"),
            "{header}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{header} was stopped in time"
        );
        // The next request gets a fresh instance (the old one's count started again).
        let after = get_with(proxy.addr(), "/", &[]).await;
        assert_eq!(after.status, 200, "after {header}: {}", after.text());
        let metrics = admin_get(proxy.admin, "/metrics");
        assert!(
            metrics.contains(&format!(
                "switchyard_plugin_hook_errors_total{{plugin=\"closed\",kind=\"{kind}\"}} 1"
            )),
            "{header} counted as {kind}: {metrics}"
        );
    }

    // fail_open: the filter is skipped for the request it failed, and the chain goes on.
    let open = plugin(
        "open",
        "pw-misbehave",
        &format!("on_error = \"fail_open\"\n{limits}"),
    ) + &plugin("hello", "hello", "");
    let proxy = self::proxy(&app, &authz, &["open", "hello"], &open);
    let reply = get_with(proxy.addr(), "/", &[("x-panic", "1")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("x-hello"),
        Some("hello"),
        "the plugins after it ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_is_swapped_at_run_time_without_a_failed_request() {
    let app = Upstream::echo("app").await;
    let authz = Upstream::echo("authz").await;
    let token = "swap-token-0123456789";
    let mut config = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n");
    config.push_str(&format!(
        "\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"app\"\nplugins = [\"swappable\"]\n\n[[cluster]]\nname = \"app\"\nendpoints = [\"{}\"]\n\n[[cluster]]\nname = \"authz\"\nendpoints = [\"{}\"]\n\n{}",
        app.addr,
        authz.addr,
        plugin("swappable", "pw-add-header", "[plugin.config]\nvalue = \"v\"")
    ));
    let proxy = Proxy::start(&config);
    let (addr, admin) = (proxy.addr(), proxy.admin);
    let load = tokio::spawn(async move {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            let reply = get_with(addr, "/", &[("x-deny", "1")]).await;
            let key = format!(
                "{} {}",
                reply.status.as_u16(),
                reply.header("x-denied-by").unwrap_or("-")
            );
            *seen.entry(key).or_default() += 1;
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One filter's binary replaced by another's while requests flow.
    let deny = std::fs::read(plugin_path("pw-deny")).unwrap();
    let (status, answer) = tokio::task::spawn_blocking(move || {
        admin_send(admin, "PUT", "/plugins/swappable", Some(token), &deny)
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let seen = load.await.unwrap();
    let failed: usize = seen
        .iter()
        .filter(|(k, _)| !(k.starts_with("200 ") || k.as_str() == "403 deny"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(failed, 0, "{seen:?}");
    assert!(
        seen.get("200 -").is_some_and(|n| *n > 0),
        "served before the swap: {seen:?}"
    );
    assert!(
        seen.get("403 deny").is_some_and(|n| *n > 0),
        "the new filter answered: {seen:?}"
    );
}

#[test]
fn a_filter_refusing_its_configuration_is_refused_at_load() {
    let table = plugin("add", "pw-add-header", "[plugin.config]\nvalue = 5");
    let (passed, stderr) = validate_with("add", &table);
    assert!(!passed, "a refused configuration was accepted");
    assert!(
        stderr.contains("plugin \"add\"") && stderr.contains("proxy_on_configure answered false"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_filter_reads_and_changes_trailers_both_ways() {
    // Request trailers: the upstream reports the `x-checksum` trailer it got.
    let app = Upstream::reporting_trailer("x-checksum").await;
    let authz = Upstream::echo("authz").await;
    let plugins = plugin("rewrite", "pw-body-rewrite", "") + &plugin("hello", "hello", "");
    let proxy = proxy(&app, &authz, &["rewrite", "hello"], &plugins);
    let answer = raw_exchange(
        &proxy,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-seen-trailer: abc123\r\n")
            && answer.contains("ABC123"),
        "the filter changed the request trailer: {answer}"
    );

    // Response trailers: the upstream sends `x-digest`; the filter adds one.
    let app = Upstream::raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-digest\r\nConnection: close\r\n\r\n4\r\nbody\r\n0\r\nx-digest: d1\r\n\r\n",
    )
    .await;
    let proxy = self::proxy(&app, &authz, &["rewrite", "hello"], &plugins);
    let answer = raw_exchange(
        &proxy,
        b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("x-digest: d1\r\n"), "{answer}");
    assert!(
        answer.contains("x-filter-trailer: yes\r\n"),
        "the filter added a response trailer: {answer}"
    );
}

#[tokio::test]
async fn a_filters_root_context_is_told_of_values_on_its_shared_queue() {
    let app = Upstream::echo("app").await;
    let authz = Upstream::echo("authz").await;
    let plugins = plugin("queue", "pw-queue", "") + &plugin("hello", "hello", "");
    let proxy = proxy(&app, &authz, &["queue", "hello"], &plugins);
    // Each request enqueues its path; the root context drains the queue when told (before its
    // instance's next call), so a later request sees the earlier ones counted.
    let mut seen = serde_json::Value::Null;
    let told = eventually(Duration::from_secs(10), async || {
        let reply = get_with(proxy.addr(), "/event/7", &[]).await;
        seen = reply.json()["headers"].clone();
        seen["x-last-event"] == "/event/7"
            && seen["x-events"]
                .as_str()
                .and_then(|n| n.parse::<u32>().ok())
                >= Some(2)
    })
    .await;
    assert!(
        told,
        "the queue's values never reached its root context: {seen}"
    );
}
