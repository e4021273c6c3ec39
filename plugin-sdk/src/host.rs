//! Every host function, behind one trait: the real host (the proxy, through the component's
//! imports) on wasm, and [`crate::testing::TestHost`] in native unit tests.

use crate::head::{HostError, PeerIdentity};

/// Which head a header call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// The host's functions, as the SDK calls them.
pub trait HostApi {
    fn method(&mut self) -> String;
    fn path(&mut self) -> String;
    /// `read` over the path, without a copy where the host keeps it (request hooks cache it).
    /// `read` must not call the host.
    fn with_path<R>(&mut self, read: impl FnOnce(&str) -> R) -> R
    where
        Self: Sized,
    {
        read(&self.path())
    }
    fn set_path(&mut self, path: &str) -> Result<(), HostError>;
    fn authority(&mut self) -> Option<String>;
    fn status(&mut self) -> Option<u16>;
    fn set_status(&mut self, status: u16) -> Result<(), HostError>;
    fn header(&mut self, side: Side, name: &str) -> Option<String>;
    /// `read` over the first value of a header without keeping a copy (the wasm host writes it
    /// into a buffer it keeps).
    fn with_header<R>(&mut self, side: Side, name: &str, read: impl FnOnce(Option<&str>) -> R) -> R
    where
        Self: Sized,
    {
        read(self.header(side, name).as_deref())
    }
    fn header_all(&mut self, side: Side, name: &str) -> Vec<String>;
    fn header_names(&mut self, side: Side) -> Vec<String>;
    fn set_header(&mut self, side: Side, name: &str, value: &str) -> Result<(), HostError>;
    fn add_header(&mut self, side: Side, name: &str, value: &str) -> Result<(), HostError>;
    fn remove_header(&mut self, side: Side, name: &str);
    fn add_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError>;

    fn listener(&mut self) -> String;
    fn peer_address(&mut self) -> String;
    fn sni(&mut self) -> Option<String>;
    fn peer_identity(&mut self) -> Option<PeerIdentity>;
    fn request_id(&mut self) -> String;
    fn attempt(&mut self) -> u32;
    fn destination(&mut self) -> Option<String>;

    fn set_destination(&mut self, cluster: &str) -> Result<(), HostError>;
    fn set_timeout(&mut self, ms: u32);
    fn set_per_try_timeout(&mut self, ms: u32);

    fn context_get(&mut self, key: &str) -> Option<Vec<u8>>;
    fn context_set(&mut self, key: &str, value: &[u8]);

    fn counter_add(&mut self, name: &str, delta: i64) -> i64;
    fn counter_get(&mut self, name: &str) -> i64;
    fn kv_get(&mut self, key: &str) -> Option<shared::Entry>;
    fn kv_set(&mut self, key: &str, value: &[u8], ttl_ms: Option<u32>) -> u64;
    fn kv_compare_and_set(
        &mut self,
        key: &str,
        expected_version: Option<u64>,
        value: &[u8],
        ttl_ms: Option<u32>,
    ) -> Option<u64>;
    fn kv_delete(&mut self, key: &str);

    fn metric(&mut self, kind: metrics::Kind, name: &str, labels: &[(&str, &str)], value: f64);
    /// A metric made once ([`metrics::Counter`] and its kin): by default, as [`HostApi::metric`].
    fn fixed_metric(&mut self, metric: &metrics::FixedMetric, value: f64) {
        self.metric(metric.kind, &metric.name, &metric.label_refs(), value);
    }
    fn log(&mut self, level: log::Level, message: &str);
    fn monotonic_ns(&mut self) -> u64;
    fn wall_ms(&mut self) -> u64;
    fn next_u64(&mut self) -> u64;
    fn tick_every(&mut self, ms: u32);
    fn stream_response_body(&mut self);
    fn stream_request_body(&mut self);
    fn upstream_failures_only(&mut self, min_status: u16, grpc_statuses: bool);
    fn never_call_out(&mut self);
    fn http_call(
        &mut self,
        cluster: &str,
        request: &http::HttpRequest,
    ) -> Result<http::HttpResponse, http::CallError>;
}

