//! Gauges read from the clusters at scrape time: connections, pending and active requests,
//! endpoint health. Set just before each render, rather than kept up to date on every change.

use super::Clusters;

/// Sets the saturation and health gauges of every cluster from its current state.
pub fn observe_clusters(clusters: &Clusters) {
    for cluster in clusters.iter() {
        let name = cluster.name().to_owned();
        let endpoints = cluster.endpoint_states();
        let idle: usize = endpoints.iter().map(|e| e.idle_connections).sum();
        let open = cluster.limits.open_connections();
        let gauge = |metric: &'static str, value: usize| {
            metrics::gauge!(metric, "cluster" => name.clone()).set(value as f64);
        };
        gauge("switchyard_upstream_connections", open);
        gauge("switchyard_upstream_connections_idle", idle);
        gauge(
            "switchyard_upstream_connections_busy",
            open.saturating_sub(idle),
        );
        gauge(
            "switchyard_upstream_requests_active",
            cluster.limits.active_requests(),
        );
        gauge(
            "switchyard_upstream_requests_pending",
            cluster.limits.pending_requests(),
        );
        gauge("switchyard_cluster_panic", usize::from(cluster.in_panic()));
        for e in endpoints {
            let endpoint = e.addr.to_string();
            let gauge = |metric: &'static str, value: f64| {
                metrics::gauge!(metric, "cluster" => name.clone(), "endpoint" => endpoint.clone())
                    .set(value);
            };
            gauge(
                "switchyard_endpoint_healthy",
                f64::from(u8::from(e.healthy)),
            );
            gauge(
                "switchyard_endpoint_ejected",
                f64::from(u8::from(e.ejected_for.is_some())),
            );
            gauge("switchyard_endpoint_live", f64::from(u8::from(e.live)));
            gauge(
                "switchyard_endpoint_requests_active",
                f64::from(e.in_flight),
            );
        }
    }
}
