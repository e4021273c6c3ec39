//! The mesh's traffic as proxies report it ([`StatsReport`]), kept by workload for the mesh
//! view: what each workload served, each edge (source workload → cluster, with the identity
//! at the other end) and the busiest paths, in windows of `stats_window` at `stats_resolution`.
//!
//! Proxies of one workload add into the same series, so memory grows with workloads and
//! edges, not proxies; series are capped in number ([`MAX_SERIES`], [`MAX_PATH_SERIES`]), paths
//! are kept only [`PATHS_KEPT_SECS`], and a
//! series with nothing left in its window is dropped.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::mesh::api::StatsReport;
use crate::telemetry::window::{Resolution, Sample, Series};

/// Workload and edge series kept at most (about 8.6 KiB each at 90 slots).
pub(super) const MAX_SERIES: usize = 10_000;
/// Path series kept at most: the paths `ctl top` ranks.
pub(super) const MAX_PATH_SERIES: usize = 5_000;
/// How long `top` looks back by default: "right now".
pub(super) const TOP_WINDOW_SECS: u64 = 30;
/// How long path counts are kept: `top` looks at most this far back.
pub(super) const PATHS_KEPT_SECS: u64 = 120;

/// Calls from one workload to one of its clusters.
#[derive(Debug)]
pub(super) struct Edge {
    /// The SPIFFE ID the cluster's peers present, when it is a mesh workload.
    pub(super) destination: Option<String>,
    pub(super) mtls: bool,
    pub(super) series: Series,
}

/// Keys: workload id (`namespace/name`); edge (source workload, cluster); path (workload,
/// method, path).
#[derive(Debug, Default)]
struct Store {
    served: HashMap<String, Series>,
    edges: HashMap<(String, String), Edge>,
    paths: HashMap<(String, String, String), Series>,
    /// When each proxy last reported (Unix seconds), by (workload, instance).
    reporters: HashMap<(String, String), u64>,
    /// Series not kept because the caps were reached.
    dropped: u64,
    /// The slot pruned up to.
    pruned: u64,
}

/// The mesh's traffic, behind one lock (a report a proxy every few seconds is little).
#[derive(Debug)]
pub(super) struct MeshTraffic {
    pub(super) resolution: Resolution,
    store: Mutex<Store>,
}

/// What a query reads: a window's totals, by key.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub(super) served: HashMap<String, Sample>,
    pub(super) edges: Vec<(String, String, Option<String>, bool, Sample)>,
    pub(super) proxies: HashMap<String, usize>,
    pub(super) dropped: u64,
}

impl MeshTraffic {
    pub(super) fn new(resolution: Resolution) -> Self {
        Self {
            resolution,
            store: Mutex::new(Store::default()),
        }
    }

    /// Adds a report from a proxy of `workload` that arrived at `now` (Unix seconds).
    /// `served_listeners` are the listeners whose requests count as the workload's own: its
    /// mesh listeners when the proxy has any of them, else every listener (a gateway).
    pub(super) fn add(
        &self,
        workload: &str,
        mesh_listeners: &[String],
        report: &StatsReport,
        now: u64,
    ) {
        let slot = self.resolution.slot_of(now);
        let mut store = self.lock();
        store.prune(
            self.resolution.oldest_kept(now),
            self.paths_resolution().oldest_kept(now),
        );
        store
            .reporters
            .insert((workload.to_owned(), report.instance.clone()), now);
        let has_mesh_listener = report
            .listeners
            .iter()
            .any(|l| mesh_listeners.contains(&l.name));
        let mut served = Sample::default();
        for listener in &report.listeners {
            if !has_mesh_listener || mesh_listeners.contains(&listener.name) {
                served.add(&listener.sample);
            }
        }
        if served.requests > 0 {
            let cap = MAX_SERIES.saturating_sub(store.edges.len());
            let Store {
                served: all,
                dropped,
                ..
            } = &mut *store;
            if let Some(series) =
                capped_entry(all, dropped, workload.to_owned(), cap, self.resolution)
            {
                series.add(slot, &served);
            }
        }
        for cluster in &report.clusters {
            let key = (workload.to_owned(), cluster.name.clone());
            let room = store.edges.len() + store.served.len() < MAX_SERIES;
            if !room && !store.edges.contains_key(&key) {
                store.dropped += 1;
                continue;
            }
            let edge = store.edges.entry(key).or_insert_with(|| Edge {
                destination: None,
                mtls: false,
                series: Series::new(self.resolution),
            });
            edge.destination = cluster.peer_spiffe_id.clone();
            edge.mtls = cluster.mtls;
            edge.series.add(slot, &cluster.sample);
        }
        for path in &report.paths {
            let key = (workload.to_owned(), path.method.clone(), path.path.clone());
            let Store { paths, dropped, .. } = &mut *store;
            if let Some(series) = capped_entry(
                paths,
                dropped,
                key,
                MAX_PATH_SERIES,
                self.paths_resolution(),
            ) {
                series.add(slot, &path.sample);
            }
        }
    }

