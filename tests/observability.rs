//! Golden metrics, trace propagation and span export, and the access log, through the real
//! proxy on the shipped observability example (routing, canary and retries plugins).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

use crate::support::proxy::{admin_get, example_config, refused, scratch_dir};
use crate::support::{Proxy, Upstream, eventually, get_with, send};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Lowercase hex of a trace or span id, as the headers carry it.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `traceparent` each request to the flaky upstream carried, in order.
type SeenTraceparents = Arc<Mutex<Vec<String>>>;

/// The "flaky" service: `/flaky/down` always fails, `/flaky/once` fails its first try only.
async fn flaky_upstream() -> (Upstream, SeenTraceparents) {
    let seen: SeenTraceparents = Arc::default();
    let log = Arc::clone(&seen);
    let tries: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let upstream = Upstream::serve(move |req: Request<hyper::body::Incoming>| {
        let log = Arc::clone(&log);
        let tries = Arc::clone(&tries);
        async move {
            let traceparent = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            log.lock().unwrap().push(traceparent);
            let path = req.uri().path().to_owned();
            let n = {
                let mut tries = tries.lock().unwrap();
                let n = tries.entry(path.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let status = match path.as_str() {
                "/flaky/down" => 503,
                "/flaky/once" if n == 1 => 503,
                _ => 200,
            };
            let mut response = Response::new(Full::new(Bytes::from("flaky says hi\n")));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response
        }
    })
    .await;
    (upstream, seen)
}

/// An OTLP/HTTP receiver keeping every span it is sent.
async fn otlp_receiver() -> (Upstream, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let store = Arc::clone(&spans);
    let receiver = Upstream::serve(move |req: Request<hyper::body::Incoming>| {
        let store = Arc::clone(&store);
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(
                req.headers().get("content-type").unwrap(),
                "application/x-protobuf"
            );
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let export = ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
            for resource in export.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.clone());
                assert!(format!("{service:?}").contains("switchyard-edge"));
                for scope in resource.scope_spans {
                    store.lock().unwrap().extend(scope.spans);
                }
            }
            Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    (receiver, spans)
}

struct Setup {
    proxy: Proxy,
    shop_v1: Upstream,
    shop_v2: Upstream,
    flaky: Upstream,
    flaky_seen: SeenTraceparents,
    spans: Arc<Mutex<Vec<Span>>>,
    _receiver: Upstream,
    access_log: PathBuf,
}

/// The observability example with real upstreams, an OTLP receiver and the access log in a file;
/// `edit` changes the config text further.
async fn start(edit: impl FnOnce(String) -> String) -> Setup {
    let shop_v1 = Upstream::echo("shop-v1").await;
    let shop_v2 = Upstream::echo("shop-v2").await;
    let (flaky, flaky_seen) = flaky_upstream().await;
    let (receiver, spans) = otlp_receiver().await;
    let access_log = scratch_dir().join("access.log");
    let config = example_config(
        "observability.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", shop_v1.addr.to_string()),
            ("127.0.0.1:9002", shop_v2.addr.to_string()),
            ("127.0.0.1:9003", flaky.addr.to_string()),
            ("127.0.0.1:4318", receiver.addr.to_string()),
            (
                "path = \"stdout\"",
                format!("path = {:?}", access_log.display().to_string()),
            ),
        ],
    );
    Setup {
        proxy: Proxy::start(&edit(config)),
        shop_v1,
        shop_v2,
        flaky,
        flaky_seen,
        spans,
        _receiver: receiver,
        access_log,
    }
}

/// The sum of every sample of `name` whose labels include all of `labels`, from the admin API's
/// JSON rendering of /metrics.
fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let body = admin_get(admin, "/metrics.json");
    let json: serde_json::Value = serde_json::from_str(&body).expect("metrics.json is JSON");
    json["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

/// The public listener's requests in flight, as /metrics reports them.
fn in_flight(admin: SocketAddr) -> f64 {
    metric(
        admin,
        "switchyard_requests_in_flight",
        &[("listener", "public")],
    )
}

async fn shop(addr: SocketAddr, backend: &str, method: &str) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri("/shop/cart")
        .header("host", "shop.local")
        .header("x-canary", backend)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(addr, req).await;
    assert_eq!(reply.echo_name(), backend, "{}", reply.text());
    reply.status
}

