//! Upgraded connections (WebSocket and the like): bytes both ways once both sides switched.

use std::net::SocketAddr;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::upstream::Http1Upgraded;

/// The client's side of a request that asked to switch protocols: an HTTP/1.1 connection from
/// Switchyard's engine, or an HTTP/2 stream (extended CONNECT) from hyper.
pub(super) enum DownstreamUpgrade {
    Http1(switchyard_http1::server::OnUpgrade),
    Http2(hyper::upgrade::OnUpgrade),
}

impl DownstreamUpgrade {
    /// Takes the upgrade out of a request that asked for one.
    pub(super) fn of<B>(req: &mut http::Request<B>) -> Self {
        match req
            .extensions_mut()
            .remove::<switchyard_http1::server::OnUpgrade>()
        {
            Some(on_upgrade) => Self::Http1(on_upgrade),
            None => Self::Http2(hyper::upgrade::on(req)),
        }
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections (WebSocket etc.).
pub(super) async fn tunnel(
    downstream: DownstreamUpgrade,
    upstream: Http1Upgraded,
    endpoint: SocketAddr,
) {
    match downstream {
        DownstreamUpgrade::Http1(on_upgrade) => match on_upgrade.upgraded().await {
            Ok(downstream) => copy_both_ways(downstream, upstream, endpoint).await,
            Err(e) => debug!(%endpoint, error = %e, "upgrade did not complete"),
        },
        DownstreamUpgrade::Http2(on_upgrade) => match on_upgrade.await {
            Ok(downstream) => copy_both_ways(TokioIo::new(downstream), upstream, endpoint).await,
            Err(e) => debug!(%endpoint, error = %e, "upgrade did not complete"),
        },
    }
}

async fn copy_both_ways(
    mut downstream: impl AsyncRead + AsyncWrite + Unpin,
    mut upstream: Http1Upgraded,
    endpoint: SocketAddr,
) {
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((to_upstream, to_client)) => {
            debug!(%endpoint, to_upstream, to_client, "upgraded connection closed");
        }
        Err(e) => debug!(%endpoint, error = %e, "upgraded connection ended with an error"),
    }
}
