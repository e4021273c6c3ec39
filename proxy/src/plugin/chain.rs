//! Running a listener's plugins: request hooks in chain order, response hooks in reverse,
//! applying each decision and the plugin's failure policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::bindings::{AttemptOutcome, Decision, LocalResponse};
use super::instance::HookCall;
use super::request_state::RequestState;
use super::{BodyOf, Hook, Plugin};
use crate::config::OnError;

/// What the chain decided in on-upstream-response, the one hook that may ask for a retry.
#[derive(Debug)]
pub enum Step {
    /// Every plugin continued.
    Continue,
    /// A plugin answered the request itself.
    Respond(LocalResponse),
    /// A plugin asked for another attempt after this delay (on-upstream-response only).
    Retry(Duration),
    /// A fail-closed plugin failed; the request gets a 503 naming it.
    Failed(Arc<str>),
}

/// What the chain decided in every other hook: go on, answer, or fail. (A plugin that answers
/// `retry` there is logged and ignored while the chain runs.)
#[derive(Debug)]
pub enum Decided {
    /// Every plugin continued.
    Continue,
    /// A plugin answered the request itself.
    Respond(LocalResponse),
    /// A fail-closed plugin failed; the request gets a 503 naming it.
    Failed(Arc<str>),
}

impl Decided {
    /// `step` from a hook that cannot retry: [`run`] turned any retry there into "continue".
    fn of(step: Step) -> Self {
        match step {
            Step::Continue | Step::Retry(_) => Self::Continue,
            Step::Respond(response) => Self::Respond(response),
            Step::Failed(plugin) => Self::Failed(plugin),
        }
    }
}

/// The plugins of one listener, in order, and how named routes change them.
#[derive(Default)]
pub struct Chain {
    plugins: Vec<Arc<Plugin>>,
    /// By route name (`[[listener.route]]`).
    routes: HashMap<String, RoutePlan>,
    /// Whether some plugin streams request bodies, response bodies (asked per request).
    streams_request: bool,
    streams_response: bool,
}

/// What one route changes in the chain for its requests.
pub struct RoutePlan {
    /// Plugins of the listener's chain left out once the route is named.
    pub skip: Vec<String>,
    /// Plugins run after the listener's own.
    pub add: Vec<Arc<Plugin>>,
}

impl Chain {
    pub fn new(plugins: Vec<Arc<Plugin>>) -> Self {
        Self::with_routes(plugins, HashMap::new())
    }

    /// A chain whose requests, once a plugin names their route, run that route's plan.
    pub fn with_routes(plugins: Vec<Arc<Plugin>>, routes: HashMap<String, RoutePlan>) -> Self {
        let mut chain = Self {
            plugins,
            routes,
            streams_request: false,
            streams_response: false,
        };
        let streams_request = chain.every_plugin().any(|p| p.streams_request);
        let streams_response = chain.every_plugin().any(|p| p.streams_response);
        chain.streams_request = streams_request;
        chain.streams_response = streams_response;
        chain
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty() && self.routes.values().all(|r| r.add.is_empty())
    }

    /// Every plugin a request of this listener may run, whatever its route.
    fn every_plugin(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins
            .iter()
            .chain(self.routes.values().flat_map(|r| r.add.iter()))
    }

    pub fn wants_request_body(&self) -> bool {
        self.every_plugin().any(|p| p.wants(Hook::RequestBody))
    }

    pub fn wants_response_body(&self) -> bool {
        self.every_plugin().any(|p| p.wants(Hook::ResponseBody))
    }

    /// Whether any plugin may ask for retries (so the request must stay replayable).
    pub fn may_retry(&self) -> bool {
        self.every_plugin().any(|p| p.wants(Hook::UpstreamResponse))
    }

    /// Whether any plugin rewrites response bodies chunk by chunk (the response then goes out
    /// without `content-length`).
    pub fn streams_response(&self) -> bool {
        self.streams_response
    }

