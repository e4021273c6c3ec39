//! `cargo xtask bench --instructions [ROW]`: the user-space instructions Switchyard executes per
//! request in one of the load benchmark's Switchyard rows (`switchyard`, without plugins, by
//! default; `switchyard+noop5`, `switchyard+program`, `switchyard+chain`, ...), counted by
//! callgrind. With `--cache`, also what callgrind's cache and branch simulation counts a request
//! (first-level instruction and data misses, mispredicted branches), to compare where code and
//! data sit rather than how much runs.
//!
//! On a shared 2-core machine two runs of the same binary differ by about 5% in requests/s, so
//! a change to the request path worth 1-2% cannot be seen in the load benchmark; the count of
//! instructions is the same from run to run within about 0.5%. The counters are zeroed after a
//! warm-up and dumped after a fixed load, so start-up is not counted. It counts user space only
//! (the kernel's share is in the load benchmark's CPU column). The proxy runs with a small
//! instance pool (`SWITCHYARD_PLUGIN_SLOTS`): valgrind cannot reserve the default pool's address
//! space.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::load::{self, Load};
use super::servers::{Running, Server, Setup, Workload};

/// Programs this measurement drives, by Debian package (`--code-order` too).
pub(super) const PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/nginx", "nginx"),
    ("/usr/bin/wrk", "wrk"),
    ("/usr/bin/valgrind", "valgrind"),
];

/// Connections of the measured load: enough to keep the proxy busy under valgrind's ~50x
/// slowdown without the runtime's per-turn work being spread over many requests at once.
const CONNECTIONS: u32 = 4;
const WARMUP: Duration = Duration::from_secs(3);
const MEASURED: Duration = Duration::from_secs(4);

/// Instance slots for the proxy under valgrind, which maps at most 64 GiB: twelve plugin
/// memories of 4 GiB each (the layout without bounds checks the proxy uses), room for the
/// chain's five plugins with one instance each in use at a time.
const SLOTS: u32 = 6;

/// The wrapper that runs the proxy under callgrind, writing to `out_file`: a small instance
/// pool, `env` settings added before valgrind, and `options` added to callgrind's.
pub(super) fn under_callgrind(out_file: &Path, env: &[&str], options: &[&str]) -> Vec<String> {
    let mut wrapper = vec!["env".to_owned(), format!("SWITCHYARD_PLUGIN_SLOTS={SLOTS}")];
    wrapper.extend(env.iter().map(|&e| e.to_owned()));
    wrapper.extend(["valgrind", "--tool=callgrind", "--dump-instr=no"].map(str::to_owned));
    wrapper.extend(options.iter().map(|&o| o.to_owned()));
    wrapper.push(format!("--callgrind-out-file={}", out_file.display()));
    wrapper
}

/// What callgrind simulates besides counting, with `--cache`: the first-level caches (this
/// machine's sizes) and branch prediction, reported a request beside the instructions.
const CACHE_OPTIONS: &[&str] = &["--cache-sim=yes", "--branch-sim=yes"];

