//! Loading a plugin: read, check the sha256 pin, turn a core module into a component, compile
//! (or load from cache), link against the host, and run `init` once to check its config. Every
//! failure names the plugin and the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Linker;

use super::Plugin;
use super::bindings::FilterPre;
use super::engine::CompileCache;
use super::host::{HostState, PluginEnv};
use super::instance::{HookError, InstancePool, Pre};
use crate::config::PluginConfig;
use crate::hex::hex;

/// Why a plugin was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plugin runtime itself could not start (no plugin is to blame).
    #[error("cannot start the WebAssembly plugin runtime: {reason}")]
    Runtime { reason: String },
    #[error("plugin {plugin:?}: cannot read {}: {}", path.display(), crate::file_access::describe(source))]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {plugin:?}: {} has sha256 {actual}, but the config pins {expected}", path.display())]
    Sha256Mismatch {
        plugin: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("plugin {plugin:?}: {} is not a WebAssembly component or module", path.display())]
    NotWasm { plugin: String, path: PathBuf },
    #[error(
        "plugin {plugin:?}: {} is a core module without a usable component type (is it built with switchyard-sdk?): {reason}",
        path.display()
    )]
    Componentize {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {plugin:?}: {} is a proxy-wasm filter that cannot run here: {reason}", path.display())]
    ProxyWasm {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {plugin:?}: {} does not compile: {reason}", path.display())]
    Compile {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "plugin {plugin:?}: {} does not fit the switchyard:plugin@0.1.0 `filter` world: {reason}",
        path.display()
    )]
    Link {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {plugin:?}: {} failed to start: {reason}", path.display())]
    Init {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    /// The plugin's `init` refused its `[plugin.config]`; `path` is where in that table, as the
    /// SDK names it (`rules[0].weight`), when it said.
    #[error("plugin {plugin:?} refused its config: {message}")]
    ConfigRefused {
        plugin: String,
        path: Option<String>,
        message: String,
    },
    /// [`LoadError::ConfigRefused`], placed at its line in the config file.
    #[error("{error} (plugin {plugin:?} refused its config)")]
    ConfigRefusedAt {
        plugin: String,
        error: crate::config::ConfigError,
    },
}

/// The WebAssembly binary header: magic, then a version/layer word.
const MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
const COMPONENT: [u8; 4] = [0x0d, 0, 1, 0];

/// Everything one load needs.
pub struct Load<'a> {
    pub engine: &'a Engine,
    pub linker: &'a Linker<HostState>,
    /// The host functions for plugins run through the core entry.
    pub core_linker: &'a wasmtime::Linker<HostState>,
    pub filter_linker: &'a wasmtime::Linker<super::proxy_wasm::host_state::FilterState>,
    pub cache: &'a CompileCache,
    pub config: &'a PluginConfig,
    pub bytes: &'a [u8],
    pub sha256: String,
    pub fingerprint: String,
}

/// Reads the plugin's file.
pub fn read(config: &PluginConfig) -> Result<Vec<u8>, LoadError> {
    std::fs::read(&config.path).map_err(|source| LoadError::Read {
        plugin: config.name.clone(),
        path: config.path.clone(),
        source,
    })
}

/// The binary's sha256, if the config's `sha256` pin (when there is one) allows it.
pub fn check_pin(config: &PluginConfig, bytes: &[u8]) -> Result<String, LoadError> {
    let sha256 = hex(&Sha256::digest(bytes));
    match &config.sha256 {
        Some(expected) if *expected != sha256 => Err(LoadError::Sha256Mismatch {
            plugin: config.name.clone(),
            path: config.path.clone(),
            expected: expected.clone(),
            actual: sha256,
        }),
        _ => Ok(sha256),
    }
}

/// Compiles (or loads from cache) and links one plugin, and starts its first instance.
pub async fn load(
    load: Load<'_>,
    env: Arc<PluginEnv>,
    max_live: usize,
) -> Result<Plugin, LoadError> {
    if super::proxy_wasm::is_proxy_wasm(load.bytes) {
        return load_filter(load, env);
    }
    let Load {
        engine,
        linker,
        core_linker,
        filter_linker: _,
        cache,
        config,
        bytes,
        sha256,
        fingerprint,
    } = load;
    let plugin = config.name.clone();
    let path = config.path.clone();
    let component_bytes = as_component(bytes, &plugin, &path)?;
    let core = super::core_abi::enabled()
        .then(|| core_entry(engine, core_linker, cache, &component_bytes, &plugin))
        .flatten();
    let config_json = serde_json::to_string(&config.config).unwrap_or_else(|_| "{}".into());
    let new_pool = |pre| InstancePool::new(pre, Arc::clone(&env), config_json.clone(), max_live);
    let start = async |pool: &InstancePool| {
        pool.instantiate().await.map_err(|e| match e {
            HookError::ConfigRefused(message) => config_refused(plugin.clone(), &message),
            e => LoadError::Init {
                plugin: plugin.clone(),
                path: path.clone(),
                reason: e.to_string(),
            },
        })
    };
    let mut started = None;
    if let Some(core) = core {
        let calls_out = core.imports_http_call;
        let pool = new_pool(Pre::Core(core));
        match start(&pool).await {
            // A plugin that imports `http.call` keeps the core entry only if it said in `init`
            // that it never calls out; others (and one whose `init` failed, perhaps for a
            // callout the core entry refused) start again as components.
            Ok((first, _)) if calls_out && !first.never_calls_out() => tracing::debug!(
                plugin,
                "runs as a component: it imports http.call and may call out"
            ),
            Err(e) if !calls_out => return Err(e),
            Err(_) => {}
            Ok(first) => started = Some((pool, first)),
        }
    }
    let (pool, (first, interest)) = match started {
        Some(started) => started,
        None => {
            let pre = component_entry(engine, linker, cache, &component_bytes, &plugin, &path)?;
            let pool = new_pool(pre);
            let first = start(&pool).await?;
            (pool, first)
        }
    };
    let asked = first.asked();
    pool.checkin_fresh(first);
    Ok(Plugin::new(
        config,
        sha256,
        fingerprint,
        super::Runner::Instances(pool),
        interest,
        asked,
    ))
}

/// The plugin's core module ready to run through the core entry, when the component is the
/// shape the SDK builds and the module links against the core host functions; `None` (logged at
/// debug) otherwise, and the plugin runs as a component.
fn core_entry(
    engine: &Engine,
    core_linker: &wasmtime::Linker<HostState>,
    cache: &CompileCache,
    component: &[u8],
    plugin: &str,
) -> Option<super::core_abi::CorePre> {
    let Some(module) = super::core_abi::main_module(component) else {
        tracing::debug!(
            plugin,
            "runs as a component: not the plain shape the SDK builds"
        );
        return None;
    };
    let prepared = cache
        .core_module_of(engine, component, module)
        .map_err(|e| format!("{e:#}"))
        .and_then(|compiled| super::core_abi::prepare(&compiled, module, core_linker));
    match prepared {
        Ok(entry) => Some(entry),
        Err(reason) => {
            tracing::debug!(plugin, %reason, "runs as a component: its core module cannot use the core entry");
            None
        }
    }
}

/// The compiled component linked against the host.
fn component_entry(
    engine: &Engine,
    linker: &Linker<HostState>,
    cache: &CompileCache,
    component_bytes: &[u8],
    plugin: &str,
    path: &Path,
) -> Result<Pre, LoadError> {
    let component = cache
        .component(engine, component_bytes)
        .map_err(|e| LoadError::Compile {
            plugin: plugin.to_owned(),
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        })?;
    let link_error = |e: wasmtime::Error| LoadError::Link {
        plugin: plugin.to_owned(),
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    };
    let pre = linker.instantiate_pre(&component).map_err(link_error)?;
    let pre = FilterPre::new(pre).map_err(link_error)?;
    // A plugin that never calls out imports no async host function; its hooks then run as plain
    // calls instead of on a fiber.
    let synchronous = !component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("switchyard:plugin/http"));
    Ok(Pre::Component { pre, synchronous })
}

