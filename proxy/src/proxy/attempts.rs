//! Attempts: sending the request to an endpoint until one attempt is final — per-try and
//! total deadlines, the retry a plugin asks for and why one is refused, and the answer the last
//! attempt makes.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::upgrade::DownstreamUpgrade;
use http::header::HeaderValue;
use http::{Request, Response};
use tracing::{debug, warn};

use crate::balance::hash_bytes;
use crate::body::ProxyBody;
use crate::config::UpstreamProtocol;
use crate::grpc;
use crate::headers;
use crate::plugin::{AttemptOutcome, RequestState, Step};
use crate::telemetry::exchange::AttemptSpan;
use crate::telemetry::trace_context::{SpanId, new_span_id};
use crate::telemetry::{AttemptResult, ErrorKind};
use crate::upstream::{Admission, Cluster, InFlight, Observed, Pace, UpstreamBody};

use super::ListenerProxy;
use super::answers::{Answer, local_answer, overloaded, plugin_failed_answer, upstream_answer};
use super::attempt_error::AttemptError;
use super::request_body::RequestBody;

/// Most attempts one request may make, whatever plugins ask.
const MAX_ATTEMPTS: u32 = 25;

/// The endpoint an attempt reached, held by its in-flight count.
pub(super) struct Attempted {
    pub(super) in_flight: InFlight,
}

/// Why a retry a plugin asked for was not made: the access log's `retry_refused` and the
/// `reason` label of `switchyard_retries_refused_total`.
#[derive(Debug, Clone, Copy)]
pub(super) enum RetryRefused {
    /// The request body went over the cluster's `max_replay_body` (or a plugin read it whole
    /// and it was over the buffer), so it cannot be sent again.
    BodyNotKept,
    MaxAttempts,
    /// The wait before the retry would pass the request's deadline.
    Deadline,
    /// The cluster's `max_retries` circuit breaker is full.
    CircuitBreaker,
}

impl RetryRefused {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::BodyNotKept => "body-too-large",
            Self::MaxAttempts => "max-attempts",
            Self::Deadline => "deadline",
            Self::CircuitBreaker => "circuit-breaker",
        }
    }
}

/// The request head itself, leaving an empty one behind.
pub(super) fn take_head(head: &mut http::request::Parts, body: ProxyBody) -> Request<ProxyBody> {
    let empty = Request::new(()).into_parts().0;
    Request::from_parts(std::mem::replace(head, empty), body)
}

pub(super) type AttemptSendResult = Result<(Response<UpstreamBody>, Attempted), AttemptError>;

pub(super) type HeadlessResult = Result<(UpstreamBody, Attempted), AttemptError>;

/// Takes the response head out of an attempt so plugins can read and change it.
pub(super) fn split_head(
    result: AttemptSendResult,
) -> (HeadlessResult, Option<http::response::Parts>) {
    match result {
        Ok((response, attempted)) => {
            let (head, body) = response.into_parts();
            (Ok((body, attempted)), Some(head))
        }
        Err(e) => (Err(e), None),
    }
}

pub(super) fn rejoin_head(
    result: HeadlessResult,
    head: Option<http::response::Parts>,
) -> AttemptSendResult {
    match (result, head) {
        (Ok((body, attempted)), Some(head)) => Ok((Response::from_parts(head, body), attempted)),
        (Ok(_), None) => Err(AttemptError::BadRequest(
            "the response head went missing".into(),
        )),
        (Err(e), _) => Err(e),
    }
}

/// The key `ring_hash` uses: the configured header's value, else the client's IP address.
pub(super) fn request_hash(state: &RequestState, cluster: &Cluster) -> u64 {
    let header: Option<&HeaderValue> = cluster
        .config
        .hash_header
        .as_ref()
        .and_then(|name| state.request_header(name));
    match header {
        Some(value) => hash_bytes(value.as_bytes()),
        None => hash_bytes(state.peer.ip().to_string().as_bytes()),
    }
}

