//! What `export_plugin!` expands to needs: the generated bindings, the wasm host, and the glue
//! from the generated `Guest` trait to a [`Plugin`]. Not a public API.
#![allow(unsafe_code, missing_docs)]

use std::cell::{Cell, OnceCell, RefCell};
use std::time::Duration;

use crate::action::{self, Action, Outcome, UpstreamError};
use crate::batch::Batch;
use crate::head::{HostError, PeerIdentity, Request, Response};
use crate::host::{HostApi, Side, http, log, metrics, shared};
use crate::{BodyInterest, Plugin};

pub use wit_bindgen;

pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "switchyard_sdk::__private::bindings",
        runtime_path: "switchyard_sdk::__private::wit_bindgen::rt",
        // `init` runs the module's static constructors instead (see there): every export
        // checking a flag through two calls cost each hook ~50 instructions.
        disable_run_ctors_once_workaround: true,
    });
}

pub use bindings::Guest;
pub use bindings::export;
pub use bindings::exports::switchyard::plugin::chunks::Guest as ChunksGuest;
pub use bindings::exports::switchyard::plugin::tick::Guest as TickGuest;
pub use bindings::switchyard::plugin::types::{
    AttemptOutcome, BodyInterest as BodyInterestFlags, Decision,
};

use bindings::switchyard::plugin as wit;

/// The host the component imports.
pub struct WasmHost;

fn refused(r: Result<(), String>) -> Result<(), HostError> {
    r.map_err(HostError)
}

thread_local! {
    /// The changes of the request hook running now (a component has one thread).
    static BATCH: RefCell<Batch> = const { RefCell::new(Batch::new()) };
    /// The method and path, read once per request hook: route tables test the path once per
    /// rule, and each read was a host call. Only `set_path` changes them, and it updates this.
    static HEAD_READS: RefCell<HeadReads> = const {
        RefCell::new(HeadReads {
            method: None,
            path: Vec::new(),
            have_path: false,
        })
    };
}

struct HeadReads {
    method: Option<String>,
    /// The path and query, when `have_path`; its room is kept from hook to hook.
    path: Vec<u8>,
    have_path: bool,
}

