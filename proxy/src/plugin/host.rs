//! The per-instance state behind what plugins can call — the request the current hook runs
//! for, the CPU deadline, the memory limiter, cached metric handles and header names. The
//! imports themselves are in `heads` (the request and response heads) and `service_imports`
//! (everything else a plugin asks of the proxy).

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use rustc_hash::FxBuildHasher;
use wasmtime::{ResourceLimiter, Store, StoreContextMut, UpdateDeadline};

use super::remembered::Remembered;
use super::request_state::RequestState;
use super::shared::SharedState;
use crate::upstream::Clusters;

/// What every instance of one plugin shares.
#[derive(Debug)]
pub struct PluginEnv {
    pub name: Arc<str>,
    pub shared: Arc<SharedState>,
    pub time_limit: Duration,
    pub memory_limit: usize,
}

/// The data of one instance's store.
pub struct HostState {
    pub(super) env: Arc<PluginEnv>,
    /// The request of the hook running now; `None` between calls. Boxed so lending it to an
    /// instance moves a pointer, not half a kilobyte.
    pub request: Option<Box<RequestState>>,
    /// Set when the hook used up its CPU time.
    pub timed_out: bool,
    /// Set when the instance asked for more memory than its limit.
    pub out_of_memory: bool,
    /// Largest linear memory this instance grew to, for recycling.
    pub memory_high_water: usize,
    /// A CPU limit that replaces the plugin's while set (init gets longer than a hook).
    pub time_limit_override: Option<Duration>,
    /// CPU time the hook is known to have used before the current stretch of running (a hook
    /// runs in stretches between async host calls, possibly on different threads).
    cpu_before: Duration,
    /// The thread's CPU clock at the stretch's first deadline check; read lazily, so a hook that
    /// finishes within one epoch tick (nearly all) never pays for the clock.
    stretch_cpu_base: Option<Duration>,
    /// Handles of the plugin's own metrics, so a hot metric update is one hash lookup rather than
    /// building a name and labels and looking them up in the registry.
    metric_handles: hashbrown::HashMap<MetricKey, MetricHandle, FxBuildHasher>,
    /// The same handles by the bytes a batch names a metric with (its kind, name and labels as
    /// the SDK encodes them): a hot update from a batch hashes those bytes once, unchecked.
    metric_identities: hashbrown::HashMap<Box<[u8]>, MetricHandle, FxBuildHasher>,
    /// The metrics the plugin numbered (a metric the SDK made once), by number.
    numbered_metrics: Vec<MetricHandle>,
    /// The route names this instance set lately, shared by the requests that name them.
    pub(super) route_names: super::context::RouteNames,
    /// Values of the client's response headers this instance added
    /// ([`HostState::client_header_value`]).
    client_header_values: Remembered<HeaderValue>,
    /// The message of a panic the SDK reported just before its trap, for the failure's log line.
    pub panic: Option<String>,
    /// Set while `init` runs: the only time a plugin may ask for ticks.
    pub in_init: bool,
    /// The tick interval the plugin asked for in `init`.
    pub tick_every: Option<Duration>,
    /// Whether the plugin asked in `init` for response bodies chunk by chunk.
    pub streams_response: bool,
    /// Whether the plugin asked in `init` for request bodies chunk by chunk.
    pub streams_request: bool,
    /// Which attempts the plugin asked in `init` to see in `on-upstream-response`.
    pub attempt_filter: Option<super::AttemptFilter>,
    /// Whether the plugin said in `init` that it never calls out with its config
    /// (`calls.never-call-out`): a plugin importing `http.call` can then use the core entry.
    pub never_calls_out: bool,
    /// The clusters `http.call` reaches during a tick, when no request is in scope.
    pub tick_clusters: Option<Arc<Clusters>>,
    /// Header names the plugin read or set, so reading or setting `x-hello` on every request
    /// does not parse (and, for a name that is not a standard one, allocate) it each time.
    pub(super) custom_header_names: Remembered<HeaderName>,
    /// A hook's batch of changes, copied here out of the plugin's memory ([`super::batch`]): one
    /// buffer for the instance's life instead of an allocation per hook.
    pub(super) batch_buffer: Vec<u8>,
    /// The plugin's memory and allocator when it runs through the core entry
    /// ([`super::core_abi`]); `None` for a component.
    pub(super) guest: Option<super::core_abi::Guest>,
}

/// A plugin metric as the plugin names it: kind, name, labels.
pub(super) type MetricKey = (MetricKind, String, Vec<(String, String)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Clone)]
pub(super) enum MetricHandle {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    Histogram(metrics::Histogram),
}

