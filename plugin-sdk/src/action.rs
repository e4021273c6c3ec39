//! What hooks answer, and what they are told about an attempt.

use std::cell::Cell;
use std::time::Duration;

/// What a hook asks the proxy to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Go on: next plugin, then forward (or send the response).
    Continue,
    /// Answer the client with this instead of forwarding (or instead of the upstream's answer).
    Respond(LocalResponse),
    /// From `on_upstream_response` only: try the request again after `delay`.
    Retry {
        /// How long to wait before the next attempt.
        delay: Duration,
    },
    /// Wait (the proxy waits, asynchronously), then continue.
    Delay(Duration),
    /// The hook failed: the proxy logs the message and treats the request as it treats a
    /// trap, by the plugin's `on_error` policy (fail closed: 503; fail open: skip the plugin).
    /// Made from an `Err` by `Action::from(result)`.
    Fail(String),
}

/// Lets a hook put its logic in a function returning `Result<Action, E>`, where `?` works on
/// every fallible call, and answer `self.decide(req).into()`: an `Err` becomes
/// [`Action::Fail`].
impl<E: std::fmt::Display> From<Result<Action, E>> for Action {
    fn from(result: Result<Action, E>) -> Self {
        result.unwrap_or_else(|e| Action::Fail(e.to_string()))
    }
}

impl Action {
    /// From a hook that has nothing to do with this plugin's config (decide it from `self`,
    /// never from the request): the proxy stops calling this hook of this plugin, as if it were
    /// not written, so an optional feature that is off costs nothing per request.
    pub fn unused() -> Self {
        not_implemented()
    }

    /// A plain-text local response.
    pub fn respond(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::Respond(LocalResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        })
    }
}

/// What `on_response_chunk` does with one piece of the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Send it on as it is.
    Pass,
    /// Send these bytes instead (empty: drop the chunk).
    Replace(Vec<u8>),
    /// The hook failed: logged, and with `on_error = "fail_closed"` the response is cut off (its
    /// head has gone to the client already); with `"fail_open"` the chunk passes unchanged.
    Fail(String),
}

/// A response made by the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, sent with a `content-length`.
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// A response with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            ..Default::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// The result of one attempt to reach the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head with this status arrived.
    Response(u16),
    /// No response: why.
    Error(UpstreamError),
}

/// Why an attempt produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connection to the endpoint could not be made.
    ConnectFailure,
    /// The connection broke before a response head arrived.
    Reset,
    /// No response head within the per-try timeout.
    PerTryTimeout,
}

/// Which bodies a plugin wants to see whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyInterest {
    /// Buffer the request body whole for `on_request_body`.
    pub request_body: bool,
    /// Buffer the response body whole for `on_response_body`.
    pub response_body: bool,
}

impl BodyInterest {
    /// Neither body: the default, and the only one that streams bodies untouched.
    pub const NONE: Self = Self {
        request_body: false,
        response_body: false,
    };
}

thread_local! {
    static NOT_IMPLEMENTED: Cell<bool> = const { Cell::new(false) };
}

/// Called by the default hooks: marks the hook as not written by the author.
pub(crate) fn not_implemented() -> Action {
    NOT_IMPLEMENTED.with(|c| c.set(true));
    Action::Continue
}

/// Whether the hook that just ran was a default one; clears the mark. Inlined: it is two memory
/// accesses, and in Wasm a call costs more than that.
#[inline(always)]
pub(crate) fn take_not_implemented() -> bool {
    NOT_IMPLEMENTED.with(|c| c.replace(false))
}

/// Runs a hook and reports whether the author implemented it.
pub fn run_hook<R>(hook: impl FnOnce() -> R) -> (R, bool) {
    take_not_implemented();
    let result = hook();
    (result, !take_not_implemented())
}
