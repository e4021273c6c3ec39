//! The live dashboard in headless Chromium (the Debian packages `chromium` and
//! `chromium-driver`, which `cargo xtask test` and CI install), driven over WebDriver: the page
//! loads without console errors and shows the traffic sent through the proxy. A screenshot is
//! saved as target/dashboard/dashboard.png for review.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::support::browser::Session;
use crate::support::proxy::example_config;
use crate::support::{Proxy, Upstream, eventually, get_with, send};

#[tokio::test]
async fn the_dashboard_shows_live_traffic_without_console_errors() {
    let v1 = Upstream::echo("shop-v1").await;
    let v2 = Upstream::echo("shop-v2").await;
    let flaky = Upstream::echo("flaky").await;
    let config = example_config(
        "observability.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", v1.addr.to_string()),
            ("127.0.0.1:9002", v2.addr.to_string()),
            ("127.0.0.1:9003", flaky.addr.to_string()),
            ("path = \"stdout\"", "path = \"/dev/null\"".into()),
        ],
    );
    let proxy = Proxy::start(&config);
    for i in 0..20 {
        let req = Request::get("/shop/cart")
            .header("host", "shop.local")
            .header("x-canary", if i % 4 == 0 { "shop-v2" } else { "shop-v1" })
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send(proxy.addr(), req).await.status, StatusCode::OK);
    }
    assert_eq!(
        get_with(proxy.addr(), "/flaky/x?status=503", &[])
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A gRPC call the upstream (not a gRPC server) ends without a status: UNKNOWN to its client.
    let grpc = Request::post("/flaky/pkg.Svc/Call")
        .header("host", "flaky.local")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(proxy.addr(), grpc).await.status, StatusCode::OK);

    let session = Session::start().await;
    let browser = &session.browser;
    browser
        .go(&format!("http://{}/dashboard", proxy.admin))
        .await;

    // The page polls /metrics.json every second; wait for the counts to show.
    let mut shown = Value::Null;
    let loaded = eventually(Duration::from_secs(30), async || {
        shown = browser
            .run(
                "return { total: document.getElementById('total-requests').textContent, \
                 canary: document.getElementById('canary').textContent, \
                 plugins: document.getElementById('plugins').textContent, \
                 clusters: document.getElementById('clusters').textContent, \
                 grpc: document.getElementById('grpc').textContent, \
                 status: document.getElementById('status').textContent };",
            )
            .await;
        shown["total"] == "22"
            && shown["status"]
                .as_str()
                .is_some_and(|s| s.contains("updated"))
    })
    .await;
    assert!(
        loaded,
        "the dashboard never showed the 22 requests: {shown}"
    );
    let grpc = shown["grpc"].as_str().unwrap();
    assert!(grpc.contains("2 UNKNOWN"), "{grpc}");
    let canary = shown["canary"].as_str().unwrap();
    assert!(
        canary.contains("canary · shop-v1") && canary.contains("75.0%"),
        "{canary}"
    );
    assert!(
        canary.contains("canary · shop-v2") && canary.contains("25.0%"),
        "{canary}"
    );
    assert!(
        shown["plugins"]
            .as_str()
            .unwrap()
            .contains("routing · on_request")
    );
    assert!(shown["clusters"].as_str().unwrap().contains("flaky"));

    // A second refresh computes rates from two readings; still no errors.
    let rps_shown = eventually(Duration::from_secs(10), async || {
        let rps = browser
            .run("return document.getElementById('rps').textContent")
            .await;
        rps.as_str().is_some_and(|r| r.parse::<f64>().is_ok())
    })
    .await;
    assert!(rps_shown);

    session.keep_screenshot("dashboard", "dashboard.png").await;
    let errors = session.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
