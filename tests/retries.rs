//! The retries plugin through the real proxy, on the shipped Linkerd-style example.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Mutex;

use crate::support::proxy::example_config;
use crate::support::{Proxy, Upstream, get, send};

/// What a scripted upstream saw: each request's `x-switchyard-attempt` and body.
#[derive(Default)]
struct Seen {
    attempts: Mutex<Vec<(String, Bytes)>>,
    count: AtomicUsize,
}

/// An upstream that answers its n-th request (0-based) with `status(n)`.
async fn scripted(status: impl Fn(usize) -> u16 + Send + Sync + 'static) -> (Upstream, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let log = Arc::clone(&seen);
    let status = Arc::new(status);
    let upstream = Upstream::serve(move |req: Request<hyper::body::Incoming>| {
        let log = Arc::clone(&log);
        let status = Arc::clone(&status);
        async move {
            let attempt = req
                .headers()
                .get("x-switchyard-attempt")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            log.attempts.lock().await.push((attempt, body));
            let n = log.count.fetch_add(1, Ordering::SeqCst);
            let mut response = Response::new(Full::new(Bytes::from(format!("answer {n}\n"))));
            *response.status_mut() = StatusCode::from_u16(status(n)).unwrap();
            response
        }
    })
    .await;
    (upstream, seen)
}

fn retries_proxy(upstream: &Upstream, edit: impl FnOnce(String) -> String) -> Proxy {
    let config = example_config(
        "retries-linkerd.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", upstream.addr.to_string()),
        ],
    );
    Proxy::start(&edit(config))
}

#[tokio::test]
async fn fails_twice_then_succeeds_in_three_tries() {
    let (upstream, seen) = scripted(|n| if n < 2 { 503 } else { 200 }).await;
    let proxy = retries_proxy(&upstream, |c| c);

    let reply = get(proxy.addr(), "/v1/users").await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "answer 2\n");
    let attempts: Vec<String> = seen
        .attempts
        .lock()
        .await
        .iter()
        .map(|(a, _)| a.clone())
        .collect();
    assert_eq!(
        attempts,
        ["1", "2", "3"],
        "the upstream sees which try it is"
    );
}

#[tokio::test]
async fn always_failing_gives_four_tries_then_the_error() {
    let (upstream, seen) = scripted(|_| 503).await;
    let proxy = retries_proxy(&upstream, |c| c);

    let reply = get(proxy.addr(), "/v1").await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.text(), "answer 3\n");
    assert_eq!(seen.count.load(Ordering::SeqCst), 4);
    // Unmatched routes are not retried.
    let reply = get(proxy.addr(), "/v2").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_hanging_upstream_gets_504_at_the_total_timeout_after_three_tries() {
    let hung = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hung);
    let upstream = Upstream::serve(move |_req| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    let proxy = retries_proxy(&upstream, |c| c);

    let started = Instant::now();
    let reply = get(proxy.addr(), "/v1").await;
    let took = started.elapsed();

    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert!(
        (Duration::from_millis(4_800)..Duration::from_millis(6_500)).contains(&took),
        "answered after {took:?}"
    );
    assert_eq!(hung.load(Ordering::SeqCst), 3, "2s + 2s + the last 1s");
}

#[tokio::test]
async fn post_is_not_retried_by_default() {
    let (upstream, seen) = scripted(|_| 503).await;
    // The same route without its method condition, so POST matches it.
    let proxy = retries_proxy(&upstream, |c| c.replace(r#"method = "GET", "#, ""));

    let post = Request::post("/v1/orders")
        .header("host", "example.test")
        .body(Full::new(Bytes::from_static(b"order")))
        .unwrap();
    let reply = send(proxy.addr(), post).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn small_bodies_are_replayed_and_large_ones_are_not_retried() {
    let (upstream, seen) = scripted(|n| if n % 2 == 0 { 503 } else { 200 }).await;
    let proxy = retries_proxy(&upstream, |c| {
        c.replace(r#"method = "GET", "#, "")
            .replace("retry_on = [", "retry_non_idempotent = true, retry_on = [")
    });

    let small = Request::put("/v1/doc")
        .header("host", "example.test")
        .body(Full::new(Bytes::from_static(b"small body")))
        .unwrap();
    let reply = send(proxy.addr(), small).await;
    assert_eq!(reply.status, StatusCode::OK);
    {
        let attempts = seen.attempts.lock().await;
        assert_eq!(attempts.len(), 2);
        assert!(
            attempts.iter().all(|(_, body)| body == "small body"),
            "replayed whole"
        );
    }

    let large = Bytes::from(vec![b'x'; 200 * 1024]);
    let req = Request::put("/v1/doc")
        .header("host", "example.test")
        .body(Full::new(large.clone()))
        .unwrap();
    let reply = send(proxy.addr(), req).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "not retried");
    let attempts = seen.attempts.lock().await;
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[2].1, large, "streamed through whole");
}

#[tokio::test]
async fn the_budget_stops_retries_when_every_request_fails() {
    let (upstream, seen) = scripted(|_| 503).await;
    let proxy = retries_proxy(&upstream, |c| {
        c.replace("min_retries_per_second = 10", "min_retries_per_second = 1")
    });

    for _ in 0..100 {
        assert_eq!(
            get(proxy.addr(), "/v1").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    // Without a budget: 400 tries. With it: 100 + at most 1/s * 10 s + 20% of 100.
    let tries = seen.count.load(Ordering::SeqCst);
    assert!((100..=135).contains(&tries), "{tries} tries");
    let metrics = crate::support::proxy::admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains(r#"switchyard_plugin_budget_exhausted{plugin="retries",route="/v1"}"#),
        "{metrics}"
    );
}

/// The plugin asks at init to see failed attempts only: a success costs no
/// `on-upstream-response` call, a failure still gets one (and its retry).
#[tokio::test]
async fn successes_are_not_shown_to_the_plugin() {
    let (upstream, seen) = scripted(|n| if n == 3 { 503 } else { 200 }).await;
    let proxy = retries_proxy(&upstream, |c| c);
    let calls = || {
        crate::support::prometheus_value(
            &crate::support::proxy::admin_get(proxy.admin, "/metrics"),
            r#"switchyard_plugin_hook_calls_total{plugin="retries",hook="on_upstream_response"}"#,
        )
        .unwrap_or(0.0)
    };

    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "/v1/users").await.status, StatusCode::OK);
    }
    assert_eq!(calls(), 0.0, "three successes, no call");

    // The fourth request's first try fails (503): that attempt is shown and retried.
    assert_eq!(get(proxy.addr(), "/v1/users").await.status, StatusCode::OK);
    assert_eq!(seen.count.load(Ordering::SeqCst), 5);
    assert_eq!(calls(), 1.0, "only the failed attempt");
}
