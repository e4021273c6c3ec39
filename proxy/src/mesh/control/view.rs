//! The mesh view on the control plane's admin API, from the traffic proxies report:
//!
//! - `GET /mesh/stat?window=60`: per workload, what its proxies served — rps, success rate,
//!   p50/p95/p99, the mTLS share, gRPC statuses ([`ControlPlane::stat`]);
//! - `GET /mesh/edges?window=60`: calls between workloads, with the identities at both ends;
//! - `GET /mesh/top?window=30`: the busiest request paths right now;
//! - `GET /mesh?window=900`: all of it for the mesh dashboard, with each workload's chart
//!   points, the canary splits beside their weights and the proxies out of sync;
//! - `GET /mesh/dashboard`: the page.
//!
//! And `POST /v1/stats` on the HTTPS API, where proxies send their [`StatsReport`]s.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tracing::debug;

use super::respond::{json as json_answer, read_body_up_to, text};
use super::traffic::{TOP_WINDOW_SECS, Totals};
use super::{ControlPlane, lock};
use crate::mesh::api::StatsReport;

/// The largest stats report taken (256 paths and every cluster fit in well under this).
const MAX_STATS_BODY: usize = 1024 * 1024;
/// The default window of `stat` and `edges`: a minute, as `linkerd viz stat` shows.
const DEFAULT_WINDOW_SECS: u64 = 60;
/// Rows `top` lists by default.
const TOP_ROWS: usize = 20;

const MESH_DASHBOARD: &str = include_str!("mesh_dashboard.html");

impl ControlPlane {
    /// Takes a proxy's traffic report (`POST /v1/stats`, over mTLS: the caller's identity says
    /// which workload it is).
    pub(super) async fn take_stats(
        &self,
        spiffe_id: &str,
        req: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let report = read_body_up_to(req, MAX_STATS_BODY)
            .await
            .and_then(|b| serde_json::from_slice::<StatsReport>(&b).ok());
        let Some(report) = report else {
            return text(StatusCode::BAD_REQUEST, "expected a JSON stats report\n");
        };
        let state = self.state.load();
        let trust_domain = &state.settings.control.trust_domain;
        let Some(workload) = state
            .settings
            .workloads
            .iter()
            .find(|w| w.spiffe_id(trust_domain) == spiffe_id)
        else {
            debug!(%spiffe_id, "stats from an identity that is no workload of this mesh");
            return text(StatusCode::FORBIDDEN, "not a workload of this mesh\n");
        };
        let now = crate::unix_time::now();
        self.traffic
            .add(&workload.id(), &workload.mesh_listeners, &report, now);
        text(StatusCode::NO_CONTENT, "")
    }

