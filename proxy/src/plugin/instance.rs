//! Long-lived instances of one plugin: a small pool, one instance checked out per hook call.
//! Instantiating per request would cost ~24 us; a warm call costs ~1-2 us.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::atomic::AtomicCell;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

use super::bindings::{AttemptOutcome, BodyInterest, Decision, FilterPre};
use super::component_hooks::ComponentHooks;
use super::core_abi::CoreHooks;
use super::host::{HostState, PluginEnv};
use super::request_state::RequestState;
use crate::upstream::Clusters;

use crate::sandbox::{INIT_TIME as INIT_TIME_LIMIT, MAX_CALLS_PER_INSTANCE, MAX_IDLE};
/// One hook call in this many is timed for the hook-time histograms and the admin API's
/// percentiles: two clock reads and a histogram update per call were a measurable share of a
/// small hook's cost under load, and a sample of one in eight describes the distribution as
/// well. Call counts stay exact; the CPU deadline does not depend on it.
const TIME_ONE_IN: u32 = 8;

/// Which hook to call, with its arguments.
#[derive(Debug)]
pub enum HookCall {
    Request,
    RequestBody(Vec<u8>),
    UpstreamResponse(AttemptOutcome),
    Response,
    ResponseBody(Vec<u8>),
    Log,
}

/// Why a hook call produced no decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    #[error("trapped: {0}")]
    Trap(String),
    #[error("used more than its CPU time limit")]
    Timeout,
    #[error("went over its memory limit")]
    OutOfMemory,
    #[error("could not start an instance: {0}")]
    Instantiate(String),
    /// `init` answered with an error: the plugin does not accept its `[plugin.config]`.
    #[error("refused its config: {0}")]
    ConfigRefused(String),
}

impl HookError {
    /// The `kind` label of the error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Trap(_) => "trap",
            Self::Timeout => "timeout",
            Self::OutOfMemory => "out_of_memory",
            Self::Instantiate(_) | Self::ConfigRefused(_) => "instantiate",
        }
    }
}

/// One live instance and its store.
pub struct Instance {
    store: Store<HostState>,
    hooks: Hooks,
    calls: u32,
    /// This instance's share of the plugin's slots; freed when the instance is dropped.
    _slot: OwnedSemaphorePermit,
}

/// How an instance's hooks are called. Not boxed: the instance holding it is, and it never
/// moves on its own.
#[allow(clippy::large_enum_variant)]
enum Hooks {
    /// Through the component model.
    Component(ComponentHooks),
    /// On the core module, with the canonical ABI's integers ([`super::core_abi`]).
    Core(CoreHooks),
}

/// What a plugin's instances are made from.
pub enum Pre {
    Component {
        pre: FilterPre<HostState>,
        /// Whether the component imports no async host function, so its head hooks can run
        /// without a fiber.
        synchronous: bool,
    },
    Core(super::core_abi::CorePre),
}

impl Pre {
    fn engine(&self) -> &wasmtime::Engine {
        match self {
            Pre::Component { pre, .. } => pre.engine(),
            Pre::Core(core) => core.pre.module().engine(),
        }
    }

    /// Whether `call` runs as a plain call, without a fiber: every hook of a core instance, and
    /// a component's head hooks when it imports nothing async.
    fn runs_plain(&self, call: &HookCall) -> bool {
        match self {
            Pre::Core(_) => true,
            Pre::Component { synchronous, .. } => {
                *synchronous
                    && !matches!(call, HookCall::RequestBody(_) | HookCall::ResponseBody(_))
            }
        }
    }
}

impl Hooks {
    fn has_chunk(&self, body: BodyOf) -> bool {
        match self {
            Hooks::Component(hooks) => hooks.has_chunk(body),
            Hooks::Core(hooks) => hooks.has_chunk(body),
        }
    }

    fn has_tick(&self) -> bool {
        match self {
            Hooks::Component(hooks) => hooks.has_tick(),
            Hooks::Core(hooks) => hooks.has_tick(),
        }
    }

    /// `init` with the plugin's config as JSON: what bodies it wants, or why it refuses.
    async fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<BodyInterest, String>> {
        match self {
            Hooks::Component(hooks) => hooks.init(store, config).await,
            Hooks::Core(hooks) => hooks.init(store, config),
        }
    }
}

impl Instance {
    /// Whether the plugin said in `init` that it never calls out (`calls.never-call-out`).
    pub fn never_calls_out(&self) -> bool {
        self.store.data().never_calls_out
    }

