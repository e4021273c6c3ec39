//! The routing plugin through the real proxy, on the shipped example.

use http::StatusCode;

use crate::support::client::H2Client;
use crate::support::proxy::example_config;
use crate::support::{Proxy, Upstream, get, get_with};

async fn routing_proxy() -> (Proxy, Upstream, Upstream) {
    let v1 = Upstream::echo("api-v1").await;
    let v2 = Upstream::echo("api-v2").await;
    let config = example_config(
        "routing.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", v1.addr.to_string()),
            ("127.0.0.1:9002", v2.addr.to_string()),
        ],
    );
    (Proxy::start(&config), v1, v2)
}

#[tokio::test]
async fn a_matching_route_rewrites_path_host_and_headers() {
    let (proxy, _v1, _v2) = routing_proxy().await;

    let reply = get_with(
        proxy.addr(),
        "/v2/users?id=7",
        &[("host", "api.example.com:8080"), ("x-debug", "1")],
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.echo_name(), "api-v2");
    let seen = reply.json();
    assert_eq!(seen["path"], "/users", "{seen}");
    assert_eq!(seen["query"], "id=7", "{seen}");
    assert_eq!(seen["headers"]["host"], "api.internal", "{seen}");
    assert_eq!(seen["headers"]["x-route"], "api-v2", "{seen}");
    assert!(seen["headers"].get("x-debug").is_none(), "{seen}");
    assert_eq!(reply.header("x-served-by"), Some("api-v2"));
}

#[tokio::test]
async fn the_host_rewrite_reaches_the_upstream_over_http2_too() {
    let (proxy, _v1, _v2) = routing_proxy().await;
    let client = H2Client::connect(proxy.addr()).await;

    let reply = client
        .get_with("/v2/orders", &[("authority", "shop.example.com")])
        .await;

    assert_eq!(reply.echo_name(), "api-v2");
    assert_eq!(reply.json()["headers"]["host"], "api.internal");
    assert_eq!(reply.json()["path"], "/orders");
}

#[tokio::test]
async fn unmatched_requests_go_to_the_default_cluster() {
    let (proxy, _v1, _v2) = routing_proxy().await;
    // GET only: a POST to /v2/ is not the api-v2 route.
    let post = http::Request::post("/v2/users")
        .header("host", "api.example.com")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let reply = crate::support::send(proxy.addr(), post).await;
    assert_eq!(reply.echo_name(), "api-v1");
    assert_eq!(reply.json()["path"], "/v2/users");

    let reply = get_with(proxy.addr(), "/x?tier=gold", &[("x-beta", "1")]).await;
    assert_eq!(reply.echo_name(), "api-v2", "header regex + query match");
    let reply = get_with(proxy.addr(), "/x?tier=gold", &[("x-beta", "no")]).await;
    assert_eq!(reply.echo_name(), "api-v1");
}

#[tokio::test]
async fn redirects_and_direct_responses_never_reach_an_upstream() {
    let (proxy, _v1, _v2) = routing_proxy().await;

    let reply = get(proxy.addr(), "/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok\n");
    assert_eq!(reply.header("x-echo-name"), None);

    let reply = get_with(
        proxy.addr(),
        "/docs/old/intro.html?lang=en",
        &[("host", "docs.test:8080")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        reply.header("location"),
        Some("http://docs.test:8080/docs/intro.html?lang=en")
    );
    assert_eq!(reply.header("x-echo-name"), None);

    let metrics = crate::support::proxy::admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains(r#"switchyard_plugin_requests{plugin="routing",route="health"} 1"#),
        "{metrics}"
    );
}
