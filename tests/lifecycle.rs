//! Start-up and shutdown: readiness and graceful drain.

use std::time::Duration;

use http::StatusCode;

use crate::support::config::proxy_to;
use crate::support::proxy::admin_status;
use crate::support::{Proxy, Upstream, eventually, get};

#[tokio::test]
async fn sigterm_drains_an_in_flight_request_then_exits() {
    let (app, mut arrived) = Upstream::announcing(Duration::from_millis(1500)).await;
    let mut proxy = Proxy::start(&format!(
        "[runtime]
drain_timeout = \"10s\"

{}",
        proxy_to(app.addr, "")
    ));
    assert_eq!(admin_status(proxy.admin, "/live"), Some(200));
    assert_eq!(admin_status(proxy.admin, "/ready"), Some(200));
    let addr = proxy.addr();

    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    let path = tokio::time::timeout(Duration::from_secs(5), arrived.recv())
        .await
        .expect("the request reached the upstream");
    assert_eq!(path.as_deref(), Some("/slow"));

    proxy.terminate();

    let stopped_accepting = eventually(Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        stopped_accepting,
        "the listener still accepts after SIGTERM"
    );

    let reply = in_flight.await.expect("client task");
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request was cut off"
    );
    assert_eq!(reply.text(), "finished\n");

    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.wait_exit(Duration::from_secs(10));
        (status, proxy.logs())
    })
    .await
    .expect("join");
    match status {
        (Some(status), _) => assert!(status.success(), "exit status {status}"),
        (None, logs) => panic!("proxy did not exit after draining; log:\n{logs}"),
    }
}

#[tokio::test]
async fn admin_config_shows_the_effective_config() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&proxy_to(app.addr, r#"lb = "least_request""#));

    let config: serde_json::Value =
        serde_json::from_str(&crate::support::proxy::admin_get(proxy.admin, "/config"))
            .expect("/config is JSON");

    assert_eq!(config["listeners"][0]["name"], "public");
    assert_eq!(config["listeners"][0]["default_cluster"], "app");
    assert_eq!(config["clusters"][0]["lb"], "least_request");
    assert_eq!(
        config["clusters"][0]["connect_timeout"], "1s",
        "defaults are filled in"
    );
}
