//! The proxy's traffic by listener (what it served) and by cluster (what it sent on), counted as
//! requests finish and read as cumulative [`Sample`]s: the per-proxy dashboard's history and a
//! controlled proxy's reports to its control plane are deltas between two readings.
//!
//! Process-wide, so the counts go on across reloads. Recording is a few adds to the worker's own
//! shard of counters found once per listener and once per cluster ([`ClusterTag`]). With paths on (a
//! controlled proxy, for `ctl top`), each request's path is counted too, in a table bounded in
//! size that the reporter empties.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use hashbrown::Equivalent;
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::{Deserialize, Serialize};

use super::shard::{self, Sharded};
use super::window::{BUCKETS, GRPC_CODES, Sample, bucket_of};

/// Distinct paths counted between two reports; the rest go under [`OTHER_PATHS`].
const MAX_PATHS: usize = 256;
/// Where requests to paths beyond [`MAX_PATHS`] are counted.
pub const OTHER_PATHS: &str = "(other)";

/// The one set of counters of this process.
pub fn traffic() -> &'static Traffic {
    static TRAFFIC: LazyLock<Traffic> = LazyLock::new(Traffic::default);
    &TRAFFIC
}

/// How one finished request is counted.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: u16,
    /// The gRPC status it ended with, for gRPC requests (`Some(2)`, UNKNOWN, when none came).
    pub grpc_status: Option<u8>,
    pub took: Duration,
}

impl Outcome {
    /// 5xx, or a gRPC call that did not end OK.
    fn failed(&self) -> bool {
        self.status >= 500 || self.grpc_status.is_some_and(|s| s != 0)
    }
}

/// A cluster as the records of the requests sent to it name it: its name, and its traffic
/// counters, found once when the cluster is made rather than by name on every request.
#[derive(Debug)]
pub struct ClusterTag {
    pub name: Arc<str>,
    traffic: Arc<Counters>,
}

impl ClusterTag {
    pub fn new(name: &str) -> Self {
        let name = Arc::from(name);
        let traffic = traffic().cluster(&name);
        Self { name, traffic }
    }

    /// Counts a request sent to this cluster.
    pub fn record(&self, outcome: &Outcome) {
        self.traffic.record(outcome, false);
    }
}

/// The counters of one listener or cluster, in shards ([`super::shard`]).
#[derive(Debug, Default)]
pub struct Counters {
    shards: Sharded<Counts>,
}

/// One shard of [`Counters`].
#[derive(Debug)]
struct Counts {
    requests: AtomicU64,
    failures: AtomicU64,
    mtls: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    grpc: [AtomicU64; GRPC_CODES],
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            mtls: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            grpc: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    /// Counts one request.
    pub fn record(&self, outcome: &Outcome, mtls: bool) {
        let (counts, writer) = self.shards.local();
        writer.add(&counts.requests, 1);
        if outcome.failed() {
            writer.add(&counts.failures, 1);
        }
        if mtls {
            writer.add(&counts.mtls, 1);
        }
        let bucket = bucket_of(outcome.took.as_secs_f64() * 1000.0);
        writer.add(&counts.latency[bucket], 1);
        if let Some(counter) = outcome
            .grpc_status
            .and_then(|s| counts.grpc.get(usize::from(s)))
        {
            writer.add(counter, 1);
        }
    }

    /// Everything counted so far.
    pub fn read(&self) -> Sample {
        let sum = |read: &dyn Fn(&Counts) -> &AtomicU64| shard::sum(&self.shards, read);
        Sample {
            requests: sum(&|c| &c.requests),
            failures: sum(&|c| &c.failures),
            mtls: sum(&|c| &c.mtls),
            latency: (0..BUCKETS).map(|i| sum(&|c| &c.latency[i])).collect(),
            grpc: (0..GRPC_CODES)
                .filter_map(|code| Some((u8::try_from(code).ok()?, sum(&|c| &c.grpc[code]))))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// A reading of every listener's and cluster's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub listeners: BTreeMap<String, Sample>,
    pub clusters: BTreeMap<String, Sample>,
}

impl Reading {
    /// What was counted since `before`.
    pub fn since(&self, before: &Reading) -> Reading {
        let delta = |now: &BTreeMap<String, Sample>, then: &BTreeMap<String, Sample>| {
            now.iter()
                .map(|(name, s)| {
                    let zero = Sample::default();
                    (name.clone(), s.since(then.get(name).unwrap_or(&zero)))
                })
                .collect()
        };
        Reading {
            listeners: delta(&self.listeners, &before.listeners),
            clusters: delta(&self.clusters, &before.clusters),
        }
    }
}

/// Requests to one path on one listener since the table was last taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCount {
    pub listener: String,
    pub method: String,
    pub path: String,
    pub sample: Sample,
}

type PathKey = (Arc<str>, &'static str, Box<str>);

/// A [`PathKey`] of borrowed parts, to find a counted path without allocating. Its fields hash
/// as the key's do (an `Arc<str>` and a `Box<str>` hash as their `str`).
#[derive(Hash)]
struct PathLookup<'a> {
    listener: &'a str,
    method: &'static str,
    path: &'a str,
}

impl Equivalent<PathKey> for PathLookup<'_> {
    fn equivalent(&self, key: &PathKey) -> bool {
        self.listener == &*key.0 && self.method == key.1 && self.path == &*key.2
    }
}

