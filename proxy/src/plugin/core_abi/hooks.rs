//! The hooks as the core module exports them: found once per instance, called with the
//! canonical ABI's integers, their results lifted from the plugin's memory, then its
//! post-return function called to free them.

use wasmtime::{ExternType, Instance, Module, Store, TypedFunc, ValType, WasmParams};

use super::guest::{self, Guest, area, copy_in, pair_at, slice, string_pairs, u32_at};
use crate::plugin::bindings::{
    AttemptOutcome, BodyInterest, Decision, LocalResponse, UpstreamError,
};
use crate::plugin::host::HostState;
use crate::plugin::instance::{BodyOf, HookCall};

const TICK: &str = "switchyard:plugin/tick@0.1.0#on-tick";
const REQUEST_CHUNK: &str = "switchyard:plugin/chunks@0.1.0#on-request-chunk";
const RESPONSE_CHUNK: &str = "switchyard:plugin/chunks@0.1.0#on-response-chunk";

/// Every export the core entry calls, with how many `i32` parameters its lowered form takes;
/// `true` for the ones every plugin has.
const HOOKS: [(&str, usize, bool); 10] = [
    ("init", 2, true),
    ("on-request", 0, true),
    ("on-request-body", 2, true),
    ("on-upstream-response", 2, true),
    ("on-response", 0, true),
    ("on-response-body", 2, true),
    ("on-log", 0, true),
    (TICK, 0, false),
    (REQUEST_CHUNK, 3, false),
    (RESPONSE_CHUNK, 3, false),
];

