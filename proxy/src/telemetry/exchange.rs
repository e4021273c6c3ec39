//! One request as telemetry sees it: facts gathered along the way ([`Exchange`]) and reported
//! once, when the response body is done with — metrics, the access log line and the spans.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};

use super::access_log::{self, AccessLog, Entry};
use super::golden::{AttemptResult, ErrorKind, ListenerMetrics, method_label};
use super::otlp::{SpanExporter, int_attribute, string_attribute};
use super::trace_context::{SpanId, TraceContext};
use super::traffic::{ClusterTag, Counters, Outcome, traffic};
use crate::config::Config;

/// The request-context key a plugin sets to name the route a request took (the SDK's
/// `Request::set_route`); it becomes the `route` label and log field.
pub const ROUTE_CONTEXT_KEY: &str = "switchyard.route";

/// A finished request as telemetry reads it: its [`Exchange`] and the few facts the proxy kept
/// beside it. Borrowed from the request's state, so telemetry does not depend on the proxy's
/// (or the plugins') types.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    pub exchange: &'a Exchange,
    pub peer: SocketAddr,
    pub request_id: &'a http::HeaderValue,
    /// How many attempts were made.
    pub attempts: u32,
    /// The route a plugin named ([`ROUTE_CONTEXT_KEY`]), if any.
    pub route: Option<&'a str>,
    /// The verified client identity, on mTLS listeners.
    pub identity: Option<&'a crate::tls::PeerIdentity>,
}

/// What the proxy learns about one request on its way.
#[derive(Debug)]
pub struct Exchange {
    pub started: Instant,
    pub method: http::Method,
    pub version: http::Version,
    /// The request as the client sent it, kept only when the access log, a span or the mesh
    /// view's paths need it (the head itself may be moved upstream). Boxed: kept for few
    /// requests, and the record stays small (it moves into the request state, which moves into
    /// its box, and within 256 bytes each move is a few vector stores).
    pub target: Option<Box<Target>>,
    pub trace: Option<TraceContext>,
    /// The cluster the request was sent to, if it got that far.
    pub cluster: Option<Arc<ClusterTag>>,
    /// The endpoint of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// Attempt spans, kept only for sampled traces that are exported.
    pub attempts: Vec<AttemptSpan>,
    /// Why the proxy answered the request itself, if it did because of an error.
    pub error: Option<ErrorKind>,
    /// Plugin decisions other than "continue": `plugin:hook:decision`.
    pub decisions: Vec<String>,
    /// Why the last retry a plugin asked for was not made (`body-too-large`, `max-attempts`,
    /// `deadline`, `circuit-breaker`).
    pub retry_refused: Option<&'static str>,
    /// The request is gRPC: its status is reported (`None` until a response carries one).
    pub grpc: bool,
    /// The gRPC status the response ended with: from its head (trailers-only) or its trailers.
    pub grpc_status: Option<u8>,
    /// The status the client was answered with, once it was.
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
}

impl Exchange {
    /// The record of a request starting now.
    pub fn new(method: http::Method, version: http::Version) -> Self {
        Self {
            started: Instant::now(),
            method,
            version,
            target: None,
            trace: None,
            cluster: None,
            upstream: None,
            attempts: Vec::new(),
            error: None,
            decisions: Vec::new(),
            retry_refused: None,
            grpc: false,
            grpc_status: None,
            status: 0,
            bytes: 0,
        }
    }
}

impl Exchange {
    /// The request target as the client sent it, when it was kept.
    pub fn uri(&self) -> Option<&http::Uri> {
        self.target.as_ref().map(|t| &t.uri)
    }

    /// The authority the client asked for, when it was kept.
    pub fn authority(&self) -> Option<&str> {
        self.target.as_ref().and_then(|t| t.authority.as_deref())
    }

    /// The wall-clock start, or now when it was not kept.
    pub fn started_at(&self) -> SystemTime {
        self.target
            .as_ref()
            .and_then(|t| t.started_at)
            .unwrap_or_else(SystemTime::now)
    }
}

/// What a request's record keeps of its target for the access log, spans and the mesh view.
#[derive(Debug)]
pub struct Target {
    pub uri: http::Uri,
    /// Wall-clock start, read only when the access log or a span needs it.
    pub started_at: Option<SystemTime>,
    pub authority: Option<String>,
}

/// One upstream attempt of a sampled request.
#[derive(Debug)]
pub struct AttemptSpan {
    pub span_id: SpanId,
    pub start: SystemTime,
    pub end: SystemTime,
    pub endpoint: SocketAddr,
    pub result: AttemptResult,
}

/// What a config asks of telemetry beyond metrics: the access log and span export. Built per
/// config, so a reload reopens the log file and reconnects to the collector.
#[derive(Debug, Default)]
pub struct Telemetry {
    access_log: Option<AccessLog>,
    spans: Option<SpanExporter>,
    sampling: f64,
}

