//! One request end to end, in the order of DESIGN.md's request flow:
//!
//! ```text
//! request id -> hop-by-hop/forwarding headers -> chain.on_request -> [chain.on_request_body]
//!   -> destination (last set by a plugin, else the listener's default_cluster)
//!   -> attempts: pick endpoint -> send under per-try and total deadlines
//!                -> chain.on_upstream_response (may ask for a retry)
//!   -> chain.on_response -> [chain.on_response_body] -> stream to client -> chain.on_log
//! ```
//!
//! The core enforces every deadline; plugins only ask.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};

use crate::balance::hash_bytes;
use crate::body::{BodyTooLarge, Done, ProxyBody, ServedBody};
use crate::chunks::ChunkStream;
use crate::config::UpstreamProtocol;
use crate::grpc;
use crate::headers;
use crate::listener::TlsSession;
use crate::local_response::{LocalError, X_SWITCHYARD_OVERLOADED, text_response};
use crate::path::PathNormalization;
use crate::plugin::{
    AttemptOutcome, BodyOf, Chain, Decided, LocalResponse, RequestState, Step, UpstreamError,
};
use crate::replay::Replay;
use crate::telemetry::exchange::AttemptSpan;
use crate::telemetry::trace_context::new_span_id;
use crate::telemetry::{AttemptResult, ErrorKind, ListenerTelemetry};
use crate::upstream::{
    Admission, Cluster, Clusters, Endpoint, InFlight, Lent, Observed, UpstreamError as SendError,
};

/// Most attempts one request may make, whatever plugins ask.
const MAX_ATTEMPTS: u32 = 25;

/// Everything a listener needs to forward a request.
pub struct ListenerProxy {
    pub listener: Arc<str>,
    /// The scheme clients used to reach this listener, for `x-forwarded-proto`.
    pub scheme: &'static str,
    pub default_cluster: Option<Arc<Cluster>>,
    /// Every cluster of the config this listener was built from.
    pub clusters: Arc<Clusters>,
    pub chain: Arc<Chain>,
    /// Largest body buffered for plugins that read bodies; larger gets 413.
    pub max_buffered_body: usize,
    /// Longest request target accepted; longer gets 414.
    pub max_uri_length: usize,
    /// How the request path is cleaned before any plugin sees it.
    pub path_normalization: PathNormalization,
    /// gRPC-Web requests are served as gRPC upstream.
    pub grpc_web: bool,
    /// Largest request body accepted; larger gets 413. `None`: unlimited.
    pub max_request_body: Option<u64>,
    /// The header that carries a verified client identity upstream (`[listener.tls]
    /// forward_client_cert`); clients' own copies are always removed.
    pub forward_client_cert: Option<HeaderName>,
    /// Metrics, access log and spans of this listener's requests.
    pub telemetry: Arc<ListenerTelemetry>,
}

impl std::fmt::Debug for ListenerProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerProxy")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// A response on its way to the client, before the response hooks ran.
struct Answer {
    head: http::response::Parts,
    body: ProxyBody,
}