    /// Whether any plugin rewrites request bodies chunk by chunk (the upstream then gets the
    /// request without `content-length`).
    pub fn streams_request(&self) -> bool {
        self.streams_request
    }

    /// Passes one piece of a body through the plugins that stream it — a request body in chain
    /// order, a response body in response order; `end` on the last call. The bytes to send, or
    /// the fail-closed plugin that failed (the body is then cut off: its head has gone already).
    pub async fn on_chunk(
        &self,
        mut state: Box<RequestState>,
        body: BodyOf,
        chunk: bytes::Bytes,
        end: bool,
    ) -> (Box<RequestState>, Result<bytes::Bytes, Arc<str>>) {
        let streaming = self.streaming(&state, body);
        let mut chunk = chunk;
        for plugin in streaming {
            let (back, result) = plugin.chunk(state, body, chunk.to_vec(), end).await;
            state = back;
            match result {
                Ok(Some(replacement)) => chunk = replacement.into(),
                Ok(None) => {}
                Err(_) if plugin.on_error == OnError::FailClosed => {
                    return (state, Err(Arc::clone(&plugin.name)));
                }
                Err(_) => {}
            }
        }
        (state, Ok(chunk))
    }

    /// Passes a body's trailers through the plugins that stream it, in the order of its
    /// pieces (proxy-wasm filters read and change them; Switchyard plugins see pieces only).
    /// The trailers to send, or the fail-closed plugin that failed.
    pub async fn on_trailers(
        &self,
        mut state: Box<RequestState>,
        body: BodyOf,
        mut trailers: http::HeaderMap,
    ) -> (Box<RequestState>, Result<http::HeaderMap, Arc<str>>) {
        let streaming = self.streaming(&state, body);
        for plugin in streaming {
            let (back, result) = plugin.trailers(state, body, trailers).await;
            state = back;
            match result {
                Ok(changed) => trailers = changed,
                Err(_) if plugin.on_error == OnError::FailClosed => {
                    return (state, Err(Arc::clone(&plugin.name)));
                }
                Err((_, kept)) => trailers = kept,
            }
        }
        (state, Ok(trailers))
    }

    /// The plugins a body's pieces pass through: for a request body those of the chain that
    /// stream it, in order; for a response body those that saw the request, last first.
    fn streaming(&self, state: &RequestState, body: BodyOf) -> Vec<Arc<Plugin>> {
        let routed = self.chain_of(state);
        let chain = routed.as_deref().unwrap_or(&self.plugins);
        match body {
            BodyOf::Request => chain
                .iter()
                .filter(|p| p.streams_request)
                .cloned()
                .collect(),
            BodyOf::Response => response_path(chain, state)
                .filter(|p| p.streams_response)
                .cloned()
                .collect(),
        }
    }

    pub fn wants_log(&self) -> bool {
        self.every_plugin().any(|p| p.wants(Hook::Log))
    }

    /// Whether any hook that runs after the request is sent is wanted: if none is, nothing
    /// reads the request's head after it is sent (so it is moved upstream, not copied) or the
    /// response's head (so its fields can pass as they came).
    pub fn hooks_after_send(&self) -> bool {
        const LATER: u16 = Hook::bits(&[
            Hook::UpstreamResponse,
            Hook::Response,
            Hook::ResponseBody,
            Hook::Log,
        ]);
        self.every_plugin().any(|p| p.wants_any(LATER))
    }

    /// Whether any hook of the response phase is wanted (`on-response`, `on-response-body`,
    /// `on-log`): if none is, the response goes out without that phase's future.
    pub fn hooks_on_response(&self) -> bool {
        const RESPONSE: u16 = Hook::bits(&[Hook::Response, Hook::ResponseBody, Hook::Log]);
        self.every_plugin().any(|p| p.wants_any(RESPONSE))
    }

    pub async fn on_request(&self, state: Box<RequestState>) -> (Box<RequestState>, Decided) {
        if !self.routes.is_empty() {
            return self.on_request_routed(state).await;
        }
        let call = || HookCall::Request;
        let (mut state, step, reached) = run(self.plugins.iter(), state, Hook::Request, call).await;
        state.plugins_reached = reached;
        (state, Decided::of(step))
    }

