//! Project automation, run as `cargo xtask <command>`:
//! `demo` (proxy + two echo upstreams on config/demo.toml), `test` (the whole suite),
//! `build-plugins` (every plugin under plugins/ to target/plugins/<name>.wasm), `bench` (the load
//! benchmark against nginx and HAProxy).

mod bench;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const WASM_TARGET: &str = "wasm32-unknown-unknown";
const DEMO_ADMIN: &str = "127.0.0.1:9901";
const DEMO_LISTENER: &str = "127.0.0.1:8080";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("test") => test(&args[1..]),
        Some("build-plugins") => build_plugins().map(|_| ()),
        Some("bench") => bench::bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 demo           build, start two echo upstreams and the proxy on config/demo.toml\n  \
                 test [ARGS]    build the plugins and run the whole test suite (ARGS go to the runner)\n  \
                 build-plugins  build every plugin under plugins/ into target/plugins/\n  \
                 bench [--quick | --duration S --rounds N] [--io-uring]\n                \
                 load benchmark against nginx and HAProxy; results in target/bench/\n                \
                 (--io-uring: also benches/io-probe over epoll and over io_uring)\n  \
                 bench --instructions [ROW]\n                \
                 user-space instructions a request in one Switchyard row of the load benchmark\n                \
                 (callgrind; ROW: switchyard (no plugins), switchyard+noop5, switchyard+program, ...)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    // `cargo run` (how `cargo xtask` starts) gives xtask its own package's variables. Passed on,
    // build scripts that watch them (ring's watches CARGO_MANIFEST_DIR) see a change from a plain
    // `cargo build`, and everything above them (rustls, kube, the proxy) is built again.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_run) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Whether `name` is one of the variables `cargo run` sets for the program it runs.
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Installs the wasm target plugins are built for, if rustup is there and it is missing.
fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("xtask: installing the {WASM_TARGET} target");
            run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
        }
        Err(_) => {
            eprintln!("xtask: rustup not found; assuming {WASM_TARGET} is available");
            Ok(())
        }
    }
}

/// The plugin crates: every directory with a Cargo.toml under plugins/ (shipped) and
/// tests/plugins/ (used by the integration tests).
fn plugin_dirs() -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for parent in ["plugins", "tests/plugins"] {
        let dir = root().join(parent);
        if !dir.exists() {
            continue;
        }
        dirs.extend(
            std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("Cargo.toml").exists()),
        );
    }
    dirs.sort();
    Ok(dirs)
}

/// Builds every plugin for wasm32-unknown-unknown in one cargo run, turns each module into a
/// component, and writes it to target/plugins/<dir-name>.wasm.
fn build_plugins() -> Result<Vec<PathBuf>> {
    let dirs = plugin_dirs()?;
    if dirs.is_empty() {
        eprintln!("xtask: no plugins found; nothing to build");
        return Ok(Vec::new());
    }
    ensure_wasm_target()?;
    let names: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .context("plugin directory name is not UTF-8")
        })
        .collect::<Result<_>>()?;
    let mut build = cargo();
    build.args(["build", "--profile", "plugin", "--target", WASM_TARGET]);
    for name in &names {
        build.args(["--package", name]);
    }
    run(&mut build)?;

    let out_dir = root().join("target/plugins");
    std::fs::create_dir_all(&out_dir)?;
    let mut built = Vec::new();
    for name in names {
        let artifact = root()
            .join("target")
            .join(WASM_TARGET)
            .join("plugin")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let module = std::fs::read(&artifact)
            .with_context(|| format!("cannot read {}", artifact.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .validate(true)
            .module(&module)
            .and_then(|mut encoder| encoder.encode())
            .with_context(|| format!("cannot turn {} into a component", artifact.display()))?;
        let out = out_dir.join(format!("{name}.wasm"));
        std::fs::write(&out, component)
            .with_context(|| format!("cannot write {}", out.display()))?;
        let kib = std::fs::metadata(&out)?.len() / 1024;
        eprintln!("xtask: built {} ({kib} KiB)", out.display());
        built.push(out);
    }
    built.extend(build_proxy_wasm_filters()?);
    Ok(built)
}

/// Builds the proxy-wasm filters the tests run (tests/proxy-wasm, a workspace of its own: the
/// `proxy-wasm` SDK from crates.io pins its own dependency versions) and writes each core module,
/// as it is, to target/plugins/pw-<name>.wasm.
fn build_proxy_wasm_filters() -> Result<Vec<PathBuf>> {
    let workspace = root().join("tests/proxy-wasm");
    if !workspace.join("Cargo.toml").exists() {
        return Ok(Vec::new());
    }
    let target = root().join("target/proxy-wasm");
    let mut build = cargo();
    build
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--manifest-path",
        ])
        .arg(workspace.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target);
    run(&mut build)?;
    let out_dir = root().join("target/plugins");
    std::fs::create_dir_all(&out_dir)?;
    let mut built = Vec::new();
    for entry in std::fs::read_dir(target.join(WASM_TARGET).join("release"))? {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wasm"))
            .filter(|n| n.starts_with("pw_"))
        else {
            continue;
        };
        let out = out_dir.join(format!("{}.wasm", name.replace('_', "-")));
        std::fs::copy(&path, &out).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("xtask: built {} (proxy-wasm)", out.display());
        built.push(out);
    }
    Ok(built)
}