impl ListenerProxy {
    /// Serves one downstream request; never fails (errors become local responses).
    pub async fn handle(
        &self,
        peer: SocketAddr,
        tls: Option<Arc<TlsSession>>,
        dialed: Option<SocketAddr>,
        mut req: Request<Incoming>,
    ) -> Response<ServedBody> {
        let web = self
            .grpc_web
            .then(|| grpc::web::WebCall::of(req.headers()))
            .flatten();
        if let Some(call) = &web {
            grpc::web::to_grpc_request(req.headers_mut(), call.encoding);
        }
        let exchange = self.telemetry.start(&req);
        let request_id = headers::ensure_request_id(req.headers_mut());
        let mut refusal = self.refuse_oversized(&req);
        if refusal.is_none() {
            match self.path_normalization.normalize_uri(req.uri()) {
                Ok(None) => {}
                Ok(Some(normalized)) => *req.uri_mut() = normalized,
                Err(e) => refusal = Some(LocalError::BadRequest.response(&e.to_string())),
            }
        }
        let upgrade = headers::is_upgrade_request(&req);
        let accepts_trailers = headers::accepts_trailers(&req);
        let downstream_upgrade =
            (upgrade && refusal.is_none()).then(|| hyper::upgrade::on(&mut req));
        let version = req.version();
        headers::strip_hop_by_hop(req.headers_mut(), upgrade);
        headers::add_forwarding(req.headers_mut(), peer.ip(), self.scheme, version);
        if let Some(header) = &self.forward_client_cert {
            req.headers_mut().remove(header);
            let identity = tls.as_ref().and_then(|t| t.identity.as_ref());
            if let Some(value) =
                identity.and_then(|id| HeaderValue::from_str(&id.header_value()).ok())
            {
                req.headers_mut().insert(header.clone(), value);
            }
        }

        let (head, body) = req.into_parts();
        let state = Box::new(RequestState {
            head,
            response: None,
            listener: Arc::clone(&self.listener),
            peer,
            request_id: request_id.clone(),
            attempt: 0,
            // On a capture listener, the cluster serving the address the client dialed.
            destination: dialed
                .and_then(|addr| self.clusters.by_service_address(addr))
                .or(self.default_cluster.as_ref())
                .cloned(),
            clusters: Arc::clone(&self.clusters),
            tls,
            timeout: None,
            per_try_timeout: None,
            context: HashMap::new(),
            bad_destination: None,
            plugins_reached: usize::MAX,
            routed_chain: None,
            exchange,
            response_headers_to_add: Vec::new(),
        });
        let (mut state, mut response) = match refusal {
            Some(refusal) => (state, refusal),
            None => {
                let web_text = web
                    .as_ref()
                    .is_some_and(|c| c.encoding == grpc::web::Encoding::Text);
                self.run(state, body, downstream_upgrade, web_text).await
            }
        };
        response
            .headers_mut()
            .entry(&headers::X_REQUEST_ID)
            .or_insert(request_id);
        for (name, value) in state.response_headers_to_add.drain(..) {
            response.headers_mut().append(name, value);
        }
        if state.exchange.grpc {
            response = grpc::local_error_as_grpc(response);
            state.exchange.grpc_status = grpc::status(response.headers());
        }
        if let Some(call) = &web {
            response = grpc::web::to_web_response(response, call);
        }
        if accepts_trailers && !response.body().is_end_stream() {
            headers::announce_grpc_trailers(response.headers_mut());
        }
        let status = response.status().as_u16();
        let (mut head, mut body) = response.into_parts();
        if self.chain.streams_response() && !body.is_end_stream() {
            // Plugins that rewrite the body chunk by chunk may change its length.
            head.headers.remove(http::header::CONTENT_LENGTH);
            state.response = Some(headers::copy_response_head(&head));
            let chain = Arc::clone(&self.chain);
            let stream = ChunkStream::new(body, chain, BodyOf::Response, state.view());
            body = ProxyBody::Chunked(Box::new(stream));
        }
        let done = Done {
            state,
            status,
            telemetry: Arc::clone(&self.telemetry),
            log_chain: self.chain.wants_log().then(|| Arc::clone(&self.chain)),
        };
        Response::from_parts(head, ServedBody::new(body, Some(done)))
    }

    /// Counts an error and remembers it as the reason for the request's outcome.
    fn record_error(&self, state: &mut RequestState, kind: ErrorKind) {
        state.exchange.error = Some(kind);
        self.telemetry
            .metrics
            .record_error(state.exchange.cluster.as_ref(), kind);
    }

    /// 400 for an HTTP/1.1 request without exactly one Host, 414 for a request target over
    /// `max_uri_length`, 413 for a declared body over
    /// `max_request_body` (a chunked one is capped as it streams). Ambiguous framing never gets
    /// here: hyper refuses it, or (Content-Length with chunked) drops the length, frames by the
    /// chunks and closes the connection after the response (RFC 9112 §6.1).
    fn refuse_oversized(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        if let Some(problem) = host_problem(req) {
            return Some(LocalError::BadRequest.response(problem));
        }
        let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target > self.max_uri_length {
            return Some(LocalError::UriTooLong.response(&format!(
                "the request target is {target} bytes; this listener accepts {}",
                self.max_uri_length
            )));
        }
        let limit = self.max_request_body?;
        let declared = req.body().size_hint().lower();
        (declared > limit).then(|| {
            LocalError::BodyTooLarge.response(&format!(
                "the request body is {declared} bytes; this listener accepts {limit}"
            ))
        })
    }

