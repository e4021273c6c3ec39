//! The real `switchyard` binary as a child process, on a config written for the test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A running proxy; killed when dropped.
pub struct Proxy {
    child: Child,
    pub admin: SocketAddr,
    listeners: HashMap<String, SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    pub config_path: PathBuf,
}

/// Where the built plugins are: `cargo xtask build-plugins` (run by `cargo xtask test`) puts them
/// there.
pub fn plugin_path(name: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-plugins` (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// A shipped example config (config/examples/NAME) made runnable in a test: every `(from, to)`
/// pair is substituted (fixed ports become real upstreams or 127.0.0.1:0) and plugin paths point
/// at the built plugins. Panics if a `from` is not in the file, so examples and tests stay in step.
pub fn example_config(name: &str, replacements: &[(&str, String)]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/examples")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (from, _) in replacements {
        assert!(
            !from.is_empty() && text.contains(from),
            "{name} does not mention {from:?}"
        );
    }
    let text = replace_at_once(&text, replacements);
    let plugins = plugin_path("hello");
    let plugins = plugins.parent().expect("plugins dir");
    text.replace(
        "\"../../target/plugins/",
        &format!("\"{}/", plugins.display()),
    )
}

/// Every `(from, to)` substituted in one pass over `text`, so a substituted value is never
/// matched again: replacing in turn, a real address like "127.0.0.1:43189" put in for one
/// placeholder was later mangled by the placeholder "127.0.0.1:4318" (a CI flake).
fn replace_at_once(text: &str, replacements: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let earliest = replacements
            .iter()
            .filter_map(|(from, to)| rest.find(from).map(|at| (at, from.len(), to)))
            .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
        let Some((at, len, to)) = earliest else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        out.push_str(to);
        rest = &rest[at + len..];
    }
}

/// The compiled-plugin cache the tests share.
pub fn plugin_cache() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugin-cache")
}

/// Runs the proxy on `config` expecting it to refuse to start; returns what it printed.
pub fn refused(config: &str) -> String {
    let path = scratch_dir().join("refused.toml");
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\nplugin_cache = \"{}\"\n\n{config}",
        plugin_cache().display()
    );
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(
                !status.success(),
                "the proxy accepted a config it should refuse"
            );
            let mut stderr = String::new();
            use std::io::Read;
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            return stderr;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the proxy kept running on a config it should refuse");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh directory for one test's files. Emptied first: process ids come around again, and a
/// directory left by an earlier run (a controlled proxy's state, say) must not leak into this one.
pub fn scratch_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

impl Proxy {
    /// Starts the proxy on `config` (TOML; `[admin]` on 127.0.0.1:0 is added when absent) and waits
    /// until every listener and the admin API are bound.
    pub fn start(config: &str) -> Self {
        Self::start_env(config, &[])
    }

    /// [`Proxy::start`] with extra environment variables.
    pub fn start_env(config: &str, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut config = if config.contains("[admin]") {
            config.to_owned()
        } else {
            format!("[admin]\nlisten = \"127.0.0.1:0\"\n\n{config}")
        };
        if !config.contains("[runtime]") {
            // One compiled-plugin cache for the whole suite, away from the user's own.
            config = format!(
                "[runtime]\nplugin_cache = \"{}\"\n\n{config}",
                plugin_cache().display()
            );
        }
        let config_path = scratch_dir().join("switchyard.toml");
        std::fs::write(&config_path, &config).expect("write config");
        let expected_listeners = config.matches("[[listener]]").count();
        Self::start_with_env(config_path, expected_listeners, env)
    }

    /// Starts the proxy on a config file as it is (it must set `[admin]` and `[runtime]`
    /// itself), e.g. one reached through symlinks.
    pub fn start_at(config_path: PathBuf) -> Self {
        let config = std::fs::read_to_string(&config_path).expect("read config");
        let expected_listeners = config.matches("[[listener]]").count();
        Self::start_expecting(config_path, expected_listeners)
    }

    /// Starts a proxy whose listeners are not in its file (a controlled proxy's come from the
    /// control plane) and waits until `expected_listeners` of them and the admin API are bound.
    pub fn start_expecting(config_path: PathBuf, expected_listeners: usize) -> Self {
        Self::start_with_env(config_path, expected_listeners, &[])
    }

    /// [`Proxy::start_expecting`] with extra environment variables (e.g. `KUBECONFIG`).
    pub fn start_with_env(
        config_path: PathBuf,
        expected_listeners: usize,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        let mut command = Command::new(BIN);
        command.args(["run", "--config"]).arg(&config_path);
        command.envs(env.iter().copied());
        Self::spawn(command, config_path, expected_listeners)
    }

    /// [`Proxy::start_expecting`] with the process's address space limited to `gib` GiB
    /// (`ulimit -v`).
    pub fn start_in_address_space(
        config_path: PathBuf,
        expected_listeners: usize,
        gib: u64,
    ) -> Self {
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                r#"ulimit -v "$1" && exec "$0" run --config "$2""#,
                BIN,
            ])
            .arg((gib << 20).to_string())
            .arg(&config_path);
        Self::spawn(command, config_path, expected_listeners)
    }

    /// Runs `command` (the proxy, or what execs it) and waits until the admin API and
    /// `expected_listeners` listeners are bound and it is ready.
    fn spawn(mut command: Command, config_path: PathBuf, expected_listeners: usize) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .env_remove("SWITCHYARD_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchyard");

        let log = Arc::new(Mutex::new(Vec::new()));
        let (bound_tx, bound_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let log_sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[proxy] {line}");
                if let Some(bound) = parse_bound(&line) {
                    let _ = bound_tx.send(bound);
                }
                log_sink
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line);
            }
        });

        let deadline = Instant::now() + Duration::from_secs(20);
        let mut admin = None;
        let mut listeners = HashMap::new();
        while admin.is_none() || listeners.len() < expected_listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match bound_rx.recv_timeout(left) {
                Ok(Bound::Admin(addr)) => admin = Some(addr),
                Ok(Bound::Listener(name, addr)) => {
                    listeners.insert(name, addr);
                }
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    panic!(
                        "proxy did not bind within 20s (exit: {status:?}); log:\n{}",
                        log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
                    );
                }
            }
        }
        let proxy = Self {
            child,
            admin: admin.expect("loop ends with admin bound"),
            listeners,
            log,
            config_path,
        };
        proxy.wait_ready();
        proxy
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if admin_status(self.admin, "/ready") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("proxy never reported ready; log:\n{}", self.logs());
    }

    /// The address of the only (or first-declared) listener.
    pub fn addr(&self) -> SocketAddr {
        match self.listeners.len() {
            1 => *self.listeners.values().next().expect("one listener"),
            n => panic!("proxy has {n} listeners; use listener(name)"),
        }
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners[name]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the proxy process in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Sends SIGTERM, as a container runtime does on shutdown.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Sends SIGHUP, as an operator does after editing the config file, and waits up to 5 s for
    /// the reload it starts to be recorded: `/status` then (`last_reload.result` says how it went).
    pub async fn reload_by_hangup(&self) -> serde_json::Value {
        let status = || -> serde_json::Value {
            serde_json::from_str(&admin_get(self.admin, "/status")).expect("/status is JSON")
        };
        let before = status()["config_version"].as_u64();
        let hup = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(hup.success(), "kill -HUP failed");
        super::eventually(Duration::from_secs(5), async || {
            let now = status();
            now["last_reload"]["trigger"] == "SIGHUP"
                && (now["config_version"].as_u64() > before || now["last_reload"]["result"] != "ok")
        })
        .await;
        status()
    }

    /// [`Proxy::reload_by_hangup`], which must succeed (the edit was meant to apply).
    pub async fn reload_by_hangup_ok(&self) {
        let status = self.reload_by_hangup().await;
        assert_eq!(
            status["last_reload"]["result"],
            "ok",
            "the reload did not apply: {status}; log:\n{}",
            self.logs()
        );
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits until a log line containing `needle` has been read from the proxy's output, which
    /// may trail the response that caused it.
    pub async fn wait_for_log(&self, needle: &str, deadline: Duration) -> bool {
        super::eventually(deadline, async || self.logs().contains(needle)).await
    }

    pub fn logs(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.config_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

enum Bound {
    Admin(SocketAddr),
    Listener(String, SocketAddr),
}

/// Recognizes the proxy's "admin API listening addr=…" and "listening listener=… addr=…" lines.
fn parse_bound(line: &str) -> Option<Bound> {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let addr: SocketAddr = field("addr=")?.parse().ok()?;
    if line.contains("admin API listening") {
        Some(Bound::Admin(addr))
    } else if line.contains(" listening ") {
        Some(Bound::Listener(field("listener=")?, addr))
    } else {
        None
    }
}

/// Status of a GET to the admin API, with a plain blocking socket.
pub fn admin_status(admin: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// Body of a GET to the admin API.
pub fn admin_get(admin: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).expect("connect to admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .expect("write admin request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("read admin answer");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// A request to the admin API with an optional bearer token and body: (status, body).
pub fn admin_send(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).expect("connect to admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write admin request");
    stream.write_all(body).expect("write admin body");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("read admin answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