    /// What the plugin asked for in `init`: ticks, bodies chunk by chunk (when it exports the
    /// chunk hook that takes them), and which attempts it sees.
    pub fn asked(&self) -> super::Asked {
        let state = self.store.data();
        super::Asked {
            tick_every: state.tick_every,
            streams: super::Streams {
                request: state.streams_request && self.hooks.has_chunk(BodyOf::Request),
                response: state.streams_response && self.hooks.has_chunk(BodyOf::Response),
            },
            attempts: state.attempt_filter,
        }
    }
}

/// Which body a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOf {
    Request,
    Response,
}

/// The instances of one plugin.
pub struct InstancePool {
    pre: Pre,
    env: Arc<PluginEnv>,
    config_json: String,
    /// Boxed: an instance is a few hundred bytes, moved in and out of here on every hook call,
    /// where a box moves as a pointer.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Instance>>>,
    /// The instance checked in last, taken and put back with one atomic swap each instead of
    /// the stack's lock and unlock: the next hook call, usually on the same worker, finds it.
    hot: AtomicCell<Option<Box<Instance>>>,
    /// Callers waiting in [`InstancePool::checkout`] for an instance; a check-in signals
    /// `returned` only when there is one.
    waiting: AtomicUsize,
    /// Live instances are capped so a burst of slow callouts waits for an instance instead of
    /// exhausting the engine's pooled slots and failing.
    slots: Arc<Semaphore>,
    /// Signalled when an instance goes back to `idle`, for callers waiting for one.
    returned: Notify,
}

