//! The host side of proxy-wasm's imports (module `env`): what a filter's calls do to the request
//! lent to its instance, to the plugin's shared data and queues, its metrics and its callouts.
//!
//! Every function of ABI 0.2.1 is defined, so filters built with any SDK link: gRPC callouts
//! and foreign functions answer `Unimplemented` (12) rather than trapping. A module importing
//! anything else is refused at load, naming the import ([`missing_imports`]).

mod calls;
mod headers;
mod properties;
mod shared;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{Caller, Extern, Linker, ResourceLimiter};

use super::abi::{Status, buffer, stream};
use crate::plugin::bindings::{HttpRequest, HttpResponse, LocalResponse};
use crate::plugin::host::PluginEnv;
use crate::plugin::request_state::RequestState;
use crate::sandbox::{FILTER_MAX_DEFINED as MAX_DEFINED, FILTER_MAX_QUEUED as MAX_QUEUED};
use crate::upstream::Clusters;

/// What every instance of one filter shares: its metrics and shared queues (shared data is the
/// plugin's [`crate::plugin::shared::SharedState`]).
#[derive(Debug, Default)]
pub struct FilterShared {
    metrics: Mutex<Vec<(String, i32, Metric)>>,
    /// By queue id: its name, its values, and the instance (slot) whose root context
    /// registered it last — the one told when values arrive.
    queues: Mutex<Vec<SharedQueue>>,
    /// Queues with values their owner has not been told of yet, as (slot, queue id).
    ready: Mutex<Vec<(usize, u32)>>,
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(metrics::Counter, Arc<std::sync::atomic::AtomicU64>),
    Gauge(metrics::Gauge, Arc<std::sync::atomic::AtomicU64>),
    Histogram(metrics::Histogram),
}

/// A shared queue: its name, its values, the slot of the instance that registered it last.
type SharedQueue = (String, VecDeque<Vec<u8>>, Option<usize>);

/// A callout a filter dispatched during a call, for the host to make once the call returns.
#[derive(Debug)]
pub struct Callout {
    pub token: u32,
    pub cluster: String,
    pub request: HttpRequest,
}

/// The data of one filter instance's store.
pub struct FilterState {
    pub env: Arc<PluginEnv>,
    /// Which of the filter's instances this is.
    pub slot: usize,
    pub shared: Arc<FilterShared>,
    /// The plugin's `[plugin.config]` as JSON: the filter's plugin configuration.
    pub configuration: Arc<[u8]>,
    /// The request of the callback running now, if any.
    pub request: Option<Box<RequestState>>,
    /// The clusters callouts resolve in when no request is in scope (ticks).
    pub clusters: Option<Arc<Clusters>>,
    /// The body piece a body callback sees (and may replace).
    pub body: Option<Vec<u8>>,
    /// The trailers a trailers callback sees (and may change).
    pub trailers: Option<http::HeaderMap>,
    /// The response of the callout being delivered, in `proxy_on_http_call_response`.
    pub call_response: Option<HttpResponse>,
    /// Set by `proxy_send_local_response`.
    pub local_response: Option<LocalResponse>,
    /// Set by `proxy_continue_stream`.
    pub resumed: bool,
    pub callouts: Vec<Callout>,
    next_token: u32,
    /// Asked for by `proxy_set_tick_period_milliseconds`.
    pub tick_period: Option<Duration>,
    /// The thread's CPU clock at the current call's first deadline check, and the CPU time the
    /// call may use.
    pub cpu_base: Option<Duration>,
    pub limit: Duration,
    pub timed_out: bool,
    pub out_of_memory: bool,
    /// The filter's allocator, found at its first use.
    malloc: Option<wasmtime::TypedFunc<i32, i32>>,
}

impl FilterShared {
    /// The queues that got values since `slot`'s instance was last told, forgotten here.
    pub fn take_ready(&self, slot: usize) -> Vec<u32> {
        let mut ready = lock(&self.ready);
        let (mine, rest): (Vec<_>, Vec<_>) = ready.drain(..).partition(|(s, _)| *s == slot);
        *ready = rest;
        mine.into_iter().map(|(_, id)| id).collect()
    }
}

impl FilterState {
    pub fn new(
        env: Arc<PluginEnv>,
        shared: Arc<FilterShared>,
        configuration: Arc<[u8]>,
        slot: usize,
    ) -> Self {
        Self {
            slot,
            env,
            shared,
            configuration,
            request: None,
            clusters: None,
            body: None,
            trailers: None,
            call_response: None,
            local_response: None,
            resumed: false,
            callouts: Vec::new(),
            next_token: 1,
            tick_period: None,
            cpu_base: None,
            limit: Duration::ZERO,
            timed_out: false,
            out_of_memory: false,
            malloc: None,
        }
    }
}

