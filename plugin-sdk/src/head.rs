//! Handles to the request and response heads, which stay in the host: reading one header costs
//! one host call, not a copy of the whole request.

use std::time::Duration;

use crate::host::{self, HostApi as _, Side};

/// The host refused a change (e.g. an invalid header name), or it is not possible in this hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostError {}

/// The verified identity of a TLS client (mTLS).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    /// The SPIFFE ID in the certificate's URI SAN (`spiffe://trust-domain/ns/x/sa/y`), if any.
    pub spiffe_id: Option<String>,
    /// The certificate's DNS SANs.
    pub dns_names: Vec<String>,
    /// The certificate's subject, as text.
    pub subject: Option<String>,
}

/// The request being proxied, its properties, routing and per-request context.
#[derive(Debug)]
pub struct Request {
    _private: (),
}

/// The response head: the attempt's in `on_upstream_response`, the client's in `on_response`.
#[derive(Debug)]
pub struct Response {
    _private: (),
}

/// The request-context key behind [`Request::set_route`]; the proxy reads the route name here.
pub const ROUTE_CONTEXT_KEY: &str = "switchyard.route";

impl Request {
    /// Hooks receive this; it is only a handle.
    #[doc(hidden)]
    pub fn handle() -> Self {
        Self { _private: () }
    }

    /// The request method (`GET`, `POST`, ...).
    pub fn method(&self) -> String {
        host::with(|h| h.method())
    }
    /// Path and query, e.g. `/v1/users?limit=10`.
    pub fn path(&self) -> String {
        host::with(|h| h.path())
    }
    /// `read` over the path and query without copying them (a request hook reads them from
    /// the SDK's cache); `read` must not call the host.
    pub(crate) fn with_path<R>(&self, read: impl FnOnce(&str) -> R) -> R {
        host::with(|h| h.with_path(read))
    }
    /// Replaces the path and query the upstream gets (`/v2/users?page=2`).
    pub fn set_path(&mut self, path_and_query: &str) -> Result<(), HostError> {
        host::with(|h| h.set_path(path_and_query))
    }
    /// The authority the client asked for (`Host` or `:authority`).
    pub fn authority(&self) -> Option<String> {
        host::with(|h| h.authority())
    }
    /// Changes the host the upstream sees (`Host`, or `:authority` over HTTP/2).
    pub fn set_authority(&mut self, authority: &str) -> Result<(), HostError> {
        self.set_header("host", authority)
    }
    /// The first value of a header (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        host::with(|h| h.header(Side::Request, name))
    }
    /// `read` over the first value of a header (`None`: absent) without copying it: cheaper
    /// than [`Request::header`] where the value is only looked at (a key checked, a flag
    /// compared). `read` must not call the host.
    pub fn with_header<R>(&self, name: &str, read: impl FnOnce(Option<&str>) -> R) -> R {
        host::with(|h| h.with_header(Side::Request, name, read))
    }
    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        host::with(|h| h.header_all(Side::Request, name))
    }
    /// The first value of query parameter `name`, percent-decoded (`+` is a space); a bare
    /// `?flag` has the value "".
    pub fn query_param(&self, name: &str) -> Option<String> {
        let path = self.path();
        let (_, query) = path.split_once('?')?;
        crate::params::query_param(query, name).map(crate::params::decode_component)
    }
    /// The value of cookie `name` from the request's `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let headers = self.header_all("cookie");
        crate::params::cookie(headers.iter().map(String::as_str), name).map(str::to_owned)
    }
    /// The names of the request's headers, lower-case.
    pub fn header_names(&self) -> Vec<String> {
        host::with(|h| h.header_names(Side::Request))
    }
    /// Sets a header, replacing any values it had; fails on an invalid name or value.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        host::with(|h| h.set_header(Side::Request, name, value))
    }
    /// Adds a value to a header, keeping those it had.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        host::with(|h| h.add_header(Side::Request, name, value))
    }
    /// Removes every value of a header.
    pub fn remove_header(&mut self, name: &str) {
        host::with(|h| h.remove_header(Side::Request, name));
    }
    /// Adds a header to the response the client will get, whoever answers: from `on_request`,
    /// a plugin that only needs to name what it decided needs no `on_response` hook (one hook
    /// call less per request).
    pub fn add_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        host::with(|h| h.add_response_header(name, value))
    }

    /// The listener that accepted the request.
    pub fn listener(&self) -> String {
        host::with(|h| h.listener())
    }
    /// The client's address, `ip:port`.
    pub fn peer_address(&self) -> String {
        host::with(|h| h.peer_address())
    }
    /// The TLS server name the client asked for.
    pub fn sni(&self) -> Option<String> {
        host::with(|h| h.sni())
    }
    /// The client's verified certificate identity (mTLS).
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        host::with(|h| h.peer_identity())
    }
    /// The request's id (`x-request-id`), the same in every hook, log line and trace.
    pub fn request_id(&self) -> String {
        host::with(|h| h.request_id())
    }
    /// 1 for the first try, 2 for the first retry...
    pub fn attempt(&self) -> u32 {
        host::with(|h| h.attempt())
    }
    /// The cluster the request will go to, if chosen yet.
    pub fn destination(&self) -> Option<String> {
        host::with(|h| h.destination())
    }
    /// Sends the request to `cluster`; the last call wins. Fails if no cluster has that name.
    pub fn set_destination(&mut self, cluster: &str) -> Result<(), HostError> {
        host::with(|h| h.set_destination(cluster))
    }
    /// Deadline for the whole request, including retries.
    pub fn set_timeout(&mut self, timeout: Duration) {
        host::with(|h| h.set_timeout(crate::host::shared::millis(timeout)));
    }
    /// Deadline for each attempt.
    pub fn set_per_try_timeout(&mut self, timeout: Duration) {
        host::with(|h| h.set_per_try_timeout(crate::host::shared::millis(timeout)));
    }
    /// Bytes kept for this request, visible to every later hook and plugin.
    pub fn context_get(&self, key: &str) -> Option<Vec<u8>> {
        host::with(|h| h.context_get(key))
    }
    /// A value kept with [`Request::set_state`], if there is one of that type under `key`.
    pub fn state<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_slice(&self.context_get(key)?).ok()
    }
    /// Keeps a typed value for the rest of this request (every later hook, on whatever
    /// instance runs it), in the request's context as JSON.
    pub fn set_state<T: serde::Serialize>(&mut self, key: &str, value: &T) {
        if let Ok(bytes) = serde_json::to_vec(value) {
            self.context_set(key, &bytes);
        }
    }
    /// Keeps bytes for this request under `key`, visible to every later hook and plugin.
    pub fn context_set(&mut self, key: &str, value: &[u8]) {
        host::with(|h| h.context_set(key, value));
    }
    /// Names the route this request took. The proxy reports it as the `route` label of its
    /// request metrics, in the access log and as the span's `http.route`, so use a name from
    /// your config (a bounded set), never a raw path.
    pub fn set_route(&mut self, name: &str) {
        self.context_set(ROUTE_CONTEXT_KEY, name.as_bytes());
    }
    /// The route named by [`Request::set_route`], if any plugin did.
    pub fn route(&self) -> Option<String> {
        self.context_get(ROUTE_CONTEXT_KEY)
            .and_then(|bytes| String::from_utf8(bytes).ok())
    }
    /// The attempt's response head, in `on_upstream_response`.
    pub fn attempt_response(&self) -> Response {
        Response::handle()
    }
}