#[tokio::test]
async fn metrics_count_a_known_mix_of_requests_with_their_labels() {
    let s = start(|c| c).await;
    let addr = s.proxy.addr();

    for _ in 0..5 {
        assert_eq!(shop(addr, "shop-v1", "GET").await, StatusCode::OK);
    }
    for _ in 0..3 {
        assert_eq!(shop(addr, "shop-v2", "GET").await, StatusCode::OK);
    }
    assert_eq!(shop(addr, "shop-v1", "POST").await, StatusCode::OK);
    for _ in 0..2 {
        let reply = get_with(addr, "/nowhere", &[]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    let down = get_with(addr, "/flaky/down", &[]).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    let once = get_with(addr, "/flaky/once", &[]).await;
    assert_eq!(once.status, StatusCode::OK);

    let admin = s.proxy.admin;
    let requests = |route: &'static str, cluster: &'static str, class: &'static str, method| {
        metric(
            admin,
            "switchyard_requests_total",
            &[
                ("listener", "public"),
                ("route", route),
                ("cluster", cluster),
                ("status_class", class),
                ("method", method),
            ],
        )
    };
    // Each request is counted when its response is done, which may trail the client's read.
    assert!(
        eventually(Duration::from_secs(10), async || {
            metric(admin, "switchyard_requests_total", &[]) == 13.0
        })
        .await,
        "13 requests were sent; /metrics:\n{}",
        admin_get(admin, "/metrics")
    );
    assert_eq!(requests("shop", "shop-v1", "2xx", "GET"), 5.0);
    assert_eq!(requests("shop", "shop-v2", "2xx", "GET"), 3.0);
    assert_eq!(requests("shop", "shop-v1", "2xx", "POST"), 1.0);
    assert_eq!(
        requests("", "", "4xx", "GET"),
        2.0,
        "404s from the routing plugin"
    );
    assert_eq!(requests("flaky", "flaky", "5xx", "GET"), 1.0);
    assert_eq!(requests("flaky", "flaky", "2xx", "GET"), 1.0);

    // Latency: one histogram sample per request.
    let latency_count = metric(
        admin,
        "switchyard_request_duration_seconds_count",
        &[("listener", "public")],
    );
    assert_eq!(latency_count, 13.0);
    // Upstream attempts: /flaky/down tried 3 times, /flaky/once twice (one 503, one 200).
    let attempts = |class| {
        metric(
            admin,
            "switchyard_upstream_attempt_duration_seconds_count",
            &[("cluster", "flaky"), ("result", class)],
        )
    };
    assert_eq!(attempts("5xx"), 4.0);
    assert_eq!(attempts("2xx"), 1.0);
    assert_eq!(
        metric(admin, "switchyard_retries_total", &[("cluster", "flaky")]),
        3.0
    );
    // The canary's own split, from its SDK counter.
    let canary = |backend| {
        metric(
            admin,
            "switchyard_plugin_requests",
            &[("plugin", "canary"), ("backend", backend)],
        )
    };
    assert_eq!(canary("shop-v1"), 6.0);
    assert_eq!(canary("shop-v2"), 3.0);
    // Per-plugin hook calls and saturation gauges.
    assert_eq!(
        metric(
            admin,
            "switchyard_plugin_hook_calls_total",
            &[("plugin", "routing"), ("hook", "on_request")]
        ),
        13.0
    );
    assert_eq!(in_flight(admin), 0.0);
    assert_eq!(
        metric(
            admin,
            "switchyard_endpoint_healthy",
            &[
                ("cluster", "flaky"),
                ("endpoint", &s.flaky.addr.to_string())
            ]
        ),
        1.0
    );
    assert!(
        metric(
            admin,
            "switchyard_downstream_connections_total",
            &[("listener", "public")]
        ) >= 13.0
    );

    // Every metric the shipped Grafana dashboard queries is exported; these appear only once
    // what they count has happened (no TLS, fault plugin, reload or failed connection here).
    let conditional = [
        "switchyard_tls_handshakes_total",
        "switchyard_tls_handshake_errors_total",
        "switchyard_plugin_faults",
        "switchyard_plugin_budget_exhausted",
        "switchyard_config_reload_total",
        "switchyard_errors_total",
    ];
    let exported = admin_get(admin, "/metrics");
    for query in crate::prometheus::grafana_queries() {
        for name in metric_names(&query) {
            if !conditional.contains(&name.as_str()) {
                assert!(
                    exported.contains(&format!("\n{name}{{"))
                        || exported.contains(&format!("\n{name} ")),
                    "the Grafana dashboard queries {name}, which the proxy does not export"
                );
            }
        }
    }

    // No raw path or id ever becomes a label.
    let exposition = admin_get(admin, "/metrics");
    for raw in ["/shop/cart", "/nowhere", "/flaky/down", "x-request-id"] {
        assert!(!exposition.contains(raw), "{raw} leaked into a label");
    }
    drop((s.shop_v1, s.shop_v2));
}

/// Each worker thread counts into its own copy of a metric and /metrics sums the copies: with
/// concurrent requests spread over the proxy's two workers, every request is counted once and
/// the in-flight gauge, moved up on one worker and down on another, comes back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_every_worker_are_all_counted() {
    const CLIENTS: usize = 16;
    const EACH: usize = 25;
    let s = start(|c| format!("{c}\n[runtime]\nworker_threads = 2\n")).await;
    let addr = s.proxy.addr();
    let admin = s.proxy.admin;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..EACH {
                    assert_eq!(shop(addr, "shop-v1", "GET").await, StatusCode::OK);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    let counted = || {
        metric(
            admin,
            "switchyard_requests_total",
            &[("cluster", "shop-v1"), ("method", "GET")],
        )
    };
    let sent = (CLIENTS * EACH) as f64;
    assert!(
        eventually(Duration::from_secs(10), async || counted() == sent).await,
        "{sent} requests were sent, {} counted",
        counted()
    );
    assert_eq!(in_flight(admin), 0.0);
    drop((s.shop_v1, s.shop_v2));
}

#[tokio::test]
async fn a_client_trace_reaches_the_upstream_and_the_collector_gets_request_and_attempt_spans() {
    let s = start(|c| c).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = get_with(
        s.proxy.addr(),
        "/flaky/once",
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    // The upstream saw the client's trace id with a new parent span id on each attempt.
    let seen = s.flaky_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let mut attempt_parents = Vec::new();
    for header in &seen {
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!(parts[1], CLIENT_TRACE, "same trace");
        assert_ne!(parts[2], CLIENT_SPAN, "a new parent span");
        assert_eq!(parts[3], "01");
        attempt_parents.push(parts[2].to_owned());
    }
    assert_ne!(
        attempt_parents[0], attempt_parents[1],
        "one span per attempt"
    );

    // The collector gets the request span under the client's span, and both attempt spans
    // under the request span, with the ids the upstream saw.
    let spans = Arc::clone(&s.spans);
    assert!(
        eventually(Duration::from_secs(10), async || spans
            .lock()
            .unwrap()
            .len()
            >= 3)
        .await,
        "spans exported: {:?}",
        spans.lock().unwrap()
    );
    let spans = spans.lock().unwrap().clone();
    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "{spans:?}");
    let request = server[0];
    assert_eq!(hex(&request.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(request.name, "GET flaky");
    assert_eq!(request.trace_state, "vendor=opaque");
    let attribute = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone())
            .map(|v| format!("{:?}", v.value.unwrap()))
    };
    assert_eq!(
        attribute(request, "http.response.status_code").unwrap(),
        "IntValue(200)"
    );
    assert_eq!(
        attribute(request, "http.route").unwrap(),
        "StringValue(\"flaky\")"
    );
    assert_eq!(
        attribute(request, "url.path").unwrap(),
        "StringValue(\"/flaky/once\")"
    );
    assert!(request.end_time_unix_nano >= request.start_time_unix_nano);

    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "{spans:?}");
    for (attempt, parent_seen) in attempts.iter().zip(&attempt_parents) {
        assert_eq!(hex(&attempt.trace_id), CLIENT_TRACE);
        assert_eq!(attempt.parent_span_id, request.span_id);
        assert_eq!(&hex(&attempt.span_id), parent_seen);
        assert_eq!(
            attribute(attempt, "server.port").unwrap(),
            format!("IntValue({})", s.flaky.addr.port())
        );
    }
    assert_eq!(
        attribute(attempts[0], "http.response.status_code").unwrap(),
        "IntValue(503)"
    );
    assert_eq!(
        attribute(attempts[1], "http.request.resend_count").unwrap(),
        "IntValue(1)"
    );
}