thread_local! {
    /// Whether the proxy writes reads into this plugin's memory (the `reads` interface): until
    /// it answers `unsupported` (a plugin run as a component).
    static READS_INTO: Cell<bool> = const { Cell::new(true) };
    /// Where header reads are written; its room is kept from read to read, so reading a header
    /// allocates nothing unless the plugin keeps the value.
    static HEADER_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a `reads` import returns when there is nothing to read, and when the proxy cannot write
/// into this plugin's memory.
const READ_ABSENT: u32 = u32::MAX;
const READ_UNSUPPORTED: u32 = u32::MAX - 1;

/// Fills `buffer` (cleared, grown when the text does not fit) with `read(at, capacity)`, a
/// `reads` import: `Ok(true)` with the text there, `Ok(false)` for nothing to read, `Err` when
/// the proxy cannot write into this plugin's memory (read through `request` or `response`).
fn read_into(buffer: &mut Vec<u8>, read: impl Fn(u32, u32) -> u32) -> Result<bool, ()> {
    buffer.clear();
    if !READS_INTO.get() {
        return Err(());
    }
    loop {
        let capacity = buffer.capacity();
        // A wasm32 address and length: both fit in a u32.
        match read(buffer.as_mut_ptr() as usize as u32, capacity as u32) {
            READ_ABSENT => return Ok(false),
            READ_UNSUPPORTED => {
                READS_INTO.set(false);
                return Err(());
            }
            len if len as usize <= capacity => {
                // SAFETY: the proxy wrote `len` bytes at the buffer's start, within its
                // capacity, before returning.
                unsafe { buffer.set_len(len as usize) };
                return Ok(true);
            }
            len => buffer.reserve(len as usize),
        }
    }
}

/// Text the proxy wrote: UTF-8, as the canonical ABI's strings are trusted to be.
fn lent(bytes: &[u8]) -> &str {
    // SAFETY: the proxy writes text only from Rust strings (`reads` says UTF-8), as the
    // bindings trust the strings the canonical ABI hands over to be.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// Fills `buffer` with the path and query, written into it where the proxy can.
fn read_path(buffer: &mut Vec<u8>) {
    if read_into(buffer, wit::reads::path_into) != Ok(true) {
        *buffer = wit::request::path().into_bytes();
    }
}

/// `read` from the cache while a request hook runs, from the host (and kept) the first time.
fn cached(
    field: fn(&mut HeadReads) -> &mut Option<String>,
    read: impl FnOnce() -> String,
) -> String {
    with_cached(field, read, str::to_owned)
}

/// [`cached`], lent to `with` instead of copied; `with` must not call the host (the cache is
/// borrowed while it runs).
fn with_cached<R>(
    field: fn(&mut HeadReads) -> &mut Option<String>,
    read: impl FnOnce() -> String,
    with: impl FnOnce(&str) -> R,
) -> R {
    if !BATCH.with_borrow(|batch| batch.open) {
        return with(&read());
    }
    HEAD_READS.with_borrow_mut(|reads| with(field(reads).get_or_insert_with(read)))
}

/// Gathers a change with `add` while a request hook runs; false when it must go to the host
/// now (outside request hooks, or a change `add` declines).
fn gather(add: impl FnOnce(&mut Batch) -> Option<()>) -> bool {
    BATCH.with_borrow_mut(|batch| batch.open && add(batch).is_some())
}

/// Sends the gathered changes: before a call that could see them, and when the hook returns.
/// The host refuses only what the SDK should not have gathered, a bug: the hook fails with it.
fn flush() {
    BATCH.with_borrow_mut(|batch| {
        if let Some(changes) = batch.pending() {
            let applied = wit::batch::apply(changes);
            batch.clear();
            if let Err(e) = applied {
                fail(&e);
            }
        }
    });
}

/// Runs a request hook with changes gathered, sending them when it returns.
fn gathering<R>(hook: impl FnOnce() -> R) -> R {
    BATCH.with_borrow_mut(|batch| batch.open = true);
    let result = hook();
    flush();
    BATCH.with_borrow_mut(|batch| batch.open = false);
    HEAD_READS.with_borrow_mut(|reads| {
        reads.method = None;
        reads.have_path = false;
    });
    result
}

impl HostApi for WasmHost {
    fn method(&mut self) -> String {
        cached(|reads| &mut reads.method, wit::request::method)
    }
    fn path(&mut self) -> String {
        self.with_path(str::to_owned)
    }
    fn with_path<R>(&mut self, read: impl FnOnce(&str) -> R) -> R {
        if !BATCH.with_borrow(|batch| batch.open) {
            let mut path = Vec::new();
            read_path(&mut path);
            return read(lent(&path));
        }
        HEAD_READS.with_borrow_mut(|reads| {
            if !reads.have_path {
                read_path(&mut reads.path);
                reads.have_path = true;
            }
            read(lent(&reads.path))
        })
    }
    fn set_path(&mut self, path: &str) -> Result<(), HostError> {
        HEAD_READS.with_borrow_mut(|reads| reads.have_path = false);
        refused(wit::request::set_path(path))
    }
    fn authority(&mut self) -> Option<String> {
        flush();
        wit::request::authority()
    }
    fn status(&mut self) -> Option<u16> {
        wit::response::status()
    }
    fn set_status(&mut self, status: u16) -> Result<(), HostError> {
        refused(wit::response::set_status(status))
    }
    fn header(&mut self, side: Side, name: &str) -> Option<String> {
        self.with_header(side, name, |value| value.map(str::to_owned))
    }
    fn with_header<R>(
        &mut self,
        side: Side,
        name: &str,
        read: impl FnOnce(Option<&str>) -> R,
    ) -> R {
        flush();
        // Taken for the read, so a `read` that reads a header itself gets a buffer of its own.
        let mut buffer = HEADER_BUFFER.take();
        let written = read_into(&mut buffer, |at, capacity| match side {
            Side::Request => wit::reads::request_header_into(name, at, capacity),
            Side::Response => wit::reads::response_header_into(name, at, capacity),
        });
        let result = match (written, side) {
            (Ok(true), _) => read(Some(lent(&buffer))),
            (Ok(false), _) => read(None),
            (Err(()), Side::Request) => read(wit::request::header(name).as_deref()),
            (Err(()), Side::Response) => read(wit::response::header(name).as_deref()),
        };
        HEADER_BUFFER.set(buffer);
        result
    }
    fn header_all(&mut self, side: Side, name: &str) -> Vec<String> {
        flush();
        match side {
            Side::Request => wit::request::header_all(name),
            Side::Response => wit::response::header_all(name),
        }
    }
    fn header_names(&mut self, side: Side) -> Vec<String> {
        flush();
        match side {
            Side::Request => wit::request::header_names(),
            Side::Response => wit::response::header_names(),
        }
    }
    fn set_header(&mut self, side: Side, name: &str, value: &str) -> Result<(), HostError> {
        if side == Side::Request && gather(|b| b.request_header(false, name, value)) {
            return Ok(());
        }
        flush();
        refused(match side {
            Side::Request => wit::request::set_header(name, value),
            Side::Response => wit::response::set_header(name, value),
        })
    }
    fn add_header(&mut self, side: Side, name: &str, value: &str) -> Result<(), HostError> {
        if side == Side::Request && gather(|b| b.request_header(true, name, value)) {
            return Ok(());
        }
        flush();
        refused(match side {
            Side::Request => wit::request::add_header(name, value),
            Side::Response => wit::response::add_header(name, value),
        })
    }
    fn add_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        if gather(|b| b.client_response_header(name, value)) {
            return Ok(());
        }
        flush();
        refused(wit::request::add_response_header(name, value))
    }
    fn remove_header(&mut self, side: Side, name: &str) {
        if side == Side::Request
            && gather(|b| {
                b.remove_request_header(name);
                Some(())
            })
        {
            return;
        }
        flush();
        match side {
            Side::Request => wit::request::remove_header(name),
            Side::Response => wit::response::remove_header(name),
        }
    }
    fn listener(&mut self) -> String {
        wit::properties::listener()
    }
    fn peer_address(&mut self) -> String {
        wit::properties::peer_address()
    }
    fn sni(&mut self) -> Option<String> {
        wit::properties::sni()
    }
    fn peer_identity(&mut self) -> Option<PeerIdentity> {
        wit::properties::identity().map(|p| PeerIdentity {
            spiffe_id: p.spiffe_id,
            dns_names: p.dns_names,
            subject: p.subject,
        })
    }
    fn request_id(&mut self) -> String {
        wit::properties::request_id()
    }
    fn attempt(&mut self) -> u32 {
        wit::properties::attempt()
    }
    fn destination(&mut self) -> Option<String> {
        wit::properties::destination()
    }
    fn set_destination(&mut self, cluster: &str) -> Result<(), HostError> {
        refused(wit::routing::set_destination(cluster))
    }
    fn set_timeout(&mut self, ms: u32) {
        wit::routing::set_timeout(ms);
    }
    fn set_per_try_timeout(&mut self, ms: u32) {
        wit::routing::set_per_try_timeout(ms);
    }
    fn context_get(&mut self, key: &str) -> Option<Vec<u8>> {
        flush();
        wit::context::get(key)
    }
    fn context_set(&mut self, key: &str, value: &[u8]) {
        if gather(|b| {
            b.set_context(key, value);
            Some(())
        }) {
            return;
        }
        wit::context::set(key, value);
    }
    fn counter_add(&mut self, name: &str, delta: i64) -> i64 {
        wit::shared::counter_add(name, delta)
    }
    fn counter_get(&mut self, name: &str) -> i64 {
        wit::shared::counter_get(name)
    }
    fn kv_get(&mut self, key: &str) -> Option<shared::Entry> {
        wit::shared::kv_get(key).map(|e| shared::Entry {
            value: e.value,
            version: e.version,
        })
    }
    fn kv_set(&mut self, key: &str, value: &[u8], ttl_ms: Option<u32>) -> u64 {
        wit::shared::kv_set(key, value, ttl_ms)
    }
    fn kv_compare_and_set(
        &mut self,
        key: &str,
        expected_version: Option<u64>,
        value: &[u8],
        ttl_ms: Option<u32>,
    ) -> Option<u64> {
        wit::shared::kv_compare_and_set(key, expected_version, value, ttl_ms)
    }
    fn kv_delete(&mut self, key: &str) {
        wit::shared::kv_delete(key);
    }
    fn metric(&mut self, kind: metrics::Kind, name: &str, labels: &[(&str, &str)], value: f64) {
        if gather(|b| b.metric(kind, name, labels, value)) {
            return;
        }
        let labels = metrics::owned_labels(labels);
        match kind {
            metrics::Kind::Counter => wit::metrics::counter_add(name, &labels, value as u64),
            metrics::Kind::Gauge => wit::metrics::gauge_set(name, &labels, value),
            metrics::Kind::Histogram => wit::metrics::histogram_record(name, &labels, value),
        }
    }
    fn fixed_metric(&mut self, metric: &metrics::FixedMetric, value: f64) {
        if let Some(identity) = &metric.identity
            && gather(|b| {
                b.numbered_metric(&metric.number, identity, metric.kind, value);
                Some(())
            })
        {
            return;
        }
        self.metric(metric.kind, &metric.name, &metric.label_refs(), value);
    }
    fn log(&mut self, level: log::Level, message: &str) {
        use wit::types::LogLevel;
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        wit::log::log(level, message);
    }
    fn monotonic_ns(&mut self) -> u64 {
        wit::clock::monotonic_ns()
    }
    fn wall_ms(&mut self) -> u64 {
        wit::clock::wall_ms()
    }
    fn next_u64(&mut self) -> u64 {
        wit::random::next_u64()
    }
    fn tick_every(&mut self, ms: u32) {
        wit::timer::tick_every(ms);
    }
    fn stream_response_body(&mut self) {
        wit::streaming::stream_response_body();
    }
    fn stream_request_body(&mut self) {
        wit::streaming::stream_request_body();
    }
    fn upstream_failures_only(&mut self, min_status: u16, grpc_statuses: bool) {
        wit::attempts::upstream_failures_only(min_status, grpc_statuses);
    }
    fn never_call_out(&mut self) {
        wit::calls::never_call_out();
    }
    fn http_call(
        &mut self,
        cluster: &str,
        request: &http::HttpRequest,
    ) -> Result<http::HttpResponse, http::CallError> {
        use wit::types::HttpCallError as E;
        let request = wit::types::HttpRequest {
            method: request.method.clone(),
            path: request.path.clone(),
            headers: request.headers.clone(),
            body: request.body.clone(),
            timeout_ms: request.timeout.map(shared::millis),
        };
        match wit::http::call(cluster, &request) {
            Ok(r) => Ok(http::HttpResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(e) => Err(match e {
                E::UnknownCluster => http::CallError::UnknownCluster,
                E::NoEndpoint => http::CallError::NoEndpoint,
                E::ConnectFailure => http::CallError::ConnectFailure,
                E::Reset => http::CallError::Reset,
                E::Timeout => http::CallError::Timeout,
                E::Invalid => http::CallError::Invalid,
            }),
        }
    }
}

fn decision((action, implemented): (Action, bool)) -> Decision {
    if !implemented {
        return Decision::Unimplemented;
    }
    match action {
        Action::Continue => Decision::Continue,
        Action::Respond(r) => Decision::Respond(wit::types::LocalResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }),
        Action::Retry { delay } => Decision::Retry(millis(delay)),
        Action::Delay(delay) => Decision::Delay(millis(delay)),
        Action::Fail(message) => fail(&message),
    }
}

/// Ends the hook as a trap, which the host handles by the plugin's failure policy, after
/// sending it `message` (the host logs it with the failure, as it does a panic's).
fn fail(message: &str) -> ! {
    crate::log::error(&format!("hook failed: {message}"));
    std::process::abort()
}

fn millis(d: Duration) -> u32 {
    shared::millis(d)
}

/// A hook called before `init` succeeded: the host never does this, so treat it as a no-op.
fn with_plugin<P: Plugin>(cell: &OnceCell<P>, f: impl FnOnce(&P) -> Action) -> Decision {
    match cell.get() {
        Some(plugin) => decision(action::run_hook(|| f(plugin))),
        None => Decision::Continue,
    }
}

/// A request hook: as [`with_plugin`], with its changes gathered into one host call. A hook the
/// author wrote that answers `Continue` (most calls) takes the short way to its decision.
fn request_hook<P: Plugin>(cell: &OnceCell<P>, f: impl FnOnce(&P) -> Action) -> Decision {
    gathering(|| match cell.get() {
        Some(plugin) => match action::run_hook(|| f(plugin)) {
            (continued @ Action::Continue, true) => {
                // `Continue` owns nothing: forgotten, it skips a call to `Action`'s drop glue
                // (~50 instructions in Wasm, on every hook that continues).
                std::mem::forget(continued);
                Decision::Continue
            }
            other => decision(other),
        },
        None => Decision::Continue,
    })
}

pub fn init<P: Plugin>(cell: &OnceCell<P>, config: &str) -> Result<BodyInterestFlags, String> {
    // The host calls `init` first on every instance, before any other export that runs the
    // plugin's code (only `cabi_realloc`, which must not run them, comes before it). Called here,
    // `__wasm_call_ctors` is called explicitly, so the linker wraps no export in a call to it;
    // Rust itself has no constructors on this target, a dependency might.
    #[cfg(target_arch = "wasm32")]
    wit_bindgen::rt::run_ctors_once();
    report_panics();
    let plugin = crate::load::<P>(config)?;
    let _ = cell.set(plugin);
    let mut flags = BodyInterestFlags::empty();
    let BodyInterest {
        request_body,
        response_body,
    } = P::BODY_INTEREST;
    if request_body {
        flags |= BodyInterestFlags::REQUEST_BODY;
    }
    if response_body {
        flags |= BodyInterestFlags::RESPONSE_BODY;
    }
    Ok(flags)
}

pub fn on_request<P: Plugin>(cell: &OnceCell<P>) -> Decision {
    request_hook(cell, |p| p.on_request(&mut Request::handle()))
}

pub fn on_request_body<P: Plugin>(cell: &OnceCell<P>, body: &[u8]) -> Decision {
    request_hook(cell, |p| p.on_request_body(&mut Request::handle(), body))
}

pub fn on_upstream_response<P: Plugin>(cell: &OnceCell<P>, outcome: AttemptOutcome) -> Decision {
    use wit::types::UpstreamError as E;
    let outcome = match outcome {
        AttemptOutcome::Response(status) => Outcome::Response(status),
        AttemptOutcome::Error(E::ConnectFailure) => Outcome::Error(UpstreamError::ConnectFailure),
        AttemptOutcome::Error(E::Reset) => Outcome::Error(UpstreamError::Reset),
        AttemptOutcome::Error(E::PerTryTimeout) => Outcome::Error(UpstreamError::PerTryTimeout),
    };
    request_hook(cell, |p| {
        p.on_upstream_response(&mut Request::handle(), outcome)
    })
}

pub fn on_response<P: Plugin>(cell: &OnceCell<P>) -> Decision {
    request_hook(cell, |p| {
        p.on_response(&mut Request::handle(), &mut Response::handle())
    })
}

pub fn on_response_body<P: Plugin>(cell: &OnceCell<P>, body: &[u8]) -> Decision {
    request_hook(cell, |p| {
        p.on_response_body(&mut Request::handle(), &mut Response::handle(), body)
    })
}

pub fn on_response_chunk<P: Plugin>(
    cell: &OnceCell<P>,
    chunk: &[u8],
    end: bool,
) -> Option<Vec<u8>> {
    let plugin = cell.get()?;
    replacement(plugin.on_response_chunk(&Request::handle(), &Response::handle(), chunk, end))
}

pub fn on_request_chunk<P: Plugin>(cell: &OnceCell<P>, chunk: &[u8], end: bool) -> Option<Vec<u8>> {
    let plugin = cell.get()?;
    replacement(plugin.on_request_chunk(&Request::handle(), chunk, end))
}

/// A chunk hook's answer as the host takes it.
fn replacement(chunk: crate::Chunk) -> Option<Vec<u8>> {
    match chunk {
        crate::Chunk::Pass => None,
        crate::Chunk::Replace(bytes) => Some(bytes),
        crate::Chunk::Fail(message) => fail(&message),
    }
}

pub fn on_tick<P: Plugin>(cell: &OnceCell<P>) -> Decision {
    with_plugin(cell, |p| p.on_tick())
}

pub fn on_log<P: Plugin>(cell: &OnceCell<P>) -> Decision {
    request_hook(cell, |p| {
        p.on_log(&Request::handle(), &Response::handle());
        Action::Continue
    })
}

/// Sends a panic's message and location to the host log before the trap it ends in (a Wasm
/// panic aborts, and the trap alone says only "unreachable instruction executed"). The host
/// logs it with the failure, once.
fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload_as_str()
            .unwrap_or("(a panic without a message)");
        let report = match info.location() {
            Some(at) => format!(
                "panicked at {}:{}:{}: {message}",
                at.file(),
                at.line(),
                at.column()
            ),
            None => format!("panicked at an unknown place: {message}"),
        };
        crate::log::error(&report);
    }));
}
