//! The host side of proxy-wasm's imports (module `env`): what a filter's calls do to the request
//! lent to its instance, to the plugin's shared data and queues, its metrics and its callouts.
//!
//! Every function of ABI 0.2.1 is defined, so filters built with any SDK link: gRPC callouts
//! and foreign functions answer `Unimplemented` (12) rather than trapping. A module importing
//! anything else is refused at load, naming the import ([`missing_imports`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use wasmtime::{Caller, Extern, Linker, ResourceLimiter};

use super::abi::{self, Status, buffer, map, metric, stream};
use crate::plugin::bindings::{HttpRequest, HttpResponse, LocalResponse};
use crate::plugin::host::PluginEnv;
use crate::plugin::request_state::RequestState;
use crate::upstream::Clusters;

/// What every instance of one filter shares: its metrics and shared queues (shared data is the
/// plugin's [`crate::plugin::shared::SharedState`]).
#[derive(Debug, Default)]
pub struct FilterShared {
    metrics: Mutex<Vec<(String, i32, Metric)>>,
    queues: Mutex<Vec<(String, VecDeque<Vec<u8>>)>>,
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(metrics::Counter, Arc<std::sync::atomic::AtomicU64>),
    Gauge(metrics::Gauge, Arc<std::sync::atomic::AtomicU64>),
    Histogram(metrics::Histogram),
}

/// Most metrics and queues one filter may define.
const MAX_DEFINED: usize = 1024;
/// Most values one shared queue holds; enqueueing more answers `InternalFailure`.
const MAX_QUEUED: usize = 10_000;

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
    pub shared: Arc<FilterShared>,
    /// The plugin's `[plugin.config]` as JSON: the filter's plugin configuration.
    pub configuration: Arc<[u8]>,
    /// The request of the callback running now, if any.
    pub request: Option<Box<RequestState>>,
    /// The clusters callouts resolve in when no request is in scope (ticks).
    pub clusters: Option<Arc<Clusters>>,
    /// The body piece a body callback sees (and may replace).
    pub body: Option<Vec<u8>>,
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
    /// Epoch ticks the current call has run, and the CPU time it may use.
    pub ticks: u32,
    pub limit: Duration,
    pub timed_out: bool,
    pub out_of_memory: bool,
}

