//! The admin API: liveness, readiness, the effective config and cluster state.
//!
//! Loopback by default. Reads are open; changes (`POST /reload`, `PUT /plugins/{name}`) need the
//! admin bearer token.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::body::ProxyBody;
use crate::operations::reload::{Reloader, Snapshot, SwapError};
use crate::telemetry::scrape;

/// The largest plugin binary `PUT /plugins/{name}` accepts.
const MAX_PLUGIN_UPLOAD: usize = 64 * 1024 * 1024;

/// What the admin API reports on and changes.
pub struct AdminState {
    pub reloader: Arc<Reloader>,
    /// True once every listener is bound; false again while draining.
    pub ready: AtomicBool,
    /// Renders `/metrics`; `None` if another recorder was installed first (tests in one process).
    pub metrics: Option<crate::telemetry::MetricsHandle>,
    /// A controlled proxy's view of its control plane and identity, shown in `/status`.
    pub control: Option<Arc<dyn StatusSection>>,
    /// The proxy's recent traffic, for the dashboard's charts (`/history`).
    pub history: Arc<crate::telemetry::history::History>,
}

/// A part of `/status` that another component owns (a controlled proxy's agent reports its
/// control plane, identity and bundle there), so the admin API need not know its insides.
pub trait StatusSection: Send + Sync {
    /// The section as JSON, read at each request.
    fn status(&self) -> serde_json::Value;
}

/// Serves the admin API on an already bound socket until the process ends.
pub async fn serve(socket: TcpListener, state: Arc<AdminState>) {
    if let Ok(addr) = socket.local_addr() {
        info!(%addr, "admin API listening");
    }
    let http = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        let http = Arc::clone(&http);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                debug!(%peer, error = %e, "admin connection error");
            }
        });
    }
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if method == Method::GET || method == Method::HEAD {
        return read_only(state, &path);
    }
    if let Some(refusal) = refuse_unauthorized(state, &req) {
        return refusal;
    }
    match (method, path.as_str()) {
        (Method::POST, "/reload") => match state.reloader.reload("admin").await {
            Ok(version) => json(&serde_json::json!({ "result": "ok", "version": version })),
            Err(error) => refused(&error.to_string()),
        },
        (Method::PUT, path) if path.starts_with("/plugins/") => {
            let name = path.trim_start_matches("/plugins/").to_owned();
            swap_plugin(state, &name, req).await
        }
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "changes are POST /reload and PUT /plugins/{name}\n",
        ),
    }
}

fn read_only(state: &AdminState, path: &str) -> Response<ProxyBody> {
    match path {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/config" => json(&redacted_config(&state.reloader.current().config)),
        "/metrics" => match render_metrics(state) {
            Some(rendered) => {
                let mut response = Response::new(ProxyBody::full(rendered));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            None => metrics_disabled(),
        },
        "/metrics.json" => match render_metrics(state) {
            Some(rendered) => json_compact(&serde_json::json!({
                "version": state.reloader.current().version,
                "samples": scrape::samples(&rendered),
            })),
            None => metrics_disabled(),
        },
        "/dashboard" => {
            let mut response = Response::new(ProxyBody::full(DASHBOARD));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        "/history" => json_compact(&state.history.json()),
        "/charts.js" => {
            let mut response = Response::new(ProxyBody::full(crate::telemetry::history::CHARTS_JS));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            );
            response
        }
        "/clusters" => json(&clusters(&state.reloader.current())),
        "/plugins" => json(&plugins(&state.reloader.current())),
        "/status" => json(&status(state)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready, /config, /clusters, /plugins, /status, /metrics, /metrics.json, /history or /dashboard\n",
        ),
    }
}

/// Changes need `Authorization: Bearer <token>` with the token from `[admin] token` or
/// `SWITCHYARD_ADMIN_TOKEN`; with neither set, changes over the API are off.
fn refuse_unauthorized(state: &AdminState, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let configured = state
        .reloader
        .current()
        .config
        .admin
        .token
        .clone()
        .or_else(|| std::env::var("SWITCHYARD_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let Some(expected) = configured else {
        return Some(text(
            StatusCode::FORBIDDEN,
            "changes over the admin API are off: set [admin] token or SWITCHYARD_ADMIN_TOKEN\n",
        ));
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => None,
        _ => {
            let mut response = text(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required\n",
            );
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchyard-admin\""),
            );
            Some(response)
        }
    }
}

