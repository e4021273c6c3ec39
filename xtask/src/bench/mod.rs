//! `cargo xtask bench`: the end-to-end load benchmark on 127.0.0.1.
//!
//! An nginx origin answers from memory; nginx (1 worker, upstream keep-alive), HAProxy (1 thread,
//! `http-reuse always`) and Switchyard (1 worker thread) in three configurations — no plugins, the
//! canary plugin, the full chain (JWT auth, routing, canary, fault at 0%, retries) — forward to it.
//! Each is driven with the same loads: HTTP/1.1 keep-alive at 1 (also with the cores kept awake)
//! and 64 connections (wrk) and, when
//! h2load is installed, HTTP/2 with 64 streams. Rounds are interleaved (every server once per
//! round) so machine noise hits all alike; the medians are reported as ratios to nginx.

mod code_order;
mod instructions;
mod load;
mod pgo;
mod program;
mod report;
mod servers;
mod training;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use load::{Load, Requests, Sample};
use report::Row;
use servers::{PROGRAM_API_KEY, Server, Setup, Workload};

/// Programs the benchmark drives, by Debian package: the first [`REQUIRED`] it cannot run
/// without (nginx's Lua and njs modules for the programmable peers; Debian's HAProxy has Lua
/// built in), then the optional ones (h2load for HTTP/2, chromium for the chart's picture).
const PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/nginx", "nginx"),
    ("/usr/sbin/haproxy", "haproxy"),
    ("/usr/bin/wrk", "wrk"),
    (
        "/usr/lib/nginx/modules/ndk_http_module.so",
        "libnginx-mod-http-ndk",
    ),
    (
        "/usr/lib/nginx/modules/ngx_http_lua_module.so",
        "libnginx-mod-http-lua",
    ),
    (
        "/usr/lib/nginx/modules/ngx_http_js_module.so",
        "libnginx-mod-http-js",
    ),
    ("/usr/bin/h2load", "nghttp2-client"),
    ("/usr/bin/chromium", "chromium"),
];
/// How many of [`PACKAGES`] the benchmark needs.
const REQUIRED: usize = 6;

struct Options {
    duration: Duration,
    rounds: usize,
    warmup: Duration,
    /// Also run benches/io-probe's epoll and io_uring loops (issue 22's io_uring measurement).
    io_uring: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            duration: Duration::from_secs(5),
            rounds: 3,
            warmup: Duration::from_secs(1),
            io_uring: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().context("a value is missing");
            match arg.as_str() {
                "--duration" => options.duration = Duration::from_secs(value()?.parse()?),
                "--rounds" => options.rounds = value()?.parse()?,
                "--quick" => {
                    options.duration = Duration::from_secs(2);
                    options.rounds = 1;
                }
                "--io-uring" => options.io_uring = true,
                other => bail!(
                    "unknown option {other}; expected --duration SECONDS, --rounds N, --quick or --io-uring"
                ),
            }
        }
        Ok(options)
    }
}

