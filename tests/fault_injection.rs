//! The fault-injection plugin through the real proxy, on the shipped Istio-style example.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::client::H2Client;
use crate::support::proxy::example_config;
use crate::support::{Proxy, Upstream};

/// Sends `n` GETs, 64 at a time; returns how many were aborted and how many took at least the
/// injected 400 ms (a delayed request always does; a slow machine may add a few more).
async fn observe(
    proxy: &Proxy,
    n: usize,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> (usize, usize) {
    let client = H2Client::connect(proxy.addr()).await;
    let mut pending = tokio::task::JoinSet::new();
    let (mut aborted, mut delayed) = (0, 0);
    let mut tally = |(status, took): (StatusCode, Duration)| {
        if status == StatusCode::SERVICE_UNAVAILABLE {
            aborted += 1;
        } else {
            assert_eq!(status, StatusCode::OK);
            if took >= Duration::from_millis(400) {
                delayed += 1;
            }
        }
    };
    for _ in 0..n {
        if pending.len() >= 64 {
            tally(pending.join_next().await.unwrap().unwrap());
        }
        let client = client.clone();
        pending.spawn(async move {
            let started = Instant::now();
            let reply = client.get_with(path, headers).await;
            (reply.status, started.elapsed())
        });
    }
    while let Some(done) = pending.join_next().await {
        tally(done.unwrap());
    }
    (aborted, delayed)
}

async fn fault_proxy() -> (Proxy, Upstream) {
    fault_proxy_with(&[]).await
}

/// The shipped example with `changes` made to it as well.
async fn fault_proxy_with(changes: &[(&str, String)]) -> (Proxy, Upstream) {
    let ratings = Upstream::echo("ratings").await;
    let mut replacements = vec![
        ("127.0.0.1:9901", "127.0.0.1:0".into()),
        ("127.0.0.1:8080", "127.0.0.1:0".into()),
        ("127.0.0.1:9001", ratings.addr.to_string()),
        // A shorter delay keeps the test quick; the rate is what is under test.
        (r#"fixed = "2s""#, r#"fixed = "400ms""#.into()),
    ];
    replacements.extend(changes.iter().cloned());
    let config = example_config("fault-injection.toml", &replacements);
    (Proxy::start(&config), ratings)
}

#[tokio::test]
async fn ten_percent_delayed_and_five_percent_aborted_over_2000_requests() {
    let (proxy, _ratings) = fault_proxy().await;

    let (aborted, delayed) = observe(&proxy, 2_000, "/ratings/1", &[("x-fault", "yes")]).await;

    // Expected 100 aborted and 190 delayed (10% of the 95% not aborted); about ±4 sigma.
    assert!((60..=140).contains(&aborted), "{aborted} aborted");
    let metrics = crate::support::proxy::admin_get(proxy.admin, "/metrics");
    let count = |kind: &str| -> usize {
        let prefix =
            format!(r#"switchyard_plugin_faults{{plugin="fault",rule="0",kind="{kind}"}} "#);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
    };
    assert_eq!(count("abort"), aborted);
    let injected_delays = count("delay");
    assert!(
        (135..=250).contains(&injected_delays),
        "{injected_delays} delayed"
    );
    assert!(
        delayed >= injected_delays,
        "only {delayed} requests took 400ms, but {injected_delays} delays were injected"
    );
}

#[tokio::test]
async fn unmatched_requests_are_untouched() {
    let (proxy, _ratings) = fault_proxy().await;

    let (aborted, _) = observe(&proxy, 500, "/ratings/1", &[]).await;
    assert_eq!(aborted, 0, "without the header");
    let (aborted, _) = observe(&proxy, 500, "/reviews/1", &[("x-fault", "yes")]).await;
    assert_eq!(aborted, 0, "on another path");
    let metrics = crate::support::proxy::admin_get(proxy.admin, "/metrics");
    assert!(!metrics.contains("switchyard_plugin_faults"), "{metrics}");
}

#[tokio::test]
async fn rules_staged_at_zero_percent_are_not_called_until_a_reload_raises_them() {
    let (proxy, _ratings) = fault_proxy_with(&[
        ("percent = 10.0", "percent = 0.0".into()),
        ("percent = 5.0", "percent = 0.0".into()),
    ])
    .await;
    let calls = || {
        crate::support::prometheus_value(
            &crate::support::proxy::admin_get(proxy.admin, "/metrics"),
            r#"switchyard_plugin_hook_calls_total{plugin="fault",hook="on_request"}"#,
        )
    };

    let (aborted, _) = observe(&proxy, 200, "/ratings/1", &[("x-fault", "yes")]).await;
    assert_eq!(aborted, 0);
    // The first call told the proxy the hook has nothing to do with this config. Requests
    // already on their way into the hook then (on another worker, or waiting for an instance)
    // may have called it too — at most the 64 in flight — but no request after.
    let first = calls().expect("the hook's call count");
    assert!((1.0..=64.0).contains(&first), "{first} calls");
    let (aborted, _) = observe(&proxy, 200, "/ratings/1", &[("x-fault", "yes")]).await;
    assert_eq!(aborted, 0);
    assert_eq!(
        calls(),
        Some(first),
        "called again after it said it has nothing to do"
    );

    let config = std::fs::read_to_string(&proxy.config_path).unwrap();
    let raised = config.replace(
        "abort = { status = 503, percent = 0.0 }",
        "abort = { status = 503, percent = 100.0 }",
    );
    assert_ne!(raised, config, "the abort rule is in the config");
    std::fs::write(&proxy.config_path, raised).unwrap();
    proxy.reload_by_hangup_ok().await;

    let (aborted, _) = observe(&proxy, 100, "/ratings/1", &[("x-fault", "yes")]).await;
    assert_eq!(aborted, 100, "the reloaded plugin's hook runs again");
}
