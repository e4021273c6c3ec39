//! The process lifecycle: bind everything, serve, and on SIGTERM/SIGINT stop accepting and drain
//! in-flight requests up to `runtime.drain_timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::listener::Listener;
use crate::plugin::Plugins;
use crate::proxy::ListenerProxy;
use crate::upstream::Clusters;

/// Largest body buffered for plugins that read whole bodies.
const MAX_BUFFERED_BODY: usize = 1024 * 1024;

/// Largest request body kept so a retry can send it again (Envoy keeps 64 KiB by default too).
const MAX_REPLAY_BODY: usize = 64 * 1024;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listener {name:?} cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin API cannot listen on {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Plugin(#[from] crate::plugin::LoadError),
}

/// Runs the proxy until SIGTERM or SIGINT, on a runtime sized by `[runtime]`.
pub fn run(config: Config) -> Result<(), ServerError> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.runtime.worker_threads {
        runtime.worker_threads(n);
    }
    let runtime = runtime.enable_all().build().map_err(ServerError::Runtime)?;
    runtime.block_on(serve(config, shutdown_signal()))
}

/// Serves `config` until `shutdown` completes, then drains.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let metrics = crate::telemetry::install_metrics();
    let config = Arc::new(config);
    let clusters = Arc::new(Clusters::start(&config).await);
    let plugins = Plugins::load(&config, Arc::clone(&clusters)).await?;

    let admin_socket = TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| ServerError::AdminBind {
            addr: config.admin.listen,
            source,
        })?;
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let proxy = ListenerProxy {
            listener: l.name.as_str().into(),
            scheme: "http",
            default_cluster: l.default_cluster.and_then(|i| clusters.get(i)).cloned(),
            chain: Arc::new(plugins.chain(&l.plugin_names)),
            max_buffered_body: MAX_BUFFERED_BODY,
            max_replay_body: MAX_REPLAY_BODY,
        };
        let bound = Listener::bind(l, proxy)
            .await
            .map_err(|source| ServerError::Bind {
                name: l.name.clone(),
                addr: l.listen,
                source,
            })?;
        listeners.push(bound);
    }

    let state = Arc::new(AdminState {
        config: Arc::clone(&config),
        clusters: Arc::clone(&clusters),
        ready: AtomicBool::new(false),
        metrics,
    });
    tokio::spawn(admin::serve(admin_socket, Arc::clone(&state)));

    let graceful = Arc::new(GracefulShutdown::new());
    let (stop, stopped) = watch::channel(false);
    let accept_loops: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(l.serve(stopped.clone(), Arc::clone(&graceful))))
        .collect();
    state.ready.store(true, Ordering::Release);
    info!(
        listeners = config.listeners.len(),
        clusters = config.clusters.len(),
        "switchyard ready"
    );

    shutdown.await;
    info!(drain_timeout = ?config.runtime.drain_timeout, "shutting down: no new connections, draining in-flight requests");
    state.ready.store(false, Ordering::Release);
    let _ = stop.send(true);
    for accept_loop in accept_loops {
        let _ = accept_loop.await;
    }
    drain(graceful, config.runtime.drain_timeout).await;
    Ok(())
}

async fn drain(graceful: Arc<GracefulShutdown>, deadline: std::time::Duration) {
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        warn!("listeners still running at shutdown; not waiting for connections");
        return;
    };
    match tokio::time::timeout(deadline, graceful.shutdown()).await {
        Ok(()) => info!("drained; every connection closed"),
        Err(_) => warn!(
            ?deadline,
            "drain deadline passed; closing remaining connections"
        ),
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("received SIGINT"),
        _ = terminate => info!("received SIGTERM"),
    }
}