    /// Path series keep only [`PATHS_KEPT_SECS`] (at the same slot length).
    fn paths_resolution(&self) -> Resolution {
        Resolution {
            slot_secs: self.resolution.slot_secs,
            slots: PATHS_KEPT_SECS
                .div_ceil(self.resolution.slot_secs)
                .clamp(1, self.resolution.slots),
        }
    }

    /// The oldest slot of a window of `secs` ending now, and how many seconds it covers.
    pub(super) fn window(&self, secs: u64, now: u64) -> (u64, f64) {
        let res = self.resolution;
        let slots = secs.div_ceil(res.slot_secs).clamp(1, res.slots);
        let from = res.slot_of(now).saturating_sub(slots - 1);
        let covered = now.saturating_sub(from * res.slot_secs).max(1);
        (from, covered as f64)
    }

    /// Every workload's and edge's totals from slot `from` on, and the proxies that reported
    /// since then.
    pub(super) fn totals(&self, from: u64) -> Totals {
        let store = self.lock();
        let since = from * self.resolution.slot_secs;
        let mut proxies: HashMap<String, usize> = HashMap::new();
        for ((workload, _), at) in &store.reporters {
            if *at >= since {
                *proxies.entry(workload.clone()).or_default() += 1;
            }
        }
        Totals {
            served: store
                .served
                .iter()
                .map(|(w, s)| (w.clone(), s.total(from)))
                .collect(),
            edges: store
                .edges
                .iter()
                .map(|((source, cluster), e)| {
                    let total = e.series.total(from);
                    (
                        source.clone(),
                        cluster.clone(),
                        e.destination.clone(),
                        e.mtls,
                        total,
                    )
                })
                .filter(|edge| edge.4.requests > 0)
                .collect(),
            proxies,
            dropped: store.dropped,
        }
    }

    /// The busiest paths from slot `from` on: (workload, method, path, totals), busiest first.
    pub(super) fn top(&self, from: u64, limit: usize) -> Vec<(String, String, String, Sample)> {
        let store = self.lock();
        let mut paths: Vec<_> = store
            .paths
            .iter()
            .map(|((w, m, p), s)| (w.clone(), m.clone(), p.clone(), s.total(from)))
            .filter(|p| p.3.requests > 0)
            .collect();
        paths.sort_by(|a, b| b.3.requests.cmp(&a.3.requests).then(a.2.cmp(&b.2)));
        paths.truncate(limit);
        paths
    }

    /// A chart's points: what `workload` served, and each of its edges by cluster.
    pub(super) fn points(
        &self,
        workload: &str,
        from: u64,
        to: u64,
    ) -> (
        Vec<crate::telemetry::window::Point>,
        Vec<(String, Vec<crate::telemetry::window::Point>)>,
    ) {
        let store = self.lock();
        let slot_secs = self.resolution.slot_secs;
        let served = store
            .served
            .get(workload)
            .map(|s| s.points(from, to, slot_secs))
            .unwrap_or_else(|| Series::new(self.resolution).points(from, to, slot_secs));
        let mut edges: Vec<_> = store
            .edges
            .iter()
            .filter(|((source, _), _)| source == workload)
            .map(|((_, cluster), e)| (cluster.clone(), e.series.points(from, to, slot_secs)))
            .collect();
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        (served, edges)
    }

