//! Unmodified proxy-wasm filters (ABI 0.2.1, what Envoy, Istio and the Rust, Go and C++ SDKs
//! speak) run beside Switchyard's own plugins, in the same chains and under the same sandbox: the
//! CPU deadline per call, the memory cap, the failure policy, hot swap, per-plugin metrics.
//!
//! A proxy-wasm filter keeps each request's state in its own memory (its HTTP context), so a
//! request stays on one instance from its headers to its log, as on one of Envoy's workers: a
//! filter has a few long-lived instances ([`slots`](ProxyWasmFilter)), a request is given one
//! when its headers arrive, and every call into an instance holds it only while the call runs.
//! A call that pauses to wait for a callout (`dispatch_http_call`) releases the instance; the
//! response is delivered to the same context when it comes. A filter that traps loses its
//! instance (and the contexts in it); the next request gets a fresh one.
//!
//! Bodies reach filters piece by piece as they stream (`proxy_on_request_body`,
//! `proxy_on_response_body`); a filter that answers `Pause` before the end gets the pieces
//! together with the next ones, so one that waits for the end sees (and may rewrite) the whole
//! body, as with Envoy's `StopIterationAndBuffer`.

pub mod abi;
mod host;
mod instances;

/// The store data of a filter instance (named by the loader's linker).
pub mod host_state {
    pub use super::host::FilterState;
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use wasmtime::{Engine, InstancePre, Linker, Module};

use super::bindings::Decision;
use super::host::PluginEnv;
use super::instance::{BodyOf, HookCall, HookError};
use super::request_state::RequestState;
use crate::upstream::Clusters;
use host::{Callout, FilterShared, FilterState};
use instances::{Outcome, Slot};

/// The root context every instance makes first (plugin configuration, ticks, root callouts).
const ROOT: i32 = 1;

/// Whether `bytes` are a proxy-wasm filter: a core module exporting the ABI version marker.
pub fn is_proxy_wasm(bytes: &[u8]) -> bool {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            }) => return false,
            Ok(wasmparser::Payload::ExportSection(exports)) => {
                return exports
                    .into_iter()
                    .flatten()
                    .any(|e| e.name == abi::ABI_MARKER || e.name == abi::ABI_MARKER_0_2_0);
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// The linker every filter is instantiated with: the ABI's host functions.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<FilterState>> {
    let mut linker = Linker::new(engine);
    host::define(&mut linker)?;
    Ok(linker)
}

/// The trailers a filter left, or why it failed with the trailers as they came.
pub type TrailersResult = Result<http::HeaderMap, (HookError, http::HeaderMap)>;

/// Why a filter could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FilterLoadError {
    #[error("{0}")]
    Compile(String),
    /// Imports this host does not provide, each as `module.name`.
    #[error("it imports {}, which this host does not provide (supported: proxy-wasm ABI 0.2.1 in module `env`)", .0.join(", "))]
    Unsupported(Vec<String>),
    #[error("{0}")]
    Start(HookError),
}

/// One request's context in one filter: which instance holds it. When the request ends without
/// reaching the filter's log callback (the client left), the context is deleted at the
/// instance's next call.
#[derive(Debug)]
pub struct FilterContext {
    filter: u64,
    slot: usize,
    generation: u64,
    id: i32,
    deleted: AtomicBool,
    orphans: Weak<Mutex<Vec<(usize, u64, i32)>>>,
}

impl Drop for FilterContext {
    fn drop(&mut self) {
        if !self.deleted.load(Ordering::Relaxed)
            && let Some(orphans) = self.orphans.upgrade()
        {
            lock(&orphans).push((self.slot, self.generation, self.id));
        }
    }
}

/// A loaded filter.
pub struct ProxyWasmFilter {
    id: u64,
    pre: InstancePre<FilterState>,
    env: Arc<PluginEnv>,
    shared: Arc<FilterShared>,
    configuration: Arc<[u8]>,
    slots: Vec<Mutex<Slot>>,
    next_slot: AtomicUsize,
    next_context: AtomicU32,
    orphans: Arc<Mutex<Vec<(usize, u64, i32)>>>,
    /// Body pieces a filter paused on, by context and body, until it continues.
    held: Mutex<HashMap<(i32, bool), Vec<u8>>>,
    /// The tick period the filter asked for when it started.
    pub tick_every: Option<Duration>,
}