    async fn run(
        &self,
        state: Box<RequestState>,
        body: Incoming,
        downstream_upgrade: Option<OnUpgrade>,
        web_text: bool,
    ) -> (Box<RequestState>, Response<ProxyBody>) {
        let chain = &self.chain;
        let (mut state, decided) = if chain.is_empty() {
            (state, Decided::Continue)
        } else {
            chain.on_request(state).await
        };
        // Whatever answers — the upstream, a plugin, a plugin's failure — the response hooks
        // of the plugins that saw the request run on it, as after on_request_body.
        let (state, answer) = match decided {
            Decided::Continue => {
                self.forward(state, body, downstream_upgrade, web_text)
                    .await
            }
            Decided::Respond(local) => (state, local_answer(local)),
            Decided::Failed(plugin) => {
                self.record_error(&mut state, ErrorKind::Plugin);
                (state, plugin_failed_answer(&plugin))
            }
        };
        self.respond(state, answer).await
    }

    /// Runs the request body hook if wanted, then the attempt loop.
    async fn forward(
        &self,
        mut state: Box<RequestState>,
        body: Incoming,
        downstream_upgrade: Option<OnUpgrade>,
        web_text: bool,
    ) -> (Box<RequestState>, Answer) {
        let mut body = RequestBody::new(body, self.max_request_body);
        if web_text && let Err(answer) = body.decode_grpc_web_text(self.max_buffered_body).await {
            return (state, answer);
        }
        if self.chain.wants_request_body() {
            let bytes = match body.buffer(self.max_buffered_body).await {
                Ok(bytes) => bytes,
                Err(answer) => return (state, answer),
            };
            let (back, step) = self.chain.on_request_body(state, &bytes).await;
            state = back;
            match step {
                Decided::Continue => {}
                Decided::Respond(local) => return (state, local_answer(local)),
                Decided::Failed(plugin) => {
                    self.record_error(&mut state, ErrorKind::Plugin);
                    return (state, plugin_failed_answer(&plugin));
                }
            }
        }

        if let Some(detail) = state.bad_destination.clone() {
            self.record_error(&mut state, ErrorKind::Plugin);
            return (state, error_answer(LocalError::UnknownDestination, &detail));
        }
        let Some(cluster) = state.destination.clone() else {
            self.record_error(&mut state, ErrorKind::NoRoute);
            let detail = format!("listener {:?} has no route for this request", self.listener);
            return (state, error_answer(LocalError::NoRoute, &detail));
        };
        state.exchange.cluster = Some(Arc::clone(&cluster.label));
        if self.chain.streams_request() && body.stream_through(&self.chain, &state) {
            // Plugins that rewrite the body chunk by chunk may change its length.
            state.head.headers.remove(http::header::CONTENT_LENGTH);
        }
        if self.chain.may_retry() {
            body.keep_for_replay(cluster.config.max_replay_body);
        }
        self.attempts(state, body, &cluster, downstream_upgrade)
            .await
    }