    /// Series kept and the bytes they hold, for the documented bound.
    pub(super) fn footprint(&self) -> (usize, usize) {
        let store = self.lock();
        let series = store.served.len() + store.edges.len() + store.paths.len();
        let bytes = store.served.values().map(Series::heap_bytes).sum::<usize>()
            + store
                .edges
                .values()
                .map(|e| e.series.heap_bytes())
                .sum::<usize>()
            + store.paths.values().map(Series::heap_bytes).sum::<usize>();
        (series, bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The series under `key`, made if `map` has fewer than `cap`; else counted as dropped.
fn capped_entry<'a, K: std::hash::Hash + Eq>(
    map: &'a mut HashMap<K, Series>,
    dropped: &mut u64,
    key: K,
    cap: usize,
    resolution: Resolution,
) -> Option<&'a mut Series> {
    if map.len() >= cap && !map.contains_key(&key) {
        *dropped += 1;
        return None;
    }
    Some(map.entry(key).or_insert_with(|| Series::new(resolution)))
}

impl Store {
    /// Drops what fell out of the window, once per slot.
    fn prune(&mut self, oldest: u64, oldest_path: u64) {
        if oldest_path <= self.pruned {
            return;
        }
        self.pruned = oldest_path;
        self.served.retain(|_, s| !s.prune(oldest));
        self.edges.retain(|_, e| !e.series.prune(oldest));
        self.paths.retain(|_, s| !s.prune(oldest_path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::api::{ClusterStats, ListenerStats};
    use crate::telemetry::traffic::PathCount;
    use crate::telemetry::window::{BUCKETS, bucket_of};

    fn sample(requests: u64, failures: u64) -> Sample {
        let mut latency = vec![0; BUCKETS];
        latency[bucket_of(1.5)] = requests;
        Sample {
            requests,
            failures,
            mtls: requests,
            latency,
            ..Sample::default()
        }
    }

    fn report(instance: &str, clusters: &[&str]) -> StatsReport {
        StatsReport {
            instance: instance.into(),
            interval_ms: 10_000,
            listeners: vec![
                ListenerStats {
                    name: "inbound".into(),
                    sample: sample(10, 1),
                },
                ListenerStats {
                    name: "outbound".into(),
                    sample: sample(5, 0),
                },
            ],
            clusters: clusters
                .iter()
                .map(|c| ClusterStats {
                    name: (*c).into(),
                    peer_spiffe_id: Some(format!("spiffe://cluster.local/ns/default/sa/{c}")),
                    mtls: true,
                    sample: sample(4, 1),
                })
                .collect(),
            paths: vec![PathCount {
                listener: "inbound".into(),
                method: "GET".into(),
                path: "/orders".into(),
                sample: sample(10, 1),
            }],
        }
    }

    const RES: Resolution = Resolution {
        slot_secs: 10,
        slots: 90,
    };

    #[test]
    fn proxies_of_a_workload_add_up_and_only_its_mesh_listeners_count_as_served() {
        let traffic = MeshTraffic::new(RES);
        let mesh = vec!["inbound".to_owned()];
        traffic.add("default/b", &mesh, &report("b-1", &["c"]), 1_000);
        traffic.add("default/b", &mesh, &report("b-2", &["c"]), 1_005);
        // A gateway without mesh listeners: everything it serves counts.
        traffic.add(
            "default/a",
            &mesh,
            &{
                let mut r = report("a-1", &["b"]);
                r.listeners.remove(0);
                r
            },
            1_005,
        );
        let (from, _) = traffic.window(60, 1_005);
        let totals = traffic.totals(from);
        assert_eq!(
            totals.served["default/b"].requests, 20,
            "the outbound listener is not b's"
        );
        assert_eq!(totals.served["default/a"].requests, 5);
        assert_eq!(totals.proxies["default/b"], 2);
        let b_c = totals.edges.iter().find(|e| e.0 == "default/b").unwrap();
        assert_eq!((b_c.4.requests, b_c.4.failures), (8, 2));
        assert_eq!(traffic.top(from, 10)[0].3.requests, 20);
        // Out of the window, everything is dropped.
        traffic.add("default/c", &mesh, &report("c-1", &[]), 1_000 + 900 + 10);
        let (series, _) = traffic.footprint();
        assert_eq!(series, 2, "only c's served and path series are left");
        // Paths are kept two minutes only.
        traffic.add(
            "default/d",
            &mesh,
            &report("d-1", &[]),
            1_910 + PATHS_KEPT_SECS + 10,
        );
        assert_eq!(
            traffic.footprint().0,
            3,
            "c's path is gone; c's and d's served, d's path"
        );
    }

    /// The bound docs/mesh.md gives: 500 proxies of 100 workloads, each calling 20 others
    /// (2,000 edges), reporting every 10 s for the whole 15-minute window.
    #[test]
    fn a_full_window_of_two_thousand_edges_stays_within_its_bound() {
        let traffic = MeshTraffic::new(RES);
        let mesh = vec!["inbound".to_owned()];
        let names: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
        for tick in 0..RES.slots {
            for proxy in 0..500 {
                let workload = proxy % 100;
                let callees: Vec<&str> = (1..=20)
                    .map(|k| names[(workload + k) % 100].as_str())
                    .collect();
                let now = 100_000 + tick * RES.slot_secs;
                traffic.add(
                    &format!("default/{}", names[workload]),
                    &mesh,
                    &report(&format!("p{proxy}"), &callees),
                    now,
                );
            }
        }
        let (series, bytes) = traffic.footprint();
        assert_eq!(series, 100 + 2_000 + 100);
        let per_slot = std::mem::size_of::<[u8; 96]>();
        assert!(
            bytes <= 2_100 * RES.slots as usize * per_slot + 100 * 12 * per_slot,
            "{series} series hold {bytes} bytes"
        );
        eprintln!("{series} series, {} KiB of slots", bytes / 1024);
    }
}
