//! Logs, metrics, traces and the access log.

pub mod access_log;
pub mod exchange;
pub mod golden;
pub mod otlp;
pub mod scrape;
pub mod trace_context;

pub use exchange::{Exchange, ListenerTelemetry, ROUTE_CONTEXT_KEY, Telemetry};
pub use golden::{AttemptResult, ClusterMetrics, ErrorKind};

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

/// Installs the process-wide Prometheus recorder (once) and returns the handle `/metrics`
/// renders. A background thread drains histogram samples so memory stays flat between scrapes.
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "switchyard_plugin_hook_duration_seconds".into(),
                    ),
                    HOOK_BUCKETS,
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("switchyard-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        })
        .clone()
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