    /// [`Chain::on_request`] one plugin at a time, so that once a plugin names the request's
    /// route the rest of the chain follows the route's plan.
    async fn on_request_routed(
        &self,
        mut state: Box<RequestState>,
    ) -> (Box<RequestState>, Decided) {
        let mut chain = self.plugins.clone();
        let mut planned = false;
        let mut next = 0;
        let mut step = Step::Continue;
        while let Some(plugin) = chain.get(next).cloned() {
            next += 1;
            let once = std::iter::once(&plugin);
            let (back, result, _) = run(once, state, Hook::Request, || HookCall::Request).await;
            state = back;
            if !matches!(result, Step::Continue) {
                step = result;
                break;
            }
            if !planned && let Some(plan) = self.plan_for(&state) {
                planned = true;
                let rest = chain.split_off(next);
                chain.extend(
                    rest.into_iter()
                        .filter(|p| !plan.skip.iter().any(|s| **s == *p.name)),
                );
                chain.extend(plan.add.iter().cloned());
            }
        }
        state.plugins_reached = next;
        if planned {
            state.routed_chain = Some(chain.into());
        }
        (state, Decided::of(step))
    }

    /// The plan of the route a plugin named for this request, if this listener has one for it.
    fn plan_for(&self, state: &RequestState) -> Option<&RoutePlan> {
        self.routes.get(state.context.route()?)
    }

    /// The chain `state` runs: its route's, or the listener's.
    fn chain_of(&self, state: &RequestState) -> Option<Arc<[Arc<Plugin>]>> {
        state.routed_chain.clone()
    }

    pub async fn on_request_body(
        &self,
        state: Box<RequestState>,
        body: &[u8],
    ) -> (Box<RequestState>, Decided) {
        let routed = self.chain_of(&state);
        let plugins = routed.as_deref().unwrap_or(&self.plugins);
        let call = || HookCall::RequestBody(body.to_vec());
        let (state, step, _) = run(plugins.iter(), state, Hook::RequestBody, call).await;
        (state, Decided::of(step))
    }

    /// Whether some plugin's `on-upstream-response` is to see this attempt (`head`: its
    /// response's, if it got one): when none is, the attempt's outcome stands as it is.
    pub fn watches_attempt(
        &self,
        state: &RequestState,
        outcome: AttemptOutcome,
        head: Option<&http::HeaderMap>,
    ) -> bool {
        let routed = self.chain_of(state);
        let plugins = routed.as_deref().unwrap_or(&self.plugins);
        let grpc_failed = grpc_failed(plugins, head);
        plugins.iter().any(|p| p.sees_attempt(outcome, grpc_failed))
    }

    /// Runs `on-upstream-response` over the plugins that are to see this attempt, last first;
    /// the attempt's response head, if any, is the state's `response`.
    pub async fn on_upstream_response(
        &self,
        state: Box<RequestState>,
        outcome: AttemptOutcome,
    ) -> (Box<RequestState>, Step) {
        let routed = self.chain_of(&state);
        let plugins = routed.as_deref().unwrap_or(&self.plugins);
        let grpc_failed = grpc_failed(plugins, state.response.as_ref().map(|h| &h.headers));
        let watchers = plugins
            .iter()
            .rev()
            .filter(|p| p.sees_attempt(outcome, grpc_failed));
        let call = || HookCall::UpstreamResponse(outcome);
        let (state, step, _) = run(watchers, state, Hook::UpstreamResponse, call).await;
        (state, step)
    }

    pub async fn on_response(&self, state: Box<RequestState>) -> (Box<RequestState>, Decided) {
        let routed = self.chain_of(&state);
        let path = response_path(routed.as_deref().unwrap_or(&self.plugins), &state);
        let (state, step, _) = run(path, state, Hook::Response, || HookCall::Response).await;
        (state, Decided::of(step))
    }

