//! The canary plugin through the real proxy, on the shipped example config.

use std::collections::HashMap;

use crate::support::client::H2Client;
use crate::support::proxy::example_config;
use crate::support::{Proxy, Upstream};

/// The canary example with its two versions on real echo upstreams.
async fn canary_proxy(edit: impl FnOnce(String) -> String) -> (Proxy, Upstream, Upstream) {
    let v1 = Upstream::echo("v1").await;
    let v2 = Upstream::echo("v2").await;
    let config = example_config(
        "canary-80-20.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", v1.addr.to_string()),
            ("127.0.0.1:9002", v2.addr.to_string()),
        ],
    );
    (Proxy::start(&edit(config)), v1, v2)
}

/// Sends `n` requests for myservice, 32 at a time over one h2c connection; counts per version.
async fn split(
    proxy: &Proxy,
    n: usize,
    headers: &'static [(&'static str, &'static str)],
) -> HashMap<String, usize> {
    let client = H2Client::connect(proxy.addr()).await;
    let mut counts = HashMap::new();
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..n {
        if pending.len() >= 32 {
            let name: String = pending.join_next().await.unwrap().unwrap();
            *counts.entry(name).or_default() += 1;
        }
        let client = client.clone();
        pending.spawn(async move {
            let mut all = vec![("authority", "myservice")];
            all.extend_from_slice(headers);
            let reply = client.get_with("/", &all).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply.echo_name()
        });
    }
    while let Some(name) = pending.join_next().await {
        *counts.entry(name.unwrap()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn ten_thousand_requests_split_80_20() {
    let (proxy, _v1, _v2) = canary_proxy(|c| c).await;

    let counts = split(&proxy, 10_000, &[]).await;

    let v2 = counts.get("v2").copied().unwrap_or(0);
    let share = v2 as f64 / 10_000.0 * 100.0;
    assert!(
        (18.0..=22.0).contains(&share),
        "v2 got {share:.2}% ({counts:?})"
    );
    assert_eq!(counts.values().sum::<usize>(), 10_000);
    let metrics = crate::support::proxy::admin_get(proxy.admin, "/metrics");
    let line =
        format!(r#"switchyard_plugin_requests{{plugin="canary",backend="myservice-v2"}} {v2}"#);
    assert!(metrics.contains(&line), "no {line} in\n{metrics}");
}

#[tokio::test]
async fn the_override_header_forces_v2() {
    let (proxy, _v1, _v2) = canary_proxy(|c| c).await;
    let counts = split(&proxy, 200, &[("x-canary", "myservice-v2")]).await;
    assert_eq!(counts.get("v2"), Some(&200), "{counts:?}");
}

#[tokio::test]
async fn the_sticky_header_stays_on_one_backend() {
    let (proxy, _v1, _v2) = canary_proxy(|c| c).await;
    let client = H2Client::connect(proxy.addr()).await;
    let mut versions_seen = std::collections::HashSet::new();
    for user in 0..40 {
        let user = format!("user-{user}");
        let headers = [("authority", "myservice"), ("x-user-id", user.as_str())];
        let first = client.get_with("/", &headers).await.echo_name();
        for _ in 0..10 {
            assert_eq!(
                client.get_with("/", &headers).await.echo_name(),
                first,
                "{user} moved"
            );
        }
        versions_seen.insert(first);
    }
    assert_eq!(
        versions_seen.len(),
        2,
        "users are spread over both versions"
    );
}

#[tokio::test]
async fn weights_changed_to_100_0_by_reload_send_everything_to_v1() {
    let (proxy, _v1, _v2) = canary_proxy(|c| c).await;
    let before = split(&proxy, 500, &[]).await;
    assert!(before.get("v2").is_some_and(|&n| n > 0), "{before:?}");

    // Roll back: rewrite the weights in place and send SIGHUP (the file watcher would pick it
    // up too; SIGHUP makes the moment explicit).
    let config = std::fs::read_to_string(&proxy.config_path).unwrap();
    let rolled_back = config
        .replace("weight = 80", "weight = 100")
        .replace("weight = 20", "weight = 0");
    std::fs::write(&proxy.config_path, rolled_back).unwrap();
    proxy.reload_by_hangup_ok().await;

    let counts = split(&proxy, 1_000, &[]).await;
    assert_eq!(counts.get("v1"), Some(&1_000), "{counts:?}");
}

#[tokio::test]
async fn other_hosts_go_to_the_default_cluster() {
    let (proxy, _v1, _v2) = canary_proxy(|c| c).await;
    let client = H2Client::connect(proxy.addr()).await;
    for _ in 0..50 {
        let reply = client
            .get_with("/", &[("authority", "elsewhere:8080")])
            .await;
        assert_eq!(reply.echo_name(), "v1");
    }
}

#[tokio::test]
async fn the_response_names_the_side_that_served_it() {
    let (proxy, _v1, _v2) = canary_proxy(|c| c).await;
    let client = H2Client::connect(proxy.addr()).await;
    for _ in 0..50 {
        let reply = client.get_with("/", &[("authority", "myservice")]).await;
        let served_by = reply.header("x-served-by").map(str::to_owned);
        let expected = format!("myservice-{}", reply.echo_name());
        assert_eq!(
            served_by.as_deref(),
            Some(expected.as_str()),
            "{:?}",
            reply.headers
        );
    }
    let forced = client
        .get_with(
            "/",
            &[("authority", "myservice"), ("x-canary", "myservice-v2")],
        )
        .await;
    assert_eq!(forced.header("x-served-by"), Some("myservice-v2"));
    // Hosts the rule does not name are not split, and not labelled.
    let other = client.get_with("/", &[("authority", "elsewhere")]).await;
    assert_eq!(other.header("x-served-by"), None);
}
