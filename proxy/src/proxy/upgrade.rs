//! Upgraded connections (WebSocket and the like): bytes both ways once both sides switched.

use std::net::SocketAddr;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::upstream::Http1Upgraded;

/// Copies bytes both ways between the upgraded client and upstream connections (WebSocket etc.).
pub(super) async fn tunnel(
    downstream: OnUpgrade,
    mut upstream: Http1Upgraded,
    endpoint: SocketAddr,
) {
    let downstream = match downstream.await {
        Ok(downstream) => downstream,
        Err(e) => {
            debug!(%endpoint, error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((to_upstream, to_client)) => {
            debug!(%endpoint, to_upstream, to_client, "upgraded connection closed");
        }
        Err(e) => debug!(%endpoint, error = %e, "upgraded connection ended with an error"),
    }
}