impl ListenerProxy {
    /// Sends the request until an attempt is final: no plugin asks for a retry, the request
    /// cannot be replayed, or the deadline or attempt cap is reached.
    pub(super) async fn attempts(
        &self,
        mut state: Box<RequestState>,
        mut body: RequestBody,
        cluster: &Arc<Cluster>,
        mut downstream_upgrade: Option<DownstreamUpgrade>,
    ) -> (Box<RequestState>, Answer) {
        let mut total = state.timeout.unwrap_or(cluster.config.timeout);
        // A gRPC client's own deadline bounds the request too; each attempt tells the upstream
        // what is left of it. Only gRPC calls are looked at (most requests are not).
        let grpc_timeout = state
            .exchange
            .grpc
            .then(|| state.head.headers.get(&grpc::GRPC_TIMEOUT))
            .flatten()
            .and_then(grpc::parse_timeout);
        if let Some(client) = grpc_timeout {
            total = total.min(client);
        }
        // With plugins, the request is sent after the other requests ready in this turn of the
        // runtime (see `Pace`): yielded here, before the attempt's timer and send future exist,
        // the task's second poll has fewer levels to go through to reach this point again.
        let paced = self.paces_sends(&state);
        if paced {
            tokio::task::yield_now().await;
        }
        // One clock reading starts the deadline and the first attempt's share of it: the one
        // taken as the request arrived when nothing has waited since (no plugins ran, no body
        // was read ahead), else a new one.
        let mut now = if paced || body.read_ahead() {
            Instant::now()
        } else {
            state.exchange.started
        };
        let deadline = now + total;
        let Some(admission) = cluster.limits.admit_request() else {
            self.record_error(&mut state, ErrorKind::Overloaded);
            return (state, overloaded(cluster, "requests"));
        };
        // The circuit-breaker slot of the retry in progress, if this attempt is one.
        let mut _retry_slot = None;
        let (result, per_try) = loop {
            state.attempt += 1;
            let remaining = deadline.saturating_duration_since(now);
            let per_try = state
                .per_try_timeout
                .map_or(remaining, |t| t.min(remaining));
            let result = self
                .attempt(&mut state, &mut body, cluster, per_try, now)
                .await;

            let overload = matches!(result, Err(AttemptError::Overloaded(_)));
            if !self.chain.may_retry() || overload {
                break (result, per_try);
            }
            let (outcome, head) = match &result {
                Ok((response, _)) => (
                    AttemptOutcome::Response(response.status().as_u16()),
                    Some(response.headers()),
                ),
                Err(e) => (e.outcome(), None),
            };
            // Plugins that asked for failures only do not see a success.
            if !self.chain.watches_attempt(&state, outcome, head) {
                break (result, per_try);
            }
            // Plugins read the attempt's response head through the response interface.
            let mut result = result;
            if let Ok((response, _)) = &mut result {
                let passed = response.body_mut().take_passed_fields();
                headers::unpass(response.headers_mut(), passed);
            }
            let (result, head) = split_head(result);
            state.response = head;
            let (back, step) = self.chain.on_upstream_response(state, outcome).await;
            state = back;
            let head = state.response.take();
            let result = rejoin_head(result, head);
            match step {
                Step::Retry(delay) => {
                    let refused = if !body.replayable() {
                        Err(RetryRefused::BodyNotKept)
                    } else if state.attempt >= MAX_ATTEMPTS {
                        Err(RetryRefused::MaxAttempts)
                    } else if Instant::now() + delay >= deadline {
                        Err(RetryRefused::Deadline)
                    } else {
                        cluster
                            .limits
                            .admit_retry()
                            .ok_or(RetryRefused::CircuitBreaker)
                    };
                    match refused {
                        Ok(retry_slot) => {
                            _retry_slot = Some(retry_slot);
                            cluster.metrics.retries.increment(1);
                            debug!(attempt = state.attempt, ?delay, cluster = %cluster.name(), "retrying");
                            drop(result);
                            tokio::time::sleep(delay).await;
                            now = Instant::now();
                            continue;
                        }
                        Err(reason) => {
                            debug!(
                                attempt = state.attempt,
                                reason = reason.label(),
                                "retry not possible"
                            );
                            state.exchange.retry_refused = Some(reason.label());
                            cluster.metrics.retry_refused(reason.label());
                        }
                    }
                }
                Step::Respond(local) => return (state, local_answer(local)),
                Step::Failed(plugin) => {
                    self.record_error(&mut state, ErrorKind::Plugin);
                    return (state, plugin_failed_answer(&plugin));
                }
                Step::Continue => {}
            }
            break (result, per_try);
        };
        let answer =
            self.finish_attempt(result, cluster, &mut downstream_upgrade, per_try, admission);
        (state, answer)
    }