/// System programs some tests drive for real, by Debian package: Prometheus scraping the proxy,
/// headless Chromium (through chromedriver) loading the dashboard, curl and openssl as TLS
/// clients, iptables for the sidecar-capture test.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/prometheus", "prometheus"),
    ("/usr/bin/chromium", "chromium"),
    ("/usr/bin/chromedriver", "chromium-driver"),
    ("/usr/bin/curl", "curl"),
    ("/usr/bin/openssl", "openssl"),
    ("/usr/sbin/iptables-restore", "iptables"),
];

/// Installs the missing `packages` (program path, Debian package) with apt-get, as root or
/// through sudo. Where that is impossible it says what is missing and goes on; whatever needs the
/// program then fails naming the package.
fn install_packages(packages: &[(&str, &str)]) {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(path, _)| !std::path::Path::new(path).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed =
        apt(&["update", "-qq"]) && apt(&[&["install", "-y", "-qq"][..], &missing].concat());
    if !installed {
        eprintln!(
            "xtask: could not install {}; install them with apt-get, or what needs them fails",
            missing.join(" ")
        );
    }
}

/// Disk a build and run of the whole suite takes from a fresh clone (measured: 3.4 GB in
/// target/, of which 0.9 GB incremental state).
const SUITE_DISK_BYTES: u64 = 4 << 30;

/// Says so up front when the disk holding target/ has less room than the suite needs, so a
/// compiler's "No space left on device" midway has its reason printed first.
fn warn_if_disk_is_short() {
    let target = root().join("target");
    let at = if target.exists() { target } else { root() };
    let Some(available) = Command::new("df")
        .args(["-P", "-k"])
        .arg(&at)
        .output()
        .ok()
        .and_then(|out| available_bytes(&String::from_utf8_lossy(&out.stdout)))
    else {
        return;
    };
    if available < SUITE_DISK_BYTES {
        eprintln!(
            "xtask: warning: {} MiB free on the disk holding {}; building and running the suite \
             from scratch takes about {} MiB",
            available >> 20,
            at.display(),
            SUITE_DISK_BYTES >> 20
        );
    }
}

/// The available bytes in `df -P -k` output (the fourth field of its second line).
fn available_bytes(df: &str) -> Option<u64> {
    let kib: u64 = df.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the whole suite: cargo-nextest when installed, else cargo test.
fn test(extra: &[String]) -> Result<()> {
    warn_if_disk_is_short();
    install_packages(TEST_PACKAGES);
    build_plugins()?;
    let nextest = cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if nextest {
        run(cargo()
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(extra))?;
        // nextest does not run doctests.
        run(cargo().args(["test", "--workspace", "--doc"]))
    } else {
        run(cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(extra))
    }
}

/// Builds everything, starts echo upstreams "v1" and "v2" and the proxy on config/demo.toml,
/// and stops them all on Ctrl-C.
fn demo() -> Result<()> {
    build_plugins()?;
    run(cargo().args(["build", "--release", "--package", "switchyard"]))?;
    let bin = root().join("target/release/switchyard");
    let mut children = Children::default();
    for (name, addr) in [("v1", "127.0.0.1:9001"), ("v2", "127.0.0.1:9002")] {
        children.spawn(
            Command::new(&bin)
                .args(["echo", "--listen", addr, "--name", name])
                .stdout(Stdio::null()),
        )?;
    }
    children.spawn(
        Command::new(&bin)
            .args(["run", "--config"])
            .arg(root().join("config/demo.toml")),
    )?;
    wait_ready(&mut children)?;
    println!(
        "\nSwitchyard is serving config/demo.toml on http://{DEMO_LISTENER} (admin: http://{DEMO_ADMIN}).\n\
         Upstreams: echo \"v1\" on 127.0.0.1:9001 and \"v2\" on 127.0.0.1:9002, weighted 3:1.\n\n\
         Try:\n  \
         curl -i http://{DEMO_LISTENER}/hello\n  \
         for i in $(seq 8); do curl -s http://{DEMO_LISTENER}/ | grep '\"name\"'; done\n  \
         curl -s --http2-prior-knowledge http://{DEMO_LISTENER}/h2\n  \
         curl -s http://{DEMO_ADMIN}/config\n  \
         curl -s http://{DEMO_ADMIN}/clusters\n  \
         curl -s http://{DEMO_ADMIN}/metrics | grep switchyard_requests_total\n\n\
         Live dashboard: http://{DEMO_ADMIN}/dashboard\n\n\
         Press Ctrl-C to stop.\n"
    );
    children.wait_any()
}

fn wait_ready(children: &mut Children) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        children.check_alive()?;
        if http_get_status(DEMO_ADMIN, "/ready") == Some(200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the proxy did not become ready on http://{DEMO_ADMIN}/ready within 30s")
}

/// A minimal HTTP/1.1 GET returning the status code.
fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// Child processes that are all stopped when the demo ends, however it ends.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn spawn(&mut self, cmd: &mut Command) -> Result<()> {
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        self.0.push(child);
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        for child in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "a demo process exited early ({status}); is port 8080, 9001, 9002 or 9901 taken?"
                );
            }
        }
        Ok(())
    }

    /// Waits until any child exits (Ctrl-C reaches them all through the terminal).
    fn wait_any(&mut self) -> Result<()> {
        loop {
            for child in &mut self.0 {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::available_bytes;

    #[test]
    fn the_available_space_is_read_from_df() {
        let df = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
                  /dev/vda         263174212  11223344  83886080      12% /\n";
        assert_eq!(available_bytes(df), Some(83_886_080 * 1024));
        assert_eq!(available_bytes("Filesystem\n"), None);
        assert_eq!(available_bytes(""), None);
    }
}
