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
//!
//! The phases are here, in that order; beside them, `attempts` (sending until an attempt is
//! final, and why a retry is refused), `request_body` (the body across attempts), `answers`
//! (what the client gets before the response hooks: the upstream's response, a plugin's, or an
//! error) and `upgrade` (tunnels for switched protocols).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::body::ClientBody;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use upgrade::DownstreamUpgrade;

use crate::body::ProxyBody;
use crate::forwarding;
use crate::grpc;
use crate::headers;
use crate::local_response::LocalError;
use crate::path::PathNormalization;
use crate::plugin::{BodyOf, Chain, ChunkStream, Decided, ListenerScope, RequestState};
use crate::telemetry::{ErrorKind, ListenerTelemetry};
use crate::tls::TlsSession;
use crate::upstream::{Cluster, ResponseFields};

mod answers;
mod attempt_error;
mod attempts;
mod request_body;
mod served;
mod upgrade;

use answers::{
    Answer, apply_response_step, error_answer, local_answer, plugin_failed, plugin_failed_answer,
};
use request_body::RequestBody;
use served::Done;
pub use served::ServedBody;

/// A request readied by [`ListenerProxy::handle`] before its future runs.
struct Start {
    state: Box<RequestState>,
    next: Next,
    /// A gRPC-Web call, translated back on the way out.
    web: Option<grpc::web::WebCall>,
    /// The client takes trailers (`te: trailers`).
    accepts_trailers: bool,
}

/// What happens to a readied request.
enum Next {
    /// The listener refuses it with this response.
    Refuse(Box<Response<ProxyBody>>),
    /// The phases run on it.
    Run {
        body: ClientBody,
        downstream_upgrade: Option<DownstreamUpgrade>,
    },
}

/// The client a connection's requests come from, made once per connection: its address (and as
/// `x-forwarded-for` writes it), its TLS session, and where a captured connection was dialed.
pub struct Client {
    pub peer: SocketAddr,
    pub address: forwarding::ClientAddress,
    pub tls: Option<Arc<TlsSession>>,
    pub dialed: Option<SocketAddr>,
}

impl Client {
    pub fn new(peer: SocketAddr, tls: Option<Arc<TlsSession>>, dialed: Option<SocketAddr>) -> Self {
        Self {
            peer,
            address: forwarding::ClientAddress::of(peer.ip()),
            tls,
            dialed,
        }
    }
}

/// Everything a listener needs to forward a request.
pub struct ListenerProxy {
    /// The listener's name and every cluster of the config it was built from, as each request
    /// holds them.
    pub scope: Arc<ListenerScope>,
    /// The scheme clients used to reach this listener, for `x-forwarded-proto`.
    pub scheme: &'static str,
    pub default_cluster: Option<Arc<Cluster>>,
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
            .field("listener", &self.scope.listener)
            .finish_non_exhaustive()
    }
}