impl ProxyWasmFilter {
    /// Links the compiled filter and starts its first instance (which runs
    /// `proxy_on_vm_start` and `proxy_on_configure` with `configuration`).
    pub fn load(
        linker: &Linker<FilterState>,
        module: &Module,
        env: Arc<PluginEnv>,
        configuration: Vec<u8>,
    ) -> Result<Self, FilterLoadError> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let missing = host::missing_imports(module);
        if !missing.is_empty() {
            return Err(FilterLoadError::Unsupported(missing));
        }
        let pre = linker
            .instantiate_pre(module)
            .map_err(|e| FilterLoadError::Compile(format!("{e:#}")))?;
        let slots = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, crate::sandbox::FILTER_INSTANCES);
        let mut filter = Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            pre,
            env,
            shared: Arc::default(),
            configuration: configuration.into(),
            slots: (0..slots)
                .map(|_| {
                    Mutex::new(Slot {
                        live: None,
                        generation: 0,
                    })
                })
                .collect(),
            next_slot: AtomicUsize::new(0),
            next_context: AtomicU32::new(ROOT as u32 + 1),
            orphans: Arc::default(),
            held: Mutex::default(),
            tick_every: None,
        };
        let live = filter.start(0).map_err(FilterLoadError::Start)?;
        filter.tick_every = live.store.data().tick_period;
        lock(&filter.slots[0]).live = Some(live);
        Ok(filter)
    }

    pub async fn call(
        &self,
        state: Box<RequestState>,
        call: HookCall,
    ) -> (Box<RequestState>, Result<Decision, HookError>) {
        match call {
            HookCall::Request => self.on_request_headers(state).await,
            HookCall::Response => match self.context_of(&state) {
                Some(context) => {
                    let eos = i32::from(response_ends_with_head(&state));
                    let headers = count_headers(state.response.as_ref().map(|r| &r.headers));
                    let (state, outcome) = self.run(&context, Some(state), None, |live| {
                        let store = &mut live.store;
                        live.exports
                            .response_headers
                            .call(store, (context.id, headers + 1, eos))
                    });
                    self.settle(state, &context, outcome).await
                }
                None => (state, Ok(Decision::Continue)),
            },
            HookCall::Log => {
                let Some(context) = self.context_of(&state) else {
                    return (state, Ok(Decision::Continue));
                };
                let (state, outcome) = self.run(&context, Some(state), None, |live| {
                    let store = &mut live.store;
                    if let Some(log) = &live.exports.log {
                        log.call(&mut *store, context.id)?;
                    }
                    if let Some(done) = &live.exports.done {
                        done.call(&mut *store, context.id)?;
                    }
                    if let Some(delete) = &live.exports.delete {
                        delete.call(&mut *store, context.id)?;
                    }
                    Ok(abi::ACTION_CONTINUE)
                });
                context.deleted.store(true, Ordering::Relaxed);
                let mut state = returned(state);
                state.filter_contexts.retain(|c| !Arc::ptr_eq(c, &context));
                (state, outcome.map(|_| Decision::Continue))
            }
            HookCall::UpstreamResponse(_)
            | HookCall::RequestBody(_)
            | HookCall::ResponseBody(_) => (state, Ok(Decision::Unimplemented)),
        }
    }

    async fn on_request_headers(
        &self,
        mut state: Box<RequestState>,
    ) -> (Box<RequestState>, Result<Decision, HookError>) {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let id = self.next_context.fetch_add(1, Ordering::Relaxed) as i32;
        let generation = lock(&self.slots[slot]).generation;
        let context = Arc::new(FilterContext {
            filter: self.id,
            slot,
            generation,
            id,
            deleted: AtomicBool::new(false),
            orphans: Arc::downgrade(&self.orphans),
        });
        state.filter_contexts.push(Arc::clone(&context));
        let eos = i32::from(request_ends_with_head(&state.head));
        let headers = count_headers(Some(state.request_headers())) + 4;
        let (state, outcome) = self.run(&context, Some(state), None, |live| {
            let store = &mut live.store;
            live.exports.context_create.call(&mut *store, (id, ROOT))?;
            live.exports.request_headers.call(store, (id, headers, eos))
        });
        let (mut state, decision) = self.settle(state, &context, outcome).await;
        if decision.is_err() {
            // Failed here, the request has no context in the filter any more (its instance is
            // gone): its response and body pass the filter by, and the failure counts once.
            context.deleted.store(true, Ordering::Relaxed);
            state.filter_contexts.retain(|c| !Arc::ptr_eq(c, &context));
        }
        (state, decision)
    }

    /// Follows a call's outcome to a decision: answers what the filter answered, makes the
    /// callouts it dispatched and delivers their responses to it, until it goes on.
    async fn settle(
        &self,
        state: Option<Box<RequestState>>,
        context: &Arc<FilterContext>,
        outcome: Result<Outcome, HookError>,
    ) -> (Box<RequestState>, Result<Decision, HookError>) {
        let mut state = returned(state);
        let mut outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => return (state, Err(e)),
        };
        loop {
            if let Some(local) = outcome.local.take() {
                return (state, Ok(Decision::Respond(local)));
            }
            if outcome.callouts.is_empty() {
                if outcome.action != abi::ACTION_CONTINUE && !outcome.resumed {
                    tracing::debug!(plugin = %self.env.name, "the filter paused with nothing to wait for; going on");
                }
                return (state, Ok(Decision::Continue));
            }
            let clusters = Arc::clone(&state.scope.clusters);
            let answers = make_callouts(&clusters, std::mem::take(&mut outcome.callouts)).await;
            let mut next = Outcome::empty();
            for (token, answer) in answers {
                let (back, delivered) = self.deliver(context, Some(state), token, answer);
                state = returned(back);
                match delivered {
                    Ok(delivered) => next.merge(delivered),
                    Err(e) => return (state, Err(e)),
                }
            }
            if next.resumed && next.callouts.is_empty() && next.local.is_none() {
                return (state, Ok(Decision::Continue));
            }
            outcome = next;
        }
    }

    /// Hands a callout's response to the context that made it.
    fn deliver(
        &self,
        context: &FilterContext,
        state: Option<Box<RequestState>>,
        token: u32,
        answer: Option<super::bindings::HttpResponse>,
    ) -> (Option<Box<RequestState>>, Result<Outcome, HookError>) {
        let headers = answer.as_ref().map_or(0, |a| a.headers.len() as i32 + 1);
        let body = answer.as_ref().map_or(0, |a| a.body.len() as i32);
        self.run_with(context, state, None, answer, |live| {
            if let Some(deliver) = &live.exports.call_response {
                deliver.call(
                    &mut live.store,
                    (context.id, token as i32, headers, body, 0),
                )?;
            }
            Ok(abi::ACTION_CONTINUE)
        })
    }

    /// Passes one piece of a body through the filter: the bytes to send on (none while the
    /// filter holds them), or `None` when the request never reached the filter.
    pub async fn chunk(
        &self,
        state: Box<RequestState>,
        body: BodyOf,
        chunk: Vec<u8>,
        end: bool,
    ) -> (Box<RequestState>, Result<Option<Vec<u8>>, HookError>) {
        let Some(context) = self.context_of(&state) else {
            return (state, Ok(None));
        };
        let key = (context.id, body == BodyOf::Request);
        let mut data = lock(&self.held).remove(&key).unwrap_or_default();
        data.extend_from_slice(&chunk);
        let len = i32::try_from(data.len()).unwrap_or(i32::MAX);
        let (state, outcome) = self.run(&context, Some(state), Some(data), |live| {
            let callback = match body {
                BodyOf::Request => &live.exports.request_body,
                BodyOf::Response => &live.exports.response_body,
            };
            callback.call(&mut live.store, (context.id, len, i32::from(end)))
        });
        let state = returned(state);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => return (state, Err(e)),
        };
        if outcome.local.is_some() {
            let error = "answered from a body callback, after the head went on: not supported";
            return (state, Err(HookError::Trap(error.into())));
        }
        if !outcome.callouts.is_empty() {
            tracing::warn!(plugin = %self.env.name, "callouts from body callbacks are not made");
        }
        let data = outcome.body.unwrap_or_default();
        if outcome.action != abi::ACTION_CONTINUE && !end {
            lock(&self.held).insert(key, data);
            return (state, Ok(Some(Vec::new())));
        }
        (state, Ok(Some(data)))
    }

    /// Passes a body's trailers through the filter (`proxy_on_request_trailers`,
    /// `proxy_on_response_trailers`): the trailers it leaves, or the error with them unchanged.
    pub async fn trailers(
        &self,
        state: Box<RequestState>,
        body: BodyOf,
        trailers: http::HeaderMap,
    ) -> (Box<RequestState>, TrailersResult) {
        let Some(context) = self.context_of(&state) else {
            return (state, Ok(trailers));
        };
        let count = count_headers(Some(&trailers));
        let original = trailers.clone();
        let mut changed = None;
        let (state, outcome) = self.run(&context, Some(state), None, |live| {
            live.store.data_mut().trailers = Some(trailers);
            let callback = match body {
                BodyOf::Request => &live.exports.request_trailers,
                BodyOf::Response => &live.exports.response_trailers,
            };
            let result = match callback {
                Some(callback) => callback.call(&mut live.store, (context.id, count)),
                None => Ok(abi::ACTION_CONTINUE),
            };
            changed = live.store.data_mut().trailers.take();
            result
        });
        let state = returned(state);
        match outcome {
            Ok(_) => (state, Ok(changed.unwrap_or(original))),
            Err(e) => (state, Err((e, original))),
        }
    }

    /// `proxy_on_tick` on the first instance, then the callouts it made, answered to it.
    pub async fn tick(&self, clusters: Arc<Clusters>) -> Result<Decision, HookError> {
        let root = FilterContext {
            filter: self.id,
            slot: 0,
            generation: lock(&self.slots[0]).generation,
            id: ROOT,
            deleted: AtomicBool::new(true),
            orphans: Weak::new(),
        };
        let (_, outcome) = self.run_with(&root, None, None, None, |live| {
            live.store.data_mut().clusters = Some(Arc::clone(&clusters));
            if let Some(tick) = &live.exports.tick {
                tick.call(&mut live.store, ROOT)?;
            }
            Ok(abi::ACTION_CONTINUE)
        });
        let mut callouts = outcome?.callouts;
        while !callouts.is_empty() {
            let answers = make_callouts(&clusters, std::mem::take(&mut callouts)).await;
            for (token, answer) in answers {
                let (_, delivered) = self.deliver(&root, None, token, answer);
                callouts.extend(delivered?.callouts);
            }
        }
        Ok(Decision::Continue)
    }

    fn context_of(&self, state: &RequestState) -> Option<Arc<FilterContext>> {
        state
            .filter_contexts
            .iter()
            .find(|c| c.filter == self.id)
            .cloned()
    }
}

