//! A component instance's hooks, called through the component model: the plugins the core entry
//! does not take ([`super::core_abi`]) — components built by other toolchains, and plugins that
//! may call out, whose hooks run on a fiber.

use wasmtime::Store;
use wasmtime::component::{Instance, TypedFunc};

use super::bindings::{AttemptOutcome, BodyInterest, Decision, Filter};
use super::host::HostState;
use super::instance::{BodyOf, HookCall};

/// The exported interface holding `on-tick` (world `plugin`).
const TICK_INTERFACE: &str = "switchyard:plugin/tick@0.1.0";
/// The exported interface holding `on-response-chunk` (world `plugin`).
const CHUNKS_INTERFACE: &str = "switchyard:plugin/chunks@0.1.0";

/// `on-response-chunk`: a piece of the body and whether it is the last, to the replacement.
type ChunkFunc = TypedFunc<(Vec<u8>, bool), (Option<Vec<u8>>,)>;

/// A component instance's hooks.
pub struct ComponentHooks {
    filter: Filter,
    /// For plugins without async imports: the head hooks called directly, no fiber switch.
    sync_hooks: Option<SyncHooks>,
    /// `on-tick`, which plugins built before ticks existed do not export.
    on_tick: Option<TypedFunc<(), (Decision,)>>,
    /// `on-response-chunk` and `on-request-chunk`, likewise.
    on_response_chunk: Option<ChunkFunc>,
    on_request_chunk: Option<ChunkFunc>,
}

/// Typed handles to the hooks that take no list, for synchronous calls.
struct SyncHooks {
    on_request: TypedFunc<(), (Decision,)>,
    on_upstream_response: TypedFunc<(AttemptOutcome,), (Decision,)>,
    on_response: TypedFunc<(), (Decision,)>,
    on_log: TypedFunc<(), (Decision,)>,
}

impl SyncHooks {
    fn get(instance: &Instance, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        Ok(Self {
            on_request: instance.get_typed_func(&mut *store, "on-request")?,
            on_upstream_response: instance.get_typed_func(&mut *store, "on-upstream-response")?,
            on_response: instance.get_typed_func(&mut *store, "on-response")?,
            on_log: instance.get_typed_func(&mut *store, "on-log")?,
        })
    }
}

impl ComponentHooks {
    /// Finds a new instance's hooks; `synchronous` when the plugin imports nothing async, so
    /// its head hooks can be called without a fiber.
    pub fn new(
        instance: &Instance,
        store: &mut Store<HostState>,
        synchronous: bool,
    ) -> wasmtime::Result<Self> {
        let filter = Filter::new(&mut *store, instance)?;
        let sync_hooks = if synchronous {
            Some(SyncHooks::get(instance, store)?)
        } else {
            None
        };
        // Plugins built before ticks existed do not export `on-tick`.
        let mut export = |interface: &str, name: &str| {
            let interface = instance.get_export_index(&mut *store, None, interface)?;
            instance.get_export_index(&mut *store, Some(&interface), name)
        };
        let (tick, response_chunk, request_chunk) = (
            export(TICK_INTERFACE, "on-tick"),
            export(CHUNKS_INTERFACE, "on-response-chunk"),
            export(CHUNKS_INTERFACE, "on-request-chunk"),
        );
        Ok(Self {
            filter,
            sync_hooks,
            on_tick: tick.and_then(|f| instance.get_typed_func(&mut *store, f).ok()),
            on_response_chunk: response_chunk
                .and_then(|f| instance.get_typed_func(&mut *store, f).ok()),
            on_request_chunk: request_chunk
                .and_then(|f| instance.get_typed_func(&mut *store, f).ok()),
        })
    }

    /// `init` with the plugin's config as JSON: what bodies it wants, or why it refuses.
    pub async fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<BodyInterest, String>> {
        self.filter.call_init(store, config).await
    }

    /// Whether the plugin exports the chunk hook for `body`.
    pub fn has_chunk(&self, body: BodyOf) -> bool {
        self.chunk_hook(body).is_some()
    }

    fn chunk_hook(&self, body: BodyOf) -> Option<&ChunkFunc> {
        match body {
            BodyOf::Request => self.on_request_chunk.as_ref(),
            BodyOf::Response => self.on_response_chunk.as_ref(),
        }
    }

    /// Whether the plugin exports `on-tick`.
    pub fn has_tick(&self) -> bool {
        self.on_tick.is_some()
    }

    /// A head hook called directly, when the plugin imports nothing async; `None` when the call
    /// needs the async path.
    pub fn call_sync(
        &self,
        store: &mut Store<HostState>,
        call: &HookCall,
    ) -> Option<wasmtime::Result<Decision>> {
        let hooks = self.sync_hooks.as_ref()?;
        let result = match call {
            HookCall::Request => hooks.on_request.call(store, ()),
            HookCall::UpstreamResponse(outcome) => {
                hooks.on_upstream_response.call(store, (*outcome,))
            }
            HookCall::Response => hooks.on_response.call(store, ()),
            HookCall::Log => hooks.on_log.call(store, ()),
            HookCall::RequestBody(_) | HookCall::ResponseBody(_) => return None,
        };
        Some(result.map(|(decision,)| decision))
    }

    /// Any hook, on a fiber.
    pub async fn call(
        &self,
        store: &mut Store<HostState>,
        call: HookCall,
    ) -> wasmtime::Result<Decision> {
        let filter = &self.filter;
        match call {
            HookCall::Request => filter.call_on_request(store).await,
            HookCall::RequestBody(body) => filter.call_on_request_body(store, &body).await,
            HookCall::UpstreamResponse(outcome) => {
                filter.call_on_upstream_response(store, outcome).await
            }
            HookCall::Response => filter.call_on_response(store).await,
            HookCall::ResponseBody(body) => filter.call_on_response_body(store, &body).await,
            HookCall::Log => filter.call_on_log(store).await,
        }
    }

    /// `on-tick`, directly or on a fiber.
    pub async fn tick(&self, store: &mut Store<HostState>) -> wasmtime::Result<Decision> {
        let Some(on_tick) = &self.on_tick else {
            return Ok(Decision::Unimplemented);
        };
        let (decision,) = if self.sync_hooks.is_some() {
            on_tick.call(store, ())?
        } else {
            on_tick.call_async(store, ()).await?
        };
        Ok(decision)
    }

    /// A body's chunk through its chunk hook: the replacement, if the plugin made one.
    pub async fn chunk(
        &self,
        store: &mut Store<HostState>,
        body: BodyOf,
        chunk: Vec<u8>,
        end: bool,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        let Some(on_chunk) = self.chunk_hook(body) else {
            return Ok(None);
        };
        let (replacement,) = if self.sync_hooks.is_some() {
            on_chunk.call(store, (chunk, end))?
        } else {
            on_chunk.call_async(store, (chunk, end)).await?
        };
        Ok(replacement)
    }
}
