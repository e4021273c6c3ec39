//! A native, in-memory host for unit-testing plugins with `cargo test`, no proxy needed.
//!
//! ```
//! use switchyard_sdk::testing::TestHost;
//! use switchyard_sdk::{Action, Plugin, Request};
//!
//! struct Deny;
//! impl Plugin for Deny {
//!     type Config = ();
//!     fn new(_: ()) -> Result<Self, String> { Ok(Deny) }
//!     fn on_request(&self, req: &mut Request) -> Action {
//!         if req.header("x-token").is_none() { Action::respond(401, "no token") } else { Action::Continue }
//!     }
//! }
//!
//! let mut host = TestHost::get("/");
//! assert_eq!(host.on_request(&Deny), Action::respond(401, "no token"));
//! let mut host = TestHost::get("/").header("x-token", "t");
//! assert_eq!(host.on_request(&Deny), Action::Continue);
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use crate::Plugin;
use crate::action::{Action, Outcome, run_hook};
use crate::head::{HostError, PeerIdentity, Request, Response};
use crate::host::{HostApi, Side, http, log, metrics, shared};

/// One metric update a plugin made.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    /// Counter, gauge or histogram.
    pub kind: metrics::Kind,
    /// The name the plugin gave.
    pub name: String,
    /// The labels, in the order given.
    pub labels: Vec<(String, String)>,
    /// The value added, set or recorded.
    pub value: f64,
}

/// A response head in the test host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower-case) and values, in order.
    pub headers: Vec<(String, String)>,
}

type CallHandler =
    Box<dyn FnMut(&str, &http::HttpRequest) -> Result<http::HttpResponse, http::CallError>>;

/// Everything a plugin can see and change, in memory; inspect the fields after a hook ran.
#[derive(Default)]
pub struct TestHost {
    /// Whether the last hook called was the author's (false after a default hook, or one that
    /// answered [`Action::unused`]: the proxy would stop calling it).
    pub last_hook_used: bool,
    /// The request method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The authority (`Host`), if the request has one.
    pub authority: Option<String>,
    /// Lower-case names.
    pub request_headers: Vec<(String, String)>,
    /// The response head, once there is one (see [`TestHost::response`]).
    pub response: Option<TestResponse>,
    /// Headers added with [`Request::add_response_header`], lower-case names, in order.
    pub response_headers_added: Vec<(String, String)>,
    /// The listener the request came in on.
    pub listener: String,
    /// The client's address (`ip:port`).
    pub peer_address: String,
    /// The TLS server name the client asked for, if it used TLS.
    pub sni: Option<String>,
    /// The client's verified certificate identity, with mTLS.
    pub peer_identity: Option<PeerIdentity>,
    /// The request's id.
    pub request_id: String,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// The cluster chosen so far, if any.
    pub destination: Option<String>,
    /// Clusters `set_destination` accepts; empty accepts any name.
    pub clusters: Vec<String>,
    /// The tick interval the plugin asked for in `new` (see [`TestHost::load`]).
    pub tick_every: Option<Duration>,
    /// Whether the plugin asked in `new` for response bodies chunk by chunk.
    pub streams_response: bool,
    /// Whether the plugin asked in `new` for request bodies chunk by chunk.
    pub streams_request: bool,
    /// What the plugin asked in `new` with [`crate::attempts::upstream_failures_only`]
    /// (`min_status`, `grpc_statuses`): [`TestHost::on_upstream_response`] then skips the
    /// plugin for the other attempts, as the proxy does.
    pub upstream_failures_only: Option<(u16, bool)>,
    /// Whether the plugin said in `new` that it never calls out ([`crate::http::never_call_out`]).
    pub never_calls_out: bool,
    /// Set when the plugin named a cluster that does not exist, as the proxy does: the call
    /// fails, and the request is answered 500 unless a later `set_destination` succeeds.
    pub bad_destination: Option<String>,
    /// The request deadline the plugin set.
    pub timeout: Option<Duration>,
    /// The per-attempt deadline the plugin set.
    pub per_try_timeout: Option<Duration>,
    /// The request's context (what `context_set` and `set_state` kept).
    pub context: HashMap<String, Vec<u8>>,
    /// Shared counters (`shared::counter_add`).
    pub counters: HashMap<String, i64>,
    kv: HashMap<String, KvSlot>,
    kv_version: u64,
    /// Every metric update, in order.
    pub metrics: Vec<MetricRecord>,
    /// Every log line, in order.
    pub logs: Vec<(log::Level, String)>,
    /// Monotonic clock; move it with [`TestHost::advance`].
    pub now: Duration,
    /// Wall-clock time in milliseconds since the Unix epoch; moves with [`TestHost::advance`].
    pub wall_ms: u64,
    random_state: u64,
    http: Option<CallHandler>,
    /// Callouts made, in order.
    pub calls: Vec<(String, http::HttpRequest)>,
}