impl ResourceLimiter for FilterState {
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

type Ctx<'a> = Caller<'a, FilterState>;
type HostResult = wasmtime::Result<i32>;

/// The names of ABI 0.2.1's imports this host defines (all of them).
const IMPORTS: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
];

/// The imports of `module` this host does not provide, as `module.name`.
pub fn missing_imports(module: &wasmtime::Module) -> Vec<String> {
    module
        .imports()
        .filter(|i| !(i.module() == "env" && IMPORTS.contains(&i.name())))
        .map(|i| format!("{}.{}", i.module(), i.name()))
        .collect()
}

/// Defines every import on `linker`.
pub fn define(linker: &mut Linker<FilterState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", log)?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: Ctx<'_>, ret: i32| {
        write_u32(&mut c, ret, 1).map(|()| ok()) // debug: filters log what they log
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, ret: i32| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            write_bytes(&mut c, ret, &now.to_le_bytes()).map(|()| ok())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, period: i32| {
            let ms = u64::try_from(period).unwrap_or(0);
            c.data_mut().tick_period =
                (ms > 0).then(|| Duration::from_millis(ms).max(crate::sandbox::MIN_TICK));
            ok()
        },
    )?;
    linker.func_wrap("env", "proxy_get_buffer_bytes", get_buffer)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", set_buffer)?;
    linker.func_wrap("env", "proxy_get_header_map_pairs", headers::get_map_pairs)?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", headers::set_map_pairs)?;
    linker.func_wrap("env", "proxy_get_header_map_value", headers::get_map_value)?;
    linker.func_wrap("env", "proxy_add_header_map_value", headers::add_map_value)?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        headers::replace_map_value,
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        headers::remove_map_value,
    )?;
    linker.func_wrap("env", "proxy_get_property", properties::get_property)?;
    linker.func_wrap("env", "proxy_set_property", properties::set_property)?;
    linker.func_wrap("env", "proxy_get_shared_data", shared::get_shared_data)?;
    linker.func_wrap("env", "proxy_set_shared_data", shared::set_shared_data)?;
    linker.func_wrap("env", "proxy_register_shared_queue", shared::register_queue)?;
    linker.func_wrap("env", "proxy_resolve_shared_queue", shared::resolve_queue)?;
    linker.func_wrap("env", "proxy_enqueue_shared_queue", shared::enqueue)?;
    linker.func_wrap("env", "proxy_dequeue_shared_queue", shared::dequeue)?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Ctx<'_>, which: i32| {
            if which == stream::REQUEST || which == stream::RESPONSE {
                c.data_mut().resumed = true;
                ok()
            } else {
                status(Status::BadArgument)
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Ctx<'_>, _which: i32| {
            c.data_mut().local_response = Some(LocalResponse {
                status: 503,
                headers: Vec::new(),
                body: b"closed by a filter\n".to_vec(),
            });
            ok()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        calls::send_local_response,
    )?;
    linker.func_wrap("env", "proxy_http_call", calls::http_call)?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |_: Ctx<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32| unimplemented(),
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            unimplemented()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| unimplemented(),
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |_: Ctx<'_>, _: i32| {
        unimplemented()
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |_: Ctx<'_>, _: i32| {
        unimplemented()
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Ctx<'_>, code: i32, message: i32, message_len: i32| {
            write_u32(&mut c, code, 0)?;
            write_u32(&mut c, message, 0)?;
            write_u32(&mut c, message_len, 0).map(|()| ok())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |_: Ctx<'_>, _: i32| ok(),
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| unimplemented(),
    )?;
    linker.func_wrap("env", "proxy_done", |_: Ctx<'_>| ok())?;
    linker.func_wrap("env", "proxy_define_metric", shared::define_metric)?;
    linker.func_wrap("env", "proxy_increment_metric", shared::increment_metric)?;
    linker.func_wrap("env", "proxy_record_metric", shared::record_metric)?;
    linker.func_wrap("env", "proxy_get_metric", shared::get_metric)?;
    Ok(())
}

fn ok() -> i32 {
    Status::Ok as i32
}

fn status(status: Status) -> i32 {
    status as i32
}