/// Every listener's and cluster's counters.
#[derive(Debug, Default)]
pub struct Traffic {
    listeners: RwLock<FxHashMap<Arc<str>, Arc<Counters>>>,
    clusters: RwLock<FxHashMap<Arc<str>, Arc<Counters>>>,
    paths_on: AtomicBool,
    paths: Mutex<hashbrown::HashMap<PathKey, Sample, FxBuildHasher>>,
}

impl Traffic {
    /// Listener `name`'s counters (kept by the listener's telemetry, found once).
    pub fn listener(&self, name: &Arc<str>) -> Arc<Counters> {
        counters(&self.listeners, name)
    }

    /// Cluster `name`'s counters (kept by the cluster's [`ClusterTag`], found once). Whether a
    /// request went over mTLS is the cluster's config: the reporter says so per cluster.
    pub fn cluster(&self, name: &Arc<str>) -> Arc<Counters> {
        counters(&self.clusters, name)
    }

    /// Starts counting paths (for `ctl top`): a controlled proxy does, once.
    pub fn count_paths(&self) {
        self.paths_on.store(true, Ordering::Relaxed);
    }

    /// Whether requests' paths are counted (so the request target must be kept).
    pub fn counts_paths(&self) -> bool {
        self.paths_on.load(Ordering::Relaxed)
    }

    /// Counts a request to `path`, when paths are counted.
    pub fn record_path(
        &self,
        listener: &Arc<str>,
        method: &'static str,
        path: &str,
        outcome: &Outcome,
    ) {
        if !self.counts_paths() {
            return;
        }
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        // A path already counted is found and counted in place, without allocating.
        let known = PathLookup {
            listener,
            method,
            path,
        };
        let sample = match paths.get_mut(&known) {
            Some(sample) => sample,
            None => {
                let key = if paths.len() >= MAX_PATHS {
                    (Arc::clone(listener), "*", Box::from(OTHER_PATHS))
                } else {
                    (Arc::clone(listener), method, Box::from(path))
                };
                paths.entry(key).or_default()
            }
        };
        sample.requests += 1;
        sample.failures += u64::from(outcome.failed());
        sample.latency.resize(BUCKETS, 0);
        sample.latency[bucket_of(outcome.took.as_secs_f64() * 1000.0)] += 1;
    }

    /// The paths counted since the last call, busiest first; the table starts empty again.
    pub fn take_paths(&self) -> Vec<PathCount> {
        let taken = std::mem::take(&mut *self.paths.lock().unwrap_or_else(|p| p.into_inner()));
        let mut paths: Vec<PathCount> = taken
            .into_iter()
            .map(|((listener, method, path), sample)| PathCount {
                listener: listener.to_string(),
                method: method.to_owned(),
                path: path.into_string(),
                sample,
            })
            .collect();
        paths.sort_by_key(|p| std::cmp::Reverse(p.sample.requests));
        paths
    }

    /// Every counter, read now.
    pub fn read(&self) -> Reading {
        let all = |map: &RwLock<FxHashMap<Arc<str>, Arc<Counters>>>| {
            read(map)
                .iter()
                .map(|(name, c)| (name.to_string(), c.read()))
                .collect()
        };
        Reading {
            listeners: all(&self.listeners),
            clusters: all(&self.clusters),
        }
    }
}

fn counters(map: &RwLock<FxHashMap<Arc<str>, Arc<Counters>>>, name: &Arc<str>) -> Arc<Counters> {
    if let Some(known) = read(map).get(&**name) {
        return Arc::clone(known);
    }
    let mut all = map.write().unwrap_or_else(|p| p.into_inner());
    Arc::clone(all.entry(Arc::clone(name)).or_default())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, grpc_status: Option<u8>) -> Outcome {
        Outcome {
            status,
            grpc_status,
            took: Duration::from_micros(700),
        }
    }

    #[test]
    fn failures_are_5xx_and_grpc_calls_that_did_not_end_ok() {
        let traffic = Traffic::default();
        let name: Arc<str> = Arc::from("b");
        for (status, grpc) in [
            (200, None),
            (404, None),
            (503, None),
            (200, Some(0)),
            (200, Some(14)),
        ] {
            traffic.cluster(&name).record(&outcome(status, grpc), false);
        }
        let reading = traffic.read();
        let b = &reading.clusters["b"];
        assert_eq!((b.requests, b.failures, b.mtls), (5, 2, 0));
        assert_eq!(b.grpc.get(&14), Some(&1));
        assert_eq!(b.latency[bucket_of(0.7)], 5);
    }

    #[test]
    fn paths_are_counted_only_when_on_and_bounded() {
        let traffic = Traffic::default();
        let listener: Arc<str> = Arc::from("public");
        traffic.record_path(&listener, "GET", "/a", &outcome(200, None));
        assert!(traffic.take_paths().is_empty());
        traffic.count_paths();
        for i in 0..MAX_PATHS + 10 {
            traffic.record_path(&listener, "GET", &format!("/p/{i}"), &outcome(200, None));
        }
        traffic.record_path(&listener, "GET", "/p/0", &outcome(500, None));
        let paths = traffic.take_paths();
        assert_eq!(paths.len(), MAX_PATHS + 1);
        assert_eq!(paths[0].sample.requests, 10, "{:?}", paths[0]);
        assert_eq!(paths[0].path, OTHER_PATHS);
        assert!(
            paths
                .iter()
                .any(|p| p.path == "/p/0" && p.sample.failures == 1)
        );
        assert!(traffic.take_paths().is_empty(), "taking empties the table");
    }
}