#[derive(Debug, Clone)]
struct KvSlot {
    value: Vec<u8>,
    version: u64,
    expires_at: Option<Duration>,
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("request_headers", &self.request_headers)
            .field("response", &self.response)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<TestHost>> = const { RefCell::new(None) };
}

/// Whether a test host is installed (by [`TestHost::run`]) on this thread.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn has_current() -> bool {
    CURRENT.with(|current| current.borrow().is_some())
}

/// Runs `f` against the test host installed by [`TestHost::run`].
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn with_current<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        let host = current.as_mut().unwrap_or_else(|| {
            panic!("no host: call plugin hooks through TestHost (e.g. host.on_request(&plugin))")
        });
        f(host)
    })
}

impl TestHost {
    /// A `GET` request for `path` to `example.test`, on listener "test", attempt 1.
    pub fn get(path: &str) -> Self {
        Self::request("GET", path)
    }

    /// A request with `method` for `path` to `example.test`, on listener "test", attempt 1.
    pub fn request(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            authority: Some("example.test".to_owned()),
            listener: "test".to_owned(),
            peer_address: "127.0.0.1:40000".to_owned(),
            request_id: "test-request-id".to_owned(),
            attempt: 1,
            wall_ms: 1_700_000_000_000,
            random_state: 0x9e37_79b9_7f4a_7c15,
            ..Self::default()
        }
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request_headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the request's authority (`Host`).
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = Some(authority.to_owned());
        self
    }

    /// Declares a cluster `set_destination` may name (once any is declared, others are refused).
    pub fn cluster(mut self, name: &str) -> Self {
        self.clusters.push(name.to_owned());
        self
    }

    /// Gives the request a response head, for the response hooks.
    pub fn response(mut self, status: u16) -> Self {
        self.response = Some(TestResponse {
            status,
            headers: Vec::new(),
        });
        self
    }

    /// Adds a response header (after [`TestHost::response`]).
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.response
            .get_or_insert_with(|| TestResponse {
                status: 200,
                headers: Vec::new(),
            })
            .headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Answers the plugin's `http::call`s.
    pub fn on_http_call(
        mut self,
        handler: impl FnMut(&str, &http::HttpRequest) -> Result<http::HttpResponse, http::CallError>
        + 'static,
    ) -> Self {
        self.http = Some(Box::new(handler));
        self
    }

    /// Moves the monotonic and wall clocks forward (shared entries may expire).
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.wall_ms += u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    }

    /// Installs this host for the duration of `f`.
    pub fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        CURRENT.with(|c| *c.borrow_mut() = Some(std::mem::take(self)));
        // Put the host back even if the plugin panics, so the test can report what it saw.
        struct Restore<'a>(&'a mut TestHost);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Some(host) = CURRENT.with(|c| c.borrow_mut().take()) {
                    *self.0 = host;
                }
            }
        }
        let _restore = Restore(self);
        f()
    }

    /// Builds plugin `P` from its config JSON with this host installed, as the proxy calls
    /// `new` at load: what `new` logs, counts or stores is in this host afterwards.
    pub fn load<P: Plugin>(&mut self, json: &str) -> Result<P, String> {
        let config = crate::parse_config::<P>(json)?;
        self.run(|| P::new(config))
    }

    /// Runs the plugin's `on_request` against this host.
    pub fn on_request<P: Plugin>(&mut self, plugin: &P) -> Action {
        self.hook(|| plugin.on_request(&mut Request::handle()))
    }

    /// Runs the plugin's `on_request_body` with `body`.
    pub fn on_request_body<P: Plugin>(&mut self, plugin: &P, body: &[u8]) -> Action {
        self.hook(|| plugin.on_request_body(&mut Request::handle(), body))
    }

    /// Runs the plugin's `on_upstream_response` with `outcome` — unless the plugin asked for
    /// failures only and this is not one (then `Continue`, as the proxy goes on without calling
    /// it). The gRPC status is the response's `grpc-status` header, if any.
    pub fn on_upstream_response<P: Plugin>(&mut self, plugin: &P, outcome: Outcome) -> Action {
        if let (Some((min_status, grpc_statuses)), Outcome::Response(status)) =
            (self.upstream_failures_only, outcome)
        {
            // The first `grpc-status`, read as the proxy reads it.
            let grpc_failed = grpc_statuses
                && self
                    .response
                    .as_ref()
                    .and_then(|r| {
                        r.headers
                            .iter()
                            .find(|(name, _)| name.eq_ignore_ascii_case(crate::grpc::STATUS_HEADER))
                    })
                    .and_then(|(_, value)| crate::grpc::parse_status(value))
                    .is_some_and(|status| status != crate::grpc::OK);
            if status < min_status && !grpc_failed {
                return Action::Continue;
            }
        }
        self.hook(|| plugin.on_upstream_response(&mut Request::handle(), outcome))
    }

    /// Runs the plugin's `on_response` (give the host a response first).
    pub fn on_response<P: Plugin>(&mut self, plugin: &P) -> Action {
        self.hook(|| plugin.on_response(&mut Request::handle(), &mut Response::handle()))
    }

    /// Runs the plugin's `on_response_body` with `body`.
    pub fn on_response_body<P: Plugin>(&mut self, plugin: &P, body: &[u8]) -> Action {
        self.hook(|| plugin.on_response_body(&mut Request::handle(), &mut Response::handle(), body))
    }

    /// Runs one hook against this host and notes whether it was the author's.
    fn hook(&mut self, hook: impl FnOnce() -> Action) -> Action {
        let (action, used) = self.run(|| run_hook(hook));
        self.last_hook_used = used;
        action
    }

    /// Runs the plugin's `on_response_chunk` with one piece of the body (give the host a
    /// response first).
    pub fn on_response_chunk<P: Plugin>(
        &mut self,
        plugin: &P,
        chunk: &[u8],
        end: bool,
    ) -> crate::Chunk {
        self.run(|| plugin.on_response_chunk(&Request::handle(), &Response::handle(), chunk, end))
    }

    /// Runs the plugin's `on_request_chunk` with one piece of the body.
    pub fn on_request_chunk<P: Plugin>(
        &mut self,
        plugin: &P,
        chunk: &[u8],
        end: bool,
    ) -> crate::Chunk {
        self.run(|| plugin.on_request_chunk(&Request::handle(), chunk, end))
    }

    /// Runs the plugin's `on_tick`, as the proxy does at the interval it asked for.
    pub fn on_tick<P: Plugin>(&mut self, plugin: &P) -> Action {
        self.hook(|| plugin.on_tick())
    }

    /// Runs the plugin's `on_log`.
    pub fn on_log<P: Plugin>(&mut self, plugin: &P) {
        self.run(|| plugin.on_log(&Request::handle(), &Response::handle()));
    }

    /// The first value of a request header, after the plugin ran.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        first(&self.request_headers, name)
    }

    /// The first value of a response header, after the plugin ran.
    pub fn response_header_value(&self, name: &str) -> Option<&str> {
        self.response.as_ref().and_then(|r| first(&r.headers, name))
    }

    /// The sum of a counter metric's increments with exactly these labels.
    pub fn counter_total(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.metrics
            .iter()
            .filter(|m| {
                m.kind == metrics::Kind::Counter && m.name == name && same_labels(&m.labels, labels)
            })
            // Counters are incremented by whole numbers (`metrics::counter` takes a u64).
            .map(|m| m.value as u64)
            .sum()
    }

    fn headers_mut(&mut self, side: Side) -> Result<&mut Vec<(String, String)>, HostError> {
        match side {
            Side::Request => Ok(&mut self.request_headers),
            Side::Response => self
                .response
                .as_mut()
                .map(|r| &mut r.headers)
                .ok_or_else(|| HostError("there is no response head in this hook".into())),
        }
    }

    fn headers(&self, side: Side) -> &[(String, String)] {
        match side {
            Side::Request => &self.request_headers,
            Side::Response => self.response.as_ref().map_or(&[], |r| &r.headers),
        }
    }

    fn live_kv(&self, key: &str) -> Option<&KvSlot> {
        self.kv
            .get(key)
            .filter(|slot| slot.expires_at.is_none_or(|at| at > self.now))
    }

    fn put_kv(&mut self, key: &str, value: &[u8], ttl_ms: Option<u32>) -> u64 {
        self.kv_version += 1;
        let expires_at = ttl_ms.map(|ms| self.now + Duration::from_millis(u64::from(ms)));
        self.kv.insert(
            key.to_owned(),
            KvSlot {
                value: value.to_vec(),
                version: self.kv_version,
                expires_at,
            },
        );
        self.kv_version
    }
}

fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn same_labels(have: &[(String, String)], want: &[(&str, &str)]) -> bool {
    have.len() == want.len()
        && want
            .iter()
            .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}

/// The host's rule for header names and values, so tests refuse what the proxy would.
fn check_header(name: &str, value: &str) -> Result<(), HostError> {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(HostError(format!("invalid header name {name:?}")));
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HostError(format!("invalid value for header {name:?}")));
    }
    Ok(())
}

impl HostApi for TestHost {
    fn method(&mut self) -> String {
        self.method.clone()
    }
    fn path(&mut self) -> String {
        self.path.clone()
    }
    fn set_path(&mut self, path: &str) -> Result<(), HostError> {
        if !path.starts_with('/') {
            return Err(HostError(format!("{path:?} must start with '/'")));
        }
        self.path = path.to_owned();
        Ok(())
    }
    fn authority(&mut self) -> Option<String> {
        self.authority.clone()
    }
    fn status(&mut self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }
    fn set_status(&mut self, status: u16) -> Result<(), HostError> {
        if !(100..=999).contains(&status) {
            return Err(HostError(format!("{status} is not an HTTP status")));
        }
        match &mut self.response {
            Some(r) => {
                r.status = status;
                Ok(())
            }
            None => Err(HostError("there is no response head in this hook".into())),
        }
    }
    fn header(&mut self, side: Side, name: &str) -> Option<String> {
        first(self.headers(side), name).map(str::to_owned)
    }
    fn header_all(&mut self, side: Side, name: &str) -> Vec<String> {
        self.headers(side)
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn header_names(&mut self, side: Side) -> Vec<String> {
        let mut names: Vec<String> = self.headers(side).iter().map(|(n, _)| n.clone()).collect();
        names.dedup();
        names
    }
    fn set_header(&mut self, side: Side, name: &str, value: &str) -> Result<(), HostError> {
        check_header(name, value)?;
        if matches!(side, Side::Request) && name.eq_ignore_ascii_case("host") {
            // As in the proxy: the authority follows a Host rewrite.
            self.authority = Some(value.to_owned());
        }
        let headers = self.headers_mut(side)?;
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
        Ok(())
    }
    fn add_header(&mut self, side: Side, name: &str, value: &str) -> Result<(), HostError> {
        check_header(name, value)?;
        self.headers_mut(side)?
            .push((name.to_ascii_lowercase(), value.to_owned()));
        Ok(())
    }
    fn add_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        check_header(name, value)?;
        self.response_headers_added
            .push((name.to_ascii_lowercase(), value.to_owned()));
        Ok(())
    }
    fn remove_header(&mut self, side: Side, name: &str) {
        if let Ok(headers) = self.headers_mut(side) {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
    }
    fn listener(&mut self) -> String {
        self.listener.clone()
    }
    fn peer_address(&mut self) -> String {
        self.peer_address.clone()
    }
    fn sni(&mut self) -> Option<String> {
        self.sni.clone()
    }
    fn peer_identity(&mut self) -> Option<PeerIdentity> {
        self.peer_identity.clone()
    }
    fn request_id(&mut self) -> String {
        self.request_id.clone()
    }
    fn attempt(&mut self) -> u32 {
        self.attempt
    }
    fn destination(&mut self) -> Option<String> {
        self.destination.clone()
    }
    fn set_destination(&mut self, cluster: &str) -> Result<(), HostError> {
        if !self.clusters.is_empty() && !self.clusters.iter().any(|c| c == cluster) {
            self.bad_destination = Some(cluster.to_owned());
            return Err(HostError(format!("no cluster is named {cluster:?}")));
        }
        self.destination = Some(cluster.to_owned());
        self.bad_destination = None;
        Ok(())
    }
    fn set_timeout(&mut self, ms: u32) {
        self.timeout = Some(Duration::from_millis(u64::from(ms)));
    }
    fn set_per_try_timeout(&mut self, ms: u32) {
        self.per_try_timeout = Some(Duration::from_millis(u64::from(ms)));
    }
    fn context_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.context.get(key).cloned()
    }
    fn context_set(&mut self, key: &str, value: &[u8]) {
        self.context.insert(key.to_owned(), value.to_vec());
    }
    fn counter_add(&mut self, name: &str, delta: i64) -> i64 {
        let c = self.counters.entry(name.to_owned()).or_insert(0);
        *c = c.saturating_add(delta);
        *c
    }
    fn counter_get(&mut self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
    fn kv_get(&mut self, key: &str) -> Option<shared::Entry> {
        self.live_kv(key).map(|slot| shared::Entry {
            value: slot.value.clone(),
            version: slot.version,
        })
    }
    fn kv_set(&mut self, key: &str, value: &[u8], ttl_ms: Option<u32>) -> u64 {
        self.put_kv(key, value, ttl_ms)
    }
    fn kv_compare_and_set(
        &mut self,
        key: &str,
        expected_version: Option<u64>,
        value: &[u8],
        ttl_ms: Option<u32>,
    ) -> Option<u64> {
        let current = self.live_kv(key).map(|slot| slot.version);
        (current == expected_version).then(|| self.put_kv(key, value, ttl_ms))
    }
    fn kv_delete(&mut self, key: &str) {
        self.kv.remove(key);
    }
    fn metric(&mut self, kind: metrics::Kind, name: &str, labels: &[(&str, &str)], value: f64) {
        self.metrics.push(MetricRecord {
            kind,
            name: name.to_owned(),
            labels: metrics::owned_labels(labels),
            value,
        });
    }
    fn log(&mut self, level: log::Level, message: &str) {
        self.logs.push((level, message.to_owned()));
    }
    fn monotonic_ns(&mut self) -> u64 {
        u64::try_from(self.now.as_nanos()).unwrap_or(u64::MAX)
    }
    fn wall_ms(&mut self) -> u64 {
        self.wall_ms
    }
    fn stream_response_body(&mut self) {
        self.streams_response = true;
    }
    fn stream_request_body(&mut self) {
        self.streams_request = true;
    }
    fn upstream_failures_only(&mut self, min_status: u16, grpc_statuses: bool) {
        self.upstream_failures_only = Some((min_status, grpc_statuses));
    }
    fn never_call_out(&mut self) {
        self.never_calls_out = true;
    }
    fn tick_every(&mut self, ms: u32) {
        self.tick_every = Some(Duration::from_millis(u64::from(ms)).max(Duration::from_millis(10)));
    }
    fn next_u64(&mut self) -> u64 {
        // splitmix64: deterministic, so tests are repeatable.
        self.random_state = self.random_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn http_call(
        &mut self,
        cluster: &str,
        request: &http::HttpRequest,
    ) -> Result<http::HttpResponse, http::CallError> {
        self.calls.push((cluster.to_owned(), request.clone()));
        match &mut self.http {
            Some(handler) => handler(cluster, request),
            None => Err(http::CallError::UnknownCluster),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::metrics as plugin_metrics;

    /// Counts in `new`, routes by query parameter and cookie.
    struct Counted;

    impl Plugin for Counted {
        type Config = serde_json::Value;

        fn new(_: serde_json::Value) -> Result<Self, String> {
            plugin_metrics::counter("loaded", &[], 1);
            Ok(Counted)
        }

        fn on_request(&self, req: &mut Request) -> Action {
            let user = req.query_param("user").unwrap_or_default();
            let group = req.cookie("group").unwrap_or_default();
            let _ = req.set_header("x-seen", &format!("{user}/{group}"));
            if req.set_destination("nowhere").is_err() && user == "fallback" {
                let _ = req.set_destination("app");
            }
            Action::Continue
        }
    }

    #[test]
    fn new_may_use_the_host_natively_and_its_metrics_are_seen() {
        assert!(crate::load::<Counted>("{}").is_ok(), "no host needed");
        let mut host = TestHost::default();
        host.load::<Counted>("{}").unwrap();
        assert_eq!(host.counter_total("loaded", &[]), 1);
    }

    #[test]
    fn metrics_made_once_are_seen_as_the_same_metrics_made_each_time() {
        let mut host = TestHost::default();
        host.run(|| {
            let hits = plugin_metrics::Counter::new("hits", &[("route", "api")]);
            hits.add(2);
            plugin_metrics::counter("hits", &[("route", "api")], 3);
            plugin_metrics::Gauge::new("depth", &[]).set(-1.5);
            plugin_metrics::Histogram::new("size", &[("k", "v")]).record(0.25);
        });
        assert_eq!(host.counter_total("hits", &[("route", "api")]), 5);
        let seen: Vec<_> = host
            .metrics
            .iter()
            .map(|m| (m.kind, m.name.as_str(), m.labels.len(), m.value))
            .collect();
        assert_eq!(
            seen[2..],
            [
                (plugin_metrics::Kind::Gauge, "depth", 0, -1.5),
                (plugin_metrics::Kind::Histogram, "size", 1, 0.25)
            ]
        );
    }

    /// Asks for ticks and counts them.
    struct Ticking;

    impl Plugin for Ticking {
        type Config = serde_json::Value;

        fn new(_: serde_json::Value) -> Result<Self, String> {
            crate::timer::tick_every(Duration::from_secs(30));
            Ok(Ticking)
        }

        fn on_tick(&self) -> Action {
            crate::shared::counter_add("ticks", 1);
            Action::Continue
        }
    }

    /// Asks to see failed attempts only, and counts the calls it gets.
    struct FailuresOnly;

    impl Plugin for FailuresOnly {
        type Config = serde_json::Value;

        fn new(_: serde_json::Value) -> Result<Self, String> {
            crate::attempts::upstream_failures_only(500, true);
            Ok(FailuresOnly)
        }

        fn on_upstream_response(&self, _: &mut Request, _: Outcome) -> Action {
            crate::shared::counter_add("seen", 1);
            Action::Retry {
                delay: Duration::ZERO,
            }
        }
    }

    #[test]
    fn attempts_a_plugin_did_not_ask_for_are_not_shown_to_it() {
        let mut host = TestHost::get("/").response(200);
        let plugin = host.load::<FailuresOnly>("{}").unwrap();
        assert_eq!(host.upstream_failures_only, Some((500, true)));
        let seen = |host: &mut TestHost| host.counters.get("seen").copied().unwrap_or(0);
        assert_eq!(
            host.on_upstream_response(&plugin, Outcome::Response(200)),
            Action::Continue
        );
        assert_eq!(
            host.on_upstream_response(&plugin, Outcome::Response(499)),
            Action::Continue
        );
        assert_eq!(seen(&mut host), 0);
        let retry = Action::Retry {
            delay: Duration::ZERO,
        };
        assert_eq!(
            host.on_upstream_response(&plugin, Outcome::Response(503)),
            retry
        );
        let reset = Outcome::Error(crate::UpstreamError::Reset);
        assert_eq!(host.on_upstream_response(&plugin, reset), retry);
        // A gRPC failure travels in a 200's head.
        let grpc_200 = |status: &str| {
            let mut grpc = TestHost::get("/")
                .response(200)
                .response_header("grpc-status", status);
            grpc.upstream_failures_only = host.upstream_failures_only;
            grpc.on_upstream_response(&plugin, Outcome::Response(200))
        };
        assert_eq!(grpc_200("14"), retry);
        // As in the proxy, a status that is not a number is no failure.
        assert_eq!(grpc_200("x"), Action::Continue);
        assert_eq!(seen(&mut host), 2);
    }

    /// Streams response bodies, masking digits.
    struct Masking;

    impl Plugin for Masking {
        type Config = serde_json::Value;

        fn new(_: serde_json::Value) -> Result<Self, String> {
            crate::streaming::stream_response_body();
            Ok(Masking)
        }

        fn on_response_chunk(
            &self,
            _: &Request,
            resp: &Response,
            chunk: &[u8],
            end: bool,
        ) -> crate::Chunk {
            if resp.status() != Some(200) {
                return crate::Chunk::Pass;
            }
            let mut out: Vec<u8> = chunk
                .iter()
                .map(|b| if b.is_ascii_digit() { b'#' } else { *b })
                .collect();
            if end {
                out.extend_from_slice(b"!");
            }
            crate::Chunk::Replace(out)
        }
    }

    #[test]
    fn response_chunks_are_rewritten_piece_by_piece() {
        let mut host = TestHost::get("/").response(200);
        let plugin = host.load::<Masking>("{}").unwrap();
        assert!(host.streams_response);
        assert_eq!(
            host.on_response_chunk(&plugin, b"card 4111", false),
            crate::Chunk::Replace(b"card ####".to_vec())
        );
        assert_eq!(
            host.on_response_chunk(&plugin, b"", true),
            crate::Chunk::Replace(b"!".to_vec())
        );
    }

    #[test]
    fn ticks_are_asked_for_in_new_and_run_without_a_request() {
        let mut host = TestHost::default();
        let plugin = host.load::<Ticking>("{}").unwrap();
        assert_eq!(host.tick_every, Some(Duration::from_secs(30)));
        host.on_tick(&plugin);
        host.on_tick(&plugin);
        assert_eq!(host.counters.get("ticks"), Some(&2));
        assert!(host.last_hook_used);
    }

    #[test]
    fn query_parameters_and_cookies_are_read_decoded() {
        let mut host = TestHost::get("/x?user=J%C3%BCrgen+M&x=1")
            .header("cookie", "theme=dark; group=beta")
            .cluster("app");
        host.on_request(&Counted);
        assert_eq!(host.request_header("x-seen"), Some("Jürgen M/beta"));
    }

    /// Keeps typed state from on_request for on_response; fails with `?` on a bad header.
    struct Stateful;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Choice {
        variant: String,
        weight: u32,
    }

    impl Plugin for Stateful {
        type Config = serde_json::Value;

        fn new(_: serde_json::Value) -> Result<Self, String> {
            Ok(Stateful)
        }

        fn try_on_request(&self, req: &mut Request) -> crate::HookResult {
            let name = req.header("x-header-name").unwrap_or_default();
            req.set_header(&name, "1")?;
            req.set_state(
                "choice",
                &Choice {
                    variant: "b".into(),
                    weight: 7,
                },
            );
            Ok(Action::Continue)
        }

        fn on_response(&self, req: &mut Request, resp: &mut Response) -> Action {
            let choice: Choice = req.state("choice").unwrap_or(Choice {
                variant: "-".into(),
                weight: 0,
            });
            let _ = resp.set_header("x-choice", &format!("{}/{}", choice.variant, choice.weight));
            Action::Continue
        }
    }

    #[test]
    fn typed_state_travels_between_hooks_and_err_becomes_a_failure() {
        let mut host = TestHost::get("/")
            .header("x-header-name", "x-ok")
            .response(200);
        assert_eq!(host.on_request(&Stateful), Action::Continue);
        host.on_response(&Stateful);
        assert_eq!(host.response_header_value("x-choice"), Some("b/7"));

        let mut host = TestHost::get("/").header("x-header-name", "not valid");
        let failed = host.on_request(&Stateful);
        assert!(
            matches!(&failed, Action::Fail(m) if m.contains("not valid")),
            "{failed:?}"
        );
    }

    #[test]
    fn an_unknown_destination_fails_the_request_unless_a_later_one_succeeds() {
        let mut host = TestHost::get("/?user=someone").cluster("app");
        host.on_request(&Counted);
        assert_eq!(host.bad_destination.as_deref(), Some("nowhere"));
        let mut host = TestHost::get("/?user=fallback").cluster("app");
        host.on_request(&Counted);
        assert_eq!(host.bad_destination, None);
        assert_eq!(host.destination.as_deref(), Some("app"));
    }
}
