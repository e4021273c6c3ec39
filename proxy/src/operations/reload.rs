//! Changing the running proxy without failing a request: a new config (or plugin binary) is
//! read, validated, resolved, compiled and bound off the request path, then swapped in whole.
//! Requests in flight finish on the state they started with; anything invalid is refused whole
//! and the old state keeps serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{Config, ListenerConfig};
use tokio_rustls::TlsAcceptor;

use crate::hex::hex;
use crate::listener::{Listener, ListenerTls, Serving, ServingSlot};
use crate::plugin::{ListenerScope, PluginRuntime, Plugins};
use crate::proxy::ListenerProxy;
use crate::telemetry::{ListenerTelemetry, Telemetry};
use crate::upstream::Clusters;

/// Largest body buffered for plugins that read whole bodies.
const MAX_BUFFERED_BODY: usize = 1024 * 1024;

/// One consistent state: the config and everything built from it.
pub struct Snapshot {
    /// 1 at start, +1 per applied reload.
    pub version: u64,
    pub config: Arc<Config>,
    pub clusters: Arc<Clusters>,
    pub plugins: Arc<Plugins>,
}

/// The outcome of the last reload, for `GET /status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadStatus {
    pub version: u64,
    /// "none" until the first reload, then "ok" or "error".
    pub last_result: &'static str,
    pub last_error: Option<String>,
    /// What asked for it: "file", "SIGHUP", "admin", "plugin swap".
    pub last_trigger: Option<String>,
    /// Unix seconds.
    pub last_at: Option<u64>,
}