/// Checks the exports the core entry needs: the memory (32-bit, as the lowered types assume),
/// `cabi_realloc`, the hooks with their lowered types, and post-return functions of the type the ABI gives them.
pub fn check_exports(module: &Module) -> Result<(), String> {
    let func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(ty)) => Ok(Some(ty)),
        Some(_) => Err(format!("its export {name:?} is not a function")),
        None => Ok(None),
    };
    fn all_i32(mut types: impl ExactSizeIterator<Item = ValType>, count: usize) -> bool {
        types.len() == count && types.all(|t| matches!(t, ValType::I32))
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(memory)) if !memory.is_64() && !memory.is_shared() => {}
        _ => return Err("it exports no 32-bit, unshared memory".into()),
    }
    match func("cabi_realloc")? {
        Some(ty) if all_i32(ty.params(), 4) && all_i32(ty.results(), 1) => {}
        _ => return Err("it exports no `cabi_realloc` of the ABI's type".into()),
    }
    for (name, params, required) in HOOKS {
        match func(name)? {
            Some(ty) if all_i32(ty.params(), params) && all_i32(ty.results(), 1) => {}
            None if !required => {}
            _ => return Err(format!("its export {name:?} is missing or of another type")),
        }
        match func(&format!("cabi_post_{name}"))? {
            Some(ty) if !(all_i32(ty.params(), 1) && ty.results().len() == 0) => {
                return Err(format!(
                    "its post-return function for {name:?} is of another type"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A hook export and its post-return function.
struct Export<P> {
    func: TypedFunc<P, i32>,
    post: Option<TypedFunc<i32, ()>>,
    /// Whether a result holding no list skips the post-return call (wit-bindgen's post-return
    /// functions only free lists).
    lean: bool,
}

impl<P: WasmParams> Export<P> {
    fn get(
        instance: &Instance,
        store: &mut Store<HostState>,
        name: &str,
        lean: bool,
    ) -> wasmtime::Result<Self> {
        Ok(Self {
            func: instance.get_typed_func(&mut *store, name)?,
            post: instance
                .get_typed_func(&mut *store, &format!("cabi_post_{name}"))
                .ok(),
            lean,
        })
    }

    fn find(
        instance: &Instance,
        store: &mut Store<HostState>,
        name: &str,
        lean: bool,
    ) -> Option<Self> {
        instance.get_export(&mut *store, name)?;
        Self::get(instance, store, name, lean).ok()
    }

    /// Calls the export, lifts its result with `lift` (which also says whether the result holds
    /// a list), and frees it.
    fn call<R>(
        &self,
        store: &mut Store<HostState>,
        params: P,
        lift: impl FnOnce(&[u8], i32) -> wasmtime::Result<(R, bool)>,
    ) -> wasmtime::Result<R> {
        let ret = self.func.call(&mut *store, params)?;
        let memory = guest::memory_of(&*store)?;
        let (lifted, holds_lists) = lift(memory.data(&*store), ret)?;
        if let Some(post) = &self.post
            && (holds_lists || !self.lean)
        {
            post.call(&mut *store, ret)?;
        }
        Ok(lifted)
    }
}

/// One core instance's hooks.
pub struct CoreHooks {
    init: Export<(i32, i32)>,
    on_request: Export<()>,
    on_request_body: Export<(i32, i32)>,
    on_upstream_response: Export<(i32, i32)>,
    on_response: Export<()>,
    on_response_body: Export<(i32, i32)>,
    on_log: Export<()>,
    on_tick: Option<Export<()>>,
    on_request_chunk: Option<Export<(i32, i32, i32)>>,
    on_response_chunk: Option<Export<(i32, i32, i32)>>,
}

impl CoreHooks {
    /// Finds the hooks of a new instance and gives its store the plugin's memory and allocator.
    /// `lean`: results without lists skip the post-return call ([`super::CorePre`]).
    pub fn new(
        instance: &Instance,
        store: &mut Store<HostState>,
        lean: bool,
    ) -> wasmtime::Result<Self> {
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| wasmtime::Error::msg("the plugin exports no memory"))?;
        let realloc = instance.get_typed_func(&mut *store, "cabi_realloc")?;
        store.data_mut().guest = Some(Guest { memory, realloc });
        Ok(Self {
            init: Export::get(instance, store, "init", lean)?,
            on_request: Export::get(instance, store, "on-request", lean)?,
            on_request_body: Export::get(instance, store, "on-request-body", lean)?,
            on_upstream_response: Export::get(instance, store, "on-upstream-response", lean)?,
            on_response: Export::get(instance, store, "on-response", lean)?,
            on_response_body: Export::get(instance, store, "on-response-body", lean)?,
            on_log: Export::get(instance, store, "on-log", lean)?,
            on_tick: Export::find(instance, store, TICK, lean),
            on_request_chunk: Export::find(instance, store, REQUEST_CHUNK, lean),
            on_response_chunk: Export::find(instance, store, RESPONSE_CHUNK, lean),
        })
    }

    /// Whether the plugin exports the chunk hook for `body`.
    pub fn has_chunk(&self, body: BodyOf) -> bool {
        match body {
            BodyOf::Request => self.on_request_chunk.is_some(),
            BodyOf::Response => self.on_response_chunk.is_some(),
        }
    }

    /// Whether the plugin exports `on-tick`.
    pub fn has_tick(&self) -> bool {
        self.on_tick.is_some()
    }

    /// `init` with the plugin's config as JSON: what bodies it wants, or why it refuses.
    pub fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<BodyInterest, String>> {
        let (ptr, len) = copy_in(&mut *store, config.as_bytes())?;
        self.init
            .call(store, (ptr as i32, len as i32), |memory, ret| {
                let at = area(memory, ret, 4, 12)?;
                match memory[at as usize] {
                    0 => {
                        let bits = memory[at as usize + 4];
                        let mut interest = BodyInterest::empty();
                        if bits & 1 != 0 {
                            interest |= BodyInterest::REQUEST_BODY;
                        }
                        if bits & 2 != 0 {
                            interest |= BodyInterest::RESPONSE_BODY;
                        }
                        Ok((Ok(interest), false))
                    }
                    1 => {
                        let (p, l) = pair_at(memory, at + 4)?;
                        Ok((Err(guest::text(memory, p, l)?.to_owned()), true))
                    }
                    _ => Err(wasmtime::Error::msg("init returned an invalid result")),
                }
            })
    }

    /// Calls the hook `call` names.
    pub fn call(
        &self,
        store: &mut Store<HostState>,
        call: &HookCall,
    ) -> wasmtime::Result<Decision> {
        match call {
            HookCall::Request => self.on_request.call(store, (), lift_decision),
            HookCall::RequestBody(body) => {
                let (ptr, len) = copy_in(&mut *store, body)?;
                let params = (ptr as i32, len as i32);
                self.on_request_body.call(store, params, lift_decision)
            }
            HookCall::UpstreamResponse(outcome) => {
                let params = match *outcome {
                    AttemptOutcome::Response(status) => (0, i32::from(status)),
                    AttemptOutcome::Error(UpstreamError::ConnectFailure) => (1, 0),
                    AttemptOutcome::Error(UpstreamError::Reset) => (1, 1),
                    AttemptOutcome::Error(UpstreamError::PerTryTimeout) => (1, 2),
                };
                self.on_upstream_response.call(store, params, lift_decision)
            }
            HookCall::Response => self.on_response.call(store, (), lift_decision),
            HookCall::ResponseBody(body) => {
                let (ptr, len) = copy_in(&mut *store, body)?;
                let params = (ptr as i32, len as i32);
                self.on_response_body.call(store, params, lift_decision)
            }
            HookCall::Log => self.on_log.call(store, (), lift_decision),
        }
    }

    /// `on-tick`, which the caller checked the plugin has ([`CoreHooks::has_tick`]).
    pub fn tick(&self, store: &mut Store<HostState>) -> wasmtime::Result<Decision> {
        match &self.on_tick {
            Some(on_tick) => on_tick.call(store, (), lift_decision),
            None => Ok(Decision::Unimplemented),
        }
    }

    /// A body's chunk through its chunk hook: the replacement, if the plugin made one.
    pub fn chunk(
        &self,
        store: &mut Store<HostState>,
        body: BodyOf,
        chunk: &[u8],
        end: bool,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        let export = match body {
            BodyOf::Request => &self.on_request_chunk,
            BodyOf::Response => &self.on_response_chunk,
        };
        let Some(export) = export else {
            return Ok(None);
        };
        let (ptr, len) = copy_in(&mut *store, chunk)?;
        export.call(
            store,
            (ptr as i32, len as i32, i32::from(end)),
            |memory, ret| {
                let at = area(memory, ret, 4, 12)?;
                match memory[at as usize] {
                    0 => Ok((None, false)),
                    1 => {
                        let (p, l) = pair_at(memory, at + 4)?;
                        Ok((Some(slice(memory, p, l)?.to_vec()), true))
                    }
                    _ => Err(wasmtime::Error::msg(
                        "a chunk hook returned an invalid option",
                    )),
                }
            },
        )
    }
}

/// A `decision` at `ret` (a tag byte, then its payload at offset 4), and whether it holds lists
/// (a local response's headers and body).
fn lift_decision(memory: &[u8], ret: i32) -> wasmtime::Result<(Decision, bool)> {
    let decision = decision_at(memory, ret)?;
    let holds_lists = matches!(decision, Decision::Respond(_));
    Ok((decision, holds_lists))
}

fn decision_at(memory: &[u8], ret: i32) -> wasmtime::Result<Decision> {
    let at = area(memory, ret, 4, 24)?;
    Ok(match memory[at as usize] {
        0 => Decision::Continue,
        1 => {
            let status = u32_at(memory, at + 4)? as u16;
            let (hp, hl) = pair_at(memory, at + 8)?;
            let (bp, bl) = pair_at(memory, at + 16)?;
            let headers = string_pairs(memory, hp, hl)?
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            Decision::Respond(LocalResponse {
                status,
                headers,
                body: slice(memory, bp, bl)?.to_vec(),
            })
        }
        2 => Decision::Retry(u32_at(memory, at + 4)?),
        3 => Decision::Delay(u32_at(memory, at + 4)?),
        4 => Decision::Unimplemented,
        _ => return Err(wasmtime::Error::msg("a hook returned an invalid decision")),
    })
}
