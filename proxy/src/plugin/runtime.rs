//! What outlives one config: the engine, the host functions linked into plugins, the compiled-code
//! cache, and each plugin's shared state; loading a config's plugins with them.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use super::bindings::Filter;
use super::engine::{self, CompileCache};
use super::host::{HostState, PluginEnv};
use super::shared::SharedState;
use super::{
    LoadError, Plugin, Plugins, batch, core_abi, epoch, loader, metric_imports, proxy_wasm,
};
use crate::config::{Config, PluginConfig};

/// What outlives one config: the engine, the host functions, the compiled-code cache, and each
/// plugin's shared state (so a reload does not empty rate-limit buckets or caches).
pub struct PluginRuntime {
    /// Made when the first plugin is loaded, so a proxy without plugins never starts the Wasm
    /// machinery (its code pages, its instance pool, its epoch thread).
    wasm: std::sync::OnceLock<Wasm>,
    cache: CompileCache,
    shared: std::sync::Mutex<HashMap<String, Arc<SharedState>>>,
}

/// The engine plugins run on and the host functions linked into them.
struct Wasm {
    engine: Engine,
    linker: Linker<HostState>,
    /// The host functions for plugins run through the core entry.
    core_linker: wasmtime::Linker<HostState>,
    /// The proxy-wasm ABI's host functions, for filters.
    filter_linker: wasmtime::Linker<proxy_wasm::host_state::FilterState>,
}

impl PluginRuntime {
    pub fn new(config: &Config) -> Result<Self, LoadError> {
        Ok(Self {
            wasm: std::sync::OnceLock::new(),
            cache: CompileCache::new(&config.runtime.plugin_cache),
            shared: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The engine and linker, made on first use.
    fn wasm(&self) -> Result<&Wasm, LoadError> {
        if let Some(wasm) = self.wasm.get() {
            return Ok(wasm);
        }
        let engine = runtime_engine().map_err(|e| LoadError::Runtime {
            reason: format!("the engine: {e:#}"),
        })?;
        let mut linker = Linker::new(&engine);
        Filter::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .and_then(|()| metric_imports::define(&mut linker))
            .and_then(|()| batch::define(&mut linker))
            .map_err(|e| LoadError::Runtime {
                reason: format!("linking the host functions: {e:#}"),
            })?;
        let core_linker = core_abi::linker(&engine).map_err(|e| LoadError::Runtime {
            reason: format!("linking the core host functions: {e:#}"),
        })?;
        let filter_linker = proxy_wasm::linker(&engine).map_err(|e| LoadError::Runtime {
            reason: format!("linking the proxy-wasm host functions: {e:#}"),
        })?;
        Ok(self.wasm.get_or_init(|| Wasm {
            engine,
            linker,
            core_linker,
            filter_linker,
        }))
    }

    /// Loads every `[[plugin]]` of `config`. A plugin whose binary, config, limits and failure
    /// policy are unchanged from `previous` is kept as it is (warm instances, counters);
    /// `overrides` replaces a plugin's binary (a runtime swap). The first failure refuses the
    /// whole set, so nothing is half-applied.
    pub async fn load(
        &self,
        config: &Config,
        previous: &Plugins,
        overrides: &HashMap<String, Vec<u8>>,
    ) -> Result<Plugins, LoadError> {
        if !config.plugins.is_empty() {
            epoch::start(&self.wasm()?.engine);
        }
        let mut by_name = HashMap::new();
        for (index, p) in config.plugins.iter().enumerate() {
            let swapped = overrides.get(&p.name);
            let bytes = match swapped {
                Some(bytes) => bytes.clone(),
                None => loader::read(p)?,
            };
            let sha256 = loader::check_pin(p, &bytes)?;
            let fingerprint = fingerprint(p, &sha256);
            if let Some(kept) = previous
                .get(&p.name)
                .filter(|old| old.fingerprint == fingerprint)
            {
                by_name.insert(p.name.clone(), Arc::clone(kept));
                continue;
            }
            let max_live = engine::instances_per_plugin(config.plugins.len());
            let plugin = self
                .load_one(p, &bytes, sha256, fingerprint, max_live)
                .await
                .map_err(|e| at_its_line(e, &config.source, index))?;
            if swapped.is_some() {
                tracing::info!(plugin = %p.name, sha256 = %plugin.sha256, "plugin loaded from a binary swapped in over the admin API");
            } else {
                tracing::info!(plugin = %p.name, path = %p.path.display(), sha256 = %plugin.sha256, "plugin loaded");
            }
            by_name.insert(p.name.clone(), Arc::new(plugin));
        }
        Ok(Plugins { by_name })
    }

    /// Checks that `bytes` would load as plugin `config` (pin, compile, link, `init` with its
    /// config) without keeping it: a bad swap is refused before anything changes. Returns the
    /// binary's sha256.
    pub async fn check(&self, config: &PluginConfig, bytes: &[u8]) -> Result<String, LoadError> {
        let sha256 = loader::check_pin(config, bytes)?;
        let fingerprint = fingerprint(config, &sha256);
        self.load_one(config, bytes, sha256.clone(), fingerprint, 1)
            .await?;
        Ok(sha256)
    }

    async fn load_one(
        &self,
        config: &PluginConfig,
        bytes: &[u8],
        sha256: String,
        fingerprint: String,
        max_live: usize,
    ) -> Result<Plugin, LoadError> {
        let shared = Arc::clone(
            self.shared
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry(config.name.clone())
                .or_default(),
        );
        let env = Arc::new(PluginEnv {
            name: config.name.as_str().into(),
            // Each plugin has its own namespace: two ratelimit plugins keyed by the same header
            // must not drain each other's buckets.
            shared,
            time_limit: config.time_limit,
            memory_limit: config.memory_limit,
        });
        let wasm = self.wasm()?;
        let load = loader::Load {
            engine: &wasm.engine,
            linker: &wasm.linker,
            core_linker: &wasm.core_linker,
            filter_linker: &wasm.filter_linker,
            cache: &self.cache,
            config,
            bytes,
            sha256,
            fingerprint,
        };
        loader::load(load, env, max_live).await
    }
}

/// Places a refused `[plugin.config]` at its line in the config file: the SDK names the path
/// inside the table, and `[[plugin]]` number `index` of `file` holds it.
fn at_its_line(error: LoadError, file: &std::path::Path, index: usize) -> LoadError {
    let LoadError::ConfigRefused {
        plugin,
        path,
        message,
    } = error
    else {
        return error;
    };
    use crate::config::locate::{Step, error_at, steps};
    let inner = path.as_deref().map(steps).unwrap_or_default();
    let mut at = vec![
        Step::Key("plugin".into()),
        Step::Index(index),
        Step::Key("config".into()),
    ];
    at.extend(inner);
    let key = match path.as_deref().filter(|p| *p != ".") {
        Some(path) => format!("plugin[{index}].config.{path}"),
        None => format!("plugin[{index}].config"),
    };
    LoadError::ConfigRefusedAt {
        plugin,
        error: error_at(file, &at, key, message),
    }
}

/// What decides whether a loaded plugin can be kept across a reload.
fn fingerprint(config: &PluginConfig, sha256: &str) -> String {
    format!(
        "{sha256} {:?} {:?} {} {}",
        config.on_error,
        config.time_limit,
        config.memory_limit,
        serde_json::to_string(&config.config).unwrap_or_default()
    )
}

/// One engine per process: compiled code and the epoch ticker are shared by every plugin.
fn runtime_engine() -> wasmtime::Result<Engine> {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let engine = engine::new_engine()?;
    Ok(ENGINE.get_or_init(|| engine).clone())
}