fn unimplemented() -> i32 {
    Status::Unimplemented as i32
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn memory(c: &mut Ctx<'_>) -> wasmtime::Result<wasmtime::Memory> {
    c.get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmtime::Error::msg("the filter exports no memory"))
}

/// `len` bytes of the filter's memory at `ptr`.
fn read(c: &mut Ctx<'_>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    if len == 0 {
        return Ok(Vec::new());
    }
    if len > crate::sandbox::FILTER_MAX_ARGUMENT {
        return Err(wasmtime::Error::msg("a filter passed more than 64 MiB"));
    }
    let memory = memory(c)?;
    let mut out = vec![0; len];
    memory
        .read(&*c, ptr, &mut out)
        .map_err(|_| wasmtime::Error::msg("a filter passed a pointer outside its memory"))?;
    Ok(out)
}

fn read_string(c: &mut Ctx<'_>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(c, ptr, len)?).into_owned())
}

fn write_bytes(c: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let memory = memory(c)?;
    memory
        .write(&mut *c, ptr as u32 as usize, bytes)
        .map_err(|_| wasmtime::Error::msg("a filter passed a pointer outside its memory"))
}

fn write_u32(c: &mut Ctx<'_>, ptr: i32, value: u32) -> wasmtime::Result<()> {
    write_bytes(c, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the filter: memory from its allocator, the pointer and length written
/// where it asked.
fn give(c: &mut Ctx<'_>, bytes: &[u8], ret_ptr: i32, ret_len: i32) -> wasmtime::Result<()> {
    let malloc = match c.data().malloc.clone() {
        Some(malloc) => malloc,
        None => {
            let malloc = c
                .get_export("malloc")
                .or_else(|| c.get_export("proxy_on_memory_allocate"))
                .and_then(Extern::into_func)
                .ok_or_else(|| wasmtime::Error::msg("the filter exports no allocator (malloc)"))?
                .typed::<i32, i32>(&*c)?;
            c.data_mut().malloc = Some(malloc.clone());
            malloc
        }
    };
    let len = i32::try_from(bytes.len()).map_err(|_| wasmtime::Error::msg("value too large"))?;
    let at = malloc.call(&mut *c, len.max(1))?;
    if at == 0 {
        return Err(wasmtime::Error::msg("the filter's allocator returned null"));
    }
    write_bytes(c, at, bytes)?;
    write_u32(c, ret_ptr, at as u32)?;
    write_u32(c, ret_len, len as u32)
}

fn log(mut c: Ctx<'_>, level: i32, ptr: i32, len: i32) -> HostResult {
    let message = read_string(&mut c, ptr, len)?;
    let plugin = &*c.data().env.name;
    match level {
        0 => tracing::trace!(plugin, "{message}"),
        1 => tracing::debug!(plugin, "{message}"),
        2 => tracing::info!(plugin, "{message}"),
        3 => tracing::warn!(plugin, "{message}"),
        _ => tracing::error!(plugin, "{message}"),
    }
    Ok(ok())
}

fn get_buffer(
    mut c: Ctx<'_>,
    which: i32,
    start: i32,
    max: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> HostResult {
    let data = c.data();
    let bytes: Option<Vec<u8>> = match which {
        buffer::REQUEST_BODY | buffer::RESPONSE_BODY => data.body.clone(),
        buffer::CALL_RESPONSE_BODY => data.call_response.as_ref().map(|r| r.body.clone()),
        buffer::PLUGIN_CONFIGURATION => Some(data.configuration.to_vec()),
        buffer::VM_CONFIGURATION => Some(Vec::new()),
        _ => None,
    };
    let Some(bytes) = bytes else {
        return Ok(status(Status::NotFound));
    };
    let start = (start as u32 as usize).min(bytes.len());
    let end = start.saturating_add(max as u32 as usize).min(bytes.len());
    if start == end {
        return Ok(status(Status::NotFound));
    }
    give(&mut c, &bytes[start..end], ret_ptr, ret_len)?;
    Ok(ok())
}

fn set_buffer(mut c: Ctx<'_>, which: i32, start: i32, size: i32, ptr: i32, len: i32) -> HostResult {
    if which != buffer::REQUEST_BODY && which != buffer::RESPONSE_BODY {
        return Ok(status(Status::BadArgument));
    }
    let value = read(&mut c, ptr, len)?;
    let Some(body) = c.data_mut().body.as_mut() else {
        return Ok(status(Status::NotFound));
    };
    let start = (start as u32 as usize).min(body.len());
    let end = start.saturating_add(size as u32 as usize).min(body.len());
    body.splice(start..end, value);
    Ok(ok())
}
