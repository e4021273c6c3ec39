//! The golden signals: traffic, latency, errors and saturation, per listener, route, cluster,
//! status class and method.
//!
//! Metric handles are registered once per label set and kept, so recording a request is a few
//! atomic adds, not a registry lookup. Every label comes from config (listener, cluster and route
//! names) or a fixed list (status class, method, error kind), and route names a plugin reports are
//! capped in number, so cardinality stays bounded whatever clients send.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use hashbrown::Equivalent;
use metrics::{Counter, Gauge, Histogram, Label};
use rustc_hash::{FxBuildHasher, FxHashMap};

/// Distinct label sets one listener keeps before new routes are reported as `other`.
const MAX_SERIES_PER_LISTENER: usize = 2048;
/// Longest route name used as a label.
const MAX_ROUTE_LABEL: usize = 64;

/// A bounded label for an HTTP method: the standard ones, else `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("OTHER")
}

/// `2xx`, `4xx`, ... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Why a request or an attempt failed, as the `kind` label of `switchyard_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    Tls,
    Plugin,
    Overloaded,
    NoEndpoint,
    NoRoute,
    /// A client's HTTP/1.1 request head refused before it became a request (400, 408, 431, 501,
    /// 505 from the engine).
    Malformed,
}

impl ErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Tls => "tls",
            Self::Plugin => "plugin",
            Self::Overloaded => "overloaded",
            Self::NoEndpoint => "no_endpoint",
            Self::NoRoute => "no_route",
            Self::Malformed => "malformed",
        }
    }
}

/// What one finished request is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    route: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    status_class: &'static str,
    grpc_status: &'static str,
    method: &'static str,
}

/// A [`SeriesKey`] of borrowed labels, to find a known series without allocating. Its fields
/// hash as the key's do (an `Arc<str>` hashes as its `str`).
#[derive(Hash)]
struct SeriesLookup<'a> {
    route: Option<&'a str>,
    cluster: Option<&'a str>,
    status_class: &'static str,
    grpc_status: &'static str,
    method: &'static str,
}

impl Equivalent<SeriesKey> for SeriesLookup<'_> {
    fn equivalent(&self, key: &SeriesKey) -> bool {
        same_label(self.route, key.route.as_deref())
            && same_label(self.cluster, key.cluster.as_deref())
            && same(self.status_class, key.status_class)
            && same(self.grpc_status, key.grpc_status)
            && same(self.method, key.method)
    }
}

/// Label equality that skips the byte comparison when both are the same string in memory, as
/// they are on every request after a series' first: the labels are static strings and the
/// cluster's shared name. (Comparing the bytes was 1% of the proxy's CPU without plugins.)
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

