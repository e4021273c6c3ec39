//! The control plane's admin API (plain HTTP, loopback by default): `/status`, `/metrics`,
//! the mesh view (`/mesh...`, see [`super::view`]),
//! `/ready`; with the admin token, `POST /reload`, `POST /plugins/{name}/weights` and
//! `DELETE /plugins/{name}/weights` (back to `mesh.toml`'s).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::operations::admin::constant_time_eq;

use super::respond::{bearer, json, read_body, text};
use super::{ControlPlane, lock};

impl ControlPlane {
    pub(super) async fn serve_admin(self: Arc<Self>, socket: TcpListener) {
        if let Ok(addr) = socket.local_addr() {
            info!(%addr, "control plane admin listening");
        }
        loop {
            let Ok((tcp, remote)) = socket.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let plane = Arc::clone(&self);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let plane = Arc::clone(&plane);
                    async move { Ok::<_, Infallible>(plane.admin(req).await) }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                // A client that trickles its request head is dropped (slowloris).
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(super::respond::HEADER_READ_TIMEOUT);
                if let Err(e) = http.serve_connection(TokioIo::new(tcp), service).await {
                    debug!(%remote, error = %e, "admin connection error");
                }
            });
        }
    }

    async fn admin(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        if method == Method::GET {
            return match path.as_str() {
                "/status" => json(StatusCode::OK, &self.status()),
                "/metrics" => match &self.metrics {
                    Some(handle) => {
                        self.observe();
                        text(StatusCode::OK, &handle.render())
                    }
                    None => text(StatusCode::NOT_FOUND, "metrics are off\n"),
                },
                "/ready" => text(StatusCode::OK, "ready\n"),
                p if p == "/mesh" || p.starts_with("/mesh/") => {
                    self.mesh_view(p, req.uri().query())
                }
                _ => text(
                    StatusCode::NOT_FOUND,
                    "GET /status, /metrics, /ready, /mesh or /mesh/dashboard\n",
                ),
            };
        }
        if let Some(refusal) = self.refuse_unauthorized(&req) {
            return refusal;
        }
        match (method, path.as_str()) {
            (Method::POST, "/reload") => match self.reload("admin").await {
                Ok(generation) => json(
                    StatusCode::OK,
                    &serde_json::json!({"result": "ok", "generation": generation}),
                ),
                Err(error) => text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{error}\n")),
            },
            (Method::POST, p) if p.starts_with("/plugins/") && p.ends_with("/weights") => {
                let plugin = p["/plugins/".len()..p.len() - "/weights".len()].to_owned();
                let weights = read_body(req)
                    .await
                    .and_then(|b| serde_json::from_slice::<BTreeMap<String, u32>>(&b).ok());
                let Some(weights) = weights.filter(|w| !w.is_empty()) else {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "expected a JSON object of cluster weights, like {\"v1\": 90, \"v2\": 10}\n",
                    );
                };
                match self.set_weights(&plugin, weights).await {
                    Ok(generation) => json(
                        StatusCode::OK,
                        &serde_json::json!({"result": "ok", "generation": generation}),
                    ),
                    Err(error) => text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{error}\n")),
                }
            }
            (Method::DELETE, p) if p.starts_with("/plugins/") && p.ends_with("/weights") => {
                let plugin = &p["/plugins/".len()..p.len() - "/weights".len()];
                match self.clear_weights(plugin).await {
                    Ok(generation) => json(
                        StatusCode::OK,
                        &serde_json::json!({
                            "result": "ok",
                            "cleared": generation.is_some(),
                            "generation": generation.unwrap_or_else(|| *self.generation.borrow()),
                        }),
                    ),
                    Err(error) => text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{error}\n")),
                }
            }
            _ => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "changes are POST /reload, POST /plugins/{name}/weights and DELETE /plugins/{name}/weights\n",
            ),
        }
    }

    fn refuse_unauthorized(&self, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
        let expected = self
            .state
            .load()
            .settings
            .control
            .admin_token
            .clone()
            .or_else(|| std::env::var("SWITCHYARD_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty());
        let Some(expected) = expected else {
            return Some(text(
                StatusCode::FORBIDDEN,
                "changes over the admin API are off: set [control] admin_token or SWITCHYARD_ADMIN_TOKEN\n",
            ));
        };
        match bearer(req) {
            Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => None,
            _ => Some(text(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required\n",
            )),
        }
    }

    /// Gauges read at scrape: the mesh generation, and proxies in and out of sync.
    fn observe(&self) {
        let status = self.status();
        let proxies: Vec<&serde_json::Value> = status["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|w| w["proxies"].as_array().into_iter().flatten())
            .collect();
        let in_sync = proxies.iter().filter(|p| p["in_sync"] == true).count();
        metrics::gauge!("switchyard_control_generation").set(lock(&self.outcome).generation as f64);
        metrics::gauge!("switchyard_control_proxies", "in_sync" => "true").set(in_sync as f64);
        metrics::gauge!("switchyard_control_proxies", "in_sync" => "false")
            .set((proxies.len() - in_sync) as f64);
    }

    /// Every workload, the bundle it should run, and what each of its proxies reported.
    pub(super) fn status(&self) -> serde_json::Value {
        let state = self.state.load();
        let proxies = lock(&self.proxies).clone();
        let now = crate::unix_time::now();
        let trust_domain = &state.settings.control.trust_domain;
        let workloads: Vec<serde_json::Value> = state
            .settings
            .workloads
            .iter()
            .map(|w| {
                let id = w.spiffe_id(trust_domain);
                let etag = state.bundles.get(&id).map(|b| b.etag.clone());
                let seen: Vec<serde_json::Value> = proxies
                    .get(&id)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .map(|p| {
                        let mut v = serde_json::to_value(p).unwrap_or_default();
                        v["in_sync"] = (Some(&p.etag) == etag.as_ref() && p.result == "ok").into();
                        v["report_age_secs"] = now.saturating_sub(p.reported_at).into();
                        v["seen_age_secs"] = now.saturating_sub(p.last_seen).into();
                        v
                    })
                    .collect();
                serde_json::json!({
                    "workload": w.id(),
                    "spiffe_id": id,
                    "etag": etag,
                    "proxies": seen,
                })
            })
            .collect();
        serde_json::json!({
            "reload": lock(&self.outcome).clone(),
            "weights": lock(&self.weights).clone(),
            "held_weights": self.held_weights(),
            "workloads": workloads,
        })
    }
}