/// A listener that is accepting.
struct Running {
    listen: SocketAddr,
    slot: ServingSlot,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A plugin binary swapped in at run time, kept until its file on disk changes.
struct Override {
    bytes: Vec<u8>,
    /// The sha256 of the plugin's file when the swap was made.
    file_sha256: Option<String>,
}

/// The state only reloads touch, one reload at a time.
struct Live {
    listeners: HashMap<String, Running>,
    overrides: HashMap<String, Override>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {name:?} cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plugin(#[from] crate::plugin::LoadError),
    #[error(transparent)]
    Cluster(#[from] crate::upstream::ClusterStartError),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Telemetry(String),
}

/// Why a reload was refused; what runs stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Cluster(#[from] crate::upstream::ClusterStartError),
    #[error(transparent)]
    Plugin(#[from] crate::plugin::LoadError),
    /// A listener's TLS material is unusable, or its new address cannot be bound.
    #[error("{0}")]
    Listener(String),
    #[error("{0}")]
    Telemetry(String),
    #[error("shutting down; not reloading")]
    ShuttingDown,
}

/// Owns the running state and every way of changing it.
pub struct Reloader {
    config_path: PathBuf,
    plugin_runtime: PluginRuntime,
    current: ArcSwap<Snapshot>,
    status: Mutex<ReloadStatus>,
    live: tokio::sync::Mutex<Live>,
    /// Weak: shutdown takes the only strong reference to drain connections.
    graceful: Weak<GracefulShutdown>,
    /// The content hash of the config file and every plugin file the state was built from, so
    /// the file watcher reloads only when something it depends on really changed.
    inputs_hash: Mutex<String>,
    /// The hash of the inputs last refused: an edit is tried once, however many file events
    /// it makes.
    refused_inputs: Mutex<Option<String>>,
    /// The version of the state in use, for whoever must follow changes (the file watcher).
    applied: watch::Sender<u64>,
}

impl Reloader {
    /// Builds the first state from `config` and starts its listeners; any failure is fatal.
    pub async fn start(
        config: Config,
        config_path: PathBuf,
        graceful: Arc<GracefulShutdown>,
    ) -> Result<Arc<Self>, StartError> {
        let plugin_runtime = PluginRuntime::new(&config)?;
        let clusters = Arc::new(Clusters::start(&config).await?);
        let plugins = Arc::new(
            plugin_runtime
                .load(&config, &Plugins::default(), &HashMap::new())
                .await?,
        );
        let telemetry = Arc::new(Telemetry::from_config(&config).map_err(StartError::Telemetry)?);
        let mut listeners = HashMap::new();
        let mut bound = Vec::new();
        for l in &config.listeners {
            let serving = serving(l, &clusters, &plugins, &telemetry).map_err(StartError::Tls)?;
            let listener = Listener::bind(l, serving)
                .await
                .map_err(|source| StartError::Bind {
                    name: l.name.clone(),
                    addr: l.listen,
                    source,
                })?;
            bound.push((l.listen, listener));
        }
        for (listen, listener) in bound {
            let name = listener.name.clone();
            listeners.insert(name, spawn(listen, listener, &graceful));
        }
        let inputs_hash = inputs_hash(&config_path, &config);
        plugins.start_ticking(&clusters);
        let snapshot = Snapshot {
            version: 1,
            config: Arc::new(config),
            clusters,
            plugins,
        };
        Ok(Arc::new(Self {
            config_path,
            plugin_runtime,
            current: ArcSwap::from_pointee(snapshot),
            status: Mutex::new(ReloadStatus {
                version: 1,
                last_result: "none",
                last_error: None,
                last_trigger: None,
                last_at: None,
            }),
            live: tokio::sync::Mutex::new(Live {
                listeners,
                overrides: HashMap::new(),
            }),
            graceful: Arc::downgrade(&graceful),
            inputs_hash: Mutex::new(inputs_hash),
            refused_inputs: Mutex::new(None),
            applied: watch::Sender::new(1),
        }))
    }

    /// The state new requests are served with.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        lock(&self.status).clone()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Whether the config file or a plugin file differs both from what the state was built from
    /// and from what was last refused. Files that are back to what runs (a bad edit undone)
    /// also clear the refusal from the status: there is nothing left to reload.
    pub fn inputs_changed(&self) -> bool {
        let config = self.current().config.clone();
        let now = inputs_hash(&self.config_path, &config);
        if now == *lock(&self.inputs_hash) {
            self.restored();
            return false;
        }
        lock(&self.refused_inputs).as_deref() != Some(now.as_str())
    }

    /// The files are what runs again: a refusal of a file change no longer describes them.
    fn restored(&self) {
        lock(&self.refused_inputs).take();
        let mut status = lock(&self.status);
        if status.last_result == "error" && status.last_trigger.as_deref() == Some("file") {
            info!("the config files are back to what is running; the refused change is gone");
            status.last_result = "ok";
            status.last_error = None;
            status.last_trigger = Some("file (restored)".to_owned());
        }
    }

    /// Reads the config file again and applies it.
    pub async fn reload(&self, trigger: &str) -> Result<u64, ReloadError> {
        let mut live = self.live.lock().await;
        let result = match crate::config::load(&self.config_path) {
            Ok(config) => self.apply(&mut live, config).await,
            Err(errors) => Err(errors.into()),
        };
        let refused = result
            .is_err()
            .then(|| inputs_hash(&self.config_path, &self.current().config));
        *lock(&self.refused_inputs) = refused;
        self.record(trigger, &result);
        result
    }

    /// Replaces plugin `name`'s binary with `bytes` (checked first: it must load, pass its own
    /// config check and match any sha256 pin), keeping everything else. Returns the new sha256.
    pub async fn swap_plugin(&self, name: &str, bytes: Vec<u8>) -> Result<String, SwapError> {
        let mut live = self.live.lock().await;
        let config = Config::clone(&self.current().config);
        let Some(plugin) = config.plugins.iter().find(|p| p.name == name) else {
            return Err(SwapError::NoSuchPlugin(name.to_owned()));
        };
        let sha256 = match self.plugin_runtime.check(plugin, &bytes).await {
            Ok(sha256) => sha256,
            Err(e) => {
                let refused = SwapError::Refused(e.to_string());
                self.record("plugin swap", &Err(e.into()));
                return Err(refused);
            }
        };
        let file_sha256 = file_sha256(&plugin.path);
        live.overrides
            .insert(name.to_owned(), Override { bytes, file_sha256 });
        let result = self.apply(&mut live, config).await;
        self.record("plugin swap", &result);
        match result {
            Ok(_) => Ok(sha256),
            Err(e) => {
                live.overrides.remove(name);
                Err(SwapError::Refused(e.to_string()))
            }
        }
    }

    /// Builds everything for `config` and swaps it in, or changes nothing.
    async fn apply(&self, live: &mut Live, config: Config) -> Result<u64, ReloadError> {
        let Some(graceful) = self.graceful.upgrade() else {
            return Err(ReloadError::ShuttingDown);
        };
        let old = self.current();
        warn_about_restart_only_changes(&old.config, &config);
        // A swapped-in binary stays until its plugin's file changes (or the plugin goes).
        live.overrides.retain(|name, o| {
            config
                .plugins
                .iter()
                .any(|p| p.name == *name && file_sha256(&p.path) == o.file_sha256)
        });
        let overrides: HashMap<String, Vec<u8>> = live
            .overrides
            .iter()
            .map(|(name, o)| (name.clone(), o.bytes.clone()))
            .collect();

        let clusters = Arc::new(Clusters::start_from(&config, &old.clusters).await?);
        let plugins = Arc::new(
            self.plugin_runtime
                .load(&config, &old.plugins, &overrides)
                .await?,
        );

        // Everything each listener will serve with, then the sockets that are new: all before
        // touching what runs, so bad TLS material or a taken port refuses the reload whole.
        let telemetry = Arc::new(Telemetry::from_config(&config).map_err(ReloadError::Telemetry)?);
        let mut servings = HashMap::new();
        for l in &config.listeners {
            let serving =
                serving(l, &clusters, &plugins, &telemetry).map_err(ReloadError::Listener)?;
            servings.insert(l.name.clone(), serving);
        }
        let mut fresh = Vec::new();
        for l in &config.listeners {
            let kept = live
                .listeners
                .get(&l.name)
                .is_some_and(|r| r.listen == l.listen);
            if !kept && let Some(serving) = servings.remove(&l.name) {
                let listener = Listener::bind(l, serving).await.map_err(|e| {
                    ReloadError::Listener(format!(
                        "listener {:?} cannot listen on {}: {e}",
                        l.name, l.listen
                    ))
                })?;
                fresh.push((l.listen, listener));
            }
        }

        // Commit: from here on nothing fails.
        let version = old.version + 1;
        for (name, serving) in servings {
            if let Some(running) = live.listeners.get(&name) {
                running.slot.store(Arc::new(serving));
            }
        }
        let wanted: HashMap<&str, SocketAddr> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.listen))
            .collect();
        let gone: Vec<String> = live
            .listeners
            .iter()
            .filter(|(name, r)| wanted.get(name.as_str()) != Some(&r.listen))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(running) = live.listeners.remove(&name) {
                info!(listener = %name, "listener removed; its open connections finish");
                let _ = running.stop.send(true);
            }
        }
        for (listen, listener) in fresh {
            let name = listener.name.clone();
            live.listeners
                .insert(name, spawn(listen, listener, &graceful));
        }
        *lock(&self.inputs_hash) = inputs_hash(&self.config_path, &config);
        plugins.start_ticking(&clusters);
        self.current.store(Arc::new(Snapshot {
            version,
            config: Arc::new(config),
            clusters,
            plugins,
        }));
        self.applied.send_replace(version);
        Ok(version)
    }

