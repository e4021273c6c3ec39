//! The core entry: SDK plugins' hooks called on their core module directly, not through the
//! component model. The admin API says which entry each plugin runs on, and the same plugins give
//! the same answers through either entry, request by request.

use std::ffi::OsStr;

use http::StatusCode;

use crate::support::config::{cluster, listener};
use crate::support::proxy::{admin_get, plugin_path};
use crate::support::{Proxy, Upstream, get_with};

fn plugin(name: &str, file: &str, config: &str) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\nlimits = {{ time = \"1s\" }}\nconfig = {{ {config} }}\n",
        plugin_path(file).display()
    )
}

/// Each plugin's entry, by name, from the admin API.
fn entries(proxy: &Proxy) -> Vec<(String, String)> {
    let plugins: serde_json::Value =
        serde_json::from_str(&admin_get(proxy.admin, "/plugins")).expect("plugins are JSON");
    let mut entries: Vec<(String, String)> = plugins
        .as_array()
        .expect("a list of plugins")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["entry"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    entries.sort();
    entries
}

/// A chain that reads and changes the request (and reads its changes back), calls out to
/// another cluster (a component, on a fiber, beside the others), retries, tags the response; a
/// listener whose plugin answers by itself; one whose plugin traps.
fn config(app: &Upstream, side: &Upstream) -> String {
    [
        listener("chain", "app", &["reader", "caller", "tagger", "hello"]),
        listener("answers", "app", &["answer"]),
        listener("traps", "app", &["trap"]),
        cluster("app", &[app.addr.to_string()], ""),
        cluster("side", &[side.addr.to_string()], ""),
        plugin("reader", "testkit", "read_back = true"),
        plugin("caller", "caller", r#"callout = "side""#),
        plugin("tagger", "testkit", r#"tag = "t", retries = 1"#),
        plugin("hello", "hello", r#"greeting = "hi""#),
        plugin("answer", "testkit", r#"tag = "a", respond = 418"#),
        plugin("trap", "testkit", r#"misbehave = "trap""#),
    ]
    .join("\n")
}

/// What a client sees, without what differs between any two requests (dates, ids, trace ids).
#[derive(Debug, PartialEq)]
struct Seen {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: String,
}

const VOLATILE: &[&str] = &["date", "x-request-id", "traceparent", "tracestate"];

async fn observe(proxy: &Proxy) -> Vec<Seen> {
    let mut seen = Vec::new();
    for listener in ["chain", "answers", "traps"] {
        for path in ["/here", "/there?x=1"] {
            let reply = get_with(proxy.listener(listener), path, &[("x-user", "alice")]).await;
            let mut headers: Vec<(String, String)> = reply
                .headers
                .iter()
                .filter(|(name, _)| !VOLATILE.contains(&name.as_str()))
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect();
            headers.sort();
            let mut body = reply.text();
            if let Ok(mut json) = serde_json::from_str::<serde_json::Value>(&body)
                && let Some(echoed) = json.as_object_mut()
            {
                // The proxy's own port toward the upstream differs between runs.
                echoed.remove("peer");
                if let Some(sent) = echoed.get_mut("headers").and_then(|h| h.as_object_mut()) {
                    for name in VOLATILE {
                        sent.remove(*name);
                    }
                }
                body = json.to_string();
            }
            seen.push(Seen {
                status: reply.status,
                headers,
                body,
            });
        }
    }
    seen
}

#[tokio::test]
async fn sdk_plugins_run_on_the_core_entry_and_answer_as_they_do_as_components() {
    let app = Upstream::echo("app").await;
    let side = Upstream::echo("side").await;
    let config = config(&app, &side);

    let core = Proxy::start(&config);
    let names = ["answer", "caller", "hello", "reader", "tagger", "trap"];
    let on = |entry: &str, calls_out: &str| {
        names
            .map(|n| {
                let entry = if n == "caller" { calls_out } else { entry };
                (n.to_owned(), entry.to_owned())
            })
            .to_vec()
    };
    assert_eq!(
        entries(&core),
        on("core", "component"),
        "every SDK plugin runs on the core entry but one that imports http.call"
    );
    let through_core = observe(&core).await;
    drop(core);

    let component = Proxy::start_env(
        &config,
        &[("SWITCHYARD_PLUGIN_ENTRY", OsStr::new("component"))],
    );
    assert_eq!(
        entries(&component),
        names
            .map(|n| (n.to_owned(), "component".to_owned()))
            .to_vec(),
        "SWITCHYARD_PLUGIN_ENTRY=component turns the core entry off"
    );
    let through_component = observe(&component).await;

    // The answers are what the plugins make of the requests, not only equal to each other.
    let chained = &through_core[0];
    assert_eq!(chained.status, StatusCode::OK, "{chained:?}");
    let echoed: serde_json::Value = serde_json::from_str(&chained.body).expect("echo is JSON");
    assert_eq!(echoed["path"], "/moved/here");
    assert_eq!(
        echoed["headers"]["x-read-back"],
        "alice>changed|example.test>moved.example|set|set+added|none|kept|invalid header name \"bad name\"|/moved/here"
    );
    assert_eq!(
        echoed["headers"]["x-forwarding-read"],
        "127.0.0.1|1.1 switchyard|http|4 listed|same id true",
        "the proxy's own fields, read by name and listed"
    );
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "plugin");
    assert_eq!(echoed["headers"]["x-callout-status"], "200");
    assert_eq!(echoed["headers"]["x-chain"], "t");
    let header = |seen: &Seen, name: &str| {
        seen.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(chained, "x-hello").as_deref(), Some("hi"));
    assert_eq!(header(chained, "x-attempts").as_deref(), Some("1"));
    assert_eq!(header(chained, "x-chain-response").as_deref(), Some("t"));
    assert_eq!(
        header(chained, "x-read-back-response").as_deref(),
        Some("app|none"),
        "response headers read by the reader plugin"
    );
    let answered = &through_core[2];
    assert_eq!(answered.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(answered.body, "answered by a\n");
    assert!(
        through_core[4].status.is_server_error(),
        "{:?}",
        through_core[4]
    );

    assert_eq!(through_core, through_component);
}

#[tokio::test]
async fn a_plugin_importing_http_call_keeps_the_core_entry_only_if_it_never_calls_out() {
    let app = Upstream::echo("app").await;
    let side = Upstream::echo("side").await;
    let api_keys = r#"api_keys = { keys = [ { name = "a", sha256 = "2c8f10d14ae9e4b67462dc122a92c2b1e74b07c9fe0488c8045fe81b53ff8573" } ] }, rules = [ { require = "api_key" } ]"#;
    let remote_jwks = r#"jwt = [ { name = "idp", jwks = { cluster = "side" } } ], rules = [ { require = "jwt" } ]"#;
    let proxy = Proxy::start(
        &[
            listener("promised", "app", &["promised"]),
            listener("keys", "app", &["keys"]),
            cluster("app", &[app.addr.to_string()], ""),
            cluster("side", &[side.addr.to_string()], ""),
            plugin(
                "promised",
                "caller",
                r#"never_call_out = true, callout = "side""#,
            ),
            plugin("keys", "auth", api_keys),
            plugin("fetcher", "auth", remote_jwks),
        ]
        .join("\n"),
    );
    assert_eq!(
        entries(&proxy),
        [
            ("fetcher", "component"),
            ("keys", "core"),
            ("promised", "core")
        ]
        .map(|(n, e)| (n.to_owned(), e.to_owned()))
        .to_vec(),
        "auth with keys of its own promises no callouts; with remote JWKS it may call out"
    );

    // A callout from a plugin that promised none is refused, and the request goes on.
    let reply = get_with(proxy.listener("promised"), "/", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json()["headers"]["x-callout-status"],
        "error: invalid request or response"
    );
    // The proxy's log is read on another thread: wait for the line rather than race it.
    let logged = crate::support::eventually(std::time::Duration::from_secs(5), async || {
        proxy.logs().contains("http.call refused")
    })
    .await;
    assert!(logged, "{}", proxy.logs());
    // The auth plugin on the core entry still checks keys.
    let denied = get_with(proxy.listener("keys"), "/", &[]).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let key = [("x-api-key", "bench-key-alice")];
    let allowed = get_with(proxy.listener("keys"), "/", &key).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text());
}