    /// Sends the request until an attempt is final: no plugin asks for a retry, the request
    /// cannot be replayed, or the deadline or attempt cap is reached.
    async fn attempts(
        &self,
        mut state: Box<RequestState>,
        mut body: RequestBody,
        cluster: &Arc<Cluster>,
        mut downstream_upgrade: Option<OnUpgrade>,
    ) -> (Box<RequestState>, Answer) {
        let mut total = state.timeout.unwrap_or(cluster.config.timeout);
        // A gRPC client's own deadline bounds the request too; each attempt tells the upstream
        // what is left of it.
        let grpc_timeout = state
            .head
            .headers
            .get(&grpc::GRPC_TIMEOUT)
            .and_then(grpc::parse_timeout);
        if let Some(client) = grpc_timeout {
            total = total.min(client);
        }
        let deadline = Instant::now() + total;
        let Some(admission) = cluster.limits.admit_request() else {
            self.record_error(&mut state, ErrorKind::Overloaded);
            return (state, overloaded(cluster, "requests"));
        };
        let mut admission = Some(admission);
        // The circuit-breaker slot of the retry in progress, if this attempt is one.
        let mut _retry_slot = None;
        loop {
            state.attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let per_try = state
                .per_try_timeout
                .map_or(remaining, |t| t.min(remaining));
            let result = self.attempt(&mut state, &mut body, cluster, per_try).await;

            let overload = matches!(result, Err(AttemptError::Overloaded(_)));
            if !self.chain.may_retry() || overload {
                let answer = self.finish_attempt(
                    result,
                    cluster,
                    &mut downstream_upgrade,
                    per_try,
                    admission.take(),
                );
                return (state, answer);
            }
            let outcome = match &result {
                Ok((response, _)) => AttemptOutcome::Response(response.status().as_u16()),
                Err(AttemptError::Timeout) => AttemptOutcome::Error(UpstreamError::PerTryTimeout),
                Err(AttemptError::Send(e)) if e.is_connect() => {
                    AttemptOutcome::Error(UpstreamError::ConnectFailure)
                }
                Err(_) => AttemptOutcome::Error(UpstreamError::Reset),
            };
            // Plugins read the attempt's response head through the response interface.
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
            let answer = self.finish_attempt(
                result,
                cluster,
                &mut downstream_upgrade,
                per_try,
                admission.take(),
            );
            return (state, answer);
        }
    }