    /// Changes whenever a new state is applied, whatever asked for it.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn record(&self, trigger: &str, result: &Result<u64, ReloadError>) {
        let mut status = lock(&self.status);
        status.last_trigger = Some(trigger.to_owned());
        status.last_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        match result {
            Ok(version) => {
                info!(trigger, version, "config applied");
                status.version = *version;
                status.last_result = "ok";
                status.last_error = None;
                metrics::counter!("switchyard_config_reload_total", "result" => "ok").increment(1);
            }
            Err(error) => {
                warn!(
                    trigger,
                    "reload refused; still serving the previous config:\n{error}"
                );
                status.last_result = "error";
                status.last_error = Some(error.to_string());
                metrics::counter!("switchyard_config_reload_total", "result" => "error")
                    .increment(1);
            }
        }
    }

    /// Stops every listener accepting (for shutdown) and waits for the accept loops to end.
    pub async fn stop_listeners(&self) {
        let mut live = self.live.lock().await;
        let running: Vec<Running> = live.listeners.drain().map(|(_, r)| r).collect();
        for r in &running {
            let _ = r.stop.send(true);
        }
        for r in running {
            let _ = r.task.await;
        }
    }
}

/// Why a plugin swap was refused.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("no plugin is named {0:?} in the running config")]
    NoSuchPlugin(String),
    #[error("{0}")]
    Refused(String),
}