/// Loads a proxy-wasm filter: its `[plugin.config]` is its plugin configuration, as JSON.
fn load_filter(load: Load<'_>, env: Arc<PluginEnv>) -> Result<Plugin, LoadError> {
    use super::proxy_wasm::{FilterLoadError, ProxyWasmFilter};
    let config = load.config;
    let configuration = serde_json::to_vec(&config.config).unwrap_or_else(|_| b"{}".to_vec());
    let module = load
        .cache
        .module(load.engine, load.bytes)
        .map_err(|e| LoadError::ProxyWasm {
            plugin: config.name.clone(),
            path: config.path.clone(),
            reason: FilterLoadError::Compile(format!("{e:#}")).to_string(),
        })?;
    let filter = ProxyWasmFilter::load(load.filter_linker, &module, env, configuration).map_err(
        |e| match e {
            FilterLoadError::Start(HookError::ConfigRefused(message)) => {
                config_refused(config.name.clone(), &message)
            }
            e => LoadError::ProxyWasm {
                plugin: config.name.clone(),
                path: config.path.clone(),
                reason: e.to_string(),
            },
        },
    )?;
    // Whole-body and per-attempt hooks have no proxy-wasm counterpart: bodies stream through
    // the filter piece by piece instead.
    let asked = super::Asked {
        tick_every: filter.tick_every,
        streams: super::Streams {
            request: true,
            response: true,
        },
        attempts: None,
    };
    Ok(Plugin::new(
        config,
        load.sha256,
        load.fingerprint,
        super::Runner::ProxyWasm(filter),
        super::BodyInterest::empty(),
        asked,
    ))
}

/// The bytes as a component: as they are, or componentized from a core module that carries
/// wit-bindgen's component type section (what `cargo build --target wasm32-unknown-unknown`
/// makes from a plugin crate).
fn as_component(bytes: &[u8], plugin: &str, path: &Path) -> Result<Vec<u8>, LoadError> {
    let layer = bytes.get(4..8);
    if bytes.get(0..4) != Some(MAGIC.as_slice()) {
        return Err(LoadError::NotWasm {
            plugin: plugin.to_owned(),
            path: path.to_path_buf(),
        });
    }
    if layer == Some(COMPONENT.as_slice()) {
        return Ok(bytes.to_vec());
    }
    if layer != Some(CORE_MODULE.as_slice()) {
        return Err(LoadError::NotWasm {
            plugin: plugin.to_owned(),
            path: path.to_path_buf(),
        });
    }
    componentize(bytes).map_err(|e| LoadError::Componentize {
        plugin: plugin.to_owned(),
        path: path.to_path_buf(),
        reason: e,
    })
}

/// Turns a core module with an embedded component type into a component.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .and_then(|mut encoder| encoder.encode())
        .map_err(|e| format!("{e:#}"))
}

/// A refusal from `init`; the SDK says where in the config with "invalid config at `PATH`: ".
fn config_refused(plugin: String, message: &str) -> LoadError {
    let located = message
        .strip_prefix("invalid config at `")
        .and_then(|rest| rest.split_once("`: "));
    match located {
        Some((path, message)) => LoadError::ConfigRefused {
            plugin,
            path: Some(path.to_owned()),
            message: message.to_owned(),
        },
        None => LoadError::ConfigRefused {
            plugin,
            path: None,
            message: message.to_owned(),
        },
    }
}