impl Telemetry {
    /// Opens the access log (naming the file if it cannot) and starts the span exporter.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let access_log = match &config.access_log {
            Some(log) => Some(
                AccessLog::open(log)
                    .map_err(|e| format!("access_log.path: cannot open {:?}: {e}", log.target))?,
            ),
            None => None,
        };
        Ok(Self {
            access_log,
            spans: config.tracing.as_ref().map(SpanExporter::start),
            sampling: config.tracing.as_ref().map_or(0.0, |t| t.sampling),
        })
    }

    /// The client's trace context, or a new trace when spans are exported (sampled at the
    /// configured ratio).
    pub fn trace_for(&self, headers: &http::HeaderMap) -> Option<TraceContext> {
        TraceContext::extract(headers).or_else(|| {
            self.spans
                .as_ref()
                .map(|_| TraceContext::start(fastrand::f64() < self.sampling))
        })
    }

    /// Whether the request target must be kept for the report.
    pub fn wants_target(&self) -> bool {
        self.access_log.is_some() || self.spans.is_some()
    }

    /// Whether attempts of this request are exported as spans.
    pub fn records_attempts(&self, trace: Option<&TraceContext>) -> bool {
        self.spans.is_some() && trace.is_some_and(|t| t.sampled)
    }
}

/// A listener's telemetry: its metrics and the config-wide log and exporter.
#[derive(Debug)]
pub struct ListenerTelemetry {
    pub listener: Arc<str>,
    pub metrics: ListenerMetrics,
    pub shared: Arc<Telemetry>,
    /// What the listener served, for the history and the control plane's mesh view.
    traffic: Arc<Counters>,
}

impl ListenerTelemetry {
    pub fn new(listener: Arc<str>, shared: Arc<Telemetry>) -> Self {
        Self {
            metrics: ListenerMetrics::new(Arc::clone(&listener)),
            traffic: traffic().listener(&listener),
            listener,
            shared,
        }
    }

    /// Starts the record of a request.
    pub fn start<B>(&self, req: &http::Request<B>) -> Exchange {
        self.metrics.in_flight.increment(1.0);
        let mut exchange = Exchange::new(req.method().clone(), req.version());
        // The access log and spans want all of it; the mesh view's paths only the URI.
        let whole = self.shared.wants_target();
        if whole || traffic().counts_paths() {
            exchange.target = Some(Box::new(Target {
                uri: req.uri().clone(),
                started_at: whole.then(SystemTime::now),
                authority: whole.then(|| authority(req)).flatten(),
            }));
        }
        exchange.trace = self.shared.trace_for(req.headers());
        exchange.grpc = crate::grpc::is_grpc(req.headers());
        exchange
    }

    /// Reports a finished request (its record holds the status and the bytes sent): metrics
    /// always, the access log line and spans if configured.
    pub fn finish(&self, state: &Finished<'_>) {
        let exchange = state.exchange;
        let status = exchange.status;
        let took = exchange.started.elapsed();
        let route = state.route;
        self.metrics.in_flight.decrement(1.0);
        self.metrics.record_request(
            route,
            exchange.cluster.as_ref().map(|c| &c.name),
            status,
            grpc_status_label(exchange),
            method_label(&exchange.method),
            took,
        );
        let outcome = Outcome {
            status,
            grpc_status: exchange.grpc.then(|| exchange.grpc_status.unwrap_or(2)),
            took,
        };
        self.traffic.record(&outcome, state.identity.is_some());
        if let Some(cluster) = &exchange.cluster {
            cluster.record(&outcome);
        }
        if let Some(uri) = exchange.uri() {
            let method = method_label(&exchange.method);
            traffic().record_path(&self.listener, method, uri.path(), &outcome);
        }
        if let Some(log) = &self.shared.access_log {
            log.log(&self.entry(state, route, took));
        }
        if let (Some(spans), Some(trace)) = (&self.shared.spans, &exchange.trace)
            && trace.sampled
        {
            for span in self.spans(state, trace, route) {
                spans.export(span);
            }
        }
    }