impl InstancePool {
    /// `max_live` is this plugin's share of the engine's instance slots.
    pub fn new(pre: Pre, env: Arc<PluginEnv>, config_json: String, max_live: usize) -> Self {
        Self {
            pre,
            env,
            config_json,
            idle: Mutex::new(Vec::new()),
            hot: AtomicCell::new(None),
            waiting: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(max_live.max(1))),
            returned: Notify::new(),
        }
    }

    /// `core` when the hooks run through the core entry, else `component`.
    pub fn entry(&self) -> &'static str {
        match self.pre {
            Pre::Core(_) => "core",
            Pre::Component { .. } => "component",
        }
    }

    /// Creates an instance and runs the plugin's `init` with its config.
    pub async fn instantiate(&self) -> Result<(Instance, BodyInterest), HookError> {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| HookError::Instantiate("the plugin is shutting down".into()))?;
        self.instantiate_in(slot).await
    }

    async fn instantiate_in(
        &self,
        slot: OwnedSemaphorePermit,
    ) -> Result<(Instance, BodyInterest), HookError> {
        let mut store = Store::new(self.pre.engine(), HostState::new(Arc::clone(&self.env)));
        HostState::configure(&mut store);
        store.data_mut().time_limit_override = Some(INIT_TIME_LIMIT);
        store.data_mut().start_hook(None);
        store.set_epoch_deadline(1);
        let hooks = match &self.pre {
            Pre::Component { pre, synchronous } => {
                let instance = pre
                    .instance_pre()
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiate_error)?;
                let hooks = ComponentHooks::new(&instance, &mut store, *synchronous);
                Hooks::Component(hooks.map_err(instantiate_error)?)
            }
            Pre::Core(core) => {
                let instance = core
                    .pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiate_error)?;
                let hooks = CoreHooks::new(&instance, &mut store, core.lean_post_return);
                Hooks::Core(hooks.map_err(instantiate_error)?)
            }
        };
        store.data_mut().in_init = true;
        let interest = hooks
            .init(&mut store, &self.config_json)
            .await
            .map_err(|e| classify(&mut store, &e))?
            .map_err(HookError::ConfigRefused)?;
        store.data_mut().in_init = false;
        store.data_mut().time_limit_override = None;
        Ok((
            Instance {
                store,
                hooks,
                calls: 0,
                _slot: slot,
            },
            interest,
        ))
    }

    /// Runs `on-tick` on a pooled instance, with `clusters` reachable by `http.call`.
    pub async fn tick(&self, clusters: Arc<Clusters>) -> Result<Decision, HookError> {
        let mut instance = self.instance().await?;
        if !instance.hooks.has_tick() {
            self.checkin(instance);
            return Ok(Decision::Unimplemented);
        }
        instance.calls += 1;
        let data = instance.store.data_mut();
        data.start_hook(None);
        data.tick_clusters = Some(clusters);
        instance.store.set_epoch_deadline(1);
        let Instance { store, hooks, .. } = &mut *instance;
        let result = match hooks {
            Hooks::Core(hooks) => hooks.tick(store),
            Hooks::Component(hooks) => hooks.tick(store).await,
        };
        instance.store.data_mut().tick_clusters = None;
        match result {
            Ok(decision) => {
                self.checkin(instance);
                Ok(decision)
            }
            Err(e) => Err(classify(&mut instance.store, &e)),
        }
    }

    fn pop_idle(&self) -> Option<Box<Instance>> {
        self.hot
            .take()
            .or_else(|| self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop())
    }

    /// An idle instance at once, else [`InstancePool::checkout`] (boxed: its future is large,
    /// and the callers' futures stay small without it).
    async fn instance(&self) -> Result<Box<Instance>, HookError> {
        match self.pop_idle() {
            Some(instance) => Ok(instance),
            None => Box::pin(self.checkout()).await,
        }
    }

    /// An idle instance, else a new one if the plugin has a free slot, else the first of the two
    /// to come: an instance returned by another call, or a slot freed by a discarded one.
    async fn checkout(&self) -> Result<Box<Instance>, HookError> {
        if let Some(instance) = self.pop_idle() {
            return Ok(instance);
        }
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(Box::new(self.instantiate_in(slot).await?.0));
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let waited = self.wait_for_instance().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        waited
    }

    /// The slow path of [`InstancePool::checkout`], counted in `waiting` so check-ins signal.
    async fn wait_for_instance(&self) -> Result<Box<Instance>, HookError> {
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(instance) = self.pop_idle() {
                return Ok(instance);
            }
            tokio::select! {
                _ = &mut returned => {}
                slot = Arc::clone(&self.slots).acquire_owned() => {
                    let slot = slot.map_err(|_| HookError::Instantiate("the plugin is shutting down".into()))?;
                    return Ok(Box::new(self.instantiate_in(slot).await?.0));
                }
            }
        }
    }

    /// Puts a just-made instance (the one `init` was checked on) in the pool.
    pub fn checkin_fresh(&self, instance: Instance) {
        self.checkin(Box::new(instance));
    }

    fn checkin(&self, instance: Box<Instance>) {
        let worn = instance.calls >= MAX_CALLS_PER_INSTANCE
            || instance.store.data().memory_high_water > self.env.memory_limit / 2;
        if worn {
            return; // dropped: its slot goes back to the pooling allocator
        }
        // The hot slot takes it; the instance it held, if any, goes on the stack.
        if let Some(previous) = self.hot.swap(Some(instance)) {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(previous);
            }
        }
        // Ordered after the swap: a caller that counted itself in `waiting` after this load
        // looks at `hot` and `idle` afterwards and finds an instance.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.returned.notify_one();
        }
    }

    /// Runs `on-request-chunk` or `on-response-chunk` on a pooled instance, `state` in scope:
    /// the replacement for `chunk`, if the plugin made one.
    pub async fn chunk(
        &self,
        state: Box<RequestState>,
        body: BodyOf,
        chunk: Vec<u8>,
        end: bool,
    ) -> (Box<RequestState>, Result<Option<Vec<u8>>, HookError>) {
        let mut instance = match self.instance().await {
            Ok(instance) => instance,
            Err(e) => return (state, Err(e)),
        };
        if !instance.hooks.has_chunk(body) {
            self.checkin(instance);
            return (state, Ok(None));
        }
        instance.calls += 1;
        instance.store.data_mut().start_hook(Some(state));
        instance.store.set_epoch_deadline(1);
        let Instance { store, hooks, .. } = &mut *instance;
        let result = match hooks {
            Hooks::Core(hooks) => hooks.chunk(store, body, &chunk, end),
            Hooks::Component(hooks) => hooks.chunk(store, body, chunk, end).await,
        };
        let state = take_request(&mut instance);
        match result {
            Ok(replacement) => {
                self.checkin(instance);
                (state, Ok(replacement))
            }
            Err(e) => (state, Err(classify(&mut instance.store, &e))),
        }
    }

    /// Runs one hook on a pooled instance. The request state always comes back, whatever the
    /// plugin did; an instance that failed is discarded, never reused. Also returns how long the
    /// hook ran (from checkout to its decision; waiting for an instance is not counted) for one
    /// call in [`TIME_ONE_IN`], and `None` for the others.
    pub async fn call(&self, state: Box<RequestState>, call: HookCall) -> Called {
        let mut instance = match self.instance().await {
            Ok(instance) => instance,
            Err(e) => return (state, Err(e), None),
        };
        let started = begin(&mut instance, state);
        let result = match invoke_sync(&mut instance, &call) {
            Some(result) => result,
            // Boxed: the slow path's future would otherwise bloat this one.
            None => Box::pin(invoke(&mut instance, call)).await,
        };
        self.end(instance, result, started)
    }

    /// [`InstancePool::call`] without waiting, when an instance is idle and the hook runs as a
    /// plain call (every hook of a core instance; a component's head hooks when it imports
    /// nothing async); else the state and the call back, for [`InstancePool::call`]. A chain's
    /// hooks then run without an async function's state moved in and out around each.
    pub fn call_now(
        &self,
        state: Box<RequestState>,
        call: HookCall,
    ) -> Result<Called, (Box<RequestState>, HookCall)> {
        let plain = self.pre.runs_plain(&call);
        let Some(mut instance) = plain.then(|| self.pop_idle()).flatten() else {
            return Err((state, call));
        };
        let started = begin(&mut instance, state);
        let result = match invoke_sync(&mut instance, &call) {
            Some(result) => result,
            None => Err(wasmtime::Error::msg(
                "a plain hook call needed the async path",
            )),
        };
        Ok(self.end(instance, result, started))
    }

    /// The request state back from a finished call, the instance back in the pool unless the
    /// call failed, and the hook's time when it was timed.
    fn end(
        &self,
        mut instance: Box<Instance>,
        result: wasmtime::Result<Decision>,
        started: Option<Instant>,
    ) -> Called {
        let took = started.map(|started| started.elapsed());
        let state = take_request(&mut instance);
        match result {
            Ok(decision) => {
                self.checkin(instance);
                (state, Ok(decision), took)
            }
            Err(e) => {
                let error = classify(&mut instance.store, &e);
                (state, Err(error), took)
            }
        }
    }
}

