//! `switchyard control`: holds `mesh.toml` and the mesh CA, and serves every proxy its identity
//! and its bundle over HTTPS (see [`super::api`]). `mesh.toml`, the workload configs and the
//! plugin files are watched; a change is rendered and checked whole, then every waiting proxy is
//! answered at once. A change that does not check out is refused and the last good state keeps
//! being served.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::api::{self, Bundle, IdentityGrant, Report};
use super::discovery::MeshDiscovery;
use super::render::{self, DiscoveredEndpoints, MeshPlugins, WeightOverrides};
use super::settings::{self, MeshSettings};
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::plugin::{PluginRuntime, Plugins};
use crate::tls::issue::{MeshCa, Workload};
use crate::tls::{PeerIdentity, provider};

/// The largest CSR or report accepted.
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Unix seconds.
    reported_at: u64,
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
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
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
        let (api, admin, plane) = ControlPlane::start(mesh_path, settings).await?;
        tokio::spawn(Arc::clone(&plane).serve_api(api));
        tokio::spawn(Arc::clone(&plane).serve_admin(admin));
        tokio::spawn(Arc::clone(&plane).follow_discovery());
        crate::watch::spawn(Arc::clone(&plane));
        info!("switchyard control plane ready");
        crate::server::shutdown_signal().await;
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
            metrics: crate::telemetry::install_metrics(),
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
                match watched {
                    Ok(()) => self.rebuild(settings, &weights).await.inspect(|_| {
                        *lock(&self.inputs_hash) = hash;
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

    async fn serve_api(self: Arc<Self>, listener: TlsListener) {
        if let Ok(addr) = listener.socket.local_addr() {
            info!(%addr, "control plane API listening");
        }
        loop {
            let (tcp, remote) = match listener.socket.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = listener.acceptor.clone();
            let plane = Arc::clone(&self);
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => return debug!(%remote, "TLS handshake timed out"),
                };
                let spiffe_id = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(PeerIdentity::from_cert)
                    .and_then(|id| id.spiffe_id);
                let service = service_fn(move |req| {
                    let plane = Arc::clone(&plane);
                    let spiffe_id = spiffe_id.clone();
                    async move {
                        Ok::<_, Infallible>(plane.api(req, spiffe_id.as_deref(), remote).await)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                if let Err(e) = http.serve_connection(TokioIo::new(tls), service).await {
                    debug!(%remote, error = %e, "API connection error");
                }
            });
        }
    }

    async fn api(
        &self,
        req: Request<Incoming>,
        spiffe_id: Option<&str>,
        remote: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        match (req.method().clone(), path.as_str()) {
            (Method::POST, api::IDENTITY_PATH) => self.issue_identity(req).await,
            (Method::GET, api::BUNDLE_PATH) => match spiffe_id {
                Some(id) => self.bundle(id, &req).await,
                None => no_identity(),
            },
            (Method::GET, p) if p.starts_with(api::PLUGINS_PATH) => match spiffe_id {
                Some(_) => self.plugin(&p[api::PLUGINS_PATH.len()..]),
                None => no_identity(),
            },
            (Method::POST, api::REPORT_PATH) => match spiffe_id {
                Some(id) => self.report(id, remote, req).await,
                None => no_identity(),
            },
            _ => text(StatusCode::NOT_FOUND, "no such API\n"),
        }
    }

    /// Signs the CSR's public key for the workload the bootstrap token belongs to.
    async fn issue_identity(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let state = self.state.load_full();
        let token = bearer(&req).unwrap_or_default().to_owned();
        let workload = match self.authenticate(&state.settings, &token).await {
            Ok(Some(workload)) => workload,
            Ok(None) => {
                warn!("identity refused: the token is no workload's");
                return text(StatusCode::UNAUTHORIZED, "the token is no workload's\n");
            }
            Err(e) => {
                warn!(error = %e, "identity refused: cannot check the token");
                return text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n"));
            }
        };
        let workload = &workload;
        let Some(body) = read_body(req).await else {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "the CSR is too large\n");
        };
        let csr = std::str::from_utf8(&body)
            .ok()
            .and_then(|pem| rcgen::CertificateSigningRequestParams::from_pem(pem).ok());
        let Some(csr) = csr else {
            return text(
                StatusCode::BAD_REQUEST,
                "expected a PEM certificate signing request\n",
            );
        };
        let spiffe_id = workload.spiffe_id(&state.settings.control.trust_domain);
        let request = Workload {
            spiffe_id: Some(spiffe_id.clone()),
            dns_names: vec![format!("{}.{}.svc", workload.name, workload.namespace)],
            valid_for: state.settings.control.cert_lifetime,
        };
        match self.ca.sign(&request, &csr.public_key) {
            Ok(certificate) => {
                info!(%spiffe_id, "identity issued");
                metrics::counter!("switchyard_control_identities_issued_total").increment(1);
                json(
                    StatusCode::OK,
                    &IdentityGrant {
                        spiffe_id,
                        certificate,
                        ca: self.ca.ca_pem().to_owned(),
                    },
                )
            }
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("cannot sign: {e}\n")),
        }
    }

    /// The workload a token stands for: a bootstrap token, or (with `kubernetes_tokens`) a
    /// service-account token the API server vouches for.
    async fn authenticate(
        &self,
        settings: &MeshSettings,
        token: &str,
    ) -> Result<Option<settings::WorkloadSpec>, String> {
        let by_bootstrap = settings.workloads.iter().find(|w| {
            !w.token.is_empty()
                && crate::admin::constant_time_eq(w.token.as_bytes(), token.as_bytes())
        });
        if let Some(w) = by_bootstrap {
            return Ok(Some(w.clone()));
        }
        if !settings.control.kubernetes_tokens || token.is_empty() {
            return Ok(None);
        }
        let account = crate::kubernetes::review_token(token)
            .await
            .map_err(|e| e.to_string())?;
        Ok(account.and_then(|(namespace, name)| {
            settings
                .workloads
                .iter()
                .find(|w| w.namespace == namespace && w.name == name)
                .cloned()
        }))
    }

    /// The caller's bundle; with `If-None-Match` equal to it, waits for a change first.
    async fn bundle(&self, spiffe_id: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let known = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_owned());
        let wait = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("wait=")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .min(api::MAX_WAIT_SECS);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let mut changes = self.generation.subscribe();
        loop {
            let state = self.state.load_full();
            let Some(bundle) = state.bundles.get(spiffe_id) else {
                return text(
                    StatusCode::FORBIDDEN,
                    &format!("{spiffe_id} is not a workload of this mesh\n"),
                );
            };
            if known.as_deref() != Some(bundle.etag.as_str()) {
                let mut response = json(StatusCode::OK, bundle.as_ref());
                if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", bundle.etag)) {
                    response.headers_mut().insert(header::ETAG, etag);
                }
                return response;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    let mut response = text(StatusCode::NOT_MODIFIED, "");
                    *response.body_mut() = Full::new(Bytes::new());
                    return response;
                }
            }
        }
    }

    fn plugin(&self, sha256: &str) -> Response<Full<Bytes>> {
        match self.state.load().binaries.get(sha256) {
            Some(bytes) => {
                let mut response = Response::new(Full::new(bytes.clone()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/wasm"),
                );
                response
            }
            None => text(StatusCode::NOT_FOUND, "no plugin with that sha256\n"),
        }
    }

    async fn report(
        &self,
        spiffe_id: &str,
        remote: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let report = read_body(req)
            .await
            .and_then(|b| serde_json::from_slice::<Report>(&b).ok());
        let Some(report) = report else {
            return text(StatusCode::BAD_REQUEST, "expected a JSON report\n");
        };
        let instance = if report.instance.is_empty() {
            remote.to_string()
        } else {
            report.instance.clone()
        };
        if report.result != "ok" {
            warn!(%spiffe_id, %instance, etag = %report.etag, result = %report.result, "a proxy refused its bundle");
        }
        lock(&self.proxies)
            .entry(spiffe_id.to_owned())
            .or_default()
            .insert(
                instance.clone(),
                ProxySeen {
                    instance,
                    peer: remote.to_string(),
                    etag: report.etag,
                    version: report.version,
                    result: report.result,
                    reported_at: unix_now(),
                },
            );
        text(StatusCode::NO_CONTENT, "")
    }

    async fn serve_admin(self: Arc<Self>, socket: TcpListener) {
        if let Ok(addr) = socket.local_addr() {
            info!(%addr, "control plane admin listening");
        }
        loop {
            let Ok((tcp, remote)) = socket.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let plane = Arc::clone(&self);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let plane = Arc::clone(&plane);
                    async move { Ok::<_, Infallible>(plane.admin(req).await) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                if let Err(e) = http.serve_connection(TokioIo::new(tcp), service).await {
                    debug!(%remote, error = %e, "admin connection error");
                }
            });
        }
    }

    async fn admin(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        if method == Method::GET {
            return match path.as_str() {
                "/status" => json(StatusCode::OK, &self.status()),
                "/metrics" => match &self.metrics {
                    Some(handle) => {
                        self.observe();
                        text(StatusCode::OK, &handle.render())
                    }
                    None => text(StatusCode::NOT_FOUND, "metrics are off\n"),
                },
                "/ready" => text(StatusCode::OK, "ready\n"),
                _ => text(StatusCode::NOT_FOUND, "GET /status, /metrics or /ready\n"),
            };
        }
        if let Some(refusal) = self.refuse_unauthorized(&req) {
            return refusal;
        }
        match (method, path.as_str()) {
            (Method::POST, "/reload") => match self.reload("admin").await {
                Ok(generation) => json(
                    StatusCode::OK,
                    &serde_json::json!({"result": "ok", "generation": generation}),
                ),
                Err(error) => text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{error}\n")),
            },
            (Method::POST, p) if p.starts_with("/plugins/") && p.ends_with("/weights") => {
                let plugin = p["/plugins/".len()..p.len() - "/weights".len()].to_owned();
                let weights = read_body(req)
                    .await
                    .and_then(|b| serde_json::from_slice::<BTreeMap<String, u32>>(&b).ok());
                let Some(weights) = weights.filter(|w| !w.is_empty()) else {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "expected a JSON object of cluster weights, like {\"v1\": 90, \"v2\": 10}\n",
                    );
                };
                match self.set_weights(&plugin, weights).await {
                    Ok(generation) => json(
                        StatusCode::OK,
                        &serde_json::json!({"result": "ok", "generation": generation}),
                    ),
                    Err(error) => text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{error}\n")),
                }
            }
            _ => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "changes are POST /reload and POST /plugins/{name}/weights\n",
            ),
        }
    }

    fn refuse_unauthorized(&self, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
        let expected = self
            .state
            .load()
            .settings
            .control
            .admin_token
            .clone()
            .or_else(|| std::env::var("SWITCHYARD_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty());
        let Some(expected) = expected else {
            return Some(text(
                StatusCode::FORBIDDEN,
                "changes over the admin API are off: set [control] admin_token or SWITCHYARD_ADMIN_TOKEN\n",
            ));
        };
        match bearer(req) {
            Some(t) if crate::admin::constant_time_eq(t.as_bytes(), expected.as_bytes()) => None,
            _ => Some(text(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required\n",
            )),
        }
    }

    /// Gauges read at scrape: the mesh generation, and proxies in and out of sync.
    fn observe(&self) {
        let status = self.status();
        let proxies: Vec<&serde_json::Value> = status["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|w| w["proxies"].as_array().into_iter().flatten())
            .collect();
        let in_sync = proxies.iter().filter(|p| p["in_sync"] == true).count();
        metrics::gauge!("switchyard_control_generation").set(lock(&self.outcome).generation as f64);
        metrics::gauge!("switchyard_control_proxies", "in_sync" => "true").set(in_sync as f64);
        metrics::gauge!("switchyard_control_proxies", "in_sync" => "false")
            .set((proxies.len() - in_sync) as f64);
    }

    /// Every workload, the bundle it should run, and what each of its proxies reported.
    fn status(&self) -> serde_json::Value {
        let state = self.state.load();
        let proxies = lock(&self.proxies).clone();
        let trust_domain = &state.settings.control.trust_domain;
        let workloads: Vec<serde_json::Value> = state
            .settings
            .workloads
            .iter()
            .map(|w| {
                let id = w.spiffe_id(trust_domain);
                let etag = state.bundles.get(&id).map(|b| b.etag.clone());
                let seen: Vec<serde_json::Value> = proxies
                    .get(&id)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .map(|p| {
                        let mut v = serde_json::to_value(p).unwrap_or_default();
                        v["in_sync"] = (Some(&p.etag) == etag.as_ref() && p.result == "ok").into();
                        v
                    })
                    .collect();
                serde_json::json!({
                    "workload": w.id(),
                    "spiffe_id": id,
                    "etag": etag,
                    "proxies": seen,
                })
            })
            .collect();
        serde_json::json!({
            "reload": lock(&self.outcome).clone(),
            "weights": lock(&self.weights).clone(),
            "workloads": workloads,
        })
    }
}

impl crate::watch::Watched for ControlPlane {
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

/// The accepting socket of the HTTPS API.
struct TlsListener {
    socket: TcpListener,
    acceptor: TlsAcceptor,
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
            super::toml_errors::file_error(&state.settings.source, e.to_string())
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

/// The API's TLS: a serving certificate from the mesh CA (made in memory at start), and client
/// certificates from the same CA asked for but optional — a proxy without an identity yet
/// calls `/v1/identity` with its bootstrap token.
fn api_tls(ca: &MeshCa, settings: &MeshSettings) -> Result<Arc<ServerConfig>, ControlError> {
    let key = rcgen::KeyPair::generate().map_err(|e| ControlError::Tls(e.to_string()))?;
    let serving = Workload {
        spiffe_id: None,
        dns_names: settings.control.server_names.clone(),
        valid_for: Duration::from_secs(365 * 24 * 3600),
    };
    let chain = ca.sign(&serving, &key)?;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.ca_pem().as_bytes()).flatten()
    {
        roots
            .add(cert)
            .map_err(|e| ControlError::Tls(format!("mesh CA: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ControlError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
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
    crate::plugin::hex(&hasher.finalize())
}

fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

fn no_identity() -> Response<Full<Bytes>> {
    text(
        StatusCode::UNAUTHORIZED,
        "present the workload certificate from /v1/identity\n",
    )
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
