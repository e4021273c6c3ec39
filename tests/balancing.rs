//! Each load-balancing policy, measured through the proxy against real upstreams.

use std::time::Duration;

use crate::support::config::{cluster_raw, listener};
use crate::support::{Proxy, Upstream, get, get_with, tally};

fn cluster_config(endpoints: &[String], lb: &str, extra: &str) -> String {
    let extra = format!("lb = \"{lb}\"\n{extra}");
    listener("public", "app", &[]) + &cluster_raw("app", &endpoints.join(", "), &extra)
}

fn plain(upstreams: &[&Upstream]) -> Vec<String> {
    upstreams
        .iter()
        .map(|u| format!("\"{}\"", u.addr))
        .collect()
}

async fn names(proxy: &Proxy, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(proxy.addr(), "/").await.echo_name());
    }
    out
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let (a, b, c) = (
        Upstream::echo("a").await,
        Upstream::echo("b").await,
        Upstream::echo("c").await,
    );
    let proxy = Proxy::start(&cluster_config(&plain(&[&a, &b, &c]), "round_robin", ""));

    let counts = tally(names(&proxy, 90).await.iter().map(String::as_str));

    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![30, 30, 30],
        "{counts:?}"
    );
}

#[tokio::test]
async fn round_robin_follows_endpoint_weights() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let endpoints = vec![
        format!("{{ address = \"{}\", weight = 3 }}", a.addr),
        format!("{{ address = \"{}\", weight = 1 }}", b.addr),
    ];
    let proxy = Proxy::start(&cluster_config(&endpoints, "round_robin", ""));

    let counts = tally(names(&proxy, 80).await.iter().map(String::as_str));

    assert_eq!(counts["a"], 60, "{counts:?}");
    assert_eq!(counts["b"], 20, "{counts:?}");
}

#[tokio::test]
async fn random_reaches_every_endpoint_about_equally() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let proxy = Proxy::start(&cluster_config(&plain(&[&a, &b]), "random", ""));

    let counts = tally(names(&proxy, 200).await.iter().map(String::as_str));

    assert!(
        counts.values().all(|&n| (60..=140).contains(&n)),
        "{counts:?}"
    );
}

#[tokio::test]
async fn least_request_prefers_the_idle_endpoint() {
    // "busy" holds every request for 300 ms; "idle" answers at once. Eight clients in parallel:
    // round robin would send half of everything to "busy"; least request sends almost nothing.
    let busy = Upstream::slow_echo("busy", Duration::from_millis(300)).await;
    let idle = Upstream::echo("idle").await;
    let proxy = Proxy::start(&cluster_config(
        &plain(&[&busy, &idle]),
        "least_request",
        "",
    ));
    let addr = proxy.addr();

    let clients: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..25 {
                    seen.push(get(addr, "/").await.echo_name());
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.expect("client task"));
    }

    let counts = tally(all.iter().map(String::as_str));
    let to_busy = counts.get("busy").copied().unwrap_or(0);
    assert!(
        to_busy <= 30,
        "least_request sent {to_busy} of 200 to the busy endpoint: {counts:?}"
    );
}

#[tokio::test]
async fn ewma_avoids_a_slow_endpoint() {
    // One request at a time, so in-flight counts are always equal: only latency can tell them apart.
    let slow = Upstream::slow_echo("slow", Duration::from_millis(50)).await;
    let fast = Upstream::echo("fast").await;
    let proxy = Proxy::start(&cluster_config(&plain(&[&slow, &fast]), "ewma", ""));

    let counts = tally(names(&proxy, 100).await.iter().map(String::as_str));

    let to_slow = counts.get("slow").copied().unwrap_or(0);
    assert!(
        to_slow <= 5,
        "ewma sent {to_slow} of 100 to the slow endpoint: {counts:?}"
    );
}

#[tokio::test]
async fn ring_hash_is_sticky_per_key_and_spreads_keys() {
    let (a, b, c) = (
        Upstream::echo("a").await,
        Upstream::echo("b").await,
        Upstream::echo("c").await,
    );
    let proxy = Proxy::start(&cluster_config(
        &plain(&[&a, &b, &c]),
        "ring_hash",
        r#"hash_header = "x-user-id""#,
    ));

    let mut owners = std::collections::BTreeSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            seen.insert(
                get_with(proxy.addr(), "/", &[("x-user-id", &user)])
                    .await
                    .echo_name(),
            );
        }
        assert_eq!(seen.len(), 1, "{user} was sent to {seen:?}");
        owners.extend(seen);
    }

    assert_eq!(
        owners.len(),
        3,
        "30 users should land on all three endpoints: {owners:?}"
    );
}

#[tokio::test]
async fn dns_names_are_resolved() {
    let app = Upstream::echo("by-name").await;
    let endpoints = vec![format!("\"localhost:{}\"", app.addr.port())];
    let proxy = Proxy::start(&cluster_config(
        &endpoints,
        "round_robin",
        r#"dns_refresh = "1s""#,
    ));

    let reply = get(proxy.addr(), "/").await;

    assert_eq!(reply.echo_name(), "by-name", "{}", reply.text());
    let clusters = crate::support::proxy::admin_get(proxy.admin, "/clusters");
    assert!(
        clusters.contains(&format!("127.0.0.1:{}", app.addr.port())),
        "{clusters}"
    );
}