    pub async fn on_response_body(
        &self,
        state: Box<RequestState>,
        body: &[u8],
    ) -> (Box<RequestState>, Decided) {
        let routed = self.chain_of(&state);
        let path = response_path(routed.as_deref().unwrap_or(&self.plugins), &state);
        let call = || HookCall::ResponseBody(body.to_vec());
        let (state, step, _) = run(path, state, Hook::ResponseBody, call).await;
        (state, Decided::of(step))
    }

    pub async fn on_log(&self, state: Box<RequestState>) {
        let routed = self.chain_of(&state);
        let path = response_path(routed.as_deref().unwrap_or(&self.plugins), &state);
        let _ = run(path, state, Hook::Log, || HookCall::Log).await;
    }
}

/// The plugins of `chain` that saw the request, last first: the order of the response path.
fn response_path<'a>(
    chain: &'a [Arc<Plugin>],
    state: &RequestState,
) -> std::iter::Rev<std::slice::Iter<'a, Arc<Plugin>>> {
    let reached = state.plugins_reached.min(chain.len());
    chain[..reached].iter().rev()
}

/// Whether an attempt's response head carries a failed `grpc-status`, read only when some
/// plugin of `plugins` filters its attempts by it.
fn grpc_failed(plugins: &[Arc<Plugin>], head: Option<&http::HeaderMap>) -> bool {
    plugins.iter().any(|p| p.reads_grpc_status())
        && head
            .and_then(crate::grpc::status)
            .is_some_and(|status| status != 0)
}

/// Runs `hook` over `plugins`; also returns how many plugins were reached (including one that
/// answered or failed).
async fn run<'a>(
    plugins: impl Iterator<Item = &'a Arc<Plugin>>,
    mut state: Box<RequestState>,
    hook: Hook,
    call: impl Fn() -> HookCall,
) -> (Box<RequestState>, Step, usize) {
    let mut reached = 0;
    for plugin in plugins {
        reached += 1;
        if !plugin.wants(hook) {
            continue;
        }
        let (back, result) = match plugin.call_now(state, hook, call()) {
            Ok(called) => called,
            Err((state, call)) => plugin.call(state, hook, call).await,
        };
        state = back;
        match result {
            Ok(Decision::Continue) => {}
            Ok(Decision::Unimplemented) => plugin.mark_unimplemented(hook),
            Ok(Decision::Delay(ms)) => {
                note(&mut state, plugin, hook, "delay");
                tokio::time::sleep(Duration::from_millis(u64::from(ms))).await
            }
            Ok(Decision::Respond(response)) => {
                note(&mut state, plugin, hook, "respond");
                return (state, Step::Respond(response), reached);
            }
            Ok(Decision::Retry(ms)) if hook == Hook::UpstreamResponse => {
                note(&mut state, plugin, hook, "retry");
                let delay = Duration::from_millis(u64::from(ms));
                return (state, Step::Retry(delay), reached);
            }
            Ok(Decision::Retry(_)) => {
                tracing::warn!(plugin = %plugin.name, ?hook, "retry is only possible from on-upstream-response; ignored");
            }
            Err(error) => {
                let request_id = state.request_id.to_str().ok();
                plugin
                    .failures
                    .record(&plugin.name, hook, &error, request_id);
                if plugin.on_error == OnError::FailClosed {
                    note(&mut state, plugin, hook, "failed");
                    return (state, Step::Failed(Arc::clone(&plugin.name)), reached);
                }
                note(&mut state, plugin, hook, "skipped");
            }
        }
    }
    (state, Step::Continue, reached)
}

/// Records a decision other than "continue" for the access log (`plugin:hook:decision`).
fn note(state: &mut RequestState, plugin: &Plugin, hook: Hook, decision: &str) {
    if hook != Hook::Log {
        let entry = format!("{}:{}:{decision}", plugin.name, hook.name());
        state.exchange.decisions.push(entry);
    }
}
