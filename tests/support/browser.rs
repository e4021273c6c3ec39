//! Headless Chromium (the Debian packages `chromium` and `chromium-driver`, which
//! `cargo xtask test` and CI install) driven over WebDriver, for the dashboards' tests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use super::proxy::scratch_dir;
use super::{Killed, eventually, free_port, send};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Stops every Chromium process of this test's profile when the test ends, however it ends:
/// chromedriver's browser outlives chromedriver, and a failed assertion skips `close`.
pub struct BrowserReaper(std::path::PathBuf);

impl Drop for BrowserReaper {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-f", "--"])
            .arg(format!("--user-data-dir={}", self.0.display()))
            .status();
    }
}

/// A WebDriver session on a local chromedriver.
pub struct Browser {
    driver: SocketAddr,
    session: String,
}

impl Browser {
    pub async fn start(driver: SocketAddr, profile: &std::path::Path) -> Self {
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

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        webdriver(self.driver, method, &path, body).await["value"].take()
    }

    pub async fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn run(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.call("POST", "/execute/sync", Some(body)).await
    }

    /// Everything the page logged to the console (and failed loads), as chromedriver keeps it.
    pub async fn console(&self) -> Vec<Value> {
        let logs = self
            .call("POST", "/se/log", Some(json!({ "type": "browser" })))
            .await;
        logs.as_array().cloned().unwrap_or_default()
    }

    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 PNG"))
            .expect("valid base64")
    }

    pub async fn close(self) {
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

/// chromedriver, a browser on it, and what stops both when the test ends.
pub struct Session {
    pub browser: Browser,
    _reaper: BrowserReaper,
    _chromedriver: Killed,
}

impl Session {
    /// Starts chromedriver on a free port and a headless browser with a fresh profile.
    pub async fn start() -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: `cargo xtask test` installs it (apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let driver: SocketAddr = ([127, 0, 0, 1], port).into();
        let chromedriver = Killed(
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
        let reaper = BrowserReaper(profile.clone());
        let browser = Browser::start(driver, &profile).await;
        Self {
            browser,
            _reaper: reaper,
            _chromedriver: chromedriver,
        }
    }

    /// Console entries at WARNING or SEVERE.
    pub async fn console_errors(&self) -> Vec<Value> {
        self.browser
            .console()
            .await
            .into_iter()
            .filter(|entry| entry["level"] == "SEVERE" || entry["level"] == "WARNING")
            .collect()
    }

    /// Saves a screenshot as target/<folder>/<name> for review.
    pub async fn keep_screenshot(&self, folder: &str, name: &str) -> std::path::PathBuf {
        let png = self.browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let out = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(folder);
        std::fs::create_dir_all(&out).unwrap();
        let path = out.join(name);
        std::fs::write(&path, &png).unwrap();
        path
    }
}
