//! Configuration: the TOML file (`raw`), how it is read (`load`), and the validated [`Config`] that
//! the rest of the proxy uses. Nothing past validation re-checks config.

mod duration;
mod error;
mod fields;
mod load;
pub mod locate;
mod raw;
mod resilience;
mod service_ref;
mod telemetry;
mod tls;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub(crate) use error::Diagnostics;
pub use error::{ConfigError, ConfigErrors};
pub use load::{deserialize, file_error, load, load_str, top_level_span};
pub use service_ref::{PortRef, ServiceRef};

/// Parses a duration written as in config ("250ms", "2s"); used by the echo server's knobs too.
pub use duration::parse as parse_duration;

/// Where the admin API listens when `[admin]` is absent: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";

/// The dashboard history's slot when `[admin] history_resolution` is absent.
pub const DEFAULT_HISTORY_RESOLUTION: Duration = Duration::from_secs(10);

/// A config that passed validation: every name resolves, every value is in range.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file this came from; relative plugin paths were resolved against its directory.
    pub source: PathBuf,
    pub admin: AdminConfig,
    pub runtime: RuntimeConfig,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    pub plugins: Vec<PluginConfig>,
    /// `[access_log]`: off when absent.
    pub access_log: Option<AccessLogConfig>,
    /// `[tracing]`: spans are exported only when present (trace context is propagated always).
    pub tracing: Option<TracingConfig>,
}

/// `[access_log]`: one JSON line per request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessLogConfig {
    pub target: AccessLogTarget,
    /// The fields of each line, in order.
    pub fields: Vec<AccessLogField>,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
}

/// A field an access log line may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogField {
    Time,
    Listener,
    Peer,
    Method,
    Authority,
    Path,
    Protocol,
    Status,
    Bytes,
    DurationMs,
    Upstream,
    Attempts,
    Destination,
    Route,
    Identity,
    RequestId,
    TraceId,
    Plugins,
    Error,
    RetryRefused,
    GrpcStatus,
}

impl AccessLogField {
    /// Every field, in the default order.
    pub const ALL: [Self; 21] = [
        Self::Time,
        Self::Listener,
        Self::Peer,
        Self::Method,
        Self::Authority,
        Self::Path,
        Self::Protocol,
        Self::Status,
        Self::Bytes,
        Self::DurationMs,
        Self::Upstream,
        Self::Attempts,
        Self::Destination,
        Self::Route,
        Self::Identity,
        Self::RequestId,
        Self::TraceId,
        Self::Plugins,
        Self::Error,
        Self::RetryRefused,
        Self::GrpcStatus,
    ];

    /// The field's key in config and in each line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Time => "time",
            Self::Listener => "listener",
            Self::Peer => "peer",
            Self::Method => "method",
            Self::Authority => "authority",
            Self::Path => "path",
            Self::Protocol => "protocol",
            Self::Status => "status",
            Self::Bytes => "bytes",
            Self::DurationMs => "duration_ms",
            Self::Upstream => "upstream",
            Self::Attempts => "attempts",
            Self::Destination => "destination",
            Self::Route => "route",
            Self::Identity => "identity",
            Self::RequestId => "request_id",
            Self::TraceId => "trace_id",
            Self::Plugins => "plugins",
            Self::Error => "error",
            Self::RetryRefused => "retry_refused",
            Self::GrpcStatus => "grpc_status",
        }
    }
}

/// `[tracing]`: span export over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TracingConfig {
    /// Where batches are POSTed, e.g. `http://127.0.0.1:4318/v1/traces`.
    #[serde(serialize_with = "display")]
    pub otlp_endpoint: http::Uri,
    /// Share of new traces sampled, 0.0 to 1.0; a client's own sampling decision is kept.
    pub sampling: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Spans per export request.
    pub batch_size: usize,
    /// Longest a span waits before its batch is sent.
    #[serde(with = "duration_text")]
    pub flush_interval: Duration,
    /// Spans waiting for export before new ones are dropped.
    pub max_queue: usize,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// `[admin]`: the admin API listener.
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token the mutating endpoints (reload, plugin swap) require; the
    /// `SWITCHYARD_ADMIN_TOKEN` environment variable is used when absent. Never shown.
    #[serde(serialize_with = "redacted")]
    pub token: Option<String>,
    /// The slot length of the dashboard's history (`GET /history`: 90 slots); read at start.
    #[serde(with = "duration_text")]
    pub history_resolution: Duration,
}

/// Shows that a secret is set without showing it.
fn redacted<S: serde::Serializer>(secret: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

/// `[runtime]`: process-wide settings.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeConfig {
    /// Tokio worker threads; `None` means one per CPU.
    pub worker_threads: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "duration_text")]
    pub drain_timeout: Duration,
    /// Where compiled plugins are cached, keyed by the .wasm's sha256 and the engine version.
    pub plugin_cache: PathBuf,
}

