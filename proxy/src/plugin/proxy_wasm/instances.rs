//! The instances of a filter: starting one (root context, VM start, configuration), and one
//! call into the instance that holds a context, with the request lent to it for the call.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, TypedFunc, UpdateDeadline};

use super::host::{Callout, FilterState};
use super::{FilterContext, ProxyWasmFilter, ROOT, abi, lock};
use crate::plugin::bindings::{HttpResponse, LocalResponse};
use crate::plugin::instance::HookError;
use crate::plugin::request_state::RequestState;

pub(super) struct Slot {
    pub(super) live: Option<Live>,
    pub(super) generation: u64,
}

pub(super) struct Live {
    pub(super) store: Store<FilterState>,
    pub(super) exports: Exports,
}

/// `proxy_on_http_call_response(context, token, headers, body size, trailers)`.
pub(super) type CallResponseFunc = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// The filter's callbacks.
pub(super) struct Exports {
    pub(super) context_create: TypedFunc<(i32, i32), ()>,
    pub(super) request_headers: TypedFunc<(i32, i32, i32), i32>,
    pub(super) request_body: TypedFunc<(i32, i32, i32), i32>,
    pub(super) response_headers: TypedFunc<(i32, i32, i32), i32>,
    pub(super) response_body: TypedFunc<(i32, i32, i32), i32>,
    pub(super) log: Option<TypedFunc<i32, ()>>,
    pub(super) done: Option<TypedFunc<i32, i32>>,
    pub(super) delete: Option<TypedFunc<i32, ()>>,
    pub(super) tick: Option<TypedFunc<i32, ()>>,
    pub(super) queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    pub(super) request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub(super) response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub(super) call_response: Option<CallResponseFunc>,
}

/// What one call into a filter left behind.
pub(super) struct Outcome {
    pub(super) action: i32,
    pub(super) local: Option<LocalResponse>,
    pub(super) resumed: bool,
    pub(super) callouts: Vec<Callout>,
    pub(super) body: Option<Vec<u8>>,
}