/// Makes the callouts at once; each answer (or `None`, for a failure) with its token.
async fn make_callouts(
    clusters: &Clusters,
    callouts: Vec<Callout>,
) -> Vec<(u32, Option<super::bindings::HttpResponse>)> {
    let calls = callouts.into_iter().map(|c| async move {
        let answer = super::callout::call(clusters, &c.cluster, c.request)
            .await
            .ok();
        (c.token, answer)
    });
    futures_util::future::join_all(calls).await
}

fn count_headers(headers: Option<&http::HeaderMap>) -> i32 {
    headers.map_or(0, |h| i32::try_from(h.len()).unwrap_or(i32::MAX))
}

/// Whether a request has no body to follow its head.
fn request_ends_with_head(head: &http::request::Parts) -> bool {
    let length = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match length {
        Some(n) => n == 0,
        None => {
            !head.headers.contains_key(http::header::TRANSFER_ENCODING)
                && head.version != http::Version::HTTP_2
        }
    }
}

fn response_ends_with_head(state: &RequestState) -> bool {
    state.response.as_ref().is_some_and(|r| {
        r.headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0")
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state lent for a call, back from it.
fn returned(state: Option<Box<RequestState>>) -> Box<RequestState> {
    // Cannot fail: `run_with` puts the state in the store and takes it back right after the
    // call; host functions only borrow it. Every caller that lends a state gets it back here.
    #[allow(clippy::expect_used)]
    state.expect("the request state lent to a filter call comes back")
}
