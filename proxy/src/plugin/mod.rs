//! The plugin runtime: Wasm components, written with `switchyard-sdk`, that make the per-request
//! decisions. `engine` holds the sandbox limits, `bindings` the only `bindgen!`, `host` what
//! plugins can call, `instance` the per-plugin instance pools, `loader` how a .wasm becomes a
//! plugin, `chain` how a listener runs its plugins.

mod batch;
mod bindings;
mod callout;
mod chain;
mod chunks;
mod component_hooks;
mod context;
mod core_abi;
mod engine;
mod epoch;
mod failures;
mod heads;
mod host;
mod init_asks;
mod instance;
mod loader;
mod metric_imports;
pub mod proxy_wasm;
mod remembered;
mod request_state;
mod runtime;
mod service_imports;
mod shared;
mod stats;
mod text;
mod ticker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

pub use bindings::{AttemptOutcome, LocalResponse, UpstreamError};
pub use chain::{Chain, Decided, Step};
pub use chunks::ChunkStream;
pub use instance::HookError;
pub use loader::{LoadError, componentize};
pub use request_state::{ListenerScope, RequestState};
pub use runtime::PluginRuntime;

use bindings::{BodyInterest, Decision};
pub use failures::LastFailure;
pub use instance::BodyOf;
use instance::{HookCall, InstancePool};
pub use stats::PluginStats;

use crate::config::{Config, OnError, PluginConfig};

/// The hooks, for metrics and for remembering which ones a plugin does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Request,
    RequestBody,
    UpstreamResponse,
    Response,
    ResponseBody,
    Log,
    /// Not a request hook: the plugin's scheduled `on-tick`.
    Tick,
    /// A piece of the response body, for plugins that stream it.
    ResponseChunk,
    /// A piece of the request body, for plugins that stream it.
    RequestChunk,
}

impl Hook {
    const ALL: [Hook; 9] = [
        Hook::Request,
        Hook::RequestBody,
        Hook::UpstreamResponse,
        Hook::Response,
        Hook::ResponseBody,
        Hook::Log,
        Hook::Tick,
        Hook::ResponseChunk,
        Hook::RequestChunk,
    ];

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// The bits of `hooks`, for [`Plugin::wants_any`].
    pub const fn bits(hooks: &[Hook]) -> u16 {
        let mut bits = 0;
        let mut i = 0;
        while i < hooks.len() {
            bits |= hooks[i].bit();
            i += 1;
        }
        bits
    }

    pub fn name(self) -> &'static str {
        match self {
            Hook::Request => "on_request",
            Hook::RequestBody => "on_request_body",
            Hook::UpstreamResponse => "on_upstream_response",
            Hook::Response => "on_response",
            Hook::ResponseBody => "on_response_body",
            Hook::Log => "on_log",
            Hook::Tick => "on_tick",
            Hook::ResponseChunk => "on_response_chunk",
            Hook::RequestChunk => "on_request_chunk",
        }
    }
}

/// A hook call's outcome: the request state (always back) and the decision.
type HookResult = (Box<RequestState>, Result<Decision, HookError>);

/// What runs a plugin's hooks: a pool of instances of a Switchyard plugin (its core module
/// through the core entry, or the component), or a proxy-wasm filter's instances.
pub(crate) enum Runner {
    Instances(InstancePool),
    ProxyWasm(proxy_wasm::ProxyWasmFilter),
}