    /// One attempt: pick an endpoint, send a copy of the head with the body, wait for the head.
    async fn attempt(
        &self,
        state: &mut RequestState,
        body: &mut RequestBody,
        cluster: &Arc<Cluster>,
        per_try: Duration,
    ) -> Result<(Response<Incoming>, Attempted), AttemptError> {
        let hash = cluster
            .wants_hash()
            .then(|| request_hash(&state.head, cluster, state.peer));
        let Some(endpoint) = cluster.pick(hash) else {
            self.record_error(state, ErrorKind::NoEndpoint);
            return Err(AttemptError::NoEndpoint);
        };
        let Some(body) = body.for_attempt() else {
            self.record_error(state, ErrorKind::Reset);
            return Err(AttemptError::NotReplayable);
        };
        // When no hook runs after sending (no plugins, or plugins with request hooks only)
        // nothing reads the head again and nothing retries: move it, don't copy.
        let mut req = if !self.chain.reads_request_after_send() {
            take_head(&mut state.head, body)
        } else {
            headers::copy_request(&state.head, body)
        };
        if req.headers().contains_key(&grpc::GRPC_TIMEOUT) {
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
        state.exchange.upstream = Some(endpoint.addr);

        let in_flight = endpoint.start_request();
        let started = Instant::now();
        let recording = span_id.is_some()
            && self
                .telemetry
                .shared
                .records_attempts(state.exchange.trace.as_ref());
        let started_at = recording.then(SystemTime::now);
        let sent = tokio::time::timeout(per_try, endpoint.send(req)).await;
        let took = started.elapsed();
        let result = match &sent {
            Ok(Ok((response, _))) => AttemptResult::Status(response.status().as_u16()),
            Ok(Err(SendError::Overloaded { .. })) => AttemptResult::Error(ErrorKind::Overloaded),
            Ok(Err(SendError::Tls { .. })) => AttemptResult::Error(ErrorKind::Tls),
            Ok(Err(e)) if e.is_connect() => AttemptResult::Error(ErrorKind::Connect),
            Ok(Err(_)) => AttemptResult::Error(ErrorKind::Reset),
            Err(_) => AttemptResult::Error(ErrorKind::Timeout),
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
            Ok(Ok((response, connection))) => {
                endpoint.observe_latency(took);
                cluster.observe(&endpoint, Observed::Status(response.status().as_u16()));
                Ok((
                    response,
                    Attempted {
                        endpoint,
                        in_flight,
                        connection,
                    },
                ))
            }
            Ok(Err(SendError::Overloaded { limit })) => Err(AttemptError::Overloaded(limit)),
            Ok(Err(e)) => {
                cluster.observe(
                    &endpoint,
                    if e.is_connect() {
                        Observed::ConnectFailure
                    } else {
                        Observed::Other
                    },
                );
                // A failing endpoint should look slow to `ewma`, not fast.
                endpoint.observe_latency(took.max(cluster.config.connect_timeout));
                warn!(listener = %self.listener, cluster = %cluster.name(), error = %e, "upstream request failed");
                Err(AttemptError::Send(e))
            }
            Err(_) => {
                endpoint.observe_latency(per_try);
                warn!(listener = %self.listener, cluster = %cluster.name(), endpoint = %endpoint.addr, ?per_try, "upstream timed out");
                Err(AttemptError::Timeout)
            }
        }
    }

    /// Turns the last attempt into the answer for the client.
    fn finish_attempt(
        &self,
        result: Result<(Response<Incoming>, Attempted), AttemptError>,
        cluster: &Cluster,
        downstream_upgrade: &mut Option<OnUpgrade>,
        per_try: Duration,
        admission: Option<Admission>,
    ) -> Answer {
        let name = cluster.name();
        match result {
            Ok((response, attempted)) => {
                upstream_answer(response, attempted, admission, downstream_upgrade)
            }
            Err(AttemptError::Overloaded(limit)) => overloaded(cluster, limit),
            Err(AttemptError::Send(e)) if let Some(answer) = downstream_body_error(&e) => answer,
            Err(AttemptError::NoEndpoint) => error_answer(
                LocalError::NoEndpoint,
                &format!("cluster {name:?} has no endpoint to send to"),
            ),
            Err(AttemptError::Send(e)) if e.is_connect() => error_answer(
                LocalError::ConnectFailure,
                &format!("cluster {name:?}: {e}"),
            ),
            Err(AttemptError::Send(e)) => {
                error_answer(LocalError::UpstreamReset, &format!("cluster {name:?}: {e}"))
            }
            Err(AttemptError::Timeout) => error_answer(
                LocalError::UpstreamTimeout,
                &format!("cluster {name:?} did not answer within {per_try:?}"),
            ),
            Err(AttemptError::NotReplayable) => error_answer(
                LocalError::UpstreamReset,
                &format!(
                    "cluster {name:?}: the request body was already sent and cannot be retried"
                ),
            ),
            Err(AttemptError::BadRequest(e)) => error_answer(
                LocalError::BadRequest,
                &format!("cannot forward this request: {e}"),
            ),
        }
    }

    /// Runs the response hooks and builds what the client gets.
    async fn respond(
        &self,
        mut state: Box<RequestState>,
        answer: Answer,
    ) -> (Box<RequestState>, Response<ProxyBody>) {
        if self.chain.is_empty() {
            return (state, Response::from_parts(answer.head, answer.body));
        }
        let Answer { head, mut body } = answer;
        state.response = Some(head);
        let (back, step) = self.chain.on_response(state).await;
        state = back;
        if let Some(plugin) = apply_response_step(step, &mut state, &mut body) {
            self.record_error(&mut state, ErrorKind::Plugin);
            return (state, plugin_failed(&plugin));
        }
        if self.chain.wants_response_body() {
            let bytes = match Limited::new(body, self.max_buffered_body).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    let response = LocalError::UpstreamReset.response(
                        "the response body was too large or failed for a plugin that reads bodies",
                    );
                    return (state, response);
                }
            };
            let (back, step) = self.chain.on_response_body(state, &bytes).await;
            state = back;
            body = ProxyBody::full(bytes);
            if let Some(plugin) = apply_response_step(step, &mut state, &mut body) {
                self.record_error(&mut state, ErrorKind::Plugin);
                return (state, plugin_failed(&plugin));
            }
        }
        let Some(head) = state.response.take() else {
            return (state, LocalError::BadRequest.response("no response"));
        };
        if self.chain.wants_log() {
            state.response = Some(headers::copy_response_head(&head));
        }
        (state, Response::from_parts(head, body))
    }
}

/// Why an HTTP/1.1 request's Host is unacceptable (RFC 9112 §3.2: a request without one, or
/// with more than one, gets 400). HTTP/2 carries `:authority` instead, and HTTP/1.0 may omit it.
fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => Some("an HTTP/1.1 request needs a Host header"),
        (Some(_), Some(_)) => Some("the request has more than one Host header"),
        (Some(_), None) => None,
    }
}

