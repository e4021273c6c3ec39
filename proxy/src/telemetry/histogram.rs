//! Fixed-bucket histograms behind the `metrics` facade.
//!
//! The Prometheus exporter's own histograms keep every sample — the value and an `Instant`, 24
//! bytes, plus a clock read to take it — until the next scrape or upkeep folds them into buckets.
//! A proxy records several samples per request (request time, attempt time, each plugin hook), so
//! at tens of thousands of requests a second that is megabytes held between scrapes and memory
//! that never goes back. These histograms count into their buckets as samples arrive: one atomic
//! add for the bucket and one for the sum, and memory fixed when the series is registered.
//! Counters and gauges stay the exporter's; [`MetricsHandle::render`] writes both.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::formatting::{key_to_parts, write_metric_line, write_type_line};
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

/// One histogram series: a count per bucket (not cumulative; the last is over every bound) and
/// the sum of the samples, as `f64` bits.
#[derive(Debug)]
pub struct BucketHistogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum_bits: AtomicU64,
}

impl BucketHistogram {
    /// A histogram with upper bounds `bounds` (ascending), plus one bucket above them all.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Cumulative counts per upper bound (Prometheus `le`), then the total count and the sum.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let total = cumulative
            + self
                .counts
                .last()
                .map_or(0, |over| over.load(Ordering::Relaxed));
        let sum = f64::from_bits(self.sum_bits.load(Ordering::Relaxed));
        (buckets, total, sum)
    }
}

impl HistogramFn for BucketHistogram {
    fn record(&self, value: f64) {
        // A sample equal to a bound belongs to that bound's bucket (`le`); NaN goes above all.
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}

/// The bounds a histogram of this name counts into.
pub type BoundsFor = fn(&str) -> &'static [f64];

/// The process-wide recorder: counters and gauges go to the Prometheus exporter, histograms to
/// [`BucketHistogram`]s.
pub struct BucketedRecorder {
    prometheus: PrometheusRecorder,
    histograms: Arc<Histograms>,
}

/// Every histogram series registered so far, by key.
#[derive(Debug)]
pub struct Histograms {
    bounds_for: BoundsFor,
    series: Mutex<BTreeMap<Key, Arc<BucketHistogram>>>,
}

impl BucketedRecorder {
    pub fn new(prometheus: PrometheusRecorder, bounds_for: BoundsFor) -> Self {
        Self {
            prometheus,
            histograms: Arc::new(Histograms {
                bounds_for,
                series: Mutex::default(),
            }),
        }
    }

    /// What `/metrics` renders from.
    pub fn handle(&self) -> MetricsHandle {
        MetricsHandle {
            prometheus: self.prometheus.handle(),
            histograms: Arc::clone(&self.histograms),
        }
    }
}

impl Recorder for BucketedRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }

    /// Nothing describes a histogram, so no HELP lines are kept for them.
    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.prometheus.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.prometheus.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let mut series = self
            .histograms
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let histogram = series.entry(key.clone()).or_insert_with(|| {
            Arc::new(BucketHistogram::new((self.histograms.bounds_for)(
                key.name(),
            )))
        });
        Histogram::from_arc(Arc::clone(histogram))
    }
}

/// Renders everything recorded, in the Prometheus text exposition format.
#[derive(Debug, Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
    histograms: Arc<Histograms>,
}

impl MetricsHandle {
    pub fn render(&self) -> String {
        let mut output = self.prometheus.render();
        self.histograms.render(&mut output);
        output
    }
}

/// A series' rendered labels, and its histogram.
type LabeledSeries = (Vec<String>, Arc<BucketHistogram>);

impl Histograms {
    fn render(&self, output: &mut String) {
        let mut by_name: BTreeMap<String, Vec<LabeledSeries>> = BTreeMap::new();
        {
            let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
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

    #[test]
    fn samples_land_in_cumulative_buckets_with_sum_and_count() {
        let histogram = BucketHistogram::new(BOUNDS);
        for value in [0.0005, 0.001, 0.002, 0.05, 5.0] {
            histogram.record(value);
        }
        let (buckets, count, sum) = histogram.snapshot();
        assert_eq!(buckets, vec![(0.001, 2), (0.01, 3), (0.1, 4)]);
        assert_eq!(count, 5);
        assert!((sum - 5.0535).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn rendering_follows_the_exposition_format() {
        let recorder = BucketedRecorder::new(
            metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
            |_| BOUNDS,
        );
        let key = Key::from_parts("demo_seconds", vec![metrics::Label::new("cluster", "a\"b")]);
        let metadata = Metadata::new("test", metrics::Level::INFO, None);
        recorder.register_histogram(&key, &metadata).record(0.062_5);
        recorder.register_histogram(&key, &metadata).record(0.000_5);
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
}