fn same_label(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

#[derive(Debug, Clone)]
struct Series {
    requests: Counter,
    duration: Histogram,
}

/// An error counter's labels besides the listener: cluster and kind.
type ErrorKey = (Option<Arc<str>>, ErrorKind);

/// The request metrics of one listener.
#[derive(Debug)]
pub struct ListenerMetrics {
    listener: Arc<str>,
    series: RwLock<hashbrown::HashMap<SeriesKey, Series, FxBuildHasher>>,
    errors: RwLock<FxHashMap<ErrorKey, Counter>>,
    /// Requests received and not yet answered in full.
    pub in_flight: Gauge,
}

impl ListenerMetrics {
    pub fn new(listener: Arc<str>) -> Self {
        let in_flight =
            metrics::gauge!("switchyard_requests_in_flight", "listener" => listener.to_string());
        Self {
            listener,
            series: RwLock::default(),
            errors: RwLock::default(),
            in_flight,
        }
    }

    /// Counts one finished request and its end-to-end time.
    pub fn record_request(
        &self,
        route: Option<&str>,
        cluster: Option<&Arc<str>>,
        status: u16,
        grpc_status: &'static str,
        method: &'static str,
        took: Duration,
    ) {
        let route = route.map(|r| truncate(r, MAX_ROUTE_LABEL));
        let lookup = SeriesLookup {
            route,
            cluster: cluster.map(|c| &**c),
            status_class: status_class(status),
            grpc_status,
            method,
        };
        if let Some(series) = read(&self.series).get(&lookup) {
            series.requests.increment(1);
            series.duration.record(took.as_secs_f64());
            return;
        }
        let mut key = SeriesKey {
            route: route.map(Arc::from),
            cluster: cluster.cloned(),
            status_class: lookup.status_class,
            grpc_status,
            method,
        };
        let mut all = write(&self.series);
        if all.len() >= MAX_SERIES_PER_LISTENER && !all.contains_key(&key) {
            key.route = Some("other".into());
        }
        let series = all
            .entry(key.clone())
            .or_insert_with(|| self.register(&key));
        series.requests.increment(1);
        series.duration.record(took.as_secs_f64());
    }

    fn register(&self, key: &SeriesKey) -> Series {
        let listener = self.listener.to_string();
        let route = key.route.as_deref().unwrap_or("").to_owned();
        let cluster = key.cluster.as_deref().unwrap_or("").to_owned();
        let mut labels = vec![
            Label::new("listener", listener.clone()),
            Label::new("route", route.clone()),
            Label::new("cluster", cluster.clone()),
            Label::new("status_class", key.status_class),
            Label::new("method", key.method),
        ];
        // Only gRPC requests carry `grpc_status`: other series look as they always did.
        if !key.grpc_status.is_empty() {
            labels.push(Label::new("grpc_status", key.grpc_status));
        }
        let requests = metrics::counter!("switchyard_requests_total", labels);
        let duration = metrics::histogram!(
            "switchyard_request_duration_seconds",
            "listener" => listener,
            "route" => route,
            "cluster" => cluster,
            "status_class" => key.status_class,
        );
        Series { requests, duration }
    }

    /// Counts one error of `kind`, against `cluster` when it concerns one.
    pub fn record_error(&self, cluster: Option<&Arc<str>>, kind: ErrorKind) {
        let key = (cluster.cloned(), kind);
        let found = read(&self.errors).get(&key).cloned();
        let counter = found.unwrap_or_else(|| {
            write(&self.errors)
                .entry(key)
                .or_insert_with(|| error_counter(&self.listener, cluster, kind))
                .clone()
        });
        counter.increment(1);
    }
}

/// `switchyard_errors_total` for one listener, cluster and kind.
pub fn error_counter(listener: &str, cluster: Option<&Arc<str>>, kind: ErrorKind) -> Counter {
    metrics::counter!(
        "switchyard_errors_total",
        "listener" => listener.to_owned(),
        "cluster" => cluster.map_or_else(String::new, |c| c.to_string()),
        "kind" => kind.label(),
    )
}

/// What an upstream attempt ended with, as a label.
#[derive(Debug, Clone, Copy)]
pub enum AttemptResult {
    Status(u16),
    Error(ErrorKind),
}

/// Per-cluster upstream metrics, registered when the cluster is built.
#[derive(Debug)]
pub struct ClusterMetrics {
    /// Attempt time to response head (or failure), by result: 1xx..5xx then error kinds.
    attempt_duration: Vec<Histogram>,
    /// Attempts after the first.
    pub retries: Counter,
    cluster: String,
}

const ATTEMPT_ERRORS: [ErrorKind; 4] = [
    ErrorKind::Connect,
    ErrorKind::Timeout,
    ErrorKind::Reset,
    ErrorKind::Tls,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl ClusterMetrics {
    pub fn new(cluster: &str) -> Self {
        let results = CLASSES
            .iter()
            .copied()
            .chain(ATTEMPT_ERRORS.iter().map(|k| k.label()));
        Self {
            attempt_duration: results
                .map(|result| {
                    metrics::histogram!(
                        "switchyard_upstream_attempt_duration_seconds",
                        "cluster" => cluster.to_owned(),
                        "result" => result,
                    )
                })
                .collect(),
            retries: metrics::counter!("switchyard_retries_total", "cluster" => cluster.to_owned()),
            cluster: cluster.to_owned(),
        }
    }

    /// A retry a plugin asked for could not be made, for `reason` (a bounded set of labels).
    pub fn retry_refused(&self, reason: &'static str) {
        metrics::counter!(
            "switchyard_retries_refused_total",
            "cluster" => self.cluster.clone(),
            "reason" => reason,
        )
        .increment(1);
    }

    pub fn record_attempt(&self, result: AttemptResult, took: Duration) {
        let index = match result {
            AttemptResult::Status(status) => usize::from(status / 100).clamp(1, 5) - 1,
            AttemptResult::Error(kind) => {
                CLASSES.len() + ATTEMPT_ERRORS.iter().position(|k| *k == kind).unwrap_or(2)
            }
        };
        if let Some(histogram) = self.attempt_duration.get(index) {
            histogram.record(took.as_secs_f64());
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        let custom = http::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(&custom), "OTHER");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(999), "5xx");
        assert_eq!(truncate("é".repeat(40).as_str(), 5), "éé");
    }

    #[test]
    fn a_known_series_is_found_by_borrowed_labels() {
        use std::hash::BuildHasher as _;
        let key = SeriesKey {
            route: Some("api".into()),
            cluster: None,
            status_class: "2xx",
            grpc_status: "",
            method: "GET",
        };
        let lookup = SeriesLookup {
            route: Some("api"),
            cluster: None,
            status_class: "2xx",
            grpc_status: "",
            method: "GET",
        };
        assert_eq!(
            FxBuildHasher.hash_one(&key),
            FxBuildHasher.hash_one(&lookup)
        );
        assert!(lookup.equivalent(&key));
        let other_route = SeriesLookup {
            route: Some("web"),
            ..lookup
        };
        assert!(!other_route.equivalent(&key));
    }
}