pub fn bench(args: &[String]) -> Result<()> {
    if let Some(at) = args.iter().position(|a| a == "--instructions") {
        let row = args
            .get(at + 1)
            .filter(|a| !a.starts_with("--"))
            .map_or("switchyard", String::as_str);
        return instructions::run(row, args.iter().any(|a| a == "--cache"));
    }
    if args.iter().any(|a| a == "--code-order") {
        return code_order::run();
    }
    if args.iter().any(|a| a == "--pgo") {
        return pgo::run();
    }
    let options = Options::parse(args)?;
    crate::install_packages(PACKAGES);
    require(&PACKAGES[..REQUIRED])?;
    crate::build_plugins()?;
    crate::run(crate::cargo().args(["build", "--release", "--package", "switchyard"]))?;
    if options.io_uring {
        crate::run(crate::cargo().args([
            "build",
            "--release",
            "--package",
            "switchyard-io-probe",
        ]))?;
    }

    let out_dir = crate::root().join("target/bench");
    let stage = Stage::new(&out_dir.join("run"))?;
    let (setup, token) = (&stage.setup, &stage.token);
    let mut proxies = Server::proxies()?;
    if options.io_uring {
        proxies.extend(Server::io_probes()?);
    }
    let mut loads = vec![
        Load::Http1 { connections: 1 },
        Load::Http1Awake,
        Load::Http1 { connections: 64 },
    ];
    if std::path::Path::new("/usr/bin/h2load").exists() {
        loads.push(Load::Http2 { streams: 64 });
    } else {
        eprintln!("xtask: h2load is not installed; skipping the HTTP/2 load");
    }

    let requests_for = |workload: Workload| requests(workload, token);

    // Every proxy that runs the program must behave alike before any is measured.
    for proxy in proxies.iter().filter(|p| p.workload == Workload::Program) {
        let running = proxy.start(setup)?;
        program::check(proxy.name, proxy.port)?;
        drop(running);
    }

    // samples[proxy][load] over the rounds, and RSS after each load.
    let mut samples = vec![vec![Vec::<Sample>::new(); loads.len()]; proxies.len()];
    let mut rss = vec![vec![Vec::<u64>::new(); loads.len()]; proxies.len()];
    let main_load = Load::Http1 { connections: 64 };
    for round in 1..=options.rounds {
        for (p, proxy) in proxies.iter().enumerate() {
            let running = proxy.start(setup)?;
            let requests = requests_for(proxy.workload);
            load::measure(main_load, proxy.port, options.warmup, &running, requests)?;
            for (l, load) in loads.iter().enumerate() {
                if proxy.main_load_only && *load != main_load {
                    continue;
                }
                let port = match load {
                    Load::Http1 { .. } | Load::Http1Awake => proxy.port,
                    Load::Http2 { .. } => proxy.h2_port,
                };
                let sample = load::measure(*load, port, options.duration, &running, requests)?;
                eprintln!(
                    "xtask: round {round}/{} {:<18} {:<16} {:>9.0} req/s  p50 {:>6.0} us  errors {}",
                    options.rounds,
                    proxy.name,
                    load.label(),
                    sample.requests_per_second,
                    sample.p50_us,
                    sample.errors
                );
                samples[p][l].push(sample);
                rss[p][l].push(servers::rss_kib(running.pid()).unwrap_or(0));
            }
        }
    }

    let mut rows: Vec<Row> = Vec::new();
    for (l, load) in loads.iter().enumerate() {
        for (p, proxy) in proxies.iter().enumerate() {
            if samples[p][l].is_empty() {
                continue;
            }
            rows.push(report::summarize(
                proxy,
                &load.label(),
                &samples[p][l],
                &rss[p][l],
            ));
        }
    }
    report::add_ratios(&mut rows);
    report::add_plugin_tax(&mut rows);
    let table = report::table(&rows);
    println!("\n{table}");

    let when = time_label();
    let json = serde_json::json!({
        "when": when,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "duration_seconds": options.duration.as_secs(),
        "rounds": options.rounds,
        "rows": rows,
    });
    let json_path = out_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    std::fs::write(out_dir.join("results.txt"), &table)?;
    let title = format!("Switchyard vs nginx and HAProxy, one worker each, 127.0.0.1 ({when})");
    match report::chart(&rows, &title, &out_dir) {
        Ok(Some(png)) => println!("saved {} and {}", json_path.display(), png.display()),
        Ok(None) | Err(_) => println!(
            "saved {} and {} (no PNG: chromium could not render it)",
            json_path.display(),
            out_dir.join("chart.svg").display()
        ),
    }
    Ok(())
}

/// Fails naming the first of `packages` (program path, Debian package) that is not installed.
fn require(packages: &[(&str, &str)]) -> Result<()> {
    for (path, package) in packages {
        if !std::path::Path::new(path).exists() {
            bail!("{path} is missing: install the Debian package {package}");
        }
    }
    Ok(())
}

/// What every run of the proxies stands on: configs and logs in a directory of its own (emptied
/// first), the scripts some configs load, the bearer token the JWT rows send, and the origin,
/// running until this is dropped.
struct Stage {
    setup: Setup,
    token: String,
    _origin: servers::Running,
}

impl Stage {
    fn new(dir: &std::path::Path) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let setup = Setup::new(dir.to_path_buf())?;
        setup.write_scripts()?;
        let keys = crate::root().join("plugins/auth/testdata");
        let token = format!("Bearer {}", mint_token(&keys.join("rsa-private.pem"))?);
        let origin = setup.start_origin()?;
        Ok(Self {
            setup,
            token,
            _origin: origin,
        })
    }
}

/// What each request of `workload` is; `token` is the chain's `authorization` value.
fn requests(workload: Workload, token: &str) -> Requests<'_> {
    match workload {
        Workload::Plain => Requests {
            path: "/",
            header: None,
        },
        Workload::Jwt => Requests {
            path: "/",
            header: Some(("authorization", token)),
        },
        Workload::Program => Requests {
            path: "/api/bench",
            header: Some(("x-api-key", PROGRAM_API_KEY)),
        },
    }
}

/// A JWT (RS256) the chain configuration accepts, signed with openssl and the test key.
fn mint_token(private_key: &std::path::Path) -> Result<String> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let expires = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs()
        + 24 * 3600;
    let header = b64(br#"{"alg":"RS256","typ":"JWT","kid":"bench"}"#);
    let claims = b64(format!(
        r#"{{"iss":"https://auth.bench","aud":"bench","sub":"bench-user","exp":{expires}}}"#
    )
    .as_bytes());
    let signing_input = format!("{header}.{claims}");
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(private_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run openssl to sign the benchmark's JWT")?;
    openssl
        .stdin
        .take()
        .context("openssl stdin")?
        .write_all(signing_input.as_bytes())?;
    let output = openssl.wait_with_output()?;
    if !output.status.success() || output.stdout.is_empty() {
        bail!("openssl could not sign the benchmark's JWT");
    }
    Ok(format!("{signing_input}.{}", b64(&output.stdout)))
}

/// "2026-11-23 18:40 UTC" without a date crate: from `date`, else seconds since the epoch.
fn time_label() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs().to_string())
                .unwrap_or_default()
        })
}