/// `[[listener]]`: one address accepting downstream connections.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// Index into [`Config::clusters`]; used when no plugin picks a destination.
    #[serde(skip)]
    pub default_cluster: Option<usize>,
    #[serde(rename = "default_cluster")]
    pub default_cluster_name: Option<String>,
    /// Indices into [`Config::plugins`], in chain order.
    #[serde(skip)]
    pub plugins: Vec<usize>,
    #[serde(rename = "plugins")]
    pub plugin_names: Vec<String>,
    /// Slowloris guard: the whole request head must arrive within this.
    #[serde(with = "duration_text")]
    pub request_header_timeout: Duration,
    /// Largest request head (request line + headers) in bytes; larger gets 431.
    pub max_request_head: usize,
    /// Most header fields in a request; more gets 431.
    pub max_request_headers: usize,
    /// Longest request target (path and query); longer gets 414.
    pub max_uri_length: usize,
    /// Largest request body in bytes; larger gets 413. `None`: no limit (bodies stream).
    pub max_request_body: Option<u64>,
    /// HTTPS (and mTLS) when present; plain HTTP/1.1 + h2c otherwise.
    pub tls: Option<ListenerTlsConfig>,
    /// HTTP (the default) or plain TCP proxying.
    pub protocol: ListenerProtocol,
    /// Transparent capture: each connection goes where the client dialed (recovered with
    /// `SO_ORIGINAL_DST`), to the cluster whose `service_addresses` has that address, else
    /// straight through as plain TCP.
    pub original_destination: bool,
    /// TCP listeners: a connection with no bytes either way for this long is closed.
    #[serde(with = "duration_text")]
    pub tcp_idle_timeout: Duration,
    /// How request paths are normalized before plugins see them (`normalize_path`,
    /// `merge_slashes`, `escaped_slashes`).
    pub path_normalization: crate::path::PathNormalization,
    /// Serve gRPC-Web (`application/grpc-web[-text]`) against plain gRPC upstreams.
    pub grpc_web: bool,
    /// `[[listener.route]]`: how the chain changes for a request once a plugin names its route.
    pub routes: Vec<RouteConfig>,
}

/// `[[listener.route]]`: once a plugin names a request's route (`req.set_route`), the listener's
/// plugins named in `skip` that have not run yet are left out for it, and those in `add` run
/// after the listener's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteConfig {
    pub name: String,
    pub skip: Vec<String>,
    pub add: Vec<String>,
}

/// What a listener speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2, through the plugin chain.
    Http,
    /// Bytes, both ways, to one upstream endpoint per connection (databases, queues, anything
    /// that is not HTTP).
    Tcp,
}

/// `[listener.tls]`: certificates to serve and how to check clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerTlsConfig {
    /// The first is the default (no SNI, or an SNI no other certificate names).
    pub certs: Vec<ServedCert>,
    /// CA bundle client certificates must chain to; enables mTLS.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients without a certificate (else a certificate is optional,
    /// but a bad one is still refused).
    pub require_client_cert: bool,
    /// Request header carrying the verified client identity to the upstream; clients' own
    /// values of it are always removed.
    #[serde(serialize_with = "header_name_text::serialize")]
    pub forward_client_cert: Option<http::HeaderName>,
    #[serde(with = "duration_text")]
    pub handshake_timeout: Duration,
}