/// What a hook call gives back: the request state, the decision, and the hook's time when it
/// was timed.
pub type Called = (
    Box<RequestState>,
    Result<Decision, HookError>,
    Option<Duration>,
);

/// Lends `state` to `instance` and starts the hook's CPU clock and deadline; the start time
/// when this call is one of those timed.
fn begin(instance: &mut Instance, state: Box<RequestState>) -> Option<Instant> {
    instance.calls += 1;
    let started = instance
        .calls
        .is_multiple_of(TIME_ONE_IN)
        .then(Instant::now);
    instance.store.data_mut().start_hook(Some(state));
    instance.store.set_epoch_deadline(1);
    started
}

/// The request state lent to `instance` for a call, back from it.
fn take_request(instance: &mut Instance) -> Box<RequestState> {
    // Cannot fail: start_hook put the state there and host functions only borrow it.
    #[allow(clippy::expect_used)]
    instance
        .store
        .data_mut()
        .request
        .take()
        .expect("host functions only borrow the request state; start_hook put it there")
}

/// Calls a hook directly when it can run without a fiber: every hook of a core instance, and a
/// component's head hooks when the plugin imports nothing async. `None` when the call needs the
/// async path.
fn invoke_sync(instance: &mut Instance, call: &HookCall) -> Option<wasmtime::Result<Decision>> {
    let store = &mut instance.store;
    match &instance.hooks {
        Hooks::Core(hooks) => Some(hooks.call(store, call)),
        Hooks::Component(hooks) => hooks.call_sync(store, call),
    }
}

async fn invoke(instance: &mut Instance, call: HookCall) -> wasmtime::Result<Decision> {
    let store = &mut instance.store;
    match &instance.hooks {
        Hooks::Component(hooks) => hooks.call(store, call).await,
        Hooks::Core(hooks) => hooks.call(store, &call),
    }
}

fn instantiate_error(e: wasmtime::Error) -> HookError {
    HookError::Instantiate(format!("{e:#}"))
}

fn classify(store: &mut Store<HostState>, error: &wasmtime::Error) -> HookError {
    let data = store.data_mut();
    super::failures::hook_error(data.timed_out, data.out_of_memory, error, data.panic.take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_instance_slot_swaps_without_a_lock() {
        assert!(AtomicCell::<Option<Box<Instance>>>::is_lock_free());
    }
}