/// The host hooks talk to: the component's imports on wasm, the in-memory test host natively.
#[cfg(target_arch = "wasm32")]
pub(crate) type CurrentHost = crate::__private::WasmHost;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type CurrentHost = crate::testing::TestHost;

/// Runs `f` against the current host. Dispatch is static, not `dyn`: host functions a plugin never
/// calls are not linked into it, so its component does not import them (a plugin that never calls
/// `http::call` gets the host's faster synchronous hook path).
pub(crate) fn with<R>(f: impl FnOnce(&mut CurrentHost) -> R) -> R {
    #[cfg(target_arch = "wasm32")]
    {
        f(&mut crate::__private::WasmHost)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_current(f)
    }
}

/// State shared by every instance of this plugin (other plugins have their own).
pub mod shared {
    #[allow(unused_imports)]
    use super::HostApi as _;
    /// A value with the version compare-and-set checks.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        /// The stored bytes.
        pub value: Vec<u8>,
        /// Changes on every write; what [`kv_compare_and_set`] compares.
        pub version: u64,
    }

    /// Adds `delta` to a shared counter and returns the new value: state the plugin reads back
    /// (a quota, a budget), shared by its instances, never exported. To count something for
    /// dashboards, use [`crate::metrics::counter`].
    pub fn counter_add(name: &str, delta: i64) -> i64 {
        super::with(|h| h.counter_add(name, delta))
    }

    /// The current value of a shared counter (0 if it was never added to).
    pub fn counter_get(name: &str) -> i64 {
        super::with(|h| h.counter_get(name))
    }

    /// The value under `key`, unless it is missing or expired.
    pub fn kv_get(key: &str) -> Option<Entry> {
        super::with(|h| h.kv_get(key))
    }

    /// Sets `key`; it expires after `ttl` if given. Returns the new version.
    pub fn kv_set(key: &str, value: &[u8], ttl: Option<std::time::Duration>) -> u64 {
        super::with(|h| h.kv_set(key, value, ttl.map(millis)))
    }

    /// Sets `key` only if it is still at `expected_version` (`None`: only if absent). Returns the
    /// new version, or `None` when another instance changed it first.
    pub fn kv_compare_and_set(
        key: &str,
        expected_version: Option<u64>,
        value: &[u8],
        ttl: Option<std::time::Duration>,
    ) -> Option<u64> {
        super::with(|h| h.kv_compare_and_set(key, expected_version, value, ttl.map(millis)))
    }

    /// Read-modify-write of `key`: `update` gets the current value (if any) and returns the new
    /// value and a result; it is run again if another instance changed the key in between.
    /// `None` if the key stayed contended for every try (or the store is full).
    pub fn kv_update<T>(
        key: &str,
        ttl: Option<std::time::Duration>,
        mut update: impl FnMut(Option<&[u8]>) -> (Vec<u8>, T),
    ) -> Option<T> {
        for _ in 0..64 {
            let current = kv_get(key);
            let (value, result) = update(current.as_ref().map(|e| e.value.as_slice()));
            if kv_compare_and_set(key, current.map(|e| e.version), &value, ttl).is_some() {
                return Some(result);
            }
        }
        None
    }

    /// Removes `key`.
    pub fn kv_delete(key: &str) {
        super::with(|h| h.kv_delete(key));
    }

    pub(crate) fn millis(d: std::time::Duration) -> u32 {
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
    }
}

/// The plugin's own metrics, exported by the proxy as `switchyard_plugin_<name>`.
pub mod metrics {
    use std::sync::atomic::{AtomicU32, Ordering};

