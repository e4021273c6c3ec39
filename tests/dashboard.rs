//! The live dashboard in headless Chromium (the Debian packages `chromium` and
//! `chromium-driver`, which `cargo xtask test` and CI install), driven over WebDriver: the page
//! loads without console errors and shows the traffic sent through the proxy. A screenshot is
//! saved as target/dashboard/dashboard.png for review.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::proxy::{example_config, scratch_dir};
use crate::support::{Killed, Proxy, Upstream, eventually, free_port, get_with, send};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Stops every Chromium process of this test's profile when the test ends, however it ends:
/// chromedriver's browser outlives chromedriver, and a failed assertion skips `close`.
struct BrowserReaper(std::path::PathBuf);

impl Drop for BrowserReaper {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-f", "--"])
            .arg(format!("--user-data-dir={}", self.0.display()))
            .status();
    }
}

/// A WebDriver session on a local chromedriver.
struct Browser {
    driver: SocketAddr,
    session: String,
}

impl Browser {
    async fn start(driver: SocketAddr, profile: &std::path::Path) -> Self {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1400,1100",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let answer = webdriver(driver, "POST", "/session", Some(capabilities)).await;
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        Self { driver, session }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        webdriver(self.driver, method, &path, body).await["value"].take()
    }

    async fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn run(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.call("POST", "/execute/sync", Some(body)).await
    }

    /// Everything the page logged to the console (and failed loads), as chromedriver keeps it.
    async fn console(&self) -> Vec<Value> {
        let logs = self
            .call("POST", "/se/log", Some(json!({ "type": "browser" })))
            .await;
        logs.as_array().cloned().unwrap_or_default()
    }

    async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 PNG"))
            .expect("valid base64")
    }

    async fn close(self) {
        let path = format!("/session/{}", self.session);
        webdriver(self.driver, "DELETE", &path, None).await;
    }
}

async fn webdriver(driver: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", driver.to_string())
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(60), send(driver, req))
        .await
        .unwrap_or_else(|_| panic!("chromedriver did not answer {method} {path}"));
    reply.json()
}

#[tokio::test]
async fn the_dashboard_shows_live_traffic_without_console_errors() {
    for binary in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(binary).exists(),
            "{binary} is missing: `cargo xtask test` installs it (apt-get install chromium chromium-driver)"
        );
    }
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

    let port = free_port();
    let driver: SocketAddr = ([127, 0, 0, 1], port).into();
    let _chromedriver = Killed(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    assert!(
        eventually(Duration::from_secs(20), async || {
            tokio::net::TcpStream::connect(driver).await.is_ok()
        })
        .await,
        "chromedriver never listened"
    );
    let profile = scratch_dir().join("chromium-profile");
    let _reaper = BrowserReaper(profile.clone());
    let browser = Browser::start(driver, &profile).await;
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

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("dashboard.png"), &png).unwrap();

    let console = browser.console().await;
    let errors: Vec<&Value> = console
        .iter()
        .filter(|entry| entry["level"] == "SEVERE" || entry["level"] == "WARNING")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
}
