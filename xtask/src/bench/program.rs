//! Before anything is measured, every proxy running the program must behave the same: 401
//! without a known API key, 404 outside /api/, an 80/20 split (within 5 points over 1,000
//! requests) named in `x-served-by`, and `x-canary: v2` always served by v2. A proxy that does
//! not stops the benchmark, named, so no row compares different work.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::servers::PROGRAM_API_KEY;

/// Requests for the split check.
const SPLIT_REQUESTS: usize = 1_000;

/// Checks the program's behavior on `port`; the error names `server` and what differed.
pub fn check(server: &str, port: u16) -> Result<()> {
    let addr = format!("127.0.0.1:{port}");
    let fail = |what: String| -> Result<()> {
        bail!("{server} does not run the benchmark's program as the others do: {what}")
    };
    let (status, _) = get(&addr, "/api/bench", &[])?;
    if status != 401 {
        return fail(format!(
            "GET /api/bench without a key answered {status}, not 401"
        ));
    }
    let (status, _) = get(&addr, "/api/bench", &[("x-api-key", "not-a-key")])?;
    if status != 401 {
        return fail(format!("an unknown key got {status}, not 401"));
    }
    let key = [("x-api-key", PROGRAM_API_KEY)];
    let (status, _) = get(&addr, "/elsewhere", &key)?;
    if status != 404 {
        return fail(format!(
            "GET /elsewhere with a key answered {status}, not 404"
        ));
    }
    let mut v1 = 0;
    for _ in 0..SPLIT_REQUESTS {
        let (status, served_by) = get(&addr, "/api/bench", &key)?;
        match (status, served_by.as_deref()) {
            (200, Some("v1")) => v1 += 1,
            (200, Some("v2")) => {}
            other => return fail(format!("GET /api/bench answered {other:?}")),
        }
    }
    let share = v1 as f64 / SPLIT_REQUESTS as f64;
    if !(0.75..=0.85).contains(&share) {
        return fail(format!(
            "v1 served {:.1}% of {SPLIT_REQUESTS} requests, not 80 ± 5%",
            share * 100.0
        ));
    }
    for _ in 0..20 {
        let (status, served_by) = get(&addr, "/api/bench", &[key[0], ("x-canary", "v2")])?;
        if (status, served_by.as_deref()) != (200, Some("v2")) {
            return fail(format!(
                "x-canary: v2 was answered {status} by {served_by:?}, not 200 by v2"
            ));
        }
    }
    eprintln!(
        "xtask: {server} runs the program: 401, 404, v1 {:.1}%, the override",
        share * 100.0
    );
    Ok(())
}

/// One HTTP/1.1 GET on a new connection: the status and the `x-served-by` header.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<(u16, Option<String>)> {
    let mut stream =
        TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer from {addr}: {head:?}"))?;
    let served_by = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("x-served-by")
            .then(|| value.trim().to_owned())
    });
    Ok((status, served_by))
}