/// What listener `l` serves with; fails on unusable TLS material (naming the file).
fn serving(
    l: &ListenerConfig,
    clusters: &Arc<Clusters>,
    plugins: &Plugins,
    telemetry: &Arc<Telemetry>,
) -> Result<Serving, String> {
    let tls = match &l.tls {
        Some(tls) => Some(ListenerTls {
            acceptor: TlsAcceptor::from(
                crate::tls::server::server_config(tls)
                    .map_err(|e| format!("listener {:?}: {e}", l.name))?,
            ),
            handshake_timeout: tls.handshake_timeout,
        }),
        None => None,
    };
    let forward_client_cert = l.tls.as_ref().and_then(|t| t.forward_client_cert.clone());
    let listener: Arc<str> = l.name.as_str().into();
    let proxy = ListenerProxy {
        telemetry: Arc::new(ListenerTelemetry::new(
            Arc::clone(&listener),
            Arc::clone(telemetry),
        )),
        scope: Arc::new(ListenerScope {
            listener,
            clusters: Arc::clone(clusters),
        }),
        scheme: if tls.is_some() { "https" } else { "http" },
        default_cluster: l.default_cluster.and_then(|i| clusters.get(i)).cloned(),
        chain: Arc::new(plugins.listener_chain(&l.plugin_names, &l.routes)),
        max_buffered_body: MAX_BUFFERED_BODY,
        max_uri_length: l.max_uri_length,
        path_normalization: l.path_normalization,
        grpc_web: l.grpc_web,
        max_request_body: l.max_request_body,
        forward_client_cert,
    };
    Ok(Serving::new(l, proxy, tls))
}

fn spawn(listen: SocketAddr, listener: Listener, graceful: &Arc<GracefulShutdown>) -> Running {
    let (stop, stopped) = watch::channel(false);
    let slot = listener.slot();
    let task = tokio::spawn(listener.serve(stopped, Arc::clone(graceful)));
    Running {
        listen,
        slot,
        stop,
        task,
    }
}

/// Settings read once at start-up; a reload that changes them says so instead of pretending.
fn warn_about_restart_only_changes(old: &Config, new: &Config) {
    if old.admin.listen != new.admin.listen {
        warn!(old = %old.admin.listen, new = %new.admin.listen, "admin.listen changes only on restart");
    }
    if old.runtime.worker_threads != new.runtime.worker_threads {
        warn!("runtime.worker_threads changes only on restart");
    }
}

/// A hash of the config file's bytes and every file it names — plugins, certificates, keys,
/// CAs — read through symlinks, so a Kubernetes `..data` swap and a rotated certificate count as
/// changes.
fn inputs_hash(config_path: &Path, config: &Config) -> String {
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(config_path).unwrap_or_default());
    for file in config.input_files() {
        hasher.update(file.as_os_str().as_encoded_bytes());
        hasher.update(std::fs::read(&file).unwrap_or_default());
    }
    hex(&hasher.finalize())
}

/// The sha256 of a file's content, if it can be read.
fn file_sha256(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| hex(&Sha256::digest(b)))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
