//! Logs, metrics, traces and the access log.

pub mod access_log;
pub mod exchange;
pub mod golden;
pub mod histogram;
pub mod history;
pub mod otlp;
pub mod recorder;
pub mod scrape;
pub mod shard;
pub mod trace_context;
pub mod traffic;
pub mod window;

pub use exchange::{Exchange, ListenerTelemetry, ROUTE_CONTEXT_KEY, Telemetry};
pub use golden::{AttemptResult, ClusterMetrics, ErrorKind};
pub use recorder::MetricsHandle;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); `SWITCHYARD_LOG_FORMAT=json` gives one
/// JSON object per line.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Latency buckets in seconds: 100 us to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Plugin hook buckets in seconds: 1 us to 50 ms (a warm hook takes microseconds; the default
/// CPU limit is 10 ms).
const HOOK_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025, 0.005, 0.01, 0.025, 0.05,
];

/// Installs the process-wide recorder (once) and returns the handle `/metrics` renders: every
/// update in the recording thread's own shard ([`recorder`]), counters and gauges rendered by the
/// Prometheus exporter, histograms counted straight into their buckets ([`histogram`]), so memory
/// stays flat between scrapes.
pub fn install_metrics() -> Option<MetricsHandle> {
    static HANDLE: std::sync::OnceLock<Option<MetricsHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let recorder = recorder::ShardedRecorder::new(prometheus, histogram_bounds);
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

/// The buckets of each histogram: plugin hook times in microseconds, the rest in latency ranges.
fn histogram_bounds(name: &str) -> &'static [f64] {
    if name == "switchyard_plugin_hook_duration_seconds" {
        HOOK_BUCKETS
    } else {
        LATENCY_BUCKETS
    }
}

/// A metric a plugin reports, named `switchyard_plugin_<name>` with the plugin as a label.
pub struct PluginMetric {
    name: String,
    labels: Vec<metrics::Label>,
}

/// Labels a plugin may attach to one metric (bounded, as cardinality must be).
const MAX_PLUGIN_LABELS: usize = 8;

/// Builds the metric name and labels for a plugin's own metric, making names Prometheus-safe.
pub fn plugin_metric(plugin: &str, name: &str, labels: Vec<(String, String)>) -> PluginMetric {
    let mut all = Vec::with_capacity(labels.len().min(MAX_PLUGIN_LABELS) + 1);
    all.push(metrics::Label::new("plugin", plugin.to_owned()));
    all.extend(
        labels
            .into_iter()
            .take(MAX_PLUGIN_LABELS)
            .map(|(k, v)| metrics::Label::new(prometheus_name(&k), v)),
    );
    PluginMetric {
        name: format!("switchyard_plugin_{}", prometheus_name(name)),
        labels: all,
    }
}

impl PluginMetric {
    pub fn counter(self) -> metrics::Counter {
        metrics::counter!(self.name, self.labels)
    }
    pub fn gauge(self) -> metrics::Gauge {
        metrics::gauge!(self.name, self.labels)
    }
    pub fn histogram(self) -> metrics::Histogram {
        metrics::histogram!(self.name, self.labels)
    }
}

/// `[a-zA-Z0-9_]` only; anything else becomes `_`.
fn prometheus_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
