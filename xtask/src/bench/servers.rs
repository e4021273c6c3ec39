//! The servers of the load benchmark: the origin, and each proxy under test in its
//! configuration, started from the files in benches/load/ with real ports filled in.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A port nothing listens on now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One proxy (or the origin) as the benchmark runs it.
#[derive(Debug, Clone)]
pub struct Server {
    /// Shown in the table: "nginx", "haproxy", "switchyard", ...
    pub name: &'static str,
    kind: Kind,
    /// The config template under benches/load/.
    template: &'static str,
    /// What the clients send it.
    pub workload: Workload,
    /// Plugins (or script blocks) it runs per request, for the per-plugin tax.
    pub plugins: usize,
    /// The server of the same proxy without plugins, the tax's base.
    pub base: &'static str,
    /// Only the main load (HTTP/1.1, 64 connections): the programmable rows compare there.
    pub main_load_only: bool,
    pub port: u16,
    /// Where h2c (prior knowledge) is served; the same port for Switchyard.
    pub h2_port: u16,
    /// Switchyard's admin API (metrics); unused by the others.
    pub admin_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Haproxy,
    Switchyard,
    /// benches/io-probe, whose template is its command line.
    IoProbe,
}

/// The requests a configuration is driven with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `GET /`, nothing else.
    Plain,
    /// `GET /` with the chain's JWT in `authorization`.
    Jwt,
    /// The program: `GET /api/bench` with a known `x-api-key`.
    Program,
}

/// The key the program's proxies accept (one of two; see benches/load/).
pub const PROGRAM_API_KEY: &str = "bench-key-alice";

/// Files some configs load besides their own, copied next to them.
const SCRIPTS: &[&str] = &["program.js", "program.lua"];

/// The variables a wrapper starting with `env NAME=value ...` sets.
fn wrapper_env(wrapper: &[String]) -> impl Iterator<Item = (&str, &str)> {
    let assignments = match wrapper.split_first() {
        Some((program, rest)) if program == "env" => rest,
        _ => &[],
    };
    assignments.iter().map_while(|a| a.split_once('='))
}