/// A loaded plugin: its identity, failure policy, instance pool and what it has told us.
pub struct Plugin {
    pub name: Arc<str>,
    pub sha256: String,
    pub on_error: OnError,
    /// The file the binary came from (or was swapped in for).
    pub path: std::path::PathBuf,
    pub loaded_at: std::time::SystemTime,
    /// Calls, failures and hook time, for the admin API.
    pub stats: stats::PluginStats,
    /// Failed hooks: logged at most once a second, the last kept for the admin API.
    pub failures: failures::Failures,
    fingerprint: String,
    runner: Runner,
    /// Hooks the plugin does not implement (learned from its first answer) or did not ask for.
    skipped: AtomicU16,
    metrics: PluginMetrics,
    /// The ticks the plugin asked for in `init`, if any.
    ticker: Option<ticker::Ticker>,
    /// Whether the plugin asked in `init` for response bodies chunk by chunk.
    pub streams_response: bool,
    /// Whether the plugin asked in `init` for request bodies chunk by chunk.
    pub streams_request: bool,
    /// Which attempts its `on-upstream-response` sees (`None`: every one).
    attempt_filter: Option<AttemptFilter>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
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
        fingerprint: String,
        runner: Runner,
        interest: BodyInterest,
        asked: Asked,
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
            path: config.path.clone(),
            loaded_at: std::time::SystemTime::now(),
            stats: stats::PluginStats::default(),
            failures: failures::Failures::default(),
            fingerprint,
            runner,
            skipped: AtomicU16::new(skipped),
            metrics,
            ticker: asked.tick_every.map(ticker::Ticker::new),
            streams_response: asked.streams.response,
            streams_request: asked.streams.request,
            attempt_filter: asked.attempts,
        }
    }

    /// How the plugin's hooks are entered, for the admin API: `core` (its core module, through
    /// the core entry), `component`, or `proxy-wasm`.
    pub fn entry(&self) -> &'static str {
        match &self.runner {
            Runner::Instances(pool) => pool.entry(),
            Runner::ProxyWasm(_) => "proxy-wasm",
        }
    }

    /// Whether calling `hook` can do anything.
    pub fn wants(&self, hook: Hook) -> bool {
        self.wants_any(hook.bit())
    }

    /// Whether calling any of the hooks in `bits` ([`Hook::bits`]) can do anything: one load
    /// where asking [`Plugin::wants`] of each is one each.
    pub fn wants_any(&self, bits: u16) -> bool {
        self.skipped.load(Ordering::Relaxed) & bits != bits
    }

    /// Whether `on-upstream-response` is to see this attempt; `grpc_failed`: the attempt's
    /// response head carries a `grpc-status` other than 0.
    fn sees_attempt(&self, outcome: AttemptOutcome, grpc_failed: bool) -> bool {
        if !self.wants(Hook::UpstreamResponse) {
            return false;
        }
        match (self.attempt_filter, outcome) {
            (None, _) | (Some(_), AttemptOutcome::Error(_)) => true,
            (Some(filter), AttemptOutcome::Response(status)) => {
                status >= filter.min_status || (filter.grpc_statuses && grpc_failed)
            }
        }
    }

    /// Whether seeing an attempt may depend on its gRPC status.
    fn reads_grpc_status(&self) -> bool {
        self.attempt_filter.is_some_and(|f| f.grpc_statuses)
    }

    fn mark_unimplemented(&self, hook: Hook) {
        self.skipped.fetch_or(hook.bit(), Ordering::Relaxed);
    }

    async fn call(&self, state: Box<RequestState>, hook: Hook, call: HookCall) -> HookResult {
        let (state, result, took) = match &self.runner {
            Runner::Instances(pool) => pool.call(state, call).await,
            // Boxed: a proxy-wasm filter's future (0.7 KB) would otherwise be part of every
            // future above this one on every request, with or without filters.
            Runner::ProxyWasm(filter) => {
                let (state, result) = Box::pin(filter.call(state, call)).await;
                (state, result, None)
            }
        };
        self.count(hook, took, result.as_ref().err());
        (state, result)
    }

    /// [`Plugin::call`] when it needs no waiting (see [`InstancePool::call_now`]); else the state
    /// and the call back.
    fn call_now(
        &self,
        state: Box<RequestState>,
        hook: Hook,
        call: HookCall,
    ) -> Result<HookResult, (Box<RequestState>, HookCall)> {
        let Runner::Instances(pool) = &self.runner else {
            return Err((state, call));
        };
        let (state, result, took) = pool.call_now(state, call)?;
        self.count(hook, took, result.as_ref().err());
        Ok((state, result))
    }

    /// Counts a call of `hook` in the metrics and the admin API's stats: its time when it was
    /// timed, and its error's kind when it failed.
    fn count(&self, hook: Hook, took: Option<std::time::Duration>, error: Option<&HookError>) {
        let i = hook as usize;
        self.metrics.calls[i].increment(1);
        if let Some(took) = took {
            self.metrics.durations[i].record(took.as_secs_f64());
        }
        self.stats.record(took, error.is_some());
        if let Some(counter) = error.and_then(|e| self.metrics.errors.get(e.kind())) {
            counter.increment(1);
        }
    }

    /// Runs `on-request-chunk` or `on-response-chunk` with `state` in scope: the replacement
    /// bytes, if any.
    async fn chunk(
        &self,
        state: Box<RequestState>,
        body: BodyOf,
        chunk: Vec<u8>,
        end: bool,
    ) -> (Box<RequestState>, Result<Option<Vec<u8>>, HookError>) {
        let (state, result) = match &self.runner {
            Runner::Instances(pool) => pool.chunk(state, body, chunk, end).await,
            Runner::ProxyWasm(filter) => Box::pin(filter.chunk(state, body, chunk, end)).await,
        };
        let hook = match body {
            BodyOf::Request => Hook::RequestChunk,
            BodyOf::Response => Hook::ResponseChunk,
        };
        self.count(hook, None, result.as_ref().err());
        if let Err(error) = &result {
            let request_id = state.request_id.to_str().ok();
            self.failures.record(&self.name, hook, error, request_id);
        }
        (state, result)
    }
}

