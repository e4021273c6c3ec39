//! The admin API: liveness, readiness, the effective config and cluster state.
//!
//! Loopback by default. Read-only for now; the mutating endpoints come with hot reload.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::body::ProxyBody;
use crate::config::Config;
use crate::upstream::Clusters;

/// What the admin API reports on.
#[derive(Debug)]
pub struct AdminState {
    pub config: Arc<Config>,
    pub clusters: Arc<Clusters>,
    /// True once every listener is bound; false again while draining.
    pub ready: AtomicBool,
    /// Renders `/metrics`; `None` if another recorder was installed first (tests in one process).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
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
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                debug!(%peer, error = %e, "admin connection error");
            }
        });
    }
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is supported here\n",
        );
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/config" => json(&*state.config),
        "/metrics" => match &state.metrics {
            Some(handle) => {
                let mut response = Response::new(ProxyBody::full(handle.render()));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            None => text(
                StatusCode::NOT_FOUND,
                "metrics are not enabled in this process\n",
            ),
        },
        "/clusters" => json(&clusters(state)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready, /config, /clusters or /metrics\n",
        ),
    }
}

fn clusters(state: &AdminState) -> serde_json::Value {
    state
        .clusters
        .iter()
        .map(|c| {
            let endpoints: Vec<String> = c
                .endpoint_addrs()
                .iter()
                .map(SocketAddr::to_string)
                .collect();
            (
                c.name().to_owned(),
                serde_json::json!({ "endpoints": endpoints }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
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