/// Applies a response hook's decision: a plugin's own answer replaces head and body. Returns
/// the name of a fail-closed plugin that failed, whose 503 then becomes the response.
fn apply_response_step(
    decided: Decided,
    state: &mut RequestState,
    body: &mut ProxyBody,
) -> Option<Arc<str>> {
    match decided {
        Decided::Continue => None,
        Decided::Respond(local) => {
            let replaced = local_answer(local);
            state.response = Some(replaced.head);
            *body = replaced.body;
            None
        }
        Decided::Failed(plugin) => Some(plugin),
    }
}

/// The endpoint an attempt reached, its in-flight count, and the connection lent to it.
struct Attempted {
    endpoint: Arc<Endpoint>,
    in_flight: InFlight,
    connection: Lent,
}

/// Why an attempt has no response.
enum AttemptError {
    NoEndpoint,
    /// A circuit breaker of the cluster is open.
    Overloaded(&'static str),
    Send(SendError),
    Timeout,
    NotReplayable,
    BadRequest(String),
}

/// Why a retry a plugin asked for was not made: the access log's `retry_refused` and the
/// `reason` label of `switchyard_retries_refused_total`.
#[derive(Debug, Clone, Copy)]
enum RetryRefused {
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
    fn label(self) -> &'static str {
        match self {
            Self::BodyNotKept => "body-too-large",
            Self::MaxAttempts => "max-attempts",
            Self::Deadline => "deadline",
            Self::CircuitBreaker => "circuit-breaker",
        }
    }
}

/// The request body across attempts: streamed once, read whole for plugins, or streamed while a
/// copy is kept (up to a cap) so a retry can send it again.
enum RequestBody {
    Streaming(Option<Incoming>, Option<u64>),
    /// Streamed once, through the plugins that stream request bodies.
    Through(Option<ProxyBody>),
    Buffered(Bytes),
    Replay(Replay<ProxyBody>),
}

impl RequestBody {
    /// `cap`: the listener's `max_request_body`, enforced as the body streams.
    fn new(body: Incoming, cap: Option<u64>) -> Self {
        Self::Streaming(Some(body), cap)
    }

    /// Reads the whole body for plugins (up to `limit`; more gets 413).
    async fn buffer(&mut self, limit: usize) -> Result<Bytes, Answer> {
        let bytes = match self {
            Self::Buffered(bytes) => return Ok(bytes.clone()),
            Self::Replay(_) | Self::Through(_) => {
                return Err(error_answer(
                    LocalError::BadRequest,
                    "the request body is already being sent",
                ));
            }
            Self::Streaming(body, _) => match body.take() {
                None => Bytes::new(),
                Some(body) => match Limited::new(body, limit).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => {
                        return Err(error_answer_status(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            HeaderValue::from_static("body-too-large"),
                            &format!(
                                "the request body is over the {limit} bytes a plugin may read"
                            ),
                        ));
                    }
                },
            },
        };
        *self = Self::Buffered(bytes.clone());
        Ok(bytes)
    }

    /// Reads a `grpc-web-text` body whole (browsers send it at once) and decodes its base64.
    async fn decode_grpc_web_text(&mut self, limit: usize) -> Result<(), Answer> {
        let text = self.buffer(limit).await?;
        let decoded = grpc::web::decode_text(&text).map_err(|e| {
            error_answer(
                LocalError::BadRequest,
                &format!("the grpc-web-text body is not base64: {e}"),
            )
        })?;
        *self = Self::Buffered(decoded);
        Ok(())
    }

    /// Keeps up to `cap` bytes of a streamed body as it goes out, so a retry can send it again
    /// (any length, known or not: gRPC bodies have none); past the cap the body still streams,
    /// but is not retried. The first attempt never waits for the body's end.
    fn keep_for_replay(&mut self, cap: usize) {
        let body = match self {
            Self::Streaming(slot, limit) => slot.take().map(|body| capped(body, *limit)),
            Self::Through(slot) => slot.take(),
            Self::Buffered(_) | Self::Replay(_) => return,
        };
        if let Some(body) = body {
            *self = Self::Replay(Replay::new(body, cap));
        }
    }

    /// Sends a streamed body through the plugins that stream request bodies, which get a copy
    /// of the request as it is now; false if the body is not streamed (a plugin read it whole).
    fn stream_through(&mut self, chain: &Arc<Chain>, state: &RequestState) -> bool {
        let Self::Streaming(slot, limit) = self else {
            return false;
        };
        // A request without a body (most GETs) stays without one.
        if slot.as_ref().is_none_or(|body| body.is_end_stream()) {
            return false;
        }
        let Some(body) = slot.take() else {
            return false;
        };
        let chain = Arc::clone(chain);
        let stream = ChunkStream::new(capped(body, *limit), chain, BodyOf::Request, state.view());
        *self = Self::Through(Some(ProxyBody::Chunked(Box::new(stream))));
        true
    }

    fn replayable(&self) -> bool {
        match self {
            Self::Buffered(_) => true,
            Self::Replay(replay) => replay.replayable(),
            Self::Streaming(..) | Self::Through(_) => false,
        }
    }

    fn for_attempt(&mut self) -> Option<ProxyBody> {
        match self {
            Self::Buffered(bytes) if bytes.is_empty() => Some(ProxyBody::Empty),
            Self::Buffered(bytes) => Some(ProxyBody::full(bytes.clone())),
            Self::Replay(replay) => replay
                .replayable()
                .then(|| ProxyBody::Replay(Box::new(replay.attempt()))),
            Self::Streaming(body, limit) => body.take().map(|body| capped(body, *limit)),
            Self::Through(body) => body.take(),
        }
    }
}

