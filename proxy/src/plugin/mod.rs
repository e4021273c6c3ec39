//! The plugin runtime: Wasm components, written with `switchyard-sdk`, that make the per-request
//! decisions. `engine` holds the sandbox limits, `bindings` the only `bindgen!`, `host` what
//! plugins can call, `instance` the per-plugin instance pools, `loader` how a .wasm becomes a
//! plugin, `chain` how a listener runs its plugins.

mod bindings;
mod callout;
mod chain;
mod engine;
mod host;
mod instance;
mod loader;
mod shared;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use bindings::{AttemptOutcome, LocalResponse, UpstreamError};
pub use chain::{Chain, Step};
pub use host::RequestState;
pub use instance::HookError;
pub use loader::{LoadError, componentize};

use bindings::{BodyInterest, Decision, Filter};
use engine::CompileCache;
use host::{HostState, PluginEnv};
use instance::{HookCall, InstancePool};
use shared::SharedState;

use crate::config::{Config, OnError, PluginConfig};
use crate::upstream::Clusters;

/// The hooks, for metrics and for remembering which ones a plugin does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Request,
    RequestBody,
    UpstreamResponse,
    Response,
    ResponseBody,
    Log,
}

impl Hook {
    const ALL: [Hook; 6] = [
        Hook::Request,
        Hook::RequestBody,
        Hook::UpstreamResponse,
        Hook::Response,
        Hook::ResponseBody,
        Hook::Log,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn name(self) -> &'static str {
        match self {
            Hook::Request => "on_request",
            Hook::RequestBody => "on_request_body",
            Hook::UpstreamResponse => "on_upstream_response",
            Hook::Response => "on_response",
            Hook::ResponseBody => "on_response_body",
            Hook::Log => "on_log",
        }
    }
}

/// A loaded plugin: its identity, failure policy, instance pool and what it has told us.
pub struct Plugin {
    pub name: Arc<str>,
    pub sha256: String,
    pub on_error: OnError,
    pool: InstancePool,
    /// Hooks the plugin does not implement (learned from its first answer) or did not ask for.
    skipped: AtomicU8,
    metrics: PluginMetrics,
}

struct PluginMetrics {
    calls: Vec<metrics::Counter>,
    durations: Vec<metrics::Histogram>,
    errors: HashMap<&'static str, metrics::Counter>,
}

impl Plugin {
    fn new(
        config: &PluginConfig,
        sha256: String,
        pool: InstancePool,
        interest: BodyInterest,
    ) -> Self {
        let name: Arc<str> = config.name.as_str().into();
        let mut skipped = 0;
        if !interest.contains(BodyInterest::REQUEST_BODY) {
            skipped |= Hook::RequestBody.bit();
        }
        if !interest.contains(BodyInterest::RESPONSE_BODY) {
            skipped |= Hook::ResponseBody.bit();
        }
        let label = name.to_string();
        let metrics = PluginMetrics {
            calls: Hook::ALL
                .iter()
                .map(|h| metrics::counter!("switchyard_plugin_hook_calls_total", "plugin" => label.clone(), "hook" => h.name()))
                .collect(),
            durations: Hook::ALL
                .iter()
                .map(|h| metrics::histogram!("switchyard_plugin_hook_duration_seconds", "plugin" => label.clone(), "hook" => h.name()))
                .collect(),
            errors: ["trap", "timeout", "out_of_memory", "instantiate"]
                .into_iter()
                .map(|k| (k, metrics::counter!("switchyard_plugin_hook_errors_total", "plugin" => label.clone(), "kind" => k)))
                .collect(),
        };
        Self {
            name,
            sha256,
            on_error: config.on_error,
            pool,
            skipped: AtomicU8::new(skipped),
            metrics,
        }
    }

    /// Whether calling `hook` can do anything.
    pub fn wants(&self, hook: Hook) -> bool {
        self.skipped.load(Ordering::Relaxed) & hook.bit() == 0
    }

    fn mark_unimplemented(&self, hook: Hook) {
        self.skipped.fetch_or(hook.bit(), Ordering::Relaxed);
    }

    async fn call(
        &self,
        state: Box<RequestState>,
        hook: Hook,
        call: HookCall,
    ) -> (Box<RequestState>, Result<Decision, HookError>) {
        let started = Instant::now();
        let (state, result) = self.pool.call(state, call).await;
        let i = hook as usize;
        self.metrics.calls[i].increment(1);
        self.metrics.durations[i].record(started.elapsed().as_secs_f64());
        if let Err(e) = &result
            && let Some(counter) = self.metrics.errors.get(e.kind())
        {
            counter.increment(1);
        }
        (state, result)
    }
}

/// Every plugin of a config, loaded and ready, by name.
#[derive(Default)]
pub struct Plugins {
    by_name: HashMap<String, Arc<Plugin>>,
}

impl Plugins {
    /// Loads every `[[plugin]]`; the first failure refuses the whole set.
    pub async fn load(config: &Config, clusters: Arc<Clusters>) -> Result<Self, LoadError> {
        if config.plugins.is_empty() {
            return Ok(Self::default());
        }
        let engine = runtime_engine().map_err(|e| LoadError::Compile {
            plugin: String::new(),
            path: Default::default(),
            reason: format!("cannot start the WebAssembly engine: {e:#}"),
        })?;
        let mut linker = Linker::new(&engine);
        Filter::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| LoadError::Compile {
                plugin: String::new(),
                path: Default::default(),
                reason: format!("cannot link the host functions: {e:#}"),
            })?;
        let cache = CompileCache::new(&config.runtime.plugin_cache);
        let mut by_name = HashMap::new();
        for p in &config.plugins {
            let env = Arc::new(PluginEnv {
                name: p.name.as_str().into(),
                // Each plugin has its own namespace: two ratelimit plugins keyed by the same
                // header must not drain each other's buckets.
                shared: Arc::new(SharedState::default()),
                clusters: Arc::clone(&clusters),
                time_limit: p.time_limit,
                memory_limit: p.memory_limit,
            });
            let max_live = engine::instances_per_plugin(config.plugins.len());
            let plugin = loader::load(&engine, &linker, &cache, p, env, max_live).await?;
            tracing::info!(plugin = %p.name, path = %p.path.display(), sha256 = %plugin.sha256, "plugin loaded");
            by_name.insert(p.name.clone(), Arc::new(plugin));
        }
        Ok(Self { by_name })
    }

    /// The chain of plugins named (in order) by a listener.
    pub fn chain(&self, names: &[String]) -> Chain {
        Chain::new(
            names
                .iter()
                .filter_map(|n| self.by_name.get(n).cloned())
                .collect(),
        )
    }
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
