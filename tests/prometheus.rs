//! A real Prometheus server (the Debian package, which `cargo xtask test` and CI install) scrapes
//! the proxy with the shipped scrape config, and its query API returns the request counter.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;

use crate::support::config::proxy_to;
use crate::support::proxy::scratch_dir;
use crate::support::{Killed, Proxy, Upstream, eventually, free_port, get, get_with};

/// The shipped config/observability/prometheus.yml aimed at `admin`, scraping every second.
fn scrape_config(admin: SocketAddr) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/observability/prometheus.yml");
    let text = std::fs::read_to_string(&path).expect("read the shipped scrape config");
    for expected in [
        "127.0.0.1:9901",
        "scrape_interval: 15s",
        "metrics_path: /metrics",
    ] {
        assert!(text.contains(expected), "prometheus.yml lost {expected:?}");
    }
    text.replace("127.0.0.1:9901", &admin.to_string())
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_request_counter() {
    let binary = "/usr/bin/prometheus";
    assert!(
        std::path::Path::new(binary).exists(),
        "{binary} is missing: `cargo xtask test` installs it (apt-get install prometheus)"
    );
    let upstream = Upstream::echo("app").await;
    let proxy = Proxy::start(&proxy_to(upstream.addr, ""));
    for _ in 0..7 {
        assert_eq!(get(proxy.addr(), "/").await.status, StatusCode::OK);
    }

    let dir = scratch_dir();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, scrape_config(proxy.admin)).unwrap();
    let web: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _prometheus = Killed(
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    let query = "/api/v1/query?query=sum(switchyard_requests_total%7Blistener%3D%22public%22%2Cstatus_class%3D%222xx%22%7D)";
    let mut last = String::new();
    let answered = eventually(Duration::from_secs(60), async || {
        let Ok(reply) = tokio::time::timeout(Duration::from_secs(2), async {
            if tokio::net::TcpStream::connect(web).await.is_err() {
                return None;
            }
            Some(get_with(web, query, &[]).await)
        })
        .await
        else {
            return false;
        };
        let Some(reply) = reply else { return false };
        last = reply.text();
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&reply.body) else {
            return false;
        };
        json["data"]["result"][0]["value"][1] == "7"
    })
    .await;
    assert!(
        answered,
        "Prometheus never returned 7 requests; last answer: {last}"
    );

    // Every query of the shipped Grafana dashboard is valid PromQL to this Prometheus.
    for expr in grafana_queries() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$listener", ".*")
            .replace("$cluster", ".*");
        let path = format!("/api/v1/query?query={}", percent_encode(&expr));
        let reply = get_with(web, &path, &[]).await;
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        assert_eq!(json["status"], "success", "{expr}: {}", reply.text());
    }
}

/// The PromQL of every panel of config/observability/grafana-dashboard.json.
pub fn grafana_queries() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/observability/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read the Grafana dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(queries.len() > 20, "the dashboard lost its panels");
    queries
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