/// The client's body, cut off with [`BodyTooLarge`] past `limit` when there is one.
fn capped(body: Incoming, limit: Option<u64>) -> ProxyBody {
    match limit {
        None => ProxyBody::Streaming(body),
        Some(limit) => ProxyBody::Capped {
            body,
            remaining: limit,
            limit,
        },
    }
}

/// The request head itself, leaving an empty one behind.
fn take_head(head: &mut http::request::Parts, body: ProxyBody) -> Request<ProxyBody> {
    let empty = Request::new(()).into_parts().0;
    Request::from_parts(std::mem::replace(head, empty), body)
}

type AttemptSendResult = Result<(Response<Incoming>, Attempted), AttemptError>;
type HeadlessResult = Result<(Incoming, Attempted), AttemptError>;

/// Takes the response head out of an attempt so plugins can read and change it.
fn split_head(result: AttemptSendResult) -> (HeadlessResult, Option<http::response::Parts>) {
    match result {
        Ok((response, attempted)) => {
            let (head, body) = response.into_parts();
            (Ok((body, attempted)), Some(head))
        }
        Err(e) => (Err(e), None),
    }
}

fn rejoin_head(result: HeadlessResult, head: Option<http::response::Parts>) -> AttemptSendResult {
    match (result, head) {
        (Ok((body, attempted)), Some(head)) => Ok((Response::from_parts(head, body), attempted)),
        (Ok(_), None) => Err(AttemptError::BadRequest(
            "the response head went missing".into(),
        )),
        (Err(e), _) => Err(e),
    }
}

/// The upstream's response as the client will get it: hop-by-hop headers stripped, `via`
/// added, upgrades wired up.
fn upstream_answer(
    mut response: Response<Incoming>,
    attempted: Attempted,
    admission: Option<Admission>,
    downstream_upgrade: &mut Option<OnUpgrade>,
) -> Answer {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        match downstream_upgrade.take() {
            Some(downstream) => {
                let upstream = hyper::upgrade::on(&mut response);
                tokio::spawn(tunnel(downstream, upstream, attempted.endpoint.addr));
            }
            None => {
                let detail = format!(
                    "{} switched protocols without being asked to",
                    attempted.endpoint.addr
                );
                return error_answer(LocalError::UpstreamReset, &detail);
            }
        }
    }
    let version = response.version();
    let (mut head, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut head.headers, switching);
    headers::append_via(&mut head.headers, version);
    let body = if switching {
        ProxyBody::Empty
    } else {
        ProxyBody::Upstream {
            body,
            _connection: attempted.connection,
            _in_flight: attempted.in_flight,
            _admission: admission,
        }
    };
    Answer { head, body }
}