impl ListenerProxy {
    /// Serves one downstream request; never fails (errors become local responses).
    /// `answered` runs when the response is ready; dropped unrun, the future was dropped first
    /// (the listener counts that as a cancellation).
    ///
    /// What needs no waiting (the checks, the forwarding headers, the request state) is done
    /// here, before the future exists: the future then holds only what the later phases need.
    /// Every level of the request path holds the state of the levels below it; the HTTP/1.1
    /// engine makes the future where it stays, but hyper moves it into its stream task, and a
    /// wrapper around it (a `map` to run `answered`) would be one more copy of all of it.
    pub fn handle<Answered: FnOnce() + Send + 'static>(
        self: Arc<Self>,
        client: &Client,
        req: Request<ClientBody>,
        answered: Answered,
    ) -> impl Future<Output = Response<ServedBody>> + Send + 'static + use<Answered> {
        let start = self.start(client, req);
        async move {
            let Start {
                state,
                next,
                web,
                accepts_trailers,
            } = start;
            let (state, response) = match next {
                Next::Refuse(refusal) => (state, *refusal),
                Next::Run {
                    body,
                    downstream_upgrade,
                } => {
                    let web_text = web
                        .as_ref()
                        .is_some_and(|c| c.encoding == grpc::web::Encoding::Text);
                    self.run(state, body, downstream_upgrade, web_text).await
                }
            };
            // Nothing waits between here and the response: it is answered (and the response
            // is made as the future's output, not moved through a local first).
            answered();
            self.finish(state, response, web, accepts_trailers)
        }
    }

    /// The request's state and what comes next for it, from the request as it came: the
    /// listener's refusals, gRPC-Web translated, the request id, the path normalized, and the
    /// hop-by-hop and forwarding headers.
    fn start(&self, client: &Client, mut req: Request<ClientBody>) -> Start {
        let tls = client.tls.clone();
        let web = self
            .grpc_web
            .then(|| grpc::web::WebCall::of(req.headers()))
            .flatten();
        if let Some(call) = &web {
            grpc::web::to_grpc_request(req.headers_mut(), call.encoding);
        }
        let exchange = self.telemetry.start(&req);
        let may_hold = forwarding::MayHold::of(req.headers());
        let mut added = forwarding::AddedFields::default();
        let request_id = added.request_id(req.headers_mut(), may_hold);
        let mut refusal = self.refuse_oversized(&req);
        if refusal.is_none() {
            match self.path_normalization.normalize_uri(req.uri()) {
                Ok(None) => {}
                Ok(Some(normalized)) => *req.uri_mut() = normalized,
                Err(e) => refusal = Some(LocalError::BadRequest.response(&e.to_string())),
            }
        }
        let headers::ConnectionAsks {
            upgrade,
            trailers: accepts_trailers,
        } = headers::connection_asks(&req);
        let downstream_upgrade =
            (upgrade && refusal.is_none()).then(|| DownstreamUpgrade::of(&mut req));
        let version = req.version();
        let response_fields =
            self.response_fields(version, upgrade, accepts_trailers, &exchange, web.is_some());
        headers::strip_hop_by_hop(req.headers_mut(), upgrade);
        added.forward(
            req.headers_mut(),
            may_hold,
            &client.address,
            self.scheme,
            version,
        );
        if let Some(header) = &self.forward_client_cert {
            if added.get(header, &request_id).is_some() {
                // Named like one of this proxy's own fields: edited in the map, as set there.
                added.move_into(req.headers_mut(), &request_id);
            }
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
            added,
            response: None,
            scope: Arc::clone(&self.scope),
            peer: client.peer,
            request_id,
            attempt: 0,
            // On a capture listener, the cluster serving the address the client dialed.
            destination: client
                .dialed
                .and_then(|addr| self.scope.clusters.by_service_address(addr))
                .or(self.default_cluster.as_ref())
                .cloned(),
            tls,
            timeout: None,
            per_try_timeout: None,
            context: Default::default(),
            bad_destination: None,
            plugins_reached: usize::MAX,
            routed_chain: None,
            exchange,
            response_headers_to_add: Vec::new(),
            filter_contexts: Vec::new(),
            response_fields,
            response_added: Default::default(),
        });
        let next = match refusal {
            // Boxed: rare, and the future carries what comes next until it first runs.
            Some(refusal) => Next::Refuse(Box::new(refusal)),
            None => Next::Run {
                body,
                downstream_upgrade,
            },
        };
        Start {
            state,
            next,
            web,
            accepts_trailers,
        }
    }

    /// Whether the upstream's response fields can go to the client as they came, without a
    /// header map built and encoded again: only when nothing reads or changes them on the way —
    /// no plugin hook that runs after sending, no gRPC or gRPC-Web translation, no trailers to
    /// announce, no protocol switch — and this proxy's HTTP/1.1 engine writes them (hyper serves
    /// HTTP/2). Decided before any plugin runs: plugins only ever stop wanting hooks.
    fn response_fields(
        &self,
        version: http::Version,
        upgrade: bool,
        accepts_trailers: bool,
        exchange: &crate::telemetry::Exchange,
        web: bool,
    ) -> ResponseFields {
        let passes = version <= http::Version::HTTP_11
            && !upgrade
            && !accepts_trailers
            && !exchange.grpc
            && !web
            && !self.chain.hooks_after_send()
            && !self.chain.streams_response();
        if passes {
            ResponseFields::Passed
        } else {
            ResponseFields::Map
        }
    }

    /// What the client gets from the response the phases made: the request id, the headers
    /// plugins added, gRPC and gRPC-Web framing, and the response body hooks and final phases
    /// riding on its body.
    fn finish(
        self: Arc<Self>,
        mut state: Box<RequestState>,
        mut response: Response<ProxyBody>,
        web: Option<grpc::web::WebCall>,
        accepts_trailers: bool,
    ) -> Response<ServedBody> {
        // Not passed for these (`response_fields`); read into the map if they were after all.
        let reads_fields = state.exchange.grpc
            || web.is_some()
            || accepts_trailers
            || self.chain.streams_response();
        if reads_fields && response.body().passed_fields().is_some() {
            let passed = response.body_mut().take_passed_fields();
            let version = response.version();
            answers::unpass_answer(response.headers_mut(), version, passed);
        }
        match response.body().passed_fields() {
            // The upstream's fields pass as they came (nothing reads them): this proxy's own go
            // after them, not into the map (`upstream_answer` left `via` out).
            Some(passed) => {
                state.response_added = forwarding::ResponseAdded {
                    via: Some(forwarding::via_hop(response.version())),
                    request_id: !passed.contains(headers::X_REQUEST_ID.as_str()),
                };
            }
            None => {
                response
                    .headers_mut()
                    .entry(&headers::X_REQUEST_ID)
                    .or_insert_with(|| state.request_id.clone());
            }
        }
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
        state.exchange.status = response.status().as_u16();
        let (mut head, mut body) = response.into_parts();
        if self.chain.streams_response() && !body.is_end_stream() {
            // Plugins that rewrite the body chunk by chunk may change its length.
            head.headers.remove(http::header::CONTENT_LENGTH);
            state.response = Some(headers::copy_response_head(&head));
            let chain = Arc::clone(&self.chain);
            let stream = ChunkStream::new(body, chain, BodyOf::Response, state.view());
            body = ProxyBody::boxed(stream);
        }
        let done = Done { state, proxy: self };
        Response::from_parts(head, ServedBody::new(body, Some(done)))
    }

    /// Counts an error and remembers it as the reason for the request's outcome.
    fn record_error(&self, state: &mut RequestState, kind: ErrorKind) {
        state.exchange.error = Some(kind);
        self.telemetry
            .metrics
            .record_error(state.exchange.cluster.as_ref().map(|c| &c.name), kind);
    }

    /// 400 for an HTTP/1.1 request without exactly one Host, 414 for a request target over
    /// `max_uri_length`, 413 for a declared body over
    /// `max_request_body` (a chunked one is capped as it streams). Ambiguous framing never gets
    /// here: the HTTP/1.1 engine refuses it (Content-Length with chunked included) and hyper's
    /// HTTP/2 server refuses a length that disagrees with the stream's data.
    fn refuse_oversized(&self, req: &Request<ClientBody>) -> Option<Response<ProxyBody>> {
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
        body: ClientBody,
        downstream_upgrade: Option<DownstreamUpgrade>,
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
        if chain.is_empty() || !chain.hooks_on_response() {
            // No response hooks: the answer as it is, without the hooks' future.
            return (state, Response::from_parts(answer.head, answer.body));
        }
        self.respond(state, answer).await
    }

    /// Runs the request body hook if wanted, then the attempt loop.
    async fn forward(
        &self,
        mut state: Box<RequestState>,
        body: ClientBody,
        downstream_upgrade: Option<DownstreamUpgrade>,
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
            let detail = format!(
                "listener {:?} has no route for this request",
                self.scope.listener
            );
            return (state, error_answer(LocalError::NoRoute, &detail));
        };
        state.exchange.cluster = Some(Arc::clone(&cluster.tag));
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

    /// Runs the response hooks (of a chain that is not empty) and builds what the client gets.
    async fn respond(
        &self,
        mut state: Box<RequestState>,
        answer: Answer,
    ) -> (Box<RequestState>, Response<ProxyBody>) {
        let Answer { mut head, mut body } = answer;
        // Passed fields only reach here when no hook runs after sending (`response_fields`);
        // should one run after all, it reads them in the map. Checked in that order: asking the
        // chain walks its plugins.
        if body.passed_fields().is_some() && self.chain.hooks_after_send() {
            answers::unpass_answer(&mut head.headers, head.version, body.take_passed_fields());
        }
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
