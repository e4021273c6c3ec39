//! The process-wide `metrics` recorder: every counter, gauge and histogram is updated in the
//! recording thread's own shard ([`super::shard`]), so the request path's telemetry costs no
//! locked instruction.
//!
//! Counters and gauges are still registered with, described by and rendered by the Prometheus
//! exporter: their shards are summed into the exporter's handles just before each render.
//! Histograms are [`BucketHistogram`]s, rendered here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use metrics_exporter_prometheus::formatting::{key_to_parts, write_metric_line, write_type_line};
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

use super::histogram::BucketHistogram;
use super::shard::{self, Sharded};

/// The bounds a histogram of this name counts into.
pub type BoundsFor = fn(&str) -> &'static [f64];

/// The process-wide recorder (see the module's documentation).
pub struct ShardedRecorder {
    prometheus: PrometheusRecorder,
    registered: Arc<Registered>,
}

/// Every series registered so far, by key.
#[derive(Debug)]
struct Registered {
    bounds_for: BoundsFor,
    counters: Mutex<BTreeMap<Key, Arc<ShardedCounter>>>,
    gauges: Mutex<BTreeMap<Key, Arc<ShardedGauge>>>,
    histograms: Mutex<BTreeMap<Key, Arc<BucketHistogram>>>,
}

impl ShardedRecorder {
    pub fn new(prometheus: PrometheusRecorder, bounds_for: BoundsFor) -> Self {
        Self {
            prometheus,
            registered: Arc::new(Registered {
                bounds_for,
                counters: Mutex::default(),
                gauges: Mutex::default(),
                histograms: Mutex::default(),
            }),
        }
    }

    /// What `/metrics` renders from.
    pub fn handle(&self) -> MetricsHandle {
        MetricsHandle {
            prometheus: self.prometheus.handle(),
            registered: Arc::clone(&self.registered),
        }
    }
}

/// The series registered under `key`, made by `make` the first time.
fn series<T>(map: &Mutex<BTreeMap<Key, Arc<T>>>, key: &Key, make: impl FnOnce() -> T) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(map.entry(key.clone()).or_insert_with(|| Arc::new(make())))
}

impl Recorder for ShardedRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }

    /// Nothing describes a histogram, so no HELP lines are kept for them.
    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(series(&self.registered.counters, key, || ShardedCounter {
            shards: Sharded::default(),
            exported: self.prometheus.register_counter(key, metadata),
        }))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(series(&self.registered.gauges, key, || ShardedGauge {
            deltas: Sharded::new_with(|| AtomicU64::new(0f64.to_bits())),
            base_bits: AtomicU64::new(0f64.to_bits()),
            exported: self.prometheus.register_gauge(key, metadata),
        }))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let bounds = (self.registered.bounds_for)(key.name());
        Histogram::from_arc(series(&self.registered.histograms, key, || {
            BucketHistogram::new(bounds)
        }))
    }
}

/// A counter added to in shards, summed into the exporter's counter before a render.
#[derive(Debug)]
struct ShardedCounter {
    shards: Sharded<AtomicU64>,
    exported: Counter,
}

impl CounterFn for ShardedCounter {
    fn increment(&self, value: u64) {
        let (cell, writer) = self.shards.local();
        writer.add(cell, value);
    }

    /// Raises the total to `value` if it is lower (through the shared shard).
    fn absolute(&self, value: u64) {
        let total = shard::sum(&self.shards, |cell| cell);
        if let Some(shared) = self.shards.iter().last()
            && value > total
        {
            shared.fetch_add(value - total, Ordering::Relaxed);
        }
    }
}

impl ShardedCounter {
    fn flush(&self) {
        self.exported
            .absolute(shard::sum(&self.shards, |cell| cell));
    }
}

/// A gauge moved up and down in shards, or set: its value is the last value set plus what the
/// shards moved it by since. A gauge is either set (a cluster's endpoint count) or moved (the
/// requests in flight); one that is both while another thread moves it may lose that move.
#[derive(Debug)]
struct ShardedGauge {
    /// Per shard, the sum of its moves as `f64` bits.
    deltas: Sharded<AtomicU64>,
    /// What the last `set` put, less the moves made before it, as `f64` bits.
    base_bits: AtomicU64,
    exported: Gauge,
}

impl ShardedGauge {
    fn moved(&self) -> f64 {
        self.deltas
            .iter()
            .map(|cell| f64::from_bits(cell.load(Ordering::Relaxed)))
            .sum()
    }

    fn value(&self) -> f64 {
        f64::from_bits(self.base_bits.load(Ordering::Relaxed)) + self.moved()
    }

    fn flush(&self) {
        self.exported.set(self.value());
    }
}

impl GaugeFn for ShardedGauge {
    fn increment(&self, value: f64) {
        let (cell, writer) = self.deltas.local();
        writer.add_f64(cell, value);
    }

    fn decrement(&self, value: f64) {
        self.increment(-value);
    }

    fn set(&self, value: f64) {
        self.base_bits
            .store((value - self.moved()).to_bits(), Ordering::Relaxed);
    }
}

