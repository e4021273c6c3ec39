//! Driving load at a server and reading what it cost: wrk for HTTP/1.1 keep-alive (latency
//! percentiles from a Lua report script), h2load for HTTP/2 streams, /proc for CPU time.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::servers::{Running, cpu_time};

/// A load shape: protocol and concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Load {
    /// HTTP/1.1 keep-alive with this many connections (wrk, one thread).
    Http1 { connections: u32 },
    /// HTTP/1.1 keep-alive over one connection while a lowest-priority spinner keeps the cores
    /// from going idle. On a virtual machine an idle core halts and every wake-up costs tens of
    /// microseconds, twice per request at one connection, for every server alike; this load
    /// shows the latency the server itself adds.
    Http1Awake,
    /// HTTP/2 (h2c prior knowledge) with this many concurrent streams on one connection.
    Http2 { streams: u32 },
}

impl Load {
    pub fn label(self) -> String {
        match self {
            Self::Http1 { connections } => format!("h1 x{connections}"),
            Self::Http1Awake => "h1 x1 awake".to_owned(),
            Self::Http2 { streams } => format!("h2 x{streams} streams"),
        }
    }
}

/// What each request of a load carries: its path and one optional header.
#[derive(Debug, Clone, Copy)]
pub struct Requests<'a> {
    pub path: &'a str,
    pub header: Option<(&'a str, &'a str)>,
}

/// One measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub requests_per_second: f64,
    pub requests: u64,
    pub errors: u64,
    /// Latency percentiles in microseconds (h2load gives only the mean, reported as p50).
    pub p50_us: f64,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    /// The server's CPU time (user + system) per request.
    pub cpu_us_per_request: f64,
}

/// Runs `load` against `port` for `duration` and measures `server`'s CPU time over it.
pub fn measure(
    load: Load,
    port: u16,
    duration: Duration,
    server: &Running,
    requests: Requests<'_>,
) -> Result<Sample> {
    let cpu_before = cpu_time(server.pid()).context("read the server's CPU time")?;
    let mut sample = match load {
        Load::Http1 { connections } => wrk(port, connections, duration, requests)?,
        Load::Http1Awake => {
            let _spinner = Spinner::start()?;
            wrk(port, 1, duration, requests)?
        }
        Load::Http2 { streams } => h2load(port, streams, duration, requests)?,
    };
    let cpu_after = cpu_time(server.pid()).context("read the server's CPU time")?;
    if sample.requests > 0 {
        let cpu = cpu_after.saturating_sub(cpu_before).as_secs_f64();
        sample.cpu_us_per_request = cpu * 1e6 / sample.requests as f64;
    }
    Ok(sample)
}

/// A busy loop at the lowest priority (`nice -n 19`): it runs only when nothing else wants the
/// core, so it takes no time from the servers and keeps the core from halting. Stopped on drop.
struct Spinner(std::process::Child);

impl Spinner {
    fn start() -> Result<Self> {
        let child = Command::new("nice")
            .args(["-n", "19", "sh", "-c", "while :; do :; done"])
            .spawn()
            .context("cannot start the spinner (nice, sh)")?;
        Ok(Self(child))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wrk(port: u16, connections: u32, duration: Duration, requests: Requests<'_>) -> Result<Sample> {
    let script = crate::root().join("benches/load/wrk-report.lua");
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}")])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--timeout", "5s", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}{}", requests.path))
        .env("BENCH_HEADER_NAME", requests.header.map_or("", |h| h.0))
        .env("BENCH_HEADER_VALUE", requests.header.map_or("", |h| h.1))
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("BENCH "))
        .with_context(|| format!("wrk printed no report:\n{text}"))?;
    let field = |name: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in {line:?}"))
    };
    let requests = field("requests")?;
    let seconds = field("duration_us")? / 1e6;
    Ok(Sample {
        requests_per_second: if seconds > 0.0 {
            requests / seconds
        } else {
            0.0
        },
        requests: requests as u64,
        errors: field("errors")? as u64,
        p50_us: field("p50")?,
        p99_us: Some(field("p99")?),
        p999_us: Some(field("p999")?),
        cpu_us_per_request: 0.0,
    })
}

fn h2load(port: u16, streams: u32, duration: Duration, requests: Requests<'_>) -> Result<Sample> {
    let mut command = Command::new("h2load");
    command
        .args(["-c", "1", "-m", &streams.to_string()])
        .args(["-D", &duration.as_secs().max(1).to_string()]);
    if let Some((name, value)) = requests.header {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    let output = command
        .arg(format!("http://127.0.0.1:{port}{}", requests.path))
        .output()
        .context("cannot run h2load")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|r| r.trim_end_matches(" req/s").parse::<f64>().ok());
    let Some(rps) = rps else {
        bail!("h2load printed no result:\n{text}");
    };
    let counts = text
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .unwrap_or_default();
    let count = |what: &str| -> u64 {
        counts
            .split(", ")
            .find_map(|part| part.strip_suffix(what))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let mean = text
        .lines()
        .find_map(|l| l.strip_prefix("time for request:"))
        .and_then(|rest| rest.split_whitespace().nth(2))
        .map_or(0.0, parse_h2load_time);
    Ok(Sample {
        requests_per_second: rps,
        requests: count(" succeeded"),
        errors: count(" failed") + count(" errored") + count(" timeout"),
        p50_us: mean,
        p99_us: None,
        p999_us: None,
        cpu_us_per_request: 0.0,
    })
}

/// "317us", "4.33ms", "1.2s" -> microseconds.
fn parse_h2load_time(text: &str) -> f64 {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().map_or(0.0, |n| n * scale)
}
