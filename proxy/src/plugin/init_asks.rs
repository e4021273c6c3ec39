//! What a plugin asks for during `init` (ticks, bodies chunk by chunk, which attempts it sees,
//! whether it calls out): recorded on the instance's state, ignored with a warning later.

use std::time::Duration;

use super::bindings::switchyard::plugin::{attempts, calls, streaming, timer};
use super::host::HostState;
use crate::sandbox::MIN_TICK;

impl timer::Host for HostState {
    fn tick_every(&mut self, ms: u32) {
        if self.in_init {
            self.tick_every = Some(Duration::from_millis(u64::from(ms)).max(MIN_TICK));
        } else {
            tracing::warn!(plugin = %self.env.name, "timer.tick-every is only heeded during init; ignored");
        }
    }
}

impl streaming::Host for HostState {
    fn stream_response_body(&mut self) {
        if self.in_init {
            self.streams_response = true;
        } else {
            tracing::warn!(plugin = %self.env.name, "streaming.stream-response-body is only heeded during init; ignored");
        }
    }

    fn stream_request_body(&mut self) {
        if self.in_init {
            self.streams_request = true;
        } else {
            tracing::warn!(plugin = %self.env.name, "streaming.stream-request-body is only heeded during init; ignored");
        }
    }
}

impl attempts::Host for HostState {
    fn upstream_failures_only(&mut self, min_status: u16, grpc_statuses: bool) {
        if self.in_init {
            self.attempt_filter = Some(super::AttemptFilter {
                min_status,
                grpc_statuses,
            });
        } else {
            tracing::warn!(plugin = %self.env.name, "attempts.upstream-failures-only is only heeded during init; ignored");
        }
    }
}

impl calls::Host for HostState {
    fn never_call_out(&mut self) {
        if self.in_init {
            self.never_calls_out = true;
        } else {
            tracing::warn!(plugin = %self.env.name, "calls.never-call-out is only heeded during init; ignored");
        }
    }
}

impl HostState {
    /// Logs a `http.call` the core entry refuses with `invalid` (it cannot wait): from a plugin
    /// that said in `init` that it never calls out, a broken promise; from one that has not (yet),
    /// a call during `init`, after which the plugin starts again as a component.
    pub(super) fn refuse_call_out(&self, cluster: &str) {
        if self.never_calls_out {
            tracing::warn!(plugin = %self.env.name, %cluster, "http.call refused: the plugin said in init that it never calls out");
        } else {
            tracing::debug!(plugin = %self.env.name, %cluster, "http.call refused on the core entry; the plugin starts again as a component");
        }
    }
}
