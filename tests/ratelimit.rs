//! The ratelimit plugin through the real proxy, on the shipped example.

use std::time::Duration;

use http::StatusCode;

use crate::support::client::H2Client;
use crate::support::proxy::example_config;
use crate::support::{Proxy, Upstream, eventually};

#[tokio::test]
async fn a_burst_beyond_the_bucket_gets_429_with_retry_after_and_the_bucket_refills() {
    let app = Upstream::echo("app").await;
    let config = example_config(
        "ratelimit.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", app.addr.to_string()),
        ],
    );
    let proxy = Proxy::start(&config);
    let client = H2Client::connect(proxy.addr()).await;
    let alice = [("x-user-id", "alice")];

    // 30 at once: the bucket holds 10 (a few may refill while they arrive, at 5/s).
    let started = std::time::Instant::now();
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let client = client.clone();
        burst.spawn(async move { client.get_with("/api/items", &alice).await });
    }
    let replies: Vec<_> = burst.join_all().await;
    let refill_during_burst = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert!(
        (10..=10 + refill_during_burst).contains(&ok),
        "{ok} of 30 got through in {:?}",
        started.elapsed()
    );
    let limited = replies
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("some were limited");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("ratelimit-limit"), Some("10"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    assert_eq!(limited.header("x-echo-name"), None, "never reached the app");

    // Another caller has a bucket of its own.
    let bob = client.get_with("/api/items", &[("x-user-id", "bob")]).await;
    assert_eq!(bob.status, StatusCode::OK);

    // Refilling at 5/s, alice gets through again well within the deadline.
    let refilled = eventually(Duration::from_secs(5), async || {
        client.get_with("/api/items", &alice).await.status == StatusCode::OK
    })
    .await;
    assert!(refilled, "the bucket never refilled");
}
