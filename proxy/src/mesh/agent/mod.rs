//! A proxy run by the control plane: its config file has `[control]` (and, optionally,
//! `[admin]`, `[runtime]`, `[access_log]`, `[tracing]`, which stay local) instead of listeners,
//! clusters and plugins.
//!
//! ```toml
//! [control]
//! url = "https://switchyard-control:15012"
//! ca = "/etc/switchyard/mesh-ca.pem"     # the mesh CA: the control plane must chain to it
//! workload = "frontend"
//! namespace = "default"
//! token_file = "/var/run/secrets/switchyard/token"   # or token = "..."
//! state_dir = "/var/run/switchyard"       # identity, plugins and the last good bundle
//! ```
//!
//! On start the agent makes a key, has the control plane sign it (the bootstrap token says which
//! workload it is), fetches its bundle over mTLS, checks the bundle's and every plugin's sha256,
//! writes the proxy config it makes of them into `state_dir` and serves it. Then it long-polls
//! for changes and applies each through the same reload path a file edit takes, reports what it
//! applied, and renews its certificate at two thirds of its life. When the control plane is
//! away it keeps serving — and starts again from — the last good bundle in `state_dir`.

mod identity;
mod link;
mod settings;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use tracing::{info, warn};

use super::api::{self, Bundle, Report, sha256_hex};
use super::client::{CallError, ControlClient};
use super::render::IDENTITY_FILE;
use crate::config::{Config, ConfigErrors};
use crate::operations::reload::Reloader;
use identity::{identity_span, publish_identity_expiry};
use link::Link;
pub use settings::{AgentSettings, is_controlled, load};

/// The effective config, written into the state directory.
const CONFIG_FILE: &str = "config.toml";
/// The bundle it was made from (for its etag after a restart).
const BUNDLE_FILE: &str = "bundle.json";
/// Retries back off up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a controlled proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error("{0}")]
    State(String),
}

/// Runs a controlled proxy until SIGTERM or SIGINT.
pub fn run(path: &Path) -> Result<(), AgentError> {
    let settings = load(path)?;
    let agent = Arc::new(Agent::new(settings)?);
    let bootstrap = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::State(format!("cannot start a runtime: {e}")))?;
    let config = bootstrap.block_on(agent.bootstrap())?;
    drop(bootstrap);
    let effective = agent.path(CONFIG_FILE);
    crate::server::run_with(config, effective, move |reloader| {
        tokio::spawn(Arc::clone(&agent).follow(Arc::clone(&reloader)));
        tokio::spawn(Arc::clone(&agent).report_stats(Arc::clone(&reloader)));
        tokio::spawn(Arc::clone(&agent).renew(reloader));
        Some(agent)
    })?;
    Ok(())
}

/// The agent of one controlled proxy.
struct Agent {
    settings: AgentSettings,
    /// The etag of the bundle in use.
    etag: Mutex<String>,
    /// The etag of a bundle just refused: polls wait for a newer one, and once a poll ends with
    /// nothing new it is forgotten, so the refused bundle is tried again (it may have failed for
    /// a passing reason, a plugin download cut short) about every `poll_timeout`.
    refused: Mutex<Option<String>>,
    /// Which proxy of the workload this is (host name and process id).
    instance: String,
    link: Link,
    /// Whether the bootstrap applied a bundle fresh from the control plane (counted once the
    /// metrics recorder is up).
    fetched_at_start: AtomicBool,
}

