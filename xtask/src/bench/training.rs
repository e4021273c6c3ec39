//! The load that teaches the release build about the proxy: each of the benchmark's Switchyard
//! rows started under a watcher (callgrind for `--code-order`, an instrumented binary for
//! `--pgo`), served HTTP/1.1 at the benchmark's main concurrency (and HTTP/2 on the row without
//! plugins, when h2load is installed), and scraped once for metrics, as a Prometheus server does.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Stage;
use super::load::{self, Load};
use super::servers::{Running, Server};

/// Load on each row: enough requests under valgrind to run every path they take, at the
/// benchmark's main concurrency (so instances are made on demand as there).
const LOAD: Duration = Duration::from_secs(3);
const CONNECTIONS: u32 = 64;
/// HTTP/2 streams of the base row's second load, when h2load is installed.
const STREAMS: u32 = 16;

/// Starts each Switchyard row on `stage` under the wrapper `wrapper` gives for it, serves it the
/// load, then hands the running proxy to `done`.
pub(super) fn each_row(
    stage: &Stage,
    wrapper: impl Fn(&Server) -> Vec<String>,
    mut done: impl FnMut(&Server, Running) -> Result<()>,
) -> Result<()> {
    let rows = Server::proxies()?
        .into_iter()
        .filter(|p| p.base == "switchyard");
    for proxy in rows {
        let running = proxy.start_wrapped(&stage.setup, &wrapper(&proxy))?;
        let requests = super::requests(proxy.workload, &stage.token);
        let mut loads = vec![Load::Http1 {
            connections: CONNECTIONS,
        }];
        if proxy.name == "switchyard" && Path::new("/usr/bin/h2load").exists() {
            loads.push(Load::Http2 { streams: STREAMS });
        }
        for load in loads {
            let sample = load::measure(load, proxy.port, LOAD, &running, requests)?;
            if sample.requests == 0 || sample.errors > 0 {
                bail!(
                    "{}, {}: the load had {} requests and {} errors",
                    proxy.name,
                    load.label(),
                    sample.requests,
                    sample.errors
                );
            }
        }
        scrape_metrics(proxy.admin_port)?;
        done(&proxy, running)?;
    }
    Ok(())
}

/// `GET /metrics` from the admin API, read to the end.
fn scrape_metrics(port: u16) -> Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("cannot reach the admin API on port {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    if !response.starts_with(b"HTTP/1.1 200") {
        bail!("the admin API did not answer /metrics with 200");
    }
    Ok(())
}
