//! The real `switchyard control` as a child process, and the proxies it runs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::proxy::{Proxy, plugin_cache, scratch_dir};
use super::tls::Pki;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The token every test workload's proxies present.
pub fn token(workload: &str) -> String {
    format!("{workload}-bootstrap-token-0123456789")
}

/// The admin token of test control planes.
pub const ADMIN_TOKEN: &str = "control-admin-token";

/// A running control plane; killed when dropped.
pub struct ControlPlane {
    child: Child,
    pub api: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ControlPlane {
    /// Starts `switchyard control --config mesh` and waits until its API and admin are bound.
    pub fn start(mesh: &Path) -> Self {
        Self::start_with_env(mesh, &[])
    }

    /// [`ControlPlane::start`] with extra environment variables (e.g. `KUBECONFIG`).
    pub fn start_with_env(mesh: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["control", "--config"])
            .arg(mesh)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("SWITCHYARD_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchyard control");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (bound_tx, bound_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[control] {line}");
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                if let Some(addr) = addr {
                    let _ = bound_tx.send((line.contains("API listening"), addr));
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let (mut api, mut admin) = (None, None);
        while api.is_none() || admin.is_none() {
            match bound_rx.recv_timeout(Duration::from_secs(20)) {
                Ok((true, addr)) => api = Some(addr),
                Ok((false, addr)) => admin = Some(addr),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "control plane did not bind within 20s; log:\n{}",
                        log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
                    );
                }
            }
        }
        Self {
            child,
            api: api.expect("bound"),
            admin: admin.expect("bound"),
            log,
        }
    }

    /// `GET /status` of the admin API, as JSON.
    pub fn status(&self) -> serde_json::Value {
        let body = super::proxy::admin_get(self.admin, "/status");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("status is not JSON ({e}): {body}"))
    }

    /// Whether every proxy of every workload reported the workload's current bundle, and there
    /// are `proxies` of them.
    pub fn in_sync(&self, proxies: usize) -> bool {
        let status = self.status();
        let seen: Vec<&serde_json::Value> = status["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|w| w["proxies"].as_array().into_iter().flatten())
            .collect();
        seen.len() == proxies && seen.iter().all(|p| p["in_sync"] == true)
    }

    pub fn logs(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Stops it (SIGKILL: it keeps nothing the proxies need).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a proxy for `workload` run by the control plane at `api` (HTTPS, trusting `ca`),
/// keeping its state in `state_dir`, and waits for its `listeners` listeners.
pub fn controlled_proxy(
    api: SocketAddr,
    ca: &Path,
    workload: &str,
    state_dir: &Path,
    listeners: usize,
) -> Proxy {
    controlled_proxy_with(api, ca, workload, state_dir, listeners, "")
}

/// [`controlled_proxy`] with more local sections (`[access_log]`, say) in its own file.
pub fn controlled_proxy_with(
    api: SocketAddr,
    ca: &Path,
    workload: &str,
    state_dir: &Path,
    listeners: usize,
    local: &str,
) -> Proxy {
    let dir = super::proxy::scratch_dir();
    let path: PathBuf = dir.join("proxy.toml");
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nhistory_resolution = \"1s\"\n\n[runtime]\nplugin_cache = \"{}\"\n\n[control]\nurl = \"https://127.0.0.1:{}\"\nca = \"{}\"\nworkload = \"{workload}\"\ntoken = \"{}\"\nstate_dir = \"{}\"\npoll_timeout = \"2s\"\nstats_interval = \"1s\"\n\n{local}\n",
        plugin_cache().display(),
        api.port(),
        ca.display(),
        token(workload),
        state_dir.display(),
    );
    std::fs::write(&path, config).expect("write proxy config");
    Proxy::start_expecting(path, listeners)
}

/// `mesh.toml` text: `[control]` on 127.0.0.1:0 with the CA in `ca_dir`, then `rest`
/// (plugins), then one `[[workload]]` per name with its config at `workloads/<name>.toml`.
pub fn mesh_toml(ca_dir: &Path, control_extra: &str, rest: &str, workloads: &[&str]) -> String {
    let mut text = format!(
        "[control]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nca = \"{0}/ca.pem\"\nca_key = \"{0}/ca-key.pem\"\nadmin_token = \"{ADMIN_TOKEN}\"\nplugin_cache = \"{1}\"\n{control_extra}\n{rest}\n",
        ca_dir.display(),
        plugin_cache().display()
    );
    for w in workloads {
        text.push_str(&format!(
            "\n[[workload]]\nname = \"{w}\"\ntoken = \"{}\"\nconfig = \"workloads/{w}.toml\"\n",
            token(w)
        ));
    }
    text
}

/// Writes `path` through a rename, as editors and `kubectl apply` of a ConfigMap do.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A mesh directory: CA, mesh.toml, workload configs, and each proxy's state.
pub struct MeshDir {
    pub pki: Pki,
    pub dir: PathBuf,
}

impl MeshDir {
    pub fn new() -> Self {
        let dir = scratch_dir();
        std::fs::create_dir_all(dir.join("workloads")).unwrap();
        Self {
            pki: Pki::new(),
            dir,
        }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.pki.dir.join("ca")
    }

    pub fn mesh(&self) -> PathBuf {
        self.dir.join("mesh.toml")
    }

    pub fn write_mesh(&self, control_extra: &str, plugins: &str, workloads: &[&str]) {
        replace_file(
            &self.mesh(),
            &mesh_toml(&self.ca_dir(), control_extra, plugins, workloads),
        );
    }

    pub fn write_workload(&self, name: &str, config: &str) {
        replace_file(&self.dir.join(format!("workloads/{name}.toml")), config);
    }

    pub fn proxy(&self, api: std::net::SocketAddr, workload: &str) -> Proxy {
        let state = self.dir.join(format!("state-{workload}"));
        controlled_proxy(api, &self.pki.ca(), workload, &state, 1)
    }
}