    fn entry<'a>(
        &'a self,
        state: &Finished<'a>,
        route: Option<&'a str>,
        took: Duration,
    ) -> Entry<'a> {
        let exchange = state.exchange;
        Entry {
            time: access_log::timestamp(exchange.started_at()),
            listener: &self.listener,
            peer: state.peer.to_string(),
            method: exchange.method.as_str(),
            authority: exchange.authority(),
            path: exchange.uri().map(http::Uri::path),
            protocol: protocol(exchange.version),
            status: exchange.status,
            bytes: exchange.bytes,
            duration_ms: took.as_secs_f64() * 1000.0,
            upstream: exchange.upstream.map(|a| a.to_string()),
            attempts: state.attempts,
            destination: exchange.cluster.as_deref().map(|c| &*c.name),
            route,
            identity: state.identity.map(|id| id.header_value()),
            request_id: state.request_id.to_str().ok(),
            trace_id: exchange.trace.as_ref().map(TraceContext::trace_id_hex),
            plugins: exchange.decisions.clone(),
            error: exchange.error.map(ErrorKind::label),
            retry_refused: exchange.retry_refused,
            grpc_status: exchange.grpc.then_some(exchange.grpc_status).flatten(),
        }
    }

    /// The request span (server) and one client span per attempt.
    fn spans(&self, state: &Finished<'_>, trace: &TraceContext, route: Option<&str>) -> Vec<Span> {
        let exchange = state.exchange;
        let status = exchange.status;
        let method = exchange.method.as_str();
        let mut attributes = vec![
            string_attribute("http.request.method", method),
            int_attribute("http.response.status_code", i64::from(status)),
            string_attribute(
                "network.protocol.version",
                protocol_version(exchange.version),
            ),
            string_attribute("client.address", state.peer.ip().to_string()),
            string_attribute("switchyard.listener", self.listener.to_string()),
            string_attribute(
                "switchyard.request_id",
                state.request_id.to_str().unwrap_or_default(),
            ),
            int_attribute("switchyard.attempts", i64::from(state.attempts)),
        ];
        if let Some(uri) = exchange.uri() {
            attributes.push(string_attribute("url.path", uri.path()));
        }
        if let Some(authority) = exchange.authority() {
            attributes.push(string_attribute("server.address", authority));
        }
        if let Some(route) = route {
            attributes.push(string_attribute("http.route", route));
        }
        if let Some(cluster) = &exchange.cluster {
            attributes.push(string_attribute(
                "switchyard.cluster",
                cluster.name.to_string(),
            ));
        }
        if let Some(error) = exchange.error {
            attributes.push(string_attribute("error.type", error.label()));
        }
        let name = match route {
            Some(route) => format!("{method} {route}"),
            None => method.to_owned(),
        };
        let mut spans = Vec::with_capacity(1 + exchange.attempts.len());
        spans.push(Span {
            trace_id: trace.trace_id.to_vec(),
            span_id: trace.span_id.to_vec(),
            parent_span_id: trace.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            trace_state: trace
                .state
                .as_ref()
                .and_then(|s| s.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            flags: 1,
            name,
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: unix_nanos(exchange.started_at()),
            end_time_unix_nano: unix_nanos(SystemTime::now()),
            attributes,
            status: Some(span_status(status >= 500)),
            ..Default::default()
        });
        for (i, attempt) in exchange.attempts.iter().enumerate() {
            let mut attributes = vec![
                string_attribute("http.request.method", method),
                string_attribute("server.address", attempt.endpoint.ip().to_string()),
                int_attribute("server.port", i64::from(attempt.endpoint.port())),
                int_attribute("http.request.resend_count", i as i64),
            ];
            if let Some(cluster) = &exchange.cluster {
                attributes.push(string_attribute(
                    "switchyard.cluster",
                    cluster.name.to_string(),
                ));
            }
            let failed = match attempt.result {
                AttemptResult::Status(code) => {
                    attributes.push(int_attribute("http.response.status_code", i64::from(code)));
                    code >= 500
                }
                AttemptResult::Error(kind) => {
                    attributes.push(string_attribute("error.type", kind.label()));
                    true
                }
            };
            spans.push(Span {
                trace_id: trace.trace_id.to_vec(),
                span_id: attempt.span_id.to_vec(),
                parent_span_id: trace.span_id.to_vec(),
                flags: 1,
                name: method.to_owned(),
                kind: span::SpanKind::Client as i32,
                start_time_unix_nano: unix_nanos(attempt.start),
                end_time_unix_nano: unix_nanos(attempt.end),
                attributes,
                status: Some(span_status(failed)),
                ..Default::default()
            });
        }
        spans
    }
}

fn span_status(failed: bool) -> Status {
    Status {
        code: if failed {
            status::StatusCode::Error as i32
        } else {
            status::StatusCode::Unset as i32
        },
        ..Default::default()
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The authority the client asked for: the request target's, else the Host header.
fn authority<B>(req: &http::Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    protocol(version).trim_start_matches("HTTP/")
}

/// The `grpc_status` label: empty for requests that are not gRPC; a gRPC request that ended
/// without a status (reset, cut off) is counted under `2` (UNKNOWN), as its client sees it.
fn grpc_status_label(exchange: &Exchange) -> &'static str {
    if !exchange.grpc {
        return "";
    }
    crate::grpc::status_label(Some(exchange.grpc_status.unwrap_or(2)))
}