pub fn run(row: &str, cache: bool) -> Result<()> {
    crate::install_packages(PACKAGES);
    super::require(PACKAGES)?;
    let proxy = Server::proxies()?
        .into_iter()
        .find(|p| p.name == row && row.starts_with("switchyard"))
        .with_context(|| format!("the load benchmark has no Switchyard row named {row}"))?;
    if proxy.plugins > 0 {
        crate::build_plugins()?;
    }
    crate::run(crate::cargo().args(["build", "--release", "--package", "switchyard"]))?;

    let out_dir = crate::root().join("target/bench");
    let dir = out_dir.join("instructions");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let keys = crate::root().join("plugins/auth/testdata");
    let setup = Setup::new(dir.clone())?;
    let token = match proxy.workload {
        Workload::Jwt => format!(
            "Bearer {}",
            super::mint_token(&keys.join("rsa-private.pem"))?
        ),
        Workload::Plain | Workload::Program => String::new(),
    };
    let _origin = setup.start_origin()?;
    let out_file = dir.join("callgrind.out.%p");
    let options = if cache { CACHE_OPTIONS } else { &[] };
    let valgrind = under_callgrind(&out_file, &[], options);
    let running = proxy.start_wrapped(&setup, &valgrind)?;
    let requests = super::requests(proxy.workload, &token);
    let load = Load::Http1 {
        connections: CONNECTIONS,
    };
    load::measure(load, proxy.port, WARMUP, &running, requests)?;
    callgrind_control("-z", &running)?;
    let sample = load::measure(load, proxy.port, MEASURED, &running, requests)?;
    callgrind_control("-d", &running)?;
    if sample.requests == 0 || sample.errors > 0 {
        bail!(
            "the measured load had {} requests and {} errors",
            sample.requests,
            sample.errors
        );
    }
    let dump = dir.join(format!("callgrind.out.{}.1", running.pid()));
    let instructions = summary(&dump)?;
    let per_request = instructions as f64 / sample.requests as f64;
    let line = format!(
        "{row}, h1 x{CONNECTIONS}: {per_request:.0} user-space instructions a request \
         ({instructions} over {} requests)",
        sample.requests
    );
    println!("{line}");
    if cache {
        for (event, total) in events(&dump)? {
            println!(
                "  {event:>5}: {:.1} a request",
                total as f64 / sample.requests as f64
            );
        }
    }
    println!(
        "profile: callgrind_annotate --inclusive=yes {}",
        dump.display()
    );
    std::fs::write(
        out_dir.join(format!("instructions-{row}.txt")),
        format!("{line}\n"),
    )?;
    Ok(())
}

/// Zeroes (`-z`) or dumps (`-d`) the counters of the proxy running under callgrind.
pub(super) fn callgrind_control(action: &str, running: &Running) -> Result<()> {
    let status = Command::new("callgrind_control")
        .arg(action)
        .arg(running.pid().to_string())
        .output()
        .context("cannot run callgrind_control")?
        .status;
    if !status.success() {
        bail!("callgrind_control {action} failed ({status})");
    }
    Ok(())
}

/// The instruction count a callgrind dump totals (its `summary:` line), read once the file is
/// complete: `callgrind_control -d` returns when callgrind has been asked, not when it wrote.
pub(super) fn summary(dump: &Path) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(dump)
            && let Some(count) = text
                .lines()
                .find_map(|l| l.strip_prefix("summary:"))
                // Instructions come first; event options add columns after them.
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        {
            return Ok(count);
        }
        if Instant::now() > deadline {
            bail!("callgrind wrote no complete dump to {}", dump.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every event a complete dump totals, by callgrind's name (`Ir`, `I1mr`, `D1mw`, `Bcm`, ...),
/// in its order: its `events:` line names the columns of its `summary:` line.
fn events(dump: &Path) -> Result<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(dump)?;
    let line = |prefix: &str| text.lines().find_map(|l| l.strip_prefix(prefix));
    let (Some(names), Some(totals)) = (line("events:"), line("summary:")) else {
        bail!("{} has no events and summary lines", dump.display());
    };
    names
        .split_whitespace()
        .zip(totals.split_whitespace())
        .map(|(name, total)| {
            let total = total
                .parse()
                .with_context(|| format!("{name}'s total {total:?} is not a count"))?;
            Ok((name.to_owned(), total))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pair_the_names_with_the_summary_totals() {
        let dir = std::env::temp_dir().join(format!("xtask-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dump = dir.join("callgrind.out");
        std::fs::write(
            &dump,
            "events: Ir I1mr Bcm\nfn=(1) main\n1 5 1 0\nsummary: 700 12 3\n",
        )
        .unwrap();
        let events = events(&dump).unwrap();
        assert_eq!(
            events,
            [
                ("Ir".to_owned(), 700),
                ("I1mr".to_owned(), 12),
                ("Bcm".to_owned(), 3)
            ]
        );
        assert_eq!(summary(&dump).unwrap(), 700);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
