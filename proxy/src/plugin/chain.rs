//! Running a listener's plugins: request hooks in chain order, response hooks in reverse,
//! applying each decision and the plugin's failure policy.

use std::sync::Arc;
use std::time::Duration;

use super::bindings::{AttemptOutcome, Decision, LocalResponse};
use super::host::RequestState;
use super::instance::HookCall;
use super::{Hook, Plugin};
use crate::config::OnError;

/// What the chain decided after running one hook over its plugins.
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

/// The plugins of one listener, in order.
#[derive(Default)]
pub struct Chain {
    plugins: Vec<Arc<Plugin>>,
}

impl Chain {
    pub fn new(plugins: Vec<Arc<Plugin>>) -> Self {
        Self { plugins }
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    pub fn wants_request_body(&self) -> bool {
        self.plugins.iter().any(|p| p.wants(Hook::RequestBody))
    }

    pub fn wants_response_body(&self) -> bool {
        self.plugins.iter().any(|p| p.wants(Hook::ResponseBody))
    }

    /// Whether any plugin may ask for retries (so the request must stay replayable).
    pub fn may_retry(&self) -> bool {
        self.plugins.iter().any(|p| p.wants(Hook::UpstreamResponse))
    }

    pub fn wants_log(&self) -> bool {
        self.plugins.iter().any(|p| p.wants(Hook::Log))
    }

    /// Whether any hook that runs after the request is sent (and may read its head) is wanted:
    /// if none is, the head can be moved upstream instead of copied.
    pub fn reads_request_after_send(&self) -> bool {
        const LATER: [Hook; 4] = [
            Hook::UpstreamResponse,
            Hook::Response,
            Hook::ResponseBody,
            Hook::Log,
        ];
        self.plugins
            .iter()
            .any(|p| LATER.iter().any(|hook| p.wants(*hook)))
    }

    pub async fn on_request(&self, state: Box<RequestState>) -> (Box<RequestState>, Step) {
        let call = || HookCall::Request;
        let (mut state, step, reached) = run(self.plugins.iter(), state, Hook::Request, call).await;
        state.plugins_reached = reached;
        (state, step)
    }

    pub async fn on_request_body(
        &self,
        state: Box<RequestState>,
        body: &[u8],
    ) -> (Box<RequestState>, Step) {
        let call = || HookCall::RequestBody(body.to_vec());
        let (state, step, _) = run(self.plugins.iter(), state, Hook::RequestBody, call).await;
        (state, step)
    }

    pub async fn on_upstream_response(
        &self,
        state: Box<RequestState>,
        outcome: AttemptOutcome,
    ) -> (Box<RequestState>, Step) {
        let call = || HookCall::UpstreamResponse(outcome);
        let plugins = self.plugins.iter().rev();
        let (state, step, _) = run(plugins, state, Hook::UpstreamResponse, call).await;
        (state, step)
    }

    pub async fn on_response(&self, state: Box<RequestState>) -> (Box<RequestState>, Step) {
        let path = self.response_path(&state);
        let (state, step, _) = run(path, state, Hook::Response, || HookCall::Response).await;
        (state, step)
    }

    pub async fn on_response_body(
        &self,
        state: Box<RequestState>,
        body: &[u8],
    ) -> (Box<RequestState>, Step) {
        let path = self.response_path(&state);
        let call = || HookCall::ResponseBody(body.to_vec());
        let (state, step, _) = run(path, state, Hook::ResponseBody, call).await;
        (state, step)
    }

    pub async fn on_log(&self, state: Box<RequestState>) {
        let path = self.response_path(&state);
        let _ = run(path, state, Hook::Log, || HookCall::Log).await;
    }

    /// The plugins that saw the request, last first: the order of the response path.
    fn response_path(
        &self,
        state: &RequestState,
    ) -> std::iter::Rev<std::slice::Iter<'_, Arc<Plugin>>> {
        let reached = state.plugins_reached.min(self.plugins.len());
        self.plugins[..reached].iter().rev()
    }
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
        let (back, result) = plugin.call(state, hook, call()).await;
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
