//! Upgraded connections (WebSocket and the like): bytes both ways once both sides switched.

use std::net::SocketAddr;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

/// Copies bytes both ways between the upgraded client and upstream connections (WebSocket etc.).
pub(super) async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, endpoint: SocketAddr) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(%endpoint, error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((to_upstream, to_client)) => {
            debug!(%endpoint, to_upstream, to_client, "upgraded connection closed");
        }
        Err(e) => debug!(%endpoint, error = %e, "upgraded connection ended with an error"),
    }
}