#[tokio::test]
async fn unsampled_traces_are_propagated_but_never_exported() {
    // Sampling 0: a request without a trace starts one marked "not sampled", so the upstreams
    // agree not to sample it, and nothing of it is exported.
    let s = start(|c| c.replace("sampling = 1.0", "sampling = 0.0")).await;
    let reply = get_with(s.proxy.addr(), "/flaky/once", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = s.flaky_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|t| t.ends_with("-00")), "{seen:?}");
    let unsampled_trace = seen[0].split('-').nth(1).unwrap().to_owned();

    // A client's own "sampled" decision is kept: this one is exported, after the first.
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let sampled = get_with(s.proxy.addr(), "/shop/x", &[("traceparent", &traceparent)]).await;
    assert_eq!(sampled.status, StatusCode::OK);
    let spans = Arc::clone(&s.spans);
    assert!(
        eventually(Duration::from_secs(10), async || spans
            .lock()
            .unwrap()
            .len()
            >= 2)
        .await,
        "the sampled request's spans never came"
    );
    let traces: Vec<String> = spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| hex(&s.trace_id))
        .collect();
    assert!(traces.iter().all(|t| t == CLIENT_TRACE), "{traces:?}");
    assert!(!traces.contains(&unsampled_trace));
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request_with_what_happened() {
    let s = start(|c| c).await;
    let addr = s.proxy.addr();
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let once = get_with(
        addr,
        "/flaky/once?user=7",
        &[("traceparent", &traceparent), ("x-request-id", "req-once")],
    )
    .await;
    assert_eq!(once.status, StatusCode::OK);
    assert_eq!(shop(addr, "shop-v2", "GET").await, StatusCode::OK);
    let missing = get_with(addr, "/nowhere", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let path = s.access_log.clone();
    let lines = move || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), async || lines().len() == 3).await,
        "{:?}",
        lines()
    );
    let lines = lines();
    let retried = &lines[0];
    assert_eq!(retried["listener"], "public");
    assert_eq!(retried["method"], "GET");
    assert_eq!(
        retried["path"], "/flaky/once",
        "the path, without the query"
    );
    assert_eq!(retried["status"], 200);
    assert_eq!(retried["attempts"], 2);
    assert_eq!(retried["destination"], "flaky");
    assert_eq!(retried["route"], "flaky");
    assert_eq!(retried["upstream"], s.flaky.addr.to_string());
    assert_eq!(retried["request_id"], "req-once");
    assert_eq!(retried["trace_id"], CLIENT_TRACE);
    assert_eq!(retried["bytes"], "flaky says hi\n".len());
    assert_eq!(retried["protocol"], "HTTP/1.1");
    assert!(retried["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(retried["time"].as_str().unwrap().ends_with('Z'));
    let decisions: Vec<&str> = retried["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["retries:on_upstream_response:retry"]);

    assert_eq!(lines[1]["destination"], "shop-v2");
    assert_eq!(lines[1]["authority"], "shop.local");
    assert_eq!(lines[2]["status"], 404);
    assert_eq!(lines[2]["destination"], serde_json::Value::Null);
    assert_eq!(
        lines[2]["plugins"][0], "routing:on_request:respond",
        "the plugin that answered"
    );
}

#[tokio::test]
async fn the_access_log_writes_only_the_fields_asked_for() {
    let s = start(|c| {
        c.replace(
            "# fields = [\"time\", \"method\", \"path\", \"status\", \"duration_ms\"]",
            "fields = [\"status\", \"path\"]",
        )
    })
    .await;
    let reply = get_with(s.proxy.addr(), "/nowhere", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let path = s.access_log.clone();
    assert!(
        eventually(Duration::from_secs(10), async || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 1)
        })
        .await
    );
    let line = std::fs::read_to_string(&s.access_log).unwrap();
    assert_eq!(line.trim(), r#"{"status":404,"path":"/nowhere"}"#);
}

#[test]
fn bad_telemetry_config_is_refused_naming_the_key() {
    let error = refused(
        "[access_log]\nfields = [\"status\", \"colour\"]\n\n\
         [tracing]\notlp_endpoint = \"grpc://collector\"\nsampling = 2.0\n",
    );
    assert!(error.contains("access_log.fields"), "{error}");
    assert!(error.contains("unknown field \"colour\""), "{error}");
    assert!(error.contains("tracing.otlp_endpoint"), "{error}");
    assert!(error.contains("tracing.sampling"), "{error}");
    // refused() puts 5 lines of [admin] and [runtime] first.
    for line in ["refused.toml:7:", "refused.toml:10:", "refused.toml:11:"] {
        assert!(
            error.contains(line),
            "names the file and line ({line}): {error}"
        );
    }
}

/// The `switchyard_*` metric names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("switchyard_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}