    #[allow(unused_imports)]
    use super::HostApi as _;
    /// The kind of a metric.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        /// Only ever goes up (`metrics::counter`).
        Counter,
        /// Goes up and down (`metrics::gauge`).
        Gauge,
        /// A distribution, in buckets (`metrics::histogram`).
        Histogram,
    }

    /// Adds `value` to counter `name` with `labels`, exported on `/metrics` as
    /// `switchyard_plugin_<name>`. Write-only: to keep a count the plugin reads back, use
    /// [`crate::shared::counter_add`].
    pub fn counter(name: &str, labels: &[(&str, &str)], value: u64) {
        super::with(|h| h.metric(Kind::Counter, name, labels, value as f64));
    }

    /// Sets gauge `name` with `labels` to `value`, exported as `switchyard_plugin_<name>`.
    pub fn gauge(name: &str, labels: &[(&str, &str)], value: f64) {
        super::with(|h| h.metric(Kind::Gauge, name, labels, value));
    }

    /// Records `value` in histogram `name` with `labels`, exported as `switchyard_plugin_<name>`.
    pub fn histogram(name: &str, labels: &[(&str, &str)], value: f64) {
        super::with(|h| h.metric(Kind::Histogram, name, labels, value));
    }

    /// A counter whose name and labels are known when the plugin starts: make it in
    /// [`crate::Plugin::new`], keep it in the plugin, and [`Counter::add`] to it per request.
    /// The same metric as [`counter`] with the same name and labels, for a fraction of the cost:
    /// its name and labels are encoded for the host once, not on every update.
    ///
    /// ```
    /// use switchyard_sdk::metrics::Counter;
    /// use switchyard_sdk::{Action, Plugin, Request};
    ///
    /// struct Gate {
    ///     allowed: Counter,
    /// }
    ///
    /// impl Plugin for Gate {
    ///     type Config = ();
    ///     fn new(_: ()) -> Result<Self, String> {
    ///         let allowed = Counter::new("decisions", &[("result", "allowed")]);
    ///         Ok(Gate { allowed })
    ///     }
    ///     fn on_request(&self, _req: &mut Request) -> Action {
    ///         self.allowed.add(1);
    ///         Action::Continue
    ///     }
    /// }
    /// ```
    #[derive(Debug, Clone)]
    pub struct Counter(FixedMetric);

    impl Counter {
        /// The counter `name` with `labels` (exported as `switchyard_plugin_<name>`).
        pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
            Self(FixedMetric::new(Kind::Counter, name, labels))
        }

        /// Adds `value`, as [`counter`] does.
        pub fn add(&self, value: u64) {
            super::with(|h| h.fixed_metric(&self.0, value as f64));
        }
    }

    /// A gauge whose name and labels are known when the plugin starts (see [`Counter`]).
    #[derive(Debug, Clone)]
    pub struct Gauge(FixedMetric);

    impl Gauge {
        /// The gauge `name` with `labels` (exported as `switchyard_plugin_<name>`).
        pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
            Self(FixedMetric::new(Kind::Gauge, name, labels))
        }

        /// Sets it to `value`, as [`gauge`] does.
        pub fn set(&self, value: f64) {
            super::with(|h| h.fixed_metric(&self.0, value));
        }
    }

    /// A histogram whose name and labels are known when the plugin starts (see [`Counter`]).
    #[derive(Debug, Clone)]
    pub struct Histogram(FixedMetric);

    impl Histogram {
        /// The histogram `name` with `labels` (exported as `switchyard_plugin_<name>`).
        pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
            Self(FixedMetric::new(Kind::Histogram, name, labels))
        }

        /// Records `value`, as [`histogram`] does.
        pub fn record(&self, value: f64) {
            super::with(|h| h.fixed_metric(&self.0, value));
        }
    }

    /// `labels` as owned strings, as a metric kept past the call holds them.
    pub(crate) fn owned_labels(labels: &[(&str, &str)]) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// What [`Counter`], [`Gauge`] and [`Histogram`] hold: the metric, its kind, name and labels
    /// encoded as the host's batch reads them (`None` past 255 labels: such a metric is sent as
    /// [`counter`] sends it), and the number the host knows it by in this instance once it was
    /// first updated.
    #[derive(Debug)]
    pub struct FixedMetric {
        pub(crate) kind: Kind,
        pub(crate) name: String,
        pub(crate) labels: Vec<(String, String)>,
        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        pub(crate) identity: Option<Box<[u8]>>,
        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        pub(crate) number: AtomicU32,
    }

    impl Clone for FixedMetric {
        fn clone(&self) -> Self {
            Self {
                kind: self.kind,
                name: self.name.clone(),
                labels: self.labels.clone(),
                identity: self.identity.clone(),
                // The same metric in the same instance: the host's number for it holds.
                number: AtomicU32::new(self.number.load(Ordering::Relaxed)),
            }
        }
    }

    impl FixedMetric {
        fn new(kind: Kind, name: &str, labels: &[(&str, &str)]) -> Self {
            let mut identity = Vec::new();
            let encoded = crate::batch::put_metric_identity(&mut identity, kind, name, labels);
            Self {
                kind,
                name: name.to_owned(),
                labels: owned_labels(labels),
                identity: encoded.map(|()| identity.into_boxed_slice()),
                number: AtomicU32::new(crate::batch::NOT_NUMBERED),
            }
        }

        /// The labels as the plain [`counter`] takes them.
        pub(crate) fn label_refs(&self) -> Vec<(&str, &str)> {
            self.labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        }
    }
}