/// Distinct metrics cached per instance; past this, updates still work, uncached.
const MAX_CACHED_METRICS: usize = 256;
/// Metrics a plugin may number per instance (the SDK's `MAX_NUMBERED_METRICS`): the handles
/// kept by number are bounded whatever a plugin sends.
const MAX_NUMBERED_METRICS: u32 = 256;
/// Custom header names remembered per instance (a linear scan: keep it short).
const MAX_CACHED_HEADER_NAMES: usize = 8;
/// Values of the client's response headers remembered per instance (a linear scan).
const MAX_CACHED_HEADER_VALUES: usize = 8;
/// Only short values are remembered: the cache holds a few names' worth of bytes at most.
const MAX_CACHED_HEADER_VALUE_BYTES: usize = 128;

impl HostState {
    pub fn new(env: Arc<PluginEnv>) -> Self {
        Self {
            env,
            request: None,
            timed_out: false,
            out_of_memory: false,
            memory_high_water: 0,
            time_limit_override: None,
            cpu_before: Duration::ZERO,
            stretch_cpu_base: None,
            metric_handles: hashbrown::HashMap::default(),
            metric_identities: hashbrown::HashMap::default(),
            numbered_metrics: Vec::new(),
            route_names: super::context::new_route_names(),
            client_header_values: Remembered::new(
                MAX_CACHED_HEADER_VALUES,
                MAX_CACHED_HEADER_VALUE_BYTES,
            ),
            custom_header_names: Remembered::new(MAX_CACHED_HEADER_NAMES, usize::MAX),
            batch_buffer: Vec::new(),
            guest: None,
            panic: None,
            in_init: false,
            tick_every: None,
            streams_response: false,
            streams_request: false,
            attempt_filter: None,
            never_calls_out: false,
            tick_clusters: None,
        }
    }

    /// The handle for a plugin metric, made (and cached) on first use: a hot update is one
    /// hash of the name and labels the plugin passed.
    pub(super) fn metric(&mut self, key: MetricKey) -> &MetricHandle {
        // The size test first: below the cap (always, in practice) a hot update hashes once.
        if self.metric_handles.len() >= MAX_CACHED_METRICS
            && !self.metric_handles.contains_key(&key)
        {
            // Keep working past the cap, just without caching new names.
            self.metric_handles.clear();
        }
        let plugin = &self.env.name;
        self.metric_handles
            .entry(key)
            .or_insert_with_key(|(kind, name, labels)| {
                let metric = crate::telemetry::plugin_metric(plugin, name, labels.clone());
                match kind {
                    MetricKind::Counter => MetricHandle::Counter(metric.counter()),
                    MetricKind::Gauge => MetricHandle::Gauge(metric.gauge()),
                    MetricKind::Histogram => MetricHandle::Histogram(metric.histogram()),
                }
            })
    }

    /// Applies `apply` to the metric a batch names by its encoded `identity`; `key` reads the
    /// identity (checking its text) only the first time it is seen, or after the cache filled.
    /// Afterwards the identity is in the cache ([`HostState::metric_by_identity`]).
    pub(super) fn update_metric_by_identity(
        &mut self,
        identity: &[u8],
        key: impl FnOnce() -> Result<MetricKey, String>,
        apply: impl Fn(&MetricHandle),
    ) -> Result<(), String> {
        if let Some(handle) = self.metric_identities.get(identity) {
            apply(handle);
            return Ok(());
        }
        let handle = self.metric(key()?).clone();
        apply(&handle);
        if self.metric_identities.len() >= MAX_CACHED_METRICS {
            self.metric_identities.clear();
        }
        self.metric_identities.insert(identity.into(), handle);
        Ok(())
    }

    /// The handle of a metric a batch named by `identity` before.
    pub(super) fn metric_by_identity(&self, identity: &[u8]) -> Option<&MetricHandle> {
        self.metric_identities.get(identity)
    }

    /// Keeps `handle` as the metric the plugin numbered `number`: the next number in order (or
    /// one it numbered before, which a plugin only does after starting over), below the SDK's
    /// cap.
    pub(super) fn number_metric(
        &mut self,
        number: u32,
        handle: MetricHandle,
    ) -> Result<(), String> {
        if number >= MAX_NUMBERED_METRICS {
            return Err(format!(
                "metric number {number} is past the {MAX_NUMBERED_METRICS} an instance may number"
            ));
        }
        let (at, next) = (number as usize, self.numbered_metrics.len());
        if at < next {
            self.numbered_metrics[at] = handle;
        } else if at == next {
            self.numbered_metrics.push(handle);
        } else {
            return Err(format!(
                "metric number {number} skips numbers (next is {next})"
            ));
        }
        Ok(())
    }

    /// The metric the plugin numbered `number` in this instance, if it did.
    pub(super) fn numbered_metric(&self, number: u32) -> Option<&MetricHandle> {
        self.numbered_metrics.get(number as usize)
    }