impl Plugin {
    /// A body's trailers through the plugin: proxy-wasm filters get them
    /// (`proxy_on_*_trailers`); Switchyard plugins leave them as they are. On failure the
    /// trailers come back unchanged beside the error.
    async fn trailers(
        &self,
        state: Box<RequestState>,
        body: BodyOf,
        trailers: http::HeaderMap,
    ) -> (Box<RequestState>, proxy_wasm::TrailersResult) {
        let Runner::ProxyWasm(filter) = &self.runner else {
            return (state, Ok(trailers));
        };
        let (state, result) = filter.trailers(state, body, trailers).await;
        if let Err((error, _)) = &result {
            let hook = match body {
                BodyOf::Request => Hook::RequestChunk,
                BodyOf::Response => Hook::ResponseChunk,
            };
            self.count(hook, None, Some(error));
            let request_id = state.request_id.to_str().ok();
            self.failures.record(&self.name, hook, error, request_id);
        }
        (state, result)
    }
}

/// Which bodies a plugin asked in `init` to get chunk by chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub request: bool,
    pub response: bool,
}

/// The attempts a plugin's `on-upstream-response` sees, when it asked in `init` for failures
/// only (`attempts.upstream-failures-only`): those without a response, responses of
/// `min_status` and above and, with `grpc_statuses`, gRPC responses with a failed `grpc-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFilter {
    pub min_status: u16,
    pub grpc_statuses: bool,
}

/// What a plugin asked for in `init`, besides the whole bodies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    pub tick_every: Option<std::time::Duration>,
    pub streams: Streams,
    pub attempts: Option<AttemptFilter>,
}

/// Every plugin of a config, loaded and ready, by name.
#[derive(Default)]
pub struct Plugins {
    by_name: HashMap<String, Arc<Plugin>>,
}

impl Plugins {
    /// Loads every `[[plugin]]` of `config` once (benches and one-shot tools); a proxy that
    /// reloads keeps a [`PluginRuntime`] instead.
    pub async fn load(config: &Config) -> Result<Self, LoadError> {
        let runtime = PluginRuntime::new(config)?;
        runtime
            .load(config, &Plugins::default(), &HashMap::new())
            .await
    }

    /// The chain of plugins named (in order) by a listener.
    pub fn chain(&self, names: &[String]) -> Chain {
        Chain::new(self.named(names))
    }

    /// A listener's chain with its `[[listener.route]]` plans.
    pub fn listener_chain(&self, names: &[String], routes: &[crate::config::RouteConfig]) -> Chain {
        let plans = routes
            .iter()
            .map(|r| {
                let plan = chain::RoutePlan {
                    skip: r.skip.clone(),
                    add: self.named(&r.add),
                };
                (r.name.clone(), plan)
            })
            .collect();
        Chain::with_routes(self.named(names), plans)
    }

    /// The plugins called `names`, in that order. Validation made sure they all exist and
    /// every configured plugin is loaded, so a missing one is a bug, reported rather than
    /// silently left out of a chain.
    fn named(&self, names: &[String]) -> Vec<Arc<Plugin>> {
        names
            .iter()
            .filter_map(|n| {
                let plugin = self.by_name.get(n).cloned();
                if plugin.is_none() {
                    tracing::error!(plugin = %n, "a chain names a plugin that is not loaded; it is left out");
                }
                plugin
            })
            .collect()
    }

    /// Starts the ticks of every plugin that asked for them (those already ticking go on),
    /// their callouts reaching `clusters` from now on.
    pub fn start_ticking(&self, clusters: &Arc<crate::upstream::Clusters>) {
        for plugin in self.by_name.values() {
            plugin.start_ticking(clusters);
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.by_name.get(name)
    }

    /// Every plugin, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        let mut all: Vec<&Arc<Plugin>> = self.by_name.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.into_iter()
    }
}