impl Response {
    #[doc(hidden)]
    pub fn handle() -> Self {
        Self { _private: () }
    }

    /// The status, when there is a response head in this hook.
    pub fn status(&self) -> Option<u16> {
        host::with(|h| h.status())
    }
    /// Replaces the status code the client gets.
    pub fn set_status(&mut self, status: u16) -> Result<(), HostError> {
        host::with(|h| h.set_status(status))
    }
    /// The first value of a response header (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        host::with(|h| h.header(Side::Response, name))
    }
    /// `read` over the first value of a response header without copying it, as
    /// [`Request::with_header`].
    pub fn with_header<R>(&self, name: &str, read: impl FnOnce(Option<&str>) -> R) -> R {
        host::with(|h| h.with_header(Side::Response, name, read))
    }
    /// The gRPC status in the head: set on a trailers-only response (a call that failed before
    /// any message, e.g. `UNAVAILABLE`), which arrives as HTTP 200. `None` for other responses,
    /// whose status comes in the trailers after the messages. Codes are in [`crate::grpc`].
    pub fn grpc_status(&self) -> Option<u32> {
        self.header(crate::grpc::STATUS_HEADER)
            .as_deref()
            .and_then(crate::grpc::parse_status)
    }
    /// Every value of a response header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        host::with(|h| h.header_all(Side::Response, name))
    }
    /// The names of the response's headers, lower-case.
    pub fn header_names(&self) -> Vec<String> {
        host::with(|h| h.header_names(Side::Response))
    }
    /// Sets a response header, replacing any values it had.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        host::with(|h| h.set_header(Side::Response, name, value))
    }
    /// Adds a value to a response header, keeping those it had.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        host::with(|h| h.add_header(Side::Response, name, value))
    }
    /// Removes every value of a response header.
    pub fn remove_header(&mut self, name: &str) {
        host::with(|h| h.remove_header(Side::Response, name));
    }
}