/// A started server, stopped when dropped.
pub struct Running {
    pub name: &'static str,
    child: Child,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server to stop (SIGTERM) and waits until it has, up to `timeout`: what it does
    /// at exit (an instrumented binary writes its counts then) is done when this returns.
    pub fn stop(mut self, timeout: Duration) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed ({status})", self.pid());
        }
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("{} did not stop within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every config is filled with.
pub struct Setup {
    pub dir: PathBuf,
    pub origin_port: u16,
    pub plugins: PathBuf,
    pub public_key_pem: String,
    pub switchyard: PathBuf,
    pub io_probe: PathBuf,
}

impl Setup {
    /// Configs and logs in `dir`, the origin on a free port, the release binaries and plugins.
    pub fn new(dir: PathBuf) -> Result<Self> {
        let root = crate::root();
        let public_key = root.join("plugins/auth/testdata/rsa-public.pem");
        Ok(Self {
            dir,
            origin_port: free_port()?,
            plugins: root.join("target/plugins"),
            public_key_pem: std::fs::read_to_string(&public_key)
                .with_context(|| format!("cannot read {}", public_key.display()))?,
            switchyard: root.join("target/release/switchyard"),
            io_probe: root.join("target/release/switchyard-io-probe"),
        })
    }

    /// Starts the origin every proxy forwards to, on `origin_port`.
    pub fn start_origin(&self) -> Result<Running> {
        let mut origin = Server::origin()?;
        origin.port = self.origin_port;
        origin.start(self)
    }

    /// Copies the scripts some configs load (the program for njs and HAProxy's Lua) next to
    /// the configs, once per run.
    pub fn write_scripts(&self) -> Result<()> {
        for script in SCRIPTS {
            std::fs::copy(
                crate::root().join("benches/load").join(script),
                self.dir.join(script),
            )?;
        }
        Ok(())
    }
}

impl Server {
    pub fn origin() -> Result<Self> {
        Self::new(
            "origin",
            Kind::Nginx,
            "nginx-origin.conf",
            Workload::Plain,
            0,
            "origin",
        )
    }

    /// Every proxy configuration compared, nginx first (the ratios' base): the plain proxies,
    /// Switchyard with 1 and 5 no-op plugins, one header plugin as a component and the same as
    /// a proxy-wasm filter, the canary and the mission chain, and the program
    /// (API-key auth, /api/ only, an 80/20 canary) in nginx + Lua, nginx + njs, HAProxy + Lua
    /// and Switchyard with the shipped plugins.
    pub fn proxies() -> Result<Vec<Self>> {
        use Workload::{Jwt, Plain, Program};
        Ok(vec![
            Self::new("nginx", Kind::Nginx, "nginx-proxy.conf", Plain, 0, "nginx")?,
            Self::new("haproxy", Kind::Haproxy, "haproxy.cfg", Plain, 0, "haproxy")?,
            Self::new(
                "switchyard",
                Kind::Switchyard,
                "switchyard-none.toml",
                Plain,
                0,
                "switchyard",
            )?,
            Self::new(
                "switchyard+noop1",
                Kind::Switchyard,
                "switchyard-noop1.toml",
                Plain,
                1,
                "switchyard",
            )?
            .main_only(),
            Self::new(
                "switchyard+noop5",
                Kind::Switchyard,
                "switchyard-noop5.toml",
                Plain,
                5,
                "switchyard",
            )?
            .main_only(),
            Self::new(
                "switchyard+header",
                Kind::Switchyard,
                "switchyard-header.toml",
                Plain,
                1,
                "switchyard",
            )?
            .main_only(),
            Self::new(
                "switchyard+pw-header",
                Kind::Switchyard,
                "switchyard-pw-header.toml",
                Plain,
                1,
                "switchyard",
            )?
            .main_only(),
            Self::new(
                "switchyard+canary",
                Kind::Switchyard,
                "switchyard-canary.toml",
                Plain,
                1,
                "switchyard",
            )?,
            Self::new(
                "switchyard+chain",
                Kind::Switchyard,
                "switchyard-chain.toml",
                Jwt,
                5,
                "switchyard",
            )?,
            Self::new(
                "nginx+lua",
                Kind::Nginx,
                "nginx-lua.conf",
                Program,
                1,
                "nginx",
            )?
            .main_only(),
            Self::new(
                "nginx+njs",
                Kind::Nginx,
                "nginx-njs.conf",
                Program,
                1,
                "nginx",
            )?
            .main_only(),
            Self::new(
                "haproxy+lua",
                Kind::Haproxy,
                "haproxy-lua.cfg",
                Program,
                1,
                "haproxy",
            )?
            .main_only(),
            Self::new(
                "switchyard+program",
                Kind::Switchyard,
                "switchyard-program.toml",
                Program,
                3,
                "switchyard",
            )?
            .main_only(),
        ])
    }

    /// The I/O probe's two loops (`--io-uring`): the same minimal forwarder over epoll and over
    /// io_uring, to measure what the completion model saves on this traffic.
    pub fn io_probes() -> Result<Vec<Self>> {
        Ok(vec![
            Self::new(
                "probe-epoll",
                Kind::IoProbe,
                "io-probe-epoll.args",
                Workload::Plain,
                0,
                "probe-epoll",
            )?
            .main_only(),
            Self::new(
                "probe-io-uring",
                Kind::IoProbe,
                "io-probe-io-uring.args",
                Workload::Plain,
                0,
                "probe-io-uring",
            )?
            .main_only(),
        ])
    }

    fn main_only(mut self) -> Self {
        self.main_load_only = true;
        self
    }

    fn new(
        name: &'static str,
        kind: Kind,
        template: &'static str,
        workload: Workload,
        plugins: usize,
        base: &'static str,
    ) -> Result<Self> {
        let port = free_port()?;
        Ok(Self {
            name,
            kind,
            template,
            workload,
            plugins,
            base,
            main_load_only: false,
            port,
            h2_port: if kind == Kind::Switchyard {
                port
            } else {
                free_port()?
            },
            admin_port: free_port()?,
        })
    }

    /// Writes the config and starts the server; returns once it answers HTTP.
    pub fn start(&self, ctx: &Setup) -> Result<Running> {
        self.start_wrapped(ctx, &[])
    }

    /// [`Server::start`], with Switchyard run under `wrapper` (a program and its arguments, e.g.
    /// valgrind) when it is not empty.
    pub fn start_wrapped(&self, ctx: &Setup, wrapper: &[String]) -> Result<Running> {
        let template = crate::root().join("benches/load").join(self.template);
        let text = std::fs::read_to_string(&template)
            .with_context(|| format!("cannot read {}", template.display()))?;
        let text = text
            .replace("PREFIX", &ctx.dir.display().to_string())
            .replace("ORIGIN_PORT", &ctx.origin_port.to_string())
            .replace("PROXY_PORT", &self.port.to_string())
            .replace("H2_PORT", &self.h2_port.to_string())
            .replace("ADMIN_PORT", &self.admin_port.to_string())
            .replace("PLUGINS", &ctx.plugins.display().to_string())
            .replace("PUBLIC_KEY_PEM", &ctx.public_key_pem);
        let config = ctx.dir.join(format!("{}-{}", self.name, self.template));
        std::fs::write(&config, &text)?;
        let mut command = match self.kind {
            Kind::Nginx => {
                let mut c = Command::new("nginx");
                c.arg("-p").arg(&ctx.dir).arg("-c").arg(&config);
                c
            }
            Kind::Haproxy => {
                let mut c = Command::new("haproxy");
                c.arg("-db").arg("-f").arg(&config);
                c
            }
            Kind::Switchyard => {
                // Compiles the plugins into the cache first (and refuses a bad config early):
                // a proxy that compiled at start carries cranelift's memory in its RSS, which
                // would make the RSS column depend on whether the cache was warm.
                // In the proxy's environment (a wrapper's `env NAME=value ...`): the engine's
                // settings are part of the cache's key.
                let validated = Command::new(&ctx.switchyard)
                    .envs(wrapper_env(wrapper))
                    .arg("validate")
                    .arg(&config)
                    .output()
                    .with_context(|| format!("cannot run {} validate", ctx.switchyard.display()))?;
                if !validated.status.success() {
                    bail!(
                        "{} does not validate:\n{}",
                        config.display(),
                        String::from_utf8_lossy(&validated.stderr)
                    );
                }
                let mut c = match wrapper.split_first() {
                    Some((program, args)) => {
                        let mut c = Command::new(program);
                        c.args(args).arg(&ctx.switchyard);
                        c
                    }
                    None => Command::new(&ctx.switchyard),
                };
                c.args(["run", "--config"]).arg(&config);
                c.env("RUST_LOG", "warn");
                c
            }
            Kind::IoProbe => {
                let mut c = Command::new(&ctx.io_probe);
                c.args(
                    text.lines()
                        .filter(|line| !line.trim_start().starts_with('#'))
                        .flat_map(str::split_whitespace),
                );
                c
            }
        };
        let log = std::fs::File::create(ctx.dir.join(format!("{}.log", self.name)))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let mut running = Running {
            name: self.name,
            child,
        };
        // Under a wrapper (valgrind, ~50x slower) a plugin not yet in the compile cache takes
        // minutes to compile before the proxy listens.
        let start_within = if wrapper.is_empty() {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(600)
        };
        wait_answering(&mut running, self.port, &ctx.dir, start_within)?;
        Ok(running)
    }
}

/// Waits until `port` answers an HTTP request (any status), or the process dies.
fn wait_answering(running: &mut Running, port: u16, dir: &Path, within: Duration) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = running.child.try_wait()? {
            let log = std::fs::read_to_string(dir.join(format!("{}.log", running.name)))
                .unwrap_or_default();
            bail!("{} exited at start ({status}):\n{log}", running.name);
        }
        if crate::http_get_status(&addr.to_string(), "/").is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} did not answer on {addr} within {}s",
        running.name,
        within.as_secs()
    )
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks(),
    ))
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
