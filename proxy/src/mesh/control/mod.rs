//! `switchyard control`: holds `mesh.toml` and the mesh CA, and serves every proxy its identity
//! and its bundle over HTTPS (see [`super::api`]). `mesh.toml`, the workload configs and the
//! plugin files are watched; a change is rendered and checked whole, then every waiting proxy is
//! answered at once. A change that does not check out is refused and the last good state keeps
//! being served.

mod admin;
mod https;
mod respond;
mod traffic;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::api::Bundle;
use super::discovery::MeshDiscovery;
use super::render::{self, DiscoveredEndpoints, MeshPlugins};
use super::settings::{self, MeshSettings};
use super::weights::{self, WeightOverrides};
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::plugin::{PluginRuntime, Plugins};
use crate::tls::issue::MeshCa;
use https::{TlsListener, api_tls};

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("mesh CA: {0}")]
    Ca(#[from] crate::tls::issue::IssueError),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Discovery(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// The mesh as rendered from one reading of the files.
struct MeshState {
    settings: MeshSettings,
    plugins: MeshPlugins,
    /// One workload's config as checked (every workload runs the same mesh plugins), to load
    /// the plugins from before serving anything.
    checked: Option<Config>,
    /// By SPIFFE ID.
    bundles: HashMap<String, Arc<Bundle>>,
    binaries: HashMap<String, Bytes>,
}

/// The last reload, for `/status`.
#[derive(Debug, Clone, Serialize)]
struct ReloadOutcome {
    generation: u64,
    last_result: &'static str,
    last_error: Option<String>,
}

/// A proxy as last heard from.
#[derive(Debug, Clone, Serialize)]
struct ProxySeen {
    instance: String,
    peer: String,
    etag: String,
    version: u64,
    result: String,
    /// When its last report came (Unix seconds).
    reported_at: u64,
    /// When it last reported or polled (Unix seconds).
    last_seen: u64,
}

/// The running control plane.
pub struct ControlPlane {
    mesh_path: PathBuf,
    ca: MeshCa,
    state: ArcSwap<MeshState>,
    generation: watch::Sender<u64>,
    weights: Mutex<WeightOverrides>,
    /// By SPIFFE ID, then instance.
    proxies: Mutex<BTreeMap<String, BTreeMap<String, ProxySeen>>>,
    outcome: Mutex<ReloadOutcome>,
    reloading: tokio::sync::Mutex<()>,
    inputs_hash: Mutex<String>,
    discovery: Arc<MeshDiscovery>,
    plugin_check: PluginCheck,
    /// Renders `/metrics`; `None` if another recorder was installed first.
    metrics: Option<crate::telemetry::MetricsHandle>,
    /// What proxies report of their traffic, for the mesh view.
    traffic: traffic::MeshTraffic,
}

/// Runs the control plane on `mesh.toml` until SIGTERM or SIGINT.
pub fn run(mesh_path: PathBuf) -> Result<(), ControlError> {
    let settings = settings::load(&mesh_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ControlError::Runtime)?;
    runtime.block_on(async {
        let mut shutdown = std::pin::pin!(crate::server::shutdown_signal());
        if crate::server::install_signal_handlers(shutdown.as_mut()).await {
            return Ok(());
        }
        let (api, admin, plane) = ControlPlane::start(mesh_path, settings).await?;
        tokio::spawn(Arc::clone(&plane).serve_api(api));
        tokio::spawn(Arc::clone(&plane).serve_admin(admin));
        tokio::spawn(Arc::clone(&plane).follow_discovery());
        crate::operations::watch::spawn(Arc::clone(&plane));
        info!("switchyard control plane ready");
        shutdown.await;
        Ok(())
    })
}

impl ControlPlane {
    /// Reads the CA, renders every workload and binds both sockets; any failure is fatal.
    async fn start(
        mesh_path: PathBuf,
        settings: MeshSettings,
    ) -> Result<(TlsListener, TcpListener, Arc<Self>), ControlError> {
        let ca = MeshCa::load(&settings.control.ca, &settings.control.ca_key)?;
        let tls = api_tls(&ca, &settings)?;
        let bind = async |addr: SocketAddr| {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ControlError::Bind { addr, source })
        };
        let api = bind(settings.control.listen).await?;
        let admin = bind(settings.control.admin).await?;
        let inputs_hash = inputs_hash(&mesh_path, &settings);
        let discovery = Arc::new(MeshDiscovery::default());
        if settings.control.kubernetes_discovery {
            discovery
                .watch_all(render::referenced_services(&settings))
                .await
                .map_err(ControlError::Discovery)?;
        }
        let plugin_check = PluginCheck::default();
        let metrics = crate::telemetry::install_metrics();
        metrics::counter!("switchyard_control_identities_issued_total").increment(0);
        let traffic = traffic::MeshTraffic::new(crate::telemetry::window::Resolution {
            slot_secs: settings.control.stats_resolution.as_secs().max(1),
            slots: (settings.control.stats_window.as_secs()
                / settings.control.stats_resolution.as_secs().max(1))
            .max(1),
        });
        let state = build(settings, &WeightOverrides::new(), &discovery.snapshot())?;
        plugin_check.check(&state).await?;
        let plane = Arc::new(Self {
            mesh_path,
            ca,
            state: ArcSwap::from_pointee(state),
            generation: watch::Sender::new(1),
            weights: Mutex::new(WeightOverrides::new()),
            proxies: Mutex::new(BTreeMap::new()),
            outcome: Mutex::new(ReloadOutcome {
                generation: 1,
                last_result: "none",
                last_error: None,
            }),
            reloading: tokio::sync::Mutex::new(()),
            inputs_hash: Mutex::new(inputs_hash),
            discovery,
            plugin_check,
            metrics,
            traffic,
        });
        Ok((
            TlsListener {
                socket: api,
                acceptor: TlsAcceptor::from(tls),
            },
            admin,
            plane,
        ))
    }

    /// Reads `mesh.toml` (and what it names) again and serves the result, or keeps the old.
    pub async fn reload(&self, trigger: &str) -> Result<u64, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = match settings::load(&self.mesh_path) {
            Ok(settings) => {
                let hash = inputs_hash(&self.mesh_path, &settings);
                let weights = lock(&self.weights).clone();
                let watched = if settings.control.kubernetes_discovery {
                    let services = render::referenced_services(&settings);
                    self.discovery.watch_all(services).await
                } else {
                    Ok(())
                };
                let previous = self.state.load_full();
                match watched {
                    Ok(()) => self.rebuild(settings, &weights).await.inspect(|_| {
                        *lock(&self.inputs_hash) = hash;
                        warn_shadowed(&previous.settings, &self.state.load().settings, &weights);
                    }),
                    Err(e) => Err(e),
                }
            }
            Err(errors) => Err(errors.to_string()),
        };
        match &result {
            Ok(generation) => info!(trigger, generation, "mesh applied"),
            Err(error) => {
                warn!(
                    trigger,
                    "mesh change refused; still serving the last good one:\n{error}"
                )
            }
        }
        result
    }

    /// Weights for `plugin` set at run time, mesh-wide.
    async fn set_weights(
        &self,
        plugin: &str,
        weights: BTreeMap<String, u32>,
    ) -> Result<u64, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.state.load_full();
        current.plugins.check_weights(plugin, &weights)?;
        let mut all = lock(&self.weights).clone();
        all.entry(plugin.to_owned()).or_default().extend(weights);
        let result = self.rebuild(current.settings.clone(), &all).await;
        if result.is_ok() {
            info!(plugin, "weights changed over the admin API");
            *lock(&self.weights) = all;
        }
        result
    }

    /// Drops the weights set at run time for `plugin`, so `mesh.toml`'s apply again; `None`
    /// when none were held.
    async fn clear_weights(&self, plugin: &str) -> Result<Option<u64>, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let mut all = lock(&self.weights).clone();
        if all.remove(plugin).is_none() {
            return Ok(None);
        }
        let current = self.state.load_full();
        let generation = self.rebuild(current.settings.clone(), &all).await?;
        info!(
            plugin,
            "weights set over the admin API cleared; mesh.toml's apply"
        );
        *lock(&self.weights) = all;
        Ok(Some(generation))
    }

    /// The weights held for each plugin beside what `mesh.toml` says, for `/status`.
    fn held_weights(&self) -> serde_json::Value {
        let state = self.state.load();
        let held = lock(&self.weights).clone();
        held.iter()
            .map(|(plugin, weights)| {
                let file: BTreeMap<String, u32> = shadowed(&state.settings, plugin, weights)
                    .into_iter()
                    .collect();
                serde_json::json!({"plugin": plugin, "held": weights, "mesh_toml": file})
            })
            .collect()
    }

    /// Re-renders the mesh whenever discovered endpoints change, for the life of the process.
    async fn follow_discovery(self: Arc<Self>) {
        loop {
            self.discovery.changed().await;
            let _one_at_a_time = self.reloading.lock().await;
            let current = self.state.load_full();
            let weights = lock(&self.weights).clone();
            match self.rebuild(current.settings.clone(), &weights).await {
                Ok(generation) => info!(generation, "mesh re-rendered for new endpoints"),
                Err(error) => warn!("new endpoints refused:\n{error}"),
            }
        }
    }

    /// Renders `settings` with `weights` and what discovery knows, loads the mesh's plugins as a
    /// proxy would, and serves the result — or changes nothing.
    async fn rebuild(
        &self,
        settings: MeshSettings,
        weights: &WeightOverrides,
    ) -> Result<u64, String> {
        let built = build(settings, weights, &self.discovery.snapshot());
        let built = match built {
            Ok(state) => self.plugin_check.check(&state).await.map(|()| state),
            Err(errors) => Err(errors),
        };
        self.swap(built)
    }

    fn swap(&self, built: Result<MeshState, ConfigErrors>) -> Result<u64, String> {
        let mut outcome = lock(&self.outcome);
        match built {
            Ok(state) => {
                self.state.store(Arc::new(state));
                let generation = outcome.generation + 1;
                *outcome = ReloadOutcome {
                    generation,
                    last_result: "ok",
                    last_error: None,
                };
                self.generation.send_replace(generation);
                Ok(generation)
            }
            Err(errors) => {
                outcome.last_result = "error";
                outcome.last_error = Some(errors.to_string());
                Err(errors.to_string())
            }
        }
    }
}