/// One certificate chain and key, and the SNI names it answers for (empty: the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServedCert {
    pub server_names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[cluster.tls]`: TLS (and mTLS origination) to a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterTlsConfig {
    /// CA bundle the upstream's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate and key presented to the upstream (mTLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// SNI and the DNS name checked in the upstream's certificate (default: the endpoint host).
    pub server_name: Option<String>,
    /// When set, the upstream's certificate must carry exactly this SPIFFE ID (URI SAN); it is
    /// checked instead of the DNS name.
    pub spiffe_id: Option<String>,
}

impl Config {
    /// Every file the running state is built from besides the config itself: plugins and TLS
    /// material. The file watcher reloads when one changes.
    pub fn input_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.plugins.iter().map(|p| p.path.clone()).collect();
        for l in &self.listeners {
            if let Some(tls) = &l.tls {
                for c in &tls.certs {
                    files.push(c.cert.clone());
                    files.push(c.key.clone());
                }
                files.extend(tls.client_ca.clone());
            }
        }
        for c in &self.clusters {
            if let Some(tls) = &c.tls {
                files.push(tls.ca.clone());
                files.extend(tls.cert.clone());
                files.extend(tls.key.clone());
            }
        }
        files
    }
}

/// Load-balancing policy of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Ewma,
    Random,
    RingHash,
}

/// HTTP version spoken to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

/// `[[cluster]]`: a named set of endpoints and how to reach them.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    pub name: String,
    pub endpoints: Vec<EndpointConfig>,
    /// Endpoints from this Service's EndpointSlices instead of `endpoints`.
    pub kubernetes_service: Option<ServiceRef>,
    /// The Service the control plane discovered `endpoints` from (which may then be empty).
    pub discovered_from: Option<ServiceRef>,
    /// The addresses clients dial for this service (e.g. its Kubernetes ClusterIP:port): a
    /// connection captured on an `original_destination` listener to one of them goes to this
    /// cluster.
    pub service_addresses: Vec<SocketAddr>,
    pub lb: LbPolicy,
    pub protocol: UpstreamProtocol,
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response head; past it the client gets 504.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// How often DNS names among the endpoints are resolved again.
    #[serde(with = "duration_text")]
    pub dns_refresh: Duration,
    /// Header hashed by `ring_hash`; without it the client's IP address is hashed.
    #[serde(serialize_with = "header_name_text::serialize")]
    pub hash_header: Option<http::HeaderName>,
    /// Pooled upstream connections unused for this long are closed.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    /// Bytes of a request body kept while it streams so a retry can send it again; a larger
    /// body is sent once and not retried.
    pub max_replay_body: usize,
    pub tls: Option<ClusterTlsConfig>,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier: Option<OutlierConfig>,
    pub circuit_breaker: CircuitBreakerConfig,
}

/// `[cluster.health_check]`: active HTTP checks; endpoints that fail them leave the balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheckConfig {
    pub path: String,
    /// Check with `grpc.health.v1.Health/Check` for this service (`""`: the whole server)
    /// instead of a GET of `path`; HTTP/2 clusters only.
    pub grpc_service: Option<String>,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Consecutive passes that bring an unhealthy endpoint back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy endpoint out.
    pub unhealthy_threshold: u32,
    /// Statuses that pass; empty: 200-399.
    pub expected_statuses: Vec<u16>,
}

/// `[cluster.outlier]`: passive ejection of endpoints that keep failing real requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub consecutive_connect_failures: u32,
    /// An ejection lasts this times the number of times the endpoint has been ejected.
    #[serde(with = "duration_text")]
    pub base_ejection_time: Duration,
    /// At most this share of a cluster's endpoints is ejected at once (always at least one).
    pub max_ejection_percent: u32,
    /// Below this share of usable endpoints the cluster ignores health and ejections and uses
    /// them all (Envoy's panic mode), so it never ejects itself to zero.
    pub panic_threshold: u32,
}

/// `[cluster.circuit_breaker]`: limits past which requests get 503 at once instead of queueing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CircuitBreakerConfig {
    pub max_connections: Option<usize>,
    pub max_pending_requests: Option<usize>,
    pub max_requests: Option<usize>,
    pub max_retries: Option<usize>,
}

/// One configured endpoint: an IP address or a DNS name, a port and a weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointConfig {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

/// What the proxy does when a plugin traps, times out or runs out of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    FailClosed,
    FailOpen,
}

/// `[[plugin]]`: a Wasm plugin and its config.
#[derive(Debug, Clone, Serialize)]
pub struct PluginConfig {
    pub name: String,
    /// Absolute, or relative to the working directory; already resolved against the config file.
    pub path: PathBuf,
    pub sha256: Option<String>,
    pub on_error: OnError,
    /// CPU time one hook call may use before it is stopped.
    #[serde(with = "duration_text")]
    pub time_limit: Duration,
    /// Linear memory one instance may grow to, in bytes.
    pub memory_limit: usize,
    /// The `[plugin.config]` table, handed to the plugin as JSON.
    pub config: serde_json::Value,
}

impl Config {
    /// Looks a cluster up by name (used by plugins' `set-destination`).
    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.iter().position(|c| c.name == name)
    }
}

/// Durations are shown the way they are written in config.
/// Header names are shown as written (lower case).
mod header_name_text {
    use serde::Serializer;

    pub fn serialize<S: Serializer>(h: &Option<http::HeaderName>, s: S) -> Result<S::Ok, S::Error> {
        match h {
            Some(name) => s.serialize_some(name.as_str()),
            None => s.serialize_none(),
        }
    }
}

mod duration_text {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let ms = d.as_millis();
        if ms.is_multiple_of(1000) {
            s.collect_str(&format_args!("{}s", ms / 1000))
        } else {
            s.collect_str(&format_args!("{ms}ms"))
        }
    }
}