    /// `GET /mesh...` on the admin API.
    pub(super) fn mesh_view(&self, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        let window = query_window(query);
        match path {
            "/mesh/stat" => json_answer(
                StatusCode::OK,
                &self.stat(window.unwrap_or(DEFAULT_WINDOW_SECS)),
            ),
            "/mesh/edges" => json_answer(
                StatusCode::OK,
                &self.edges(window.unwrap_or(DEFAULT_WINDOW_SECS)),
            ),
            "/mesh/top" => {
                json_answer(StatusCode::OK, &self.top(window.unwrap_or(TOP_WINDOW_SECS)))
            }
            "/mesh" => json_answer(StatusCode::OK, &self.whole_view(window)),
            "/mesh/dashboard" => {
                let mut response =
                    Response::new(Full::new(Bytes::from_static(MESH_DASHBOARD.as_bytes())));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                response
            }
            "/mesh/charts.js" => {
                let body = Bytes::from_static(crate::telemetry::history::CHARTS_JS.as_bytes());
                let mut response = Response::new(Full::new(body));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/javascript; charset=utf-8"),
                );
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "GET /mesh, /mesh/stat, /mesh/edges, /mesh/top or /mesh/dashboard\n",
            ),
        }
    }

    /// Per workload: what its proxies served in the last `window` seconds.
    pub(super) fn stat(&self, window: u64) -> Value {
        let now = crate::unix_time::now();
        let (from, seconds) = self.traffic.window(window, now);
        let totals = self.traffic.totals(from);
        json!({ "window_secs": seconds, "workloads": self.stat_rows(&totals, seconds) })
    }

    /// One row per workload of the mesh, from a window's totals.
    fn stat_rows(&self, totals: &Totals, seconds: f64) -> Vec<Value> {
        let state = self.state.load();
        let trust_domain = &state.settings.control.trust_domain;
        state
            .settings
            .workloads
            .iter()
            .map(|w| {
                let id = w.id();
                let served = totals.served.get(&id).cloned().unwrap_or_default();
                json!({
                    "workload": id,
                    "spiffe_id": w.spiffe_id(trust_domain),
                    "proxies": totals.proxies.get(&id).copied().unwrap_or(0),
                    "stats": served.summary(seconds),
                    "grpc": served.grpc,
                })
            })
            .collect()
    }

    /// Calls from workload to workload (and to clusters outside the mesh, `destination` null)
    /// in the last `window` seconds.
    pub(super) fn edges(&self, window: u64) -> Value {
        let now = crate::unix_time::now();
        let (from, seconds) = self.traffic.window(window, now);
        let totals = self.traffic.totals(from);
        json!({ "window_secs": seconds, "edges": self.edge_rows(&totals, seconds) })
    }

    fn edge_rows(&self, totals: &Totals, seconds: f64) -> Vec<Value> {
        let state = self.state.load();
        let trust_domain = &state.settings.control.trust_domain;
        // Workload id ↔ SPIFFE ID, made once rather than per edge.
        let ids: Vec<(String, String)> = state
            .settings
            .workloads
            .iter()
            .map(|w| (w.id(), w.spiffe_id(trust_domain)))
            .collect();
        let by_spiffe: HashMap<&str, &str> = ids
            .iter()
            .map(|(id, spiffe)| (spiffe.as_str(), id.as_str()))
            .collect();
        let by_id: HashMap<&str, &str> = ids
            .iter()
            .map(|(id, spiffe)| (id.as_str(), spiffe.as_str()))
            .collect();
        let mut rows: Vec<(String, String, Value)> = totals
            .edges
            .iter()
            .map(|(source, cluster, destination, mtls, sample)| {
                let row = json!({
                    "source": source,
                    "source_spiffe_id": by_id.get(source.as_str()),
                    "cluster": cluster,
                    "destination": destination.as_deref().and_then(|d| by_spiffe.get(d)),
                    "destination_spiffe_id": destination,
                    "mtls": mtls,
                    "stats": sample.summary(seconds),
                });
                (source.clone(), cluster.clone(), row)
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        rows.into_iter().map(|(_, _, row)| row).collect()
    }

    /// The busiest paths in the last `window` seconds.
    pub(super) fn top(&self, window: u64) -> Value {
        let now = crate::unix_time::now();
        let (from, seconds) = self.traffic.window(window, now);
        let rows: Vec<Value> = self
            .traffic
            .top(from, TOP_ROWS)
            .into_iter()
            .map(|(workload, method, path, sample)| {
                json!({
                    "workload": workload,
                    "method": method,
                    "path": path,
                    "stats": sample.summary(seconds),
                })
            })
            .collect();
        json!({ "window_secs": seconds, "paths": rows })
    }

    /// Everything the mesh dashboard draws: rates over `window` seconds (default a minute),
    /// charts over the whole window kept.
    fn whole_view(&self, window: Option<u64>) -> Value {
        let res = self.traffic.resolution;
        let window = window.unwrap_or(DEFAULT_WINDOW_SECS);
        let now = crate::unix_time::now();
        let (from, seconds) = self.traffic.window(window, now);
        let (chart_from, _) = self.traffic.window(res.window_secs(), now);
        let to = res.slot_of(now);
        let totals = self.traffic.totals(from);
        let mut workloads = self.stat_rows(&totals, seconds);
        for row in &mut workloads {
            let workload = row["workload"].as_str().unwrap_or_default().to_owned();
            let (served, edges) = self.traffic.points(&workload, chart_from, to);
            row["points"] = json!(served);
            row["edge_points"] = edges
                .into_iter()
                .map(|(cluster, points)| (cluster, json!(points)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        let (series, bytes) = self.traffic.footprint();
        json!({
            "now": now,
            "slot_secs": res.slot_secs,
            "window_secs": seconds,
            "chart_secs": res.window_secs(),
            "workloads": workloads,
            "edges": self.edge_rows(&totals, seconds),
            "splits": self.splits(&totals),
            "top": self.top(TOP_WINDOW_SECS)["paths"],
            "out_of_sync": self.out_of_sync(),
            "memory": { "series": series, "bytes": bytes, "dropped_series": totals.dropped },
        })
    }

    /// Every canary-shaped plugin's rules (`rules[].backends[]` of cluster and weight), with the
    /// weights in force (held ones win) and the share each backend cluster actually got.
    fn splits(&self, totals: &Totals) -> Vec<Value> {
        let state = self.state.load();
        let held = lock(&self.weights).clone();
        let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, cluster, _, _, sample) in &totals.edges {
            *sent.entry(cluster.as_str()).or_default() += sample.requests;
        }
        let mut splits = Vec::new();
        for plugin in &state.settings.plugins {
            let name = plugin
                .get("name")
                .and_then(toml::Value::as_str)
                .unwrap_or("");
            let rules = plugin
                .get("config")
                .and_then(|c| c.get("rules"))
                .and_then(toml::Value::as_array);
            for (index, rule) in rules.into_iter().flatten().enumerate() {
                let Some(backends) = rule.get("backends").and_then(toml::Value::as_array) else {
                    continue;
                };
                let backends: Vec<(String, u64)> = backends
                    .iter()
                    .filter_map(|b| {
                        let cluster = b.get("cluster")?.as_str()?.to_owned();
                        let file = b
                            .get("weight")
                            .and_then(toml::Value::as_integer)
                            .unwrap_or(0);
                        let weight = held
                            .get(name)
                            .and_then(|w| w.get(&cluster))
                            .map_or(u64::try_from(file).unwrap_or(0), |w| u64::from(*w));
                        Some((cluster, weight))
                    })
                    .collect();
                let weights: u64 = backends.iter().map(|b| b.1).sum();
                let requests: u64 = backends
                    .iter()
                    .map(|b| sent.get(b.0.as_str()).copied().unwrap_or(0))
                    .sum();
                let rows: Vec<Value> = backends
                    .iter()
                    .map(|(cluster, weight)| {
                        let got = sent.get(cluster.as_str()).copied().unwrap_or(0);
                        json!({
                            "cluster": cluster,
                            "weight": weight,
                            "configured_share": share(*weight, weights),
                            "requests": got,
                            "live_share": share(got, requests),
                        })
                    })
                    .collect();
                splits.push(json!({
                    "plugin": name,
                    "rule": rule.get("name").and_then(toml::Value::as_str).map_or_else(|| index.to_string(), str::to_owned),
                    "held": held.contains_key(name),
                    "backends": rows,
                }));
            }
        }
        splits
    }

    /// The proxies that do not run their workload's current bundle.
    fn out_of_sync(&self) -> Vec<Value> {
        let status = self.status();
        status["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|w| {
                let workload = w["workload"].clone();
                w["proxies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in_sync"] != true)
                    .map(move |p| {
                        json!({
                            "workload": workload,
                            "instance": p["instance"],
                            "etag": p["etag"],
                            "result": p["result"],
                        })
                    })
            })
            .collect()
    }
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// `window=SECONDS` (or `60s`, `5m`) from a query string.
fn query_window(query: Option<&str>) -> Option<u64> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("window="))?;
    value
        .parse::<u64>()
        .ok()
        .or_else(|| crate::config::parse_duration(value).map(|d| d.as_secs()))
        .filter(|secs| *secs > 0)
}