impl crate::operations::watch::Watched for ControlPlane {
    fn watched_files(&self) -> Vec<PathBuf> {
        input_files(&self.mesh_path, &self.state.load().settings)
    }

    fn inputs_changed(&self) -> bool {
        let state = self.state.load();
        inputs_hash(&self.mesh_path, &state.settings) != *lock(&self.inputs_hash)
    }

    async fn reload_from_files(&self) {
        let _ = self.reload("file").await;
    }

    fn applied(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// Logs, for every plugin with weights held from the admin API, a `mesh.toml` edit of those
/// same weights: it is applied only once they are cleared.
fn warn_shadowed(before: &MeshSettings, after: &MeshSettings, held: &WeightOverrides) {
    for (plugin, weights) in held {
        let edited = shadowed(after, plugin, weights);
        if shadowed(before, plugin, weights) != edited {
            let edited: Vec<String> = edited.iter().map(|(c, w)| format!("{c}={w}")).collect();
            warn!(
                plugin = %plugin,
                mesh_toml = %edited.join(" "),
                "mesh.toml changes weights that were set over the admin API; those stay in force \
                 until `switchyard ctl --control ADDR weights --clear {plugin}`"
            );
        }
    }
}

/// What `mesh.toml` says of the clusters whose weights are held for `plugin`.
fn shadowed(mesh: &MeshSettings, plugin: &str, held: &BTreeMap<String, u32>) -> Vec<(String, u32)> {
    weights::file_weights(mesh, plugin)
        .into_iter()
        .filter(|(cluster, _)| held.contains_key(cluster))
        .collect()
}

/// Renders every workload; any error refuses the whole mesh.
fn build(
    settings: MeshSettings,
    weights: &WeightOverrides,
    discovered: &DiscoveredEndpoints,
) -> Result<MeshState, ConfigErrors> {
    let plugins = MeshPlugins::read(&settings)?;
    let mut bundles = HashMap::new();
    let mut checked = None;
    let mut errors: Vec<ConfigError> = Vec::new();
    for w in &settings.workloads {
        match render::render(&settings, &plugins, weights, discovered, w) {
            Ok((bundle, config)) => {
                bundles.insert(
                    w.spiffe_id(&settings.control.trust_domain),
                    Arc::new(bundle),
                );
                checked.get_or_insert(config);
            }
            Err(e) => errors.extend(e.0),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let binaries = plugins.binaries();
    Ok(MeshState {
        settings,
        plugins,
        checked,
        bundles,
        binaries,
    })
}

/// Loads the mesh's plugins as every proxy will — compiled (cached by sha256), instantiated,
/// given their `[plugin.config]` — so a plugin that rejects its config is refused here, naming
/// it, instead of by every proxy.
#[derive(Default)]
struct PluginCheck {
    /// Made on first use; the plugins last loaded, reused while unchanged.
    loaded: tokio::sync::Mutex<Option<(PluginRuntime, Plugins)>>,
}

impl PluginCheck {
    async fn check(&self, state: &MeshState) -> Result<(), ConfigErrors> {
        let Some(config) = &state.checked else {
            return Ok(());
        };
        let mut config = config.clone();
        if let Some(dir) = &state.settings.control.plugin_cache {
            config.runtime.plugin_cache = dir.clone();
        }
        let refused = |e: crate::plugin::LoadError| {
            crate::config::file_error(&state.settings.source, e.to_string())
        };
        let mut loaded = self.loaded.lock().await;
        if loaded.is_none() {
            *loaded = Some((
                PluginRuntime::new(&config).map_err(refused)?,
                Plugins::default(),
            ));
        }
        let Some((runtime, previous)) = loaded.as_mut() else {
            return Ok(());
        };
        *previous = runtime
            .load(&config, previous, &HashMap::new())
            .await
            .map_err(refused)?;
        Ok(())
    }
}

fn input_files(mesh_path: &Path, settings: &MeshSettings) -> Vec<PathBuf> {
    let mut files = vec![mesh_path.to_path_buf()];
    for w in &settings.workloads {
        files.extend(w.inputs.iter().cloned());
    }
    for p in &settings.plugins {
        if let Some(path) = p.get("path").and_then(|v| v.as_str()) {
            files.push(PathBuf::from(path));
        }
    }
    files
}

/// A hash of every input file's bytes: a change the watcher sees is a reload only if it is one.
fn inputs_hash(mesh_path: &Path, settings: &MeshSettings) -> String {
    let mut hasher = Sha256::new();
    for file in input_files(mesh_path, settings) {
        hasher.update(file.as_os_str().as_encoded_bytes());
        hasher.update(std::fs::read(&file).unwrap_or_default());
    }
    crate::hex::hex(&hasher.finalize())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