/// 503 with `x-switchyard-overloaded` naming the circuit breaker that refused the request.
fn overloaded(cluster: &Cluster, limit: &'static str) -> Answer {
    let mut answer = error_answer(
        LocalError::Overloaded,
        &format!("cluster {:?} is at its {limit} limit", cluster.name()),
    );
    answer
        .head
        .headers
        .insert(&X_SWITCHYARD_OVERLOADED, HeaderValue::from_static(limit));
    metrics::counter!("switchyard_circuit_breaker_overflows_total", "cluster" => cluster.name().to_owned(), "limit" => limit).increment(1);
    answer
}

/// When sending failed because the client's own body did (cut short, malformed chunks, over
/// `max_request_body`), the client gets 400 or 413, not a 502 blaming the upstream.
fn downstream_body_error(error: &SendError) -> Option<Answer> {
    let SendError::Reset { source, .. } = error else {
        return None;
    };
    if !source.is_user() {
        return None;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(source);
    while let Some(e) = cause {
        if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
            return Some(error_answer(
                LocalError::BodyTooLarge,
                &too_large.to_string(),
            ));
        }
        cause = e.source();
    }
    Some(error_answer(
        LocalError::BadRequest,
        &format!("the request body could not be read: {source}"),
    ))
}

fn error_answer(kind: LocalError, detail: &str) -> Answer {
    let (head, body) = kind.response(detail).into_parts();
    Answer { head, body }
}

fn error_answer_status(status: StatusCode, code: HeaderValue, detail: &str) -> Answer {
    let (head, body) = text_response(status, code, detail).into_parts();
    Answer { head, body }
}

/// A plugin's own response; headers it got wrong are dropped with a warning, not a failure. An
/// empty body ends the stream with the head (one HTTP/2 HEADERS frame with END_STREAM), which
/// is what makes a gRPC status given as headers a valid trailers-only response.
fn local_answer(local: LocalResponse) -> Answer {
    let body = if local.body.is_empty() {
        ProxyBody::Empty
    } else {
        ProxyBody::full(local.body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(local.status).unwrap_or_else(|_| {
        warn!(
            status = local.status,
            "plugin answered with an invalid status; sending 500"
        );
        StatusCode::INTERNAL_SERVER_ERROR
    });
    for (name, value) in local.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().append(name, value);
            }
            _ => warn!(header = %name, "plugin response header is not valid HTTP; dropped"),
        }
    }
    let (head, body) = response.into_parts();
    Answer { head, body }
}

fn plugin_failed(plugin: &str) -> Response<ProxyBody> {
    let Answer { head, body } = plugin_failed_answer(plugin);
    Response::from_parts(head, body)
}

/// 503 for a fail-closed plugin that trapped, ran out of time or memory.
fn plugin_failed_answer(plugin: &str) -> Answer {
    let code = HeaderValue::from_str(&format!("plugin {plugin}"))
        .unwrap_or(HeaderValue::from_static("plugin"));
    error_answer_status(
        StatusCode::SERVICE_UNAVAILABLE,
        code,
        &format!("plugin {plugin:?} failed while handling this request"),
    )
}

/// The key `ring_hash` uses: the configured header's value, else the client's IP address.
fn request_hash(head: &http::request::Parts, cluster: &Cluster, peer: SocketAddr) -> u64 {
    let header: Option<&HeaderValue> = cluster
        .config
        .hash_header
        .as_deref()
        .and_then(|name| head.headers.get(name));
    match header {
        Some(value) => hash_bytes(value.as_bytes()),
        None => hash_bytes(peer.ip().to_string().as_bytes()),
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections (WebSocket etc.).
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, endpoint: SocketAddr) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(%endpoint, error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((to_upstream, to_client)) => {
            debug!(%endpoint, to_upstream, to_client, "upgraded connection closed");
        }
        Err(e) => debug!(%endpoint, error = %e, "upgraded connection ended with an error"),
    }
}