/// Compares without stopping at the first difference, so timing does not leak the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn swap_plugin(
    state: &AdminState,
    name: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let bytes = match Limited::new(req.into_body(), MAX_PLUGIN_UPLOAD)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) => {
            return text_owned(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the plugin (at most {MAX_PLUGIN_UPLOAD} bytes): {e}\n"),
            );
        }
    };
    match state.reloader.swap_plugin(name, bytes).await {
        Ok(sha256) => json(&serde_json::json!({
            "result": "ok",
            "plugin": name,
            "sha256": sha256,
            "version": state.reloader.status().version,
        })),
        Err(SwapError::NoSuchPlugin(_)) => text_owned(
            StatusCode::NOT_FOUND,
            format!("no plugin is named {name:?}\n"),
        ),
        Err(SwapError::Refused(error)) => refused(&error),
    }
}

/// 422: the change was understood and refused; the old state keeps serving.
fn refused(error: &str) -> Response<ProxyBody> {
    let mut response = json(&serde_json::json!({ "result": "error", "error": error }));
    *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    response
}

fn status(state: &AdminState) -> serde_json::Value {
    let reloader = &state.reloader;
    let status = reloader.status();
    let mut answer = serde_json::json!({
        "config_version": status.version,
        "config_file": reloader.config_path().display().to_string(),
        "last_reload": {
            "result": status.last_result,
            "error": status.last_error,
            "trigger": status.last_trigger,
            "at_unix": status.last_at,
        },
    });
    if let Some(control) = &state.control {
        answer["control"] = control.status();
    }
    answer
}

fn plugins(snapshot: &Snapshot) -> serde_json::Value {
    let micros = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e6);
    snapshot
        .plugins
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": &*p.name,
                "sha256": p.sha256,
                "entry": p.entry(),
                "path": p.path.display().to_string(),
                "loaded_at_unix": p.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                "calls": p.stats.calls(),
                "traps": p.stats.failures(),
                "p50_us": micros(p.stats.quantile(0.5)),
                "p99_us": micros(p.stats.quantile(0.99)),
                "last_failure": p.failures.last(),
            })
        })
        .collect::<Vec<_>>()
        .into()
}

/// The effective config with secrets (the admin token, plugin config values under keys that
/// look secret) replaced.
fn redacted_config(config: &crate::config::Config) -> serde_json::Value {
    let mut value = serde_json::to_value(config).unwrap_or_default();
    if let Some(plugins) = value.get_mut("plugins").and_then(|p| p.as_array_mut()) {
        for plugin in plugins {
            if let Some(config) = plugin.get_mut("config") {
                redact_secrets(config);
            }
        }
    }
    value
}

fn redact_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                let secret = ["secret", "password", "token", "private"]
                    .iter()
                    .any(|s| key.contains(s));
                if secret && v.is_string() {
                    *v = serde_json::Value::String("<redacted>".into());
                } else {
                    redact_secrets(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

fn clusters(snapshot: &Snapshot) -> serde_json::Value {
    snapshot
        .clusters
        .iter()
        .map(|c| {
            let states = c.endpoint_states();
            let endpoints: Vec<String> = states.iter().map(|e| e.addr.to_string()).collect();
            let health: Vec<serde_json::Value> = states
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "address": e.addr.to_string(),
                        "healthy": e.healthy,
                        "ejected": e.ejected_for.is_some(),
                        "ejected_for_ms": e.ejected_for.map(|d| d.as_millis() as u64),
                        "live": e.live,
                        "in_flight": e.in_flight,
                    })
                })
                .collect();
            (
                c.name().to_owned(),
                serde_json::json!({
                    "endpoints": endpoints,
                    "endpoint_health": health,
                    "panic": c.in_panic(),
                    "open_connections": c.limits.open_connections(),
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn text_owned(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The live dashboard: one page, no build step, polling `/metrics.json` every second.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The Prometheus exposition, with the cluster gauges read just now.
fn render_metrics(state: &AdminState) -> Option<String> {
    let handle = state.metrics.as_ref()?;
    crate::upstream::gauges::observe_clusters(&state.reloader.current().clusters);
    Some(handle.render())
}

fn metrics_disabled() -> Response<ProxyBody> {
    text(
        StatusCode::NOT_FOUND,
        "metrics are not enabled in this process\n",
    )
}

fn json_compact<T: serde::Serialize>(value: &T) -> Response<ProxyBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(ProxyBody::full(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn json<T: serde::Serialize>(value: &T) -> Response<ProxyBody> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = Response::new(ProxyBody::full(body));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => {
            warn!(error = %e, "cannot serialize admin answer");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot serialize\n")
        }
    }
}