impl Agent {
    fn new(settings: AgentSettings) -> Result<Self, AgentError> {
        for dir in ["identity", "plugins"] {
            let dir = settings.state_dir.join(dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| AgentError::State(format!("cannot create {}: {e}", dir.display())))?;
        }
        let etag = std::fs::read(settings.state_dir.join(BUNDLE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Bundle>(&b).ok())
            .filter(|_| settings.state_dir.join(CONFIG_FILE).exists())
            .map(|b| b.etag)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        Ok(Self {
            settings,
            etag: Mutex::new(etag),
            refused: Mutex::new(None),
            instance: format!("{host}:{}", std::process::id()),
            link: Link::default(),
            fetched_at_start: AtomicBool::new(false),
        })
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.settings.state_dir.join(relative)
    }

    /// An identity and a config to start with: fresh from the control plane, else the last
    /// good ones in the state directory; waits for the control plane when there are none.
    async fn bootstrap(&self) -> Result<Config, AgentError> {
        let mut backoff = Backoff::default();
        loop {
            let usable = identity_span(&self.path(IDENTITY_FILE))
                .is_some_and(|(_, renew_at, expires)| SystemTime::now() < renew_at.min(expires));
            if usable {
                break;
            }
            match self.request_identity().await {
                Ok(()) => break,
                Err(e) if identity_span(&self.path(IDENTITY_FILE)).is_some() => {
                    warn!(error = %e, "cannot renew the identity; starting with the one on disk");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "no identity yet; retrying");
                    backoff.wait().await;
                }
            }
        }
        let mut backoff = Backoff::default();
        loop {
            match self.fetch(Duration::ZERO).await {
                Ok(Some(bundle)) => match self.write(&bundle).await {
                    Ok(()) => {
                        self.fetched_at_start.store(true, Ordering::Relaxed);
                        self.link.applied();
                        break;
                    }
                    Err(e) => {
                        warn!("bundle refused: {e}");
                        self.link.refused(&bundle.etag, &e);
                        self.report_or_warn(&bundle.etag, 0, &e).await;
                    }
                },
                Ok(None) => {
                    self.rewrite_cached().await;
                    self.link.applied();
                    break;
                }
                Err(e) if self.path(CONFIG_FILE).exists() => {
                    warn!(error = %e, "control plane unreachable; starting from the last good bundle");
                    self.link.failed(e.to_string());
                    self.rewrite_cached().await;
                    self.link.applied();
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "no bundle yet; retrying");
                    self.link.failed(e.to_string());
                }
            }
            backoff.wait().await;
        }
        let config = crate::config::load(&self.path(CONFIG_FILE))?;
        Ok(config)
    }

    /// Writes the effective config again from the bundle in use, so this start's local sections
    /// (its own file may have changed) apply; if that fails, the config on disk stays as it is.
    async fn rewrite_cached(&self) {
        let cached = std::fs::read(self.path(BUNDLE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Bundle>(&b).ok());
        if let Some(bundle) = cached
            && let Err(e) = self.write(&bundle).await
        {
            warn!("cannot rewrite the config from the last bundle; using it as it is: {e}");
        }
    }

    /// Long-polls for new bundles and applies them, for the life of the process.
    async fn follow(self: Arc<Self>, reloader: Arc<Reloader>) {
        // The bootstrap ran before the metrics recorder was installed: its identity and bundle
        // are published now, and every counter exists from the start, at zero.
        publish_identity_expiry(&self.path(IDENTITY_FILE));
        let at_start = u64::from(self.fetched_at_start.load(Ordering::Relaxed));
        metrics::counter!("switchyard_control_bundles_total", "result" => "applied")
            .increment(at_start);
        metrics::counter!("switchyard_control_bundles_total", "result" => "refused").increment(0);
        metrics::counter!("switchyard_control_poll_errors_total").increment(0);
        let mut backoff = Backoff::default();
        // What runs here is reported at every (re)connect, so a control plane that restarted
        // lists this proxy at once rather than after the next bundle change.
        let mut unreported = true;
        loop {
            if unreported {
                unreported = self.report_running(&reloader).await.is_err();
            }
            match self.fetch(self.settings.poll_timeout).await {
                Ok(None) => {
                    lock(&self.refused).take();
                }
                Ok(Some(bundle)) => self.apply(&reloader, &bundle).await,
                Err(e) => {
                    if self.link.failed(e.to_string()) {
                        warn!(error = %e, "control plane unreachable; serving the last good bundle");
                    }
                    metrics::counter!("switchyard_control_poll_errors_total").increment(1);
                    unreported = true;
                    backoff.wait().await;
                    continue;
                }
            }
            backoff = Backoff::default();
        }
    }

    /// Tells the control plane what runs here: the bundle in use, or the one refused last.
    async fn report_running(&self, reloader: &Reloader) -> Result<(), CallError> {
        let version = reloader.current().version;
        match self.link.snapshot().refused {
            Some(refused) => self.report(&refused.etag, version, &refused.error).await,
            None => {
                let etag = lock(&self.etag).clone();
                self.report(&etag, version, "ok").await
            }
        }
    }

    /// Writes `bundle` and reloads; anything wrong leaves the running config as it was.
    async fn apply(&self, reloader: &Reloader, bundle: &Bundle) {
        let config_path = self.path(CONFIG_FILE);
        let bundle_path = self.path(BUNDLE_FILE);
        let previous = std::fs::read(&config_path).ok();
        let previous_bundle = std::fs::read(&bundle_path).ok();
        let previous_etag = lock(&self.etag).clone();
        let result = match self.write(bundle).await {
            Ok(()) => reloader.reload("control").await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(version) => {
                info!(etag = %bundle.etag, version, "bundle applied");
                metrics::counter!("switchyard_control_bundles_total", "result" => "applied")
                    .increment(1);
                self.link.applied();
                self.report_or_warn(&bundle.etag, version, "ok").await;
            }
            Err(e) => {
                warn!(etag = %bundle.etag, "bundle refused; still serving the last good one: {e}");
                metrics::counter!("switchyard_control_bundles_total", "result" => "refused")
                    .increment(1);
                // The state directory keeps describing what runs, for the next start.
                if let Some(previous) = previous {
                    let _ = write_atomically(&config_path, &previous);
                }
                if let Some(previous) = previous_bundle {
                    let _ = write_atomically(&bundle_path, &previous);
                }
                *lock(&self.etag) = previous_etag;
                *lock(&self.refused) = Some(bundle.etag.clone());
                self.link.refused(&bundle.etag, &e);
                let version = reloader.current().version;
                self.report_or_warn(&bundle.etag, version, &e).await;
            }
        }
    }

    /// The bundle, unless it is still the one with our etag (`None`, after up to `wait`).
    async fn fetch(&self, wait: Duration) -> Result<Option<Bundle>, CallError> {
        let client = self.client(true)?;
        let known = lock(&self.refused)
            .clone()
            .unwrap_or_else(|| lock(&self.etag).clone());
        let etag = format!("\"{known}\"");
        let path = format!("{}?wait={}", api::BUNDLE_PATH, wait.as_secs());
        let headers = [
            ("if-none-match", etag.as_str()),
            (api::INSTANCE_HEADER, self.instance.as_str()),
        ];
        let answer = client
            .call(
                Method::GET,
                &path,
                &headers,
                Bytes::new(),
                wait + Duration::from_secs(10),
            )
            .await?;
        let generation = answer
            .headers
            .get(api::GENERATION_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        self.link.answered(generation);
        match answer.status {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK => serde_json::from_slice(&answer.body)
                .map(Some)
                .map_err(|e| CallError::Refused(format!("not a bundle: {e}"))),
            status => Err(CallError::Refused(format!(
                "{status}: {}",
                String::from_utf8_lossy(&answer.body).trim()
            ))),
        }
    }

    /// Checks `bundle` and writes it, with its plugins, as the effective config.
    async fn write(&self, bundle: &Bundle) -> Result<(), String> {
        if sha256_hex(bundle.config.as_bytes()) != bundle.config_sha256 {
            return Err(format!(
                "bundle {}: its config does not match its sha256 (tampered or corrupted in transit)",
                bundle.etag
            ));
        }
        for plugin in &bundle.plugins {
            self.fetch_plugin(plugin).await?;
        }
        let mut config: toml::Table = bundle
            .config
            .parse()
            .map_err(|e| format!("bundle {}: not TOML: {e}", bundle.etag))?;
        for (key, value) in &self.settings.local {
            config.insert(key.clone(), value.clone());
        }
        let text = toml::to_string(&config).map_err(|e| e.to_string())?;
        let path = self.path(CONFIG_FILE);
        crate::config::load_str(&path, &text).map_err(|e| e.to_string())?;
        write_atomically(&path, text.as_bytes()).map_err(|e| e.to_string())?;
        let json = serde_json::to_vec(bundle).unwrap_or_default();
        write_atomically(&self.path(BUNDLE_FILE), &json).map_err(|e| e.to_string())?;
        *lock(&self.etag) = bundle.etag.clone();
        lock(&self.refused).take();
        Ok(())
    }

    /// Makes sure `plugins/<sha256>.wasm` holds exactly that binary.
    async fn fetch_plugin(&self, plugin: &api::PluginRef) -> Result<(), String> {
        let valid_sha =
            plugin.sha256.len() == 64 && plugin.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid_sha {
            return Err(format!(
                "plugin {:?}: {:?} is not a sha256",
                plugin.name, plugin.sha256
            ));
        }
        let path = self.path(&format!("plugins/{}.wasm", plugin.sha256));
        if std::fs::read(&path).is_ok_and(|b| sha256_hex(&b) == plugin.sha256) {
            return Ok(());
        }
        let client = self.client(true).map_err(|e| e.to_string())?;
        let answer = client
            .call(
                Method::GET,
                &format!("{}{}", api::PLUGINS_PATH, plugin.sha256),
                &[],
                Bytes::new(),
                Duration::from_secs(60),
            )
            .await
            .map_err(|e| e.to_string())?;
        if answer.status != StatusCode::OK {
            return Err(format!(
                "plugin {:?}: the control plane answered {}",
                plugin.name, answer.status
            ));
        }
        let got = sha256_hex(&answer.body);
        if got != plugin.sha256 {
            return Err(format!(
                "plugin {:?}: the binary received has sha256 {got}, the bundle says {} \
                 (tampered or corrupted in transit)",
                plugin.name, plugin.sha256
            ));
        }
        write_atomically(&path, &answer.body).map_err(|e| e.to_string())
    }

    /// [`Agent::report`], logging a failure: the next (re)connect reports again.
    async fn report_or_warn(&self, etag: &str, version: u64, result: &str) {
        if let Err(e) = self.report(etag, version, result).await {
            warn!(error = %e, "cannot report to the control plane");
        }
    }

    /// Sends a [`Report`]; an error says the control plane did not take it.
    async fn report(&self, etag: &str, version: u64, result: &str) -> Result<(), CallError> {
        let report = Report {
            instance: self.instance.clone(),
            etag: etag.to_owned(),
            version,
            result: result.to_owned(),
        };
        self.post_json(api::REPORT_PATH, "report", &report).await?;
        self.link.answered(None);
        Ok(())
    }

    /// POSTs `value` as JSON to `path` over the proxy's identity; `what` names it in errors.
    async fn post_json(
        &self,
        path: &str,
        what: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), CallError> {
        let client = self.client(true)?;
        let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
        let answer = client
            .call(
                Method::POST,
                path,
                &[("content-type", "application/json")],
                body,
                Duration::from_secs(5),
            )
            .await?;
        if !answer.status.is_success() {
            return Err(CallError::Refused(format!(
                "{what}: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            )));
        }
        Ok(())
    }

    fn client(&self, with_identity: bool) -> Result<ControlClient, CallError> {
        let identity = self.path(IDENTITY_FILE);
        let identity = (with_identity && identity.exists()).then_some(identity.as_path());
        Ok(ControlClient::new(
            &self.settings.url,
            &self.settings.ca,
            identity,
        )?)
    }
}

/// Writes through a temporary file and a rename, so a reader sees the old or the new whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Waits 250 ms, then twice as long each time, up to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(250))
    }
}

impl Backoff {
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
