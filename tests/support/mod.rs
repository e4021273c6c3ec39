//! Builders for integration tests: real upstreams on 127.0.0.1:0, the real `switchyard` binary,
//! and small HTTP clients. Waits are polls with deadlines, never fixed sleeps.
#![allow(dead_code)] // each test module uses part of the support code

pub mod browser;
pub mod client;
pub mod config;
pub mod control;
pub mod kube_api;
pub mod proxy;
pub mod tls;
pub mod unprivileged;
pub mod upstream;

pub use client::{get, get_with, h2c_send, raw_exchange, send};
pub use proxy::Proxy;
pub use upstream::Upstream;

use std::time::{Duration, Instant};

/// Polls `condition` every 10 ms until it holds or `deadline` passes; returns whether it held.
pub async fn eventually(deadline: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Counts how many replies came from each upstream (by the echo server's `x-echo-name`).
pub fn tally<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for name in names {
        *counts.entry(name.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// A child process (a helper server like Prometheus or chromedriver) killed when the test ends,
/// pass or fail.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now, for a program that must be told its address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The value of `series` (name and labels exactly as Prometheus text renders them, e.g.
/// `foo_total{listener="a"}`) in a /metrics body, if present.
pub fn prometheus_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs a command to completion; fails the test, with the command and its stderr, unless it
/// succeeds.
pub fn run_ok(command: &mut std::process::Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