    /// One attempt: pick an endpoint, send a copy of the head with the body, wait for the head.
    /// `started` is when the attempt began (the clock reading its deadline was taken from).
    pub(super) async fn attempt(
        &self,
        state: &mut RequestState,
        body: &mut RequestBody,
        cluster: &Arc<Cluster>,
        per_try: Duration,
        started: Instant,
    ) -> Result<(Response<UpstreamBody>, Attempted), AttemptError> {
        let hash = cluster.wants_hash().then(|| request_hash(state, cluster));
        let Some(endpoint) = cluster.pick(hash) else {
            return Err(self.failed(state, AttemptError::NoEndpoint));
        };
        let Some(body) = body.for_attempt() else {
            return Err(self.failed(state, AttemptError::NotReplayable));
        };
        // Built outside this async fn: a request borrowed here would keep its slot in this
        // future's state across the send.
        let (req, span_id) = self.upstream_request(state, body, cluster, per_try)?;
        state.exchange.upstream = Some(endpoint.addr);

        let in_flight = endpoint.start_request();
        let endpoint = in_flight.endpoint();
        let recording = span_id.is_some()
            && self
                .telemetry
                .shared
                .records_attempts(state.exchange.trace.as_ref());
        let started_at = recording.then(SystemTime::now);
        let per_try_deadline = tokio::time::Instant::from_std(started + per_try);
        // The send future (the pool's and the HTTP/1.1 client's state, 1.7 KB) is pinned where
        // it is made, in this future's state. It keeps the deadline itself: the HTTP/1.1 engine
        // with its connection's timer, moved only when it would be late rather than put in the
        // runtime's timer wheel and taken out again on every request. A retry is written at
        // once; the first attempt waited in `attempts` if it was to.
        let sent = {
            let added = state.added.listed(&state.request_id);
            let send = pin!(endpoint.send(
                req,
                added.as_slice(),
                Pace::Now,
                state.response_fields,
                Some(per_try_deadline),
            ));
            match send.await {
                Ok(sent) => Ok(sent),
                Err(e) => Err(AttemptError::from_send(e)),
            }
        };
        let took = started.elapsed();
        let result = match &sent {
            Ok(response) => AttemptResult::Status(response.status().as_u16()),
            Err(e) => AttemptResult::Error(e.kind().unwrap_or(ErrorKind::Reset)),
        };
        match result {
            AttemptResult::Status(_) => state.exchange.error = None,
            AttemptResult::Error(kind) => self.record_error(state, kind),
        }
        if !matches!(result, AttemptResult::Error(ErrorKind::Overloaded)) {
            cluster.metrics.record_attempt(result, took);
        }
        if let (Some(span_id), Some(start)) = (span_id, started_at) {
            state.exchange.attempts.push(AttemptSpan {
                span_id,
                start,
                end: SystemTime::now(),
                endpoint: endpoint.addr,
                result,
            });
        }
        match sent {
            Ok(response) => {
                cluster.observe_latency(endpoint, took);
                cluster.observe(endpoint, Observed::Status(response.status().as_u16()));
                Ok((response, Attempted { in_flight }))
            }
            Err(AttemptError::Timeout) => {
                cluster.observe_latency(endpoint, per_try);
                warn!(listener = %self.scope.listener, cluster = %cluster.name(), endpoint = %endpoint.addr, ?per_try, "upstream timed out");
                Err(AttemptError::Timeout)
            }
            Err(error) => {
                if let (Some(observed), AttemptError::Send(e)) = (error.observed(), &error) {
                    cluster.observe(endpoint, observed);
                    // A failing endpoint should look slow to `ewma`, not fast.
                    cluster.observe_latency(endpoint, took.max(cluster.config.connect_timeout));
                    warn!(listener = %self.scope.listener, cluster = %cluster.name(), error = %e, "upstream request failed");
                }
                Err(error)
            }
        }
    }

    /// The request an attempt sends: the head (moved when nothing reads it after sending,
    /// else copied), the time left for a gRPC call, the upstream's target form, and the trace
    /// context with the attempt's span id.
    fn upstream_request(
        &self,
        state: &mut RequestState,
        body: ProxyBody,
        cluster: &Cluster,
        per_try: Duration,
    ) -> Result<(Request<ProxyBody>, Option<SpanId>), AttemptError> {
        // When no hook runs after sending (no plugins, or plugins with request hooks only)
        // nothing reads the head again and nothing retries: move it, don't copy.
        let mut req = if !self.chain.hooks_after_send() {
            take_head(&mut state.head, body)
        } else {
            headers::copy_request(&state.head, body)
        };
        if state.exchange.grpc && req.headers().contains_key(&grpc::GRPC_TIMEOUT) {
            req.headers_mut()
                .insert(&grpc::GRPC_TIMEOUT, grpc::format_timeout(per_try));
        }
        let http2 = cluster.config.protocol == UpstreamProtocol::Http2;
        headers::set_upstream_target(&mut req, http2)
            .map_err(|e| AttemptError::BadRequest(e.to_string()))?;
        let span_id = state.exchange.trace.as_ref().map(|trace| {
            let span_id = new_span_id();
            trace.inject(req.headers_mut(), span_id);
            span_id
        });
        Ok((req, span_id))
    }

    /// Whether requests wait for the other requests ready in this turn of the runtime before
    /// they are sent: with plugins, whose hooks run between a request's read and its write, so
    /// the endpoint gets the turn's requests together (see `Pace`).
    fn paces_sends(&self, state: &RequestState) -> bool {
        !(self.chain.is_empty() && state.routed_chain.is_none())
    }

    /// Records why an attempt failed before it was sent, and returns the reason.
    fn failed(&self, state: &mut RequestState, error: AttemptError) -> AttemptError {
        if let Some(kind) = error.kind() {
            self.record_error(state, kind);
        }
        error
    }

    /// Turns the last attempt into the answer for the client.
    pub(super) fn finish_attempt(
        &self,
        result: Result<(Response<UpstreamBody>, Attempted), AttemptError>,
        cluster: &Cluster,
        downstream_upgrade: &mut Option<DownstreamUpgrade>,
        per_try: Duration,
        admission: Admission,
    ) -> Answer {
        match result {
            Ok((response, attempted)) => {
                upstream_answer(response, attempted, Some(admission), downstream_upgrade)
            }
            Err(error) => error.answer(cluster, per_try),
        }
    }
}
