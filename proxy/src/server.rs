//! The process lifecycle: bind everything, serve, reload on SIGHUP (and file changes and the
//! admin API, see `reload`), and on SIGTERM/SIGINT stop accepting and drain in-flight requests up
//! to `runtime.drain_timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::operations::admin::{self, AdminState, StatusSection};
use crate::operations::reload::{Reloader, StartError};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("admin API cannot listen on {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs the proxy until SIGTERM or SIGINT, on a runtime sized by `[runtime]`. `config_path` is
/// where reloads (file changes, SIGHUP, the admin API) read the config again.
pub fn run(config: Config, config_path: PathBuf) -> Result<(), ServerError> {
    run_with(config, config_path, |_| None)
}

/// [`run`], calling `on_start` with the reloader once everything is bound (a controlled proxy
/// starts its agent there).
pub fn run_with(
    config: Config,
    config_path: PathBuf,
    on_start: impl FnOnce(Arc<Reloader>) -> Option<Arc<dyn StatusSection>>,
) -> Result<(), ServerError> {
    // One worker: tokio's single-threaded scheduler, which skips the work-stealing machinery
    // (and its cross-thread wakeups) that one thread cannot use.
    // Each thread that serves requests writes its telemetry into a shard of its own.
    let workers = config.runtime.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    crate::telemetry::shard::set_workers(workers);
    let mut runtime = match config.runtime.worker_threads {
        Some(1) => {
            crate::telemetry::shard::claim();
            tokio::runtime::Builder::new_current_thread()
        }
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime
        .on_thread_start(crate::telemetry::shard::claim)
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    runtime.block_on(serve_with(config, config_path, shutdown_signal(), on_start))
}

/// Serves `config` until `shutdown` completes, then drains.
pub async fn serve(
    config: Config,
    config_path: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    serve_with(config, config_path, shutdown, |_| None).await
}

/// [`serve`], calling `on_start` with the reloader once everything is bound; what it returns
/// joins the admin API's `/status`.
pub async fn serve_with(
    config: Config,
    config_path: PathBuf,
    shutdown: impl Future<Output = ()>,
    on_start: impl FnOnce(Arc<Reloader>) -> Option<Arc<dyn StatusSection>>,
) -> Result<(), ServerError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let signalled_early = install_signal_handlers(shutdown.as_mut()).await;
    let metrics = crate::telemetry::install_metrics();
    let admin_listen = config.admin.listen;
    let history = crate::telemetry::history::History::start(config.admin.history_resolution);
    let drain_timeout = config.runtime.drain_timeout;
    let admin_socket =
        TcpListener::bind(admin_listen)
            .await
            .map_err(|source| ServerError::AdminBind {
                addr: admin_listen,
                source,
            })?;
    let graceful = Arc::new(GracefulShutdown::new());
    let reloader = Reloader::start(config, config_path, Arc::clone(&graceful)).await?;
    let control = on_start(Arc::clone(&reloader));

    let state = Arc::new(AdminState {
        reloader: Arc::clone(&reloader),
        ready: AtomicBool::new(false),
        metrics,
        control,
        history,
    });
    tokio::spawn(admin::serve(admin_socket, Arc::clone(&state)));
    tokio::spawn(keep_timer_horizon());
    tokio::spawn(reload_on_sighup(Arc::clone(&reloader)));
    crate::operations::watch::spawn(Arc::clone(&reloader));

    state.ready.store(true, Ordering::Release);
    let current = reloader.current();
    info!(
        listeners = current.config.listeners.len(),
        clusters = current.config.clusters.len(),
        "switchyard ready"
    );
    drop(current);

    if !signalled_early {
        shutdown.await;
    }
    info!(
        ?drain_timeout,
        "shutting down: no new connections, draining in-flight requests"
    );
    state.ready.store(false, Ordering::Release);
    reloader.stop_listeners().await;
    drop(state);
    drop(reloader);
    drain(graceful, drain_timeout).await;
    Ok(())
}

/// How far ahead the timer driver's next wake-up is kept at most (see [`keep_timer_horizon`]).
const TIMER_HORIZON: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps a timer always due within [`TIMER_HORIZON`]. tokio wakes its timer driver — an eventfd
/// write and another trip through epoll — whenever a new timer is due before the driver's next
/// planned wake-up. Every upstream attempt arms one (its per-try or total timeout), and when
/// those are shorter than anything else pending (a route's 5 s against the 10 s header-read
/// timers of idle keep-alive connections) every request paid for that wake-up: `strace` counted an
/// eventfd write for every other request with the benchmark's full chain, none with this timer.
/// Only timeouts under a second still cause them, for one wake-up a second.
async fn keep_timer_horizon() {
    loop {
        tokio::time::sleep(TIMER_HORIZON).await;
    }
}

/// SIGHUP reloads the config, as it does for nginx and HAProxy.
async fn reload_on_sighup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGHUP; reload with the admin API");
                    return;
                }
            };
        while hangups.recv().await.is_some() {
            info!("received SIGHUP: reloading");
            let _ = reloader.reload("SIGHUP").await;
        }
    }
    #[cfg(not(unix))]
    drop(reloader);
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
/// Polls `shutdown` once, so the signal handlers it registers are in place before anything is
/// bound: a SIGTERM that comes the moment a server is ready then drains it instead of killing
/// it (a signal's default action) — a race a loaded machine loses. True if it has come already.
pub async fn install_signal_handlers(
    shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let mut shutdown = shutdown;
    tokio::select! {
        biased;
        () = &mut shutdown => true,
        () = std::future::ready(()) => false,
    }
}

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