    /// The handle of a metric already used, found without copying its name and labels.
    pub(super) fn cached_metric(
        &self,
        lookup: &super::metric_imports::MetricLookup<'_>,
    ) -> Option<&MetricHandle> {
        self.metric_handles.get(lookup)
    }

    /// The header name a plugin wrote: names it used before (lower case, as the SDK's callers
    /// write them) without parsing or allocating again; `None` for a name that is none.
    pub(super) fn header_name(&mut self, name: &str) -> Option<HeaderName> {
        let text = name.as_bytes();
        self.custom_header_names
            .get_or_make(text, || HeaderName::from_bytes(text).ok())
    }

    /// A value for the client's response headers (`add-response-header`): values this instance
    /// added before — a canary's cluster names, a route's fixed headers — shared, not copied
    /// again; `None` for bytes that are no header value.
    pub(super) fn client_header_value(&mut self, bytes: &[u8]) -> Option<HeaderValue> {
        self.client_header_values.get_or_make(bytes, || {
            HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(bytes)).ok()
        })
    }

    /// Parses a header a plugin sets: standard and recently used names without allocating, the
    /// value without copying the string the plugin passed.
    pub(super) fn parse_header(
        &mut self,
        name: &str,
        value: bytes::Bytes,
    ) -> Result<(HeaderName, HeaderValue), String> {
        let name = self
            .header_name(name)
            .ok_or_else(|| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| format!("invalid value for header {name}"))?;
        Ok((name, value))
    }

    /// Installs the limiter and the CPU-deadline callback on a new store.
    pub fn configure(store: &mut Store<Self>) {
        store.limiter(|state| state);
        store.epoch_deadline_callback(|mut ctx: StoreContextMut<'_, Self>| {
            // A hook running this long keeps the ticker awake until it ends or is stopped.
            super::epoch::hook_running();
            let state = ctx.data_mut();
            if state.cpu_used() >= state.time_limit_override.unwrap_or(state.env.time_limit) {
                state.timed_out = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
    }

    /// CPU time this hook has used, measured with the thread's CPU clock, so a busy or
    /// overcommitted machine that keeps the thread waiting does not count against the plugin.
    /// Called on the thread running the hook, once per epoch tick while it runs.
    fn cpu_used(&mut self) -> Duration {
        let now = thread_cpu_time();
        match self.stretch_cpu_base {
            Some(base) => self.cpu_before + now.saturating_sub(base),
            None => {
                // Before the first check the clock was not read (a hook that ends within a tick,
                // nearly all, never reads it): count one whole tick for the stretch so far, as
                // the check comes about a tick after the stretch starts.
                self.cpu_before += super::epoch::EPOCH_TICK;
                self.stretch_cpu_base = Some(now);
                self.cpu_before
            }
        }
    }

    /// Closes the current stretch before the hook waits on the host (a callout).
    pub(super) fn pause_cpu_clock(&mut self) {
        if let Some(base) = self.stretch_cpu_base.take() {
            self.cpu_before += thread_cpu_time().saturating_sub(base);
        }
    }

    /// Opens a new stretch after waiting, possibly on another thread.
    pub(super) fn resume_cpu_clock(&mut self) {
        self.stretch_cpu_base = None;
        super::epoch::hook_running();
    }

    /// Starts the CPU clock for one hook call, which starts running now.
    pub fn start_hook(&mut self, request: Option<Box<RequestState>>) {
        super::epoch::hook_running();
        self.request = request;
        self.cpu_before = Duration::ZERO;
        self.stretch_cpu_base = None;
    }

    /// The state every instance of this plugin shares.
    pub(super) fn shared(&self) -> &SharedState {
        &self.env.shared
    }

    pub(super) fn req(&self) -> Option<&RequestState> {
        self.request.as_deref()
    }

    pub(super) fn req_mut(&mut self) -> Option<&mut RequestState> {
        self.request.as_deref_mut()
    }

    pub(super) fn response_headers(&self) -> Option<&http::HeaderMap> {
        self.req()?.response.as_ref().map(|r| &r.headers)
    }

    pub(super) fn response_headers_mut(&mut self) -> Result<&mut http::HeaderMap, String> {
        self.req_mut()
            .and_then(|r| r.response.as_mut())
            .map(|r| &mut r.headers)
            .ok_or_else(|| "there is no response head in this hook".to_owned())
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.env.memory_limit {
            self.out_of_memory = true;
            return Ok(false);
        }
        self.memory_high_water = self.memory_high_water.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= crate::sandbox::MAX_TABLE_ELEMENTS)
    }
}

/// CPU time the calling thread has used.
pub(super) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}