/// Logging through the proxy's log, tagged with the plugin's name.
pub mod log {
    #[allow(unused_imports)]
    use super::HostApi as _;
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    /// How much a log line matters; the proxy's log filter decides which are written.
    pub enum Level {
        /// Step-by-step detail.
        Trace,
        /// Detail for debugging.
        Debug,
        /// Things worth knowing in normal operation.
        Info,
        /// Something is off, but the request goes on.
        Warn,
        /// Something failed.
        Error,
    }

    /// Writes `message` to the proxy's log at `level`, with the plugin's name.
    pub fn log(level: Level, message: &str) {
        super::with(|h| h.log(level, message));
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Time as the host sees it.
pub mod clock {
    #[allow(unused_imports)]
    use super::HostApi as _;
    /// Monotonic time from an arbitrary start; for measuring intervals.
    pub fn monotonic() -> std::time::Duration {
        std::time::Duration::from_nanos(super::with(|h| h.monotonic_ns()))
    }

    /// Milliseconds since the Unix epoch.
    pub fn wall_ms() -> u64 {
        super::with(|h| h.wall_ms())
    }
}

/// Work on a schedule rather than per request.
pub mod timer {
    #[allow(unused_imports)]
    use super::HostApi as _;

    /// From [`crate::Plugin::new`] only: calls the plugin's [`crate::Plugin::on_tick`] every
    /// `every` (10 ms at least), once per proxy, on one instance at a time, under the same CPU
    /// deadline as a hook. No request is in scope in `on_tick`; `http::call`, `shared` and
    /// `metrics` work. Later calls are ignored.
    pub fn tick_every(every: std::time::Duration) {
        let ms = u32::try_from(every.as_millis()).unwrap_or(u32::MAX);
        super::with(|h| h.tick_every(ms));
    }
}

/// Which attempts reach [`crate::Plugin::on_upstream_response`].
pub mod attempts {
    #[allow(unused_imports)]
    use super::HostApi as _;

    /// From [`crate::Plugin::new`] only: [`crate::Plugin::on_upstream_response`] is called only
    /// for attempts that got no response, for responses whose status is `min_status` or above
    /// and, with `grpc_statuses`, for gRPC responses whose head carries a `grpc-status` other
    /// than 0. For plugins that act only on failures (retries, outlier detection): each success
    /// they skip is a hook call fewer per request. Without it, every attempt.
    pub fn upstream_failures_only(min_status: u16, grpc_statuses: bool) {
        super::with(|h| h.upstream_failures_only(min_status, grpc_statuses));
    }
}

/// Response bodies chunk by chunk.
pub mod streaming {
    #[allow(unused_imports)]
    use super::HostApi as _;

    /// From [`crate::Plugin::new`] only: every response body goes through this plugin's
    /// [`crate::Plugin::on_response_chunk`] piece by piece as it streams to the client, never
    /// buffered whole. Such responses go out without `content-length`.
    pub fn stream_response_body() {
        super::with(|h| h.stream_response_body());
    }

    /// From [`crate::Plugin::new`] only: every request body goes through this plugin's
    /// [`crate::Plugin::on_request_chunk`] piece by piece as it streams upstream, which then gets
    /// it without `content-length`. A body some plugin reads whole (`BODY_INTEREST`) is not
    /// streamed.
    pub fn stream_request_body() {
        super::with(|h| h.stream_request_body());
    }
}

/// Randomness from the host (plugins have no other source).
/// Fast, non-cryptographic randomness (splits, sampling, jitter); never for secrets.
pub mod random {
    #[allow(unused_imports)]
    use super::HostApi as _;

    /// A random `u64`. In the proxy, each instance seeds a generator (wyrand) once from the
    /// host and draws from it without a host call; on the test host every draw asks the host,
    /// so tests stay deterministic.
    pub fn u64() -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            generator::next()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::with(|h| h.next_u64())
        }
    }