/// Renders everything recorded, in the Prometheus text exposition format.
#[derive(Debug, Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
    registered: Arc<Registered>,
}

impl MetricsHandle {
    pub fn render(&self) -> String {
        self.registered.flush();
        let mut output = self.prometheus.render();
        self.registered.render_histograms(&mut output);
        output
    }
}

/// A histogram series' rendered labels, and the histogram.
type LabeledSeries = (Vec<String>, Arc<BucketHistogram>);

impl Registered {
    /// Sums the counters' and gauges' shards into the exporter's handles.
    fn flush(&self) {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.values().for_each(|counter| counter.flush());
        drop(counters);
        let gauges = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        gauges.values().for_each(|gauge| gauge.flush());
    }

    fn render_histograms(&self, output: &mut String) {
        let mut by_name: BTreeMap<String, Vec<LabeledSeries>> = BTreeMap::new();
        {
            let series = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
            for (key, histogram) in series.iter() {
                let (name, labels) = key_to_parts(key, None);
                by_name
                    .entry(name)
                    .or_default()
                    .push((labels, Arc::clone(histogram)));
            }
        }
        for (name, series) in by_name {
            write_type_line(output, &name, "histogram");
            for (labels, histogram) in series {
                let (buckets, count, sum) = histogram.snapshot();
                for (le, cumulative) in buckets {
                    write_metric_line(
                        output,
                        &name,
                        Some("bucket"),
                        &labels,
                        Some(("le", le)),
                        cumulative,
                        None,
                    );
                }
                write_metric_line(
                    output,
                    &name,
                    Some("bucket"),
                    &labels,
                    Some(("le", "+Inf")),
                    count,
                    None,
                );
                write_metric_line::<&str, f64>(
                    output,
                    &name,
                    Some("sum"),
                    &labels,
                    None,
                    sum,
                    None,
                );
                write_metric_line::<&str, u64>(
                    output,
                    &name,
                    Some("count"),
                    &labels,
                    None,
                    count,
                    None,
                );
            }
            output.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    fn recorder() -> ShardedRecorder {
        ShardedRecorder::new(
            metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
            |_| BOUNDS,
        )
    }

    fn metadata() -> Metadata<'static> {
        Metadata::new("test", metrics::Level::INFO, None)
    }

    #[test]
    fn rendering_follows_the_exposition_format() {
        let recorder = recorder();
        let key = Key::from_parts("demo_seconds", vec![metrics::Label::new("cluster", "a\"b")]);
        recorder
            .register_histogram(&key, &metadata())
            .record(0.062_5);
        recorder
            .register_histogram(&key, &metadata())
            .record(0.000_5);
        let text = recorder.handle().render();
        let expected = "# TYPE demo_seconds histogram\n\
            demo_seconds_bucket{cluster=\"a\\\"b\",le=\"0.001\"} 1\n\
            demo_seconds_bucket{cluster=\"a\\\"b\",le=\"0.01\"} 1\n\
            demo_seconds_bucket{cluster=\"a\\\"b\",le=\"0.1\"} 2\n\
            demo_seconds_bucket{cluster=\"a\\\"b\",le=\"+Inf\"} 2\n\
            demo_seconds_sum{cluster=\"a\\\"b\"} 0.063\n\
            demo_seconds_count{cluster=\"a\\\"b\"} 2\n";
        assert!(text.contains(expected), "{text}");
    }

    #[test]
    fn counters_registered_again_add_to_one_series_and_render_their_sum() {
        let recorder = recorder();
        let key = Key::from_parts("demo_total", vec![metrics::Label::new("kind", "x")]);
        recorder.describe_counter("demo_total".into(), None, "Demo things.".into());
        recorder.register_counter(&key, &metadata()).increment(2);
        recorder.register_counter(&key, &metadata()).increment(3);
        let text = recorder.handle().render();
        assert!(text.contains("# HELP demo_total Demo things.\n"), "{text}");
        assert!(text.contains("demo_total{kind=\"x\"} 5\n"), "{text}");
        let renders = |line: &str| recorder.handle().render().contains(line);
        recorder.register_counter(&key, &metadata()).absolute(4);
        assert!(renders("demo_total{kind=\"x\"} 5\n"));
        recorder.register_counter(&key, &metadata()).absolute(9);
        assert!(renders("demo_total{kind=\"x\"} 9\n"));
    }

    #[test]
    fn gauges_render_what_was_set_plus_what_moved_them_since() {
        let recorder = recorder();
        let moved = Key::from_name("demo_in_flight");
        let gauge = recorder.register_gauge(&moved, &metadata());
        gauge.increment(3.0);
        gauge.decrement(1.0);
        assert!(recorder.handle().render().contains("demo_in_flight 2\n"));
        gauge.set(10.0);
        gauge.increment(1.0);
        assert!(recorder.handle().render().contains("demo_in_flight 11\n"));
        let set = recorder.register_gauge(&Key::from_name("demo_endpoints"), &metadata());
        set.set(4.0);
        set.set(3.0);
        assert!(recorder.handle().render().contains("demo_endpoints 3\n"));
    }
}