impl FilterState {
    pub fn new(env: Arc<PluginEnv>, shared: Arc<FilterShared>, configuration: Arc<[u8]>) -> Self {
        Self {
            env,
            shared,
            configuration,
            request: None,
            clusters: None,
            body: None,
            call_response: None,
            local_response: None,
            resumed: false,
            callouts: Vec::new(),
            next_token: 1,
            tick_period: None,
            ticks: 0,
            limit: Duration::ZERO,
            timed_out: false,
            out_of_memory: false,
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
        Ok(desired <= 100_000)
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
            c.data_mut().tick_period = (ms > 0).then(|| Duration::from_millis(ms.max(10)));
            ok()
        },
    )?;
    linker.func_wrap("env", "proxy_get_buffer_bytes", get_buffer)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", set_buffer)?;
    linker.func_wrap("env", "proxy_get_header_map_pairs", get_map_pairs)?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", set_map_pairs)?;
    linker.func_wrap("env", "proxy_get_header_map_value", get_map_value)?;
    linker.func_wrap("env", "proxy_add_header_map_value", add_map_value)?;
    linker.func_wrap("env", "proxy_replace_header_map_value", replace_map_value)?;
    linker.func_wrap("env", "proxy_remove_header_map_value", remove_map_value)?;
    linker.func_wrap("env", "proxy_get_property", get_property)?;
    linker.func_wrap("env", "proxy_set_property", set_property)?;
    linker.func_wrap("env", "proxy_get_shared_data", get_shared_data)?;
    linker.func_wrap("env", "proxy_set_shared_data", set_shared_data)?;
    linker.func_wrap("env", "proxy_register_shared_queue", register_queue)?;
    linker.func_wrap("env", "proxy_resolve_shared_queue", resolve_queue)?;
    linker.func_wrap("env", "proxy_enqueue_shared_queue", enqueue)?;
    linker.func_wrap("env", "proxy_dequeue_shared_queue", dequeue)?;
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
    linker.func_wrap("env", "proxy_send_local_response", send_local_response)?;
    linker.func_wrap("env", "proxy_http_call", http_call)?;
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
    linker.func_wrap("env", "proxy_define_metric", define_metric)?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Ctx<'_>, id: i32, offset: i64| {
            with_metric(&c, id, |m| match m {
                Metric::Counter(counter, value) => {
                    let by = u64::try_from(offset).unwrap_or(0);
                    counter.increment(by);
                    value.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
                }
                Metric::Gauge(gauge, value) => {
                    let now = value.load(std::sync::atomic::Ordering::Relaxed) as i64 + offset;
                    value.store(now.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
                    gauge.set(now as f64);
                }
                Metric::Histogram(h) => h.record(offset as f64),
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: Ctx<'_>, id: i32, value: i64| {
            with_metric(&c, id, |m| match m {
                Metric::Counter(counter, total) => {
                    counter.absolute(value as u64);
                    total.store(value as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Metric::Gauge(gauge, now) => {
                    gauge.set(value as u64 as f64);
                    now.store(value as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Metric::Histogram(h) => h.record(value as u64 as f64),
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: i32, ret: i32| {
            let value = lock(&c.data().shared.metrics)
                .get(usize::try_from(id).unwrap_or(usize::MAX))
                .map(|(_, _, m)| match m {
                    Metric::Counter(_, v) | Metric::Gauge(_, v) => {
                        Some(v.load(std::sync::atomic::Ordering::Relaxed))
                    }
                    Metric::Histogram(_) => None,
                });
            match value {
                Some(Some(v)) => write_bytes(&mut c, ret, &v.to_le_bytes()).map(|()| ok()),
                Some(None) => Ok(status(Status::BadArgument)),
                None => Ok(status(Status::NotFound)),
            }
        },
    )?;
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
    if len > 64 * 1024 * 1024 {
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
    let malloc = c
        .get_export("malloc")
        .or_else(|| c.get_export("proxy_on_memory_allocate"))
        .and_then(Extern::into_func)
        .ok_or_else(|| wasmtime::Error::msg("the filter exports no allocator (malloc)"))?
        .typed::<i32, i32>(&*c)?;
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

/// The pairs of header map `which`, pseudo-headers first as Envoy gives them.
fn map_pairs(state: &FilterState, which: i32) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let pairs = |headers: &http::HeaderMap| -> Vec<(Vec<u8>, Vec<u8>)> {
        headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    };
    match which {
        map::REQUEST_HEADERS => {
            let head = &state.request.as_ref()?.head;
            let mut all = vec![
                (
                    b":method".to_vec(),
                    head.method.as_str().as_bytes().to_vec(),
                ),
                (
                    b":path".to_vec(),
                    head.uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .as_bytes()
                        .to_vec(),
                ),
                (b":authority".to_vec(), authority(head).into_bytes()),
                (
                    b":scheme".to_vec(),
                    head.uri.scheme_str().unwrap_or("http").as_bytes().to_vec(),
                ),
            ];
            all.extend(pairs(&head.headers));
            Some(all)
        }
        map::RESPONSE_HEADERS => {
            let response = state.request.as_ref()?.response.as_ref()?;
            let mut all = vec![(
                b":status".to_vec(),
                response.status.as_str().as_bytes().to_vec(),
            )];
            all.extend(pairs(&response.headers));
            Some(all)
        }
        map::CALL_RESPONSE_HEADERS => {
            let response = state.call_response.as_ref()?;
            let mut all = vec![(
                b":status".to_vec(),
                response.status.to_string().into_bytes(),
            )];
            all.extend(
                response
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())),
            );
            Some(all)
        }
        map::REQUEST_TRAILERS | map::RESPONSE_TRAILERS | map::CALL_RESPONSE_TRAILERS => {
            Some(Vec::new())
        }
        _ => None,
    }
}

fn authority(head: &http::request::Parts) -> String {
    head.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| head.uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default()
}

fn get_map_pairs(mut c: Ctx<'_>, which: i32, ret_ptr: i32, ret_len: i32) -> HostResult {
    let Some(pairs) = map_pairs(c.data(), which) else {
        return Ok(status(Status::NotFound));
    };
    let bytes = abi::serialize_map(pairs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    give(&mut c, &bytes, ret_ptr, ret_len)?;
    Ok(ok())
}

fn get_map_value(
    mut c: Ctx<'_>,
    which: i32,
    key: i32,
    key_len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> HostResult {
    let key = read(&mut c, key, key_len)?.to_ascii_lowercase();
    let value = map_pairs(c.data(), which)
        .and_then(|pairs| pairs.into_iter().find(|(n, _)| *n == key).map(|(_, v)| v));
    match value {
        Some(value) => give(&mut c, &value, ret_ptr, ret_len).map(|()| ok()),
        None => Ok(status(Status::NotFound)),
    }
}

/// How a header map is changed.
enum Change {
    Add,
    Replace,
    Remove,
}

/// Applies one change to header map `which` of the request in scope.
fn change_map(
    state: &mut FilterState,
    which: i32,
    name: &[u8],
    value: &[u8],
    change: Change,
) -> i32 {
    let Some(request) = state.request.as_mut() else {
        return status(Status::NotFound);
    };
    if name.first() == Some(&b':') {
        return change_pseudo(request, which, name, value);
    }
    let headers = match which {
        map::REQUEST_HEADERS => &mut request.head.headers,
        map::RESPONSE_HEADERS => match request.response.as_mut() {
            Some(response) => &mut response.headers,
            None => return status(Status::NotFound),
        },
        map::REQUEST_TRAILERS | map::RESPONSE_TRAILERS => return unimplemented(),
        _ => return status(Status::BadArgument),
    };
    let Ok(name) = HeaderName::from_bytes(name) else {
        return status(Status::BadArgument);
    };
    if let Change::Remove = change {
        headers.remove(&name);
        return ok();
    }
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return status(Status::BadArgument);
    };
    match change {
        Change::Add => {
            headers.append(name, value);
        }
        Change::Replace | Change::Remove => {
            headers.insert(name, value);
        }
    }
    ok()
}

/// `:path`, `:method` and `:authority` of the request can be rewritten; the rest are read-only.
fn change_pseudo(request: &mut RequestState, which: i32, name: &[u8], value: &[u8]) -> i32 {
    if which != map::REQUEST_HEADERS {
        return status(Status::BadArgument);
    }
    match name {
        b":path" => match http::uri::PathAndQuery::try_from(value) {
            Ok(path) => {
                let mut parts = request.head.uri.clone().into_parts();
                parts.path_and_query = Some(path);
                match http::Uri::from_parts(parts) {
                    Ok(uri) => {
                        request.head.uri = uri;
                        ok()
                    }
                    Err(_) => status(Status::BadArgument),
                }
            }
            Err(_) => status(Status::BadArgument),
        },
        b":method" => match http::Method::from_bytes(value) {
            Ok(method) => {
                request.head.method = method;
                ok()
            }
            Err(_) => status(Status::BadArgument),
        },
        b":authority" => match HeaderValue::from_bytes(value) {
            Ok(host) => {
                request.head.headers.insert(http::header::HOST, host);
                ok()
            }
            Err(_) => status(Status::BadArgument),
        },
        _ => status(Status::BadArgument),
    }
}

fn add_map_value(mut c: Ctx<'_>, which: i32, k: i32, kl: i32, v: i32, vl: i32) -> HostResult {
    let (name, value) = (read(&mut c, k, kl)?, read(&mut c, v, vl)?);
    Ok(change_map(c.data_mut(), which, &name, &value, Change::Add))
}

fn replace_map_value(mut c: Ctx<'_>, which: i32, k: i32, kl: i32, v: i32, vl: i32) -> HostResult {
    let (name, value) = (read(&mut c, k, kl)?, read(&mut c, v, vl)?);
    Ok(change_map(
        c.data_mut(),
        which,
        &name,
        &value,
        Change::Replace,
    ))
}

fn remove_map_value(mut c: Ctx<'_>, which: i32, k: i32, kl: i32) -> HostResult {
    let name = read(&mut c, k, kl)?;
    Ok(change_map(c.data_mut(), which, &name, &[], Change::Remove))
}

fn set_map_pairs(mut c: Ctx<'_>, which: i32, ptr: i32, len: i32) -> HostResult {
    let bytes = read(&mut c, ptr, len)?;
    let Some(pairs) = abi::deserialize_map(&bytes) else {
        return Ok(status(Status::SerializationFailure));
    };
    let state = c.data_mut();
    let headers = match (which, state.request.as_mut()) {
        (map::REQUEST_HEADERS, Some(r)) => &mut r.head.headers,
        (map::RESPONSE_HEADERS, Some(r)) => match r.response.as_mut() {
            Some(response) => &mut response.headers,
            None => return Ok(status(Status::NotFound)),
        },
        _ => return Ok(status(Status::BadArgument)),
    };
    headers.clear();
    for (name, value) in &pairs {
        if name.first() == Some(&b':') {
            continue;
        }
        let code = change_map(state, which, name, value, Change::Add);
        if code != ok() {
            return Ok(code);
        }
    }
    for (name, value) in pairs.iter().filter(|(n, _)| n.first() == Some(&b':')) {
        if let Some(request) = state.request.as_mut() {
            change_pseudo(request, which, name, value);
        }
    }
    Ok(ok())
}

/// The well-known attributes a filter can read (Envoy's names), as Envoy encodes them: strings
/// as bytes, integers as 8 bytes little-endian, booleans as one byte.
fn property(state: &FilterState, path: &[&str]) -> Option<Vec<u8>> {
    let int = |n: i64| n.to_le_bytes().to_vec();
    let text = |s: &str| s.as_bytes().to_vec();
    let key = path.join(".");
    if key == "plugin_name" {
        return Some(text(&state.env.name));
    }
    if matches!(key.as_str(), "plugin_root_id" | "plugin_vm_id") {
        return Some(Vec::new());
    }
    let request = state.request.as_ref()?;
    let head = &request.head;
    let tls = request.tls.as_ref();
    let peer_identity = tls.and_then(|t| t.identity.as_ref());
    let found = match key.as_str() {
        "request.path" => text(head.uri.path_and_query().map_or("/", |p| p.as_str())),
        "request.url_path" => text(head.uri.path()),
        "request.method" => text(head.method.as_str()),
        "request.host" => text(&authority(head)),
        "request.scheme" => text(if tls.is_some() { "https" } else { "http" }),
        "request.protocol" => text(match head.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        }),
        "request.id" => request.request_id.as_bytes().to_vec(),
        "request.useragent" => head
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| v.as_bytes().to_vec())?,
        "source.address" => text(&request.peer.to_string()),
        "source.port" => int(i64::from(request.peer.port())),
        "connection.mtls" => vec![u8::from(peer_identity.is_some())],
        "connection.tls_version" if tls.is_some() => text("TLSv1.3"),
        "connection.requested_server_name" => text(tls.and_then(|t| t.sni.as_deref())?),
        "connection.uri_san_peer_certificate" => {
            text(peer_identity.and_then(|i| i.spiffe_id.as_deref())?)
        }
        "connection.subject_peer_certificate" => {
            text(peer_identity.and_then(|i| i.subject.as_deref())?)
        }
        "connection.dns_san_peer_certificate" => {
            text(peer_identity.and_then(|i| i.dns_names.first().map(String::as_str))?)
        }
        "listener_name" | "xds.listener_name" => text(&request.listener),
        "cluster_name" | "xds.cluster_name" => text(&request.destination.as_ref()?.label),
        "response.code" => int(i64::from(request.response.as_ref()?.status.as_u16())),
        _ => request.context.get(&format!("proxy-wasm:{key}"))?.clone(),
    };
    Some(found)
}

fn get_property(mut c: Ctx<'_>, ptr: i32, len: i32, ret_ptr: i32, ret_len: i32) -> HostResult {
    let raw = read(&mut c, ptr, len)?;
    let path = abi::property_path(&raw);
    match property(c.data(), &path) {
        Some(value) => give(&mut c, &value, ret_ptr, ret_len).map(|()| ok()),
        None => Ok(status(Status::NotFound)),
    }
}

/// A filter's own attributes, kept with the request for the filters after it.
fn set_property(mut c: Ctx<'_>, ptr: i32, len: i32, value: i32, value_len: i32) -> HostResult {
    let raw = read(&mut c, ptr, len)?;
    let value = read(&mut c, value, value_len)?;
    let key = format!("proxy-wasm:{}", abi::property_path(&raw).join("."));
    match c.data_mut().request.as_mut() {
        Some(request) => {
            request.context.insert(key, value);
            Ok(ok())
        }
        None => Ok(status(Status::NotFound)),
    }
}

fn get_shared_data(
    mut c: Ctx<'_>,
    k: i32,
    kl: i32,
    ret_ptr: i32,
    ret_len: i32,
    ret_cas: i32,
) -> HostResult {
    let key = read_string(&mut c, k, kl)?;
    let Some((value, version)) = c.data().env.shared.kv_get(&key) else {
        return Ok(status(Status::NotFound));
    };
    give(&mut c, &value, ret_ptr, ret_len)?;
    write_u32(&mut c, ret_cas, cas_of(version))?;
    Ok(ok())
}

/// A KV version as the 32-bit CAS value filters see (never 0, which means "no check").
fn cas_of(version: u64) -> u32 {
    (version % u64::from(u32::MAX)) as u32 + 1
}

fn set_shared_data(mut c: Ctx<'_>, k: i32, kl: i32, v: i32, vl: i32, cas: i32) -> HostResult {
    let key = read_string(&mut c, k, kl)?;
    let value = read(&mut c, v, vl)?;
    let shared = &c.data().env.shared;
    if cas == 0 {
        shared.kv_set(&key, value, None);
        return Ok(ok());
    }
    let current = shared.kv_get(&key).map(|(_, version)| version);
    match current {
        Some(version) if cas_of(version) == cas as u32 => {
            match shared.kv_compare_and_set(&key, Some(version), value, None) {
                Some(_) => Ok(ok()),
                None => Ok(status(Status::CasMismatch)),
            }
        }
        _ => Ok(status(Status::CasMismatch)),
    }
}

fn register_queue(mut c: Ctx<'_>, ptr: i32, len: i32, ret: i32) -> HostResult {
    let name = read_string(&mut c, ptr, len)?;
    let id = {
        let mut queues = lock(&c.data().shared.queues);
        match queues.iter().position(|(n, _)| *n == name) {
            Some(id) => id,
            None if queues.len() < MAX_DEFINED => {
                queues.push((name, VecDeque::new()));
                queues.len() - 1
            }
            None => return Ok(status(Status::InternalFailure)),
        }
    };
    write_u32(&mut c, ret, id as u32)?;
    Ok(ok())
}

fn resolve_queue(
    mut c: Ctx<'_>,
    _vm: i32,
    _vm_len: i32,
    ptr: i32,
    len: i32,
    ret: i32,
) -> HostResult {
    let name = read_string(&mut c, ptr, len)?;
    let id = lock(&c.data().shared.queues)
        .iter()
        .position(|(n, _)| *n == name);
    match id {
        Some(id) => write_u32(&mut c, ret, id as u32).map(|()| ok()),
        None => Ok(status(Status::NotFound)),
    }
}

fn enqueue(mut c: Ctx<'_>, id: i32, ptr: i32, len: i32) -> HostResult {
    let value = read(&mut c, ptr, len)?;
    let mut queues = lock(&c.data().shared.queues);
    match queues.get_mut(id as u32 as usize) {
        Some((_, queue)) if queue.len() < MAX_QUEUED => {
            queue.push_back(value);
            Ok(ok())
        }
        Some(_) => Ok(status(Status::InternalFailure)),
        None => Ok(status(Status::NotFound)),
    }
}

fn dequeue(mut c: Ctx<'_>, id: i32, ret_ptr: i32, ret_len: i32) -> HostResult {
    let value = {
        let mut queues = lock(&c.data().shared.queues);
        match queues.get_mut(id as u32 as usize) {
            Some((_, queue)) => queue.pop_front(),
            None => return Ok(status(Status::NotFound)),
        }
    };
    match value {
        Some(value) => give(&mut c, &value, ret_ptr, ret_len).map(|()| ok()),
        None => Ok(status(Status::Empty)),
    }
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    mut c: Ctx<'_>,
    code: i32,
    _details: i32,
    _details_len: i32,
    body: i32,
    body_len: i32,
    headers: i32,
    headers_len: i32,
    grpc_status: i32,
) -> HostResult {
    let body = read(&mut c, body, body_len)?;
    let raw = read(&mut c, headers, headers_len)?;
    let Some(pairs) = abi::deserialize_map(&raw) else {
        return Ok(status(Status::SerializationFailure));
    };
    let Ok(code) = u16::try_from(code) else {
        return Ok(status(Status::BadArgument));
    };
    if !(200..=599).contains(&code) {
        return Ok(status(Status::BadArgument));
    }
    let mut headers: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let body = if grpc_status >= 0 {
        // A gRPC answer: the status in the (trailers-only) head, the body as its message.
        headers.push(("content-type".into(), "application/grpc".into()));
        headers.push(("grpc-status".into(), grpc_status.to_string()));
        if !body.is_empty() {
            headers.push((
                "grpc-message".into(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        Vec::new()
    } else {
        body
    };
    c.data_mut().local_response = Some(LocalResponse {
        status: code,
        headers,
        body,
    });
    Ok(ok())
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    mut c: Ctx<'_>,
    upstream: i32,
    upstream_len: i32,
    headers: i32,
    headers_len: i32,
    body: i32,
    body_len: i32,
    _trailers: i32,
    _trailers_len: i32,
    timeout_ms: i32,
    ret_token: i32,
) -> HostResult {
    let cluster = read_string(&mut c, upstream, upstream_len)?;
    let raw = read(&mut c, headers, headers_len)?;
    let body = read(&mut c, body, body_len)?;
    let Some(pairs) = abi::deserialize_map(&raw) else {
        return Ok(status(Status::SerializationFailure));
    };
    let state = c.data();
    let clusters = state
        .request
        .as_ref()
        .map(|r| Arc::clone(&r.clusters))
        .or_else(|| state.clusters.clone());
    if clusters.is_none_or(|c| c.by_name(&cluster).is_none()) {
        return Ok(status(Status::BadArgument));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let pseudo = |name: &[u8]| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| text(v));
    let mut plain: Vec<(String, String)> = pairs
        .iter()
        .filter(|(n, _)| n.first() != Some(&b':'))
        .map(|(n, v)| (text(n), text(v)))
        .collect();
    if let Some(authority) = pseudo(b":authority") {
        plain.push(("host".into(), authority));
    }
    let request = HttpRequest {
        method: pseudo(b":method").unwrap_or_else(|| "GET".into()),
        path: pseudo(b":path").unwrap_or_else(|| "/".into()),
        headers: plain,
        body,
        timeout_ms: u32::try_from(timeout_ms).ok().filter(|ms| *ms > 0),
    };
    let state = c.data_mut();
    let token = state.next_token;
    state.next_token = state.next_token.wrapping_add(1).max(1);
    state.callouts.push(Callout {
        token,
        cluster,
        request,
    });
    write_u32(&mut c, ret_token, token)?;
    Ok(ok())
}

fn define_metric(mut c: Ctx<'_>, kind: i32, ptr: i32, len: i32, ret: i32) -> HostResult {
    let name = read_string(&mut c, ptr, len)?;
    let plugin = Arc::clone(&c.data().env.name);
    let id = {
        let mut all = lock(&c.data().shared.metrics);
        if let Some(id) = all.iter().position(|(n, k, _)| *n == name && *k == kind) {
            id
        } else {
            if all.len() >= MAX_DEFINED {
                return Ok(status(Status::InternalFailure));
            }
            let handle = crate::telemetry::plugin_metric(&plugin, &name, Vec::new());
            let metric = match kind {
                metric::COUNTER => Metric::Counter(handle.counter(), Arc::default()),
                metric::GAUGE => Metric::Gauge(handle.gauge(), Arc::default()),
                metric::HISTOGRAM => Metric::Histogram(handle.histogram()),
                _ => return Ok(status(Status::BadArgument)),
            };
            all.push((name, kind, metric));
            all.len() - 1
        }
    };
    write_u32(&mut c, ret, id as u32)?;
    Ok(ok())
}

fn with_metric(c: &Ctx<'_>, id: i32, apply: impl FnOnce(&Metric)) -> i32 {
    let metric = lock(&c.data().shared.metrics)
        .get(id as u32 as usize)
        .map(|(_, _, m)| m.clone());
    match metric {
        Some(metric) => {
            apply(&metric);
            ok()
        }
        None => status(Status::NotFound),
    }
}