    #[cfg(target_arch = "wasm32")]
    mod generator {
        use std::cell::Cell;

        use super::super::HostApi as _;

        thread_local! {
            /// Zero until first use, then wyrand's state (never zero again in practice).
            static STATE: Cell<u64> = const { Cell::new(0) };
        }

        pub fn next() -> u64 {
            STATE.with(|state| {
                let mut s = state.get();
                if s == 0 {
                    s = super::super::with(|h| h.next_u64()) | 1;
                }
                s = s.wrapping_add(0xa076_1d64_78bd_642f);
                state.set(s);
                let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
                (t >> 64) as u64 ^ t as u64
            })
        }
    }

    /// A float in [0, 1), e.g. to pick a percentage of requests.
    pub fn unit() -> f64 {
        (u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Calls to a cluster. The proxy waits asynchronously, so a slow callout costs no proxy thread.
pub mod http {
    #[allow(unused_imports)]
    use super::HostApi as _;

    /// From [`crate::Plugin::new`] only: with the config it was given, this plugin never calls
    /// [`call`], from its hooks or its ticks. A plugin that calls out only for some configs (the
    /// auth plugin, for remote JWKS) says so for the others, and its hooks then run as plain
    /// calls instead of on a fiber of their own; a `call` made anyway fails with
    /// [`CallError::Invalid`].
    pub fn never_call_out() {
        super::with(|h| h.never_call_out());
    }

    /// A request to send to a cluster.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct HttpRequest {
        /// The method (`GET` unless set).
        pub method: String,
        /// The path and query on the cluster.
        pub path: String,
        /// Header names and values.
        pub headers: Vec<(String, String)>,
        /// The body.
        pub body: Vec<u8>,
        /// How long to wait for the whole answer (the proxy's default when `None`).
        pub timeout: Option<std::time::Duration>,
    }

    impl HttpRequest {
        /// A `GET` of `path`.
        pub fn get(path: impl Into<String>) -> Self {
            Self {
                method: "GET".into(),
                path: path.into(),
                ..Default::default()
            }
        }

        /// Adds a header.
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.headers.push((name.into(), value.into()));
            self
        }
    }

    /// The answer to a callout (bodies up to 1 MiB).
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct HttpResponse {
        /// The status code.
        pub status: u16,
        /// Header names and values, as received.
        pub headers: Vec<(String, String)>,
        /// The whole body.
        pub body: Vec<u8>,
    }

    impl HttpResponse {
        /// The first value of a header (names are case-insensitive).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Why a callout failed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CallError {
        /// No cluster has that name.
        UnknownCluster,
        /// The cluster has no healthy endpoint.
        NoEndpoint,
        /// The connection could not be made.
        ConnectFailure,
        /// The connection broke before the answer was whole.
        Reset,
        /// No whole answer within the timeout.
        Timeout,
        /// The request could not be sent as given (a bad header, say).
        Invalid,
    }

    impl std::fmt::Display for CallError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                Self::UnknownCluster => "no such cluster",
                Self::NoEndpoint => "the cluster has no endpoint",
                Self::ConnectFailure => "could not connect",
                Self::Reset => "the connection was reset",
                Self::Timeout => "timed out",
                Self::Invalid => "invalid request or response",
            })
        }
    }

    impl std::error::Error for CallError {}

    /// Sends `request` to a cluster and waits for the whole answer.
    pub fn call(cluster: &str, request: &HttpRequest) -> Result<HttpResponse, CallError> {
        super::with(|h| h.http_call(cluster, request))
    }
}