impl ProxyWasmFilter {
    /// A new instance, started: the root context made, the VM started and configured.
    pub(super) fn start(&self, slot: usize) -> Result<Live, HookError> {
        let engine = self.pre.module().engine();
        let state = FilterState::new(
            Arc::clone(&self.env),
            Arc::clone(&self.shared),
            Arc::clone(&self.configuration),
            slot,
        );
        let mut store = Store::new(engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_callback(|mut ctx| {
            crate::plugin::epoch::hook_running();
            let state = ctx.data_mut();
            // CPU time by the thread's clock, as for Switchyard's plugins: a busy machine that
            // keeps the thread waiting does not count against the filter. The clock is first
            // read at the first tick, which stands for the tick before it.
            let now = crate::plugin::host::thread_cpu_time();
            let base = *state.cpu_base.get_or_insert(now);
            let used = crate::plugin::epoch::EPOCH_TICK + now.saturating_sub(base);
            if used >= state.limit {
                state.timed_out = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        let failed = |store: &mut Store<FilterState>, e: wasmtime::Error| {
            HookError::Instantiate(classify(store, &e).to_string())
        };
        begin(&mut store, crate::sandbox::INIT_TIME);
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => return Err(failed(&mut store, e)),
        };
        let func =
            |store: &mut Store<FilterState>, name: &str| instance.get_func(&mut *store, name);
        let exports = Exports {
            context_create: required(&instance, &mut store, "proxy_on_context_create")?,
            request_headers: required(&instance, &mut store, "proxy_on_request_headers")?,
            request_body: required(&instance, &mut store, "proxy_on_request_body")?,
            response_headers: required(&instance, &mut store, "proxy_on_response_headers")?,
            response_body: required(&instance, &mut store, "proxy_on_response_body")?,
            log: instance.get_typed_func(&mut store, "proxy_on_log").ok(),
            done: instance.get_typed_func(&mut store, "proxy_on_done").ok(),
            delete: instance.get_typed_func(&mut store, "proxy_on_delete").ok(),
            tick: instance.get_typed_func(&mut store, "proxy_on_tick").ok(),
            queue_ready: instance
                .get_typed_func(&mut store, "proxy_on_queue_ready")
                .ok(),
            request_trailers: instance
                .get_typed_func(&mut store, "proxy_on_request_trailers")
                .ok(),
            response_trailers: instance
                .get_typed_func(&mut store, "proxy_on_response_trailers")
                .ok(),
            call_response: instance
                .get_typed_func(&mut store, "proxy_on_http_call_response")
                .ok(),
        };
        let init = func(&mut store, "_initialize").or_else(|| func(&mut store, "_start"));
        if let Some(init) = init.and_then(|f| f.typed::<(), ()>(&store).ok())
            && let Err(e) = init.call(&mut store, ())
        {
            return Err(failed(&mut store, e));
        }
        let config_len = i32::try_from(self.configuration.len()).unwrap_or(i32::MAX);
        let started = exports
            .context_create
            .call(&mut store, (ROOT, 0))
            .and_then(|()| {
                let vm_start: TypedFunc<(i32, i32), i32> =
                    instance.get_typed_func(&mut store, "proxy_on_vm_start")?;
                vm_start.call(&mut store, (ROOT, 0))
            });
        match started {
            Ok(0) => {
                return Err(HookError::Instantiate(
                    "proxy_on_vm_start answered false".into(),
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(failed(&mut store, e)),
        }
        let configure: Result<TypedFunc<(i32, i32), i32>, _> =
            instance.get_typed_func(&mut store, "proxy_on_configure");
        if let Ok(configure) = configure {
            match configure.call(&mut store, (ROOT, config_len)) {
                Ok(0) => {
                    return Err(HookError::ConfigRefused(
                        "proxy_on_configure answered false (see the filter's log)".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(failed(&mut store, e)),
            }
        }
        Ok(Live { store, exports })
    }

    /// Runs one hook for `state`.
    pub(super) fn run(
        &self,
        context: &FilterContext,
        state: Option<Box<RequestState>>,
        body: Option<Vec<u8>>,
        call: impl FnOnce(&mut Live) -> wasmtime::Result<i32>,
    ) -> (Option<Box<RequestState>>, Result<Outcome, HookError>) {
        self.run_with(context, state, body, None, call)
    }

    /// One call into the instance holding `context`, with `state` lent to it; the state always
    /// comes back. An instance that fails is dropped (with every context in it).
    pub(super) fn run_with(
        &self,
        context: &FilterContext,
        state: Option<Box<RequestState>>,
        body: Option<Vec<u8>>,
        call_response: Option<HttpResponse>,
        call: impl FnOnce(&mut Live) -> wasmtime::Result<i32>,
    ) -> (Option<Box<RequestState>>, Result<Outcome, HookError>) {
        let mut slot = lock(&self.slots[context.slot]);
        if slot.generation != context.generation {
            let error =
                HookError::Trap("the filter's instance was restarted after a failure".into());
            return (state, Err(error));
        }
        if slot.live.is_none() {
            match self.start(context.slot) {
                Ok(live) => slot.live = Some(live),
                Err(e) => return (state, Err(e)),
            }
        }
        let generation = slot.generation;
        let Some(live) = slot.live.as_mut() else {
            return (state, Err(HookError::Instantiate("no instance".into())));
        };
        self.delete_orphans(live, context.slot, generation);
        if let Err(e) = self.tell_ready_queues(live, context.slot) {
            let error = classify(&mut live.store, &e);
            slot.live = None;
            slot.generation += 1;
            return (state, Err(error));
        }
        begin(&mut live.store, self.env.time_limit);
        let data = live.store.data_mut();
        data.request = state.map(|mut state| {
            // A filter reads and changes the map as it is: the proxy's own fields go in first.
            state.request_headers();
            state
        });
        data.body = body;
        data.call_response = call_response;
        let result = call(live);
        let data = live.store.data_mut();
        let state = data.request.take();
        let outcome = Outcome {
            action: 0,
            local: data.local_response.take(),
            resumed: std::mem::take(&mut data.resumed),
            callouts: std::mem::take(&mut data.callouts),
            body: data.body.take(),
        };
        data.call_response = None;
        match result {
            Ok(action) => (state, Ok(Outcome { action, ..outcome })),
            Err(e) => {
                let error = classify(&mut live.store, &e);
                slot.live = None;
                slot.generation += 1;
                (state, Err(error))
            }
        }
    }

    /// Tells the instance's root context of the queues it registered that got values
    /// (`proxy_on_queue_ready`).
    fn tell_ready_queues(&self, live: &mut Live, slot: usize) -> wasmtime::Result<()> {
        let ready = self.shared.take_ready(slot);
        let Some(queue_ready) = &live.exports.queue_ready else {
            return Ok(());
        };
        for id in ready {
            begin(&mut live.store, self.env.time_limit);
            queue_ready.call(&mut live.store, (ROOT, id as i32))?;
        }
        Ok(())
    }

    /// Deletes the contexts of requests that ended without the filter's log callback.
    pub(super) fn delete_orphans(&self, live: &mut Live, slot: usize, generation: u64) {
        let mine: Vec<i32> = {
            let mut orphans = lock(&self.orphans);
            let (mine, rest): (Vec<_>, Vec<_>) = orphans
                .drain(..)
                .partition(|(s, g, _)| *s == slot && *g == generation);
            *orphans = rest
                .into_iter()
                .filter(|(s, g, _)| *s != slot || *g > generation)
                .collect();
            mine.into_iter().map(|(_, _, id)| id).collect()
        };
        if mine.is_empty() {
            return;
        }
        begin(&mut live.store, self.env.time_limit);
        for id in mine {
            lock(&self.held).retain(|(context, _), _| *context != id);
            if let Some(done) = &live.exports.done {
                let _ = done.call(&mut live.store, id);
            }
            if let Some(delete) = &live.exports.delete {
                let _ = delete.call(&mut live.store, id);
            }
        }
    }
}

impl Outcome {
    pub(super) fn empty() -> Self {
        Self {
            action: abi::ACTION_CONTINUE,
            local: None,
            resumed: false,
            callouts: Vec::new(),
            body: None,
        }
    }

    pub(super) fn merge(&mut self, other: Outcome) {
        self.local = self.local.take().or(other.local);
        self.resumed |= other.resumed;
        self.callouts.extend(other.callouts);
    }
}

/// An export every filter has, typed.
fn required<Params: wasmtime::WasmParams, Results: wasmtime::WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut Store<FilterState>,
    name: &str,
) -> Result<TypedFunc<Params, Results>, HookError> {
    instance
        .get_typed_func(&mut *store, name)
        .map_err(|e| HookError::Instantiate(format!("{name}: {e:#}")))
}

/// Prepares a store for a call: a fresh CPU budget of `limit`.
fn begin(store: &mut Store<FilterState>, limit: Duration) {
    crate::plugin::epoch::hook_running();
    let data = store.data_mut();
    data.cpu_base = None;
    data.limit = limit;
    data.timed_out = false;
    store.set_epoch_deadline(1);
}

fn classify(store: &mut Store<FilterState>, error: &wasmtime::Error) -> HookError {
    let data = store.data();
    crate::plugin::failures::hook_error(data.timed_out, data.out_of_memory, error, None)
}
