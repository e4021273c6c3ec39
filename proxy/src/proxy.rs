//! One request end to end, in the order of DESIGN.md's request flow:
//! request id -> destination -> pick endpoint -> forward (with deadline) -> response -> upgrade.
//!
//! Plugins (the chain) slot in before the destination is chosen and around the response; until
//! then the destination is the listener's `default_cluster`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};

use crate::balance::hash_bytes;
use crate::body::ProxyBody;
use crate::config::UpstreamProtocol;
use crate::headers;
use crate::local_response::LocalError;
use crate::upstream::{Cluster, Endpoint};

/// Everything a listener needs to forward a request.
#[derive(Debug)]
pub struct ListenerProxy {
    pub listener: String,
    /// The scheme clients used to reach this listener, for `x-forwarded-proto`.
    pub scheme: &'static str,
    pub default_cluster: Option<Arc<Cluster>>,
}

impl ListenerProxy {
    /// Serves one downstream request; never fails (errors become local responses).
    pub async fn handle(
        &self,
        peer: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let request_id = headers::ensure_request_id(req.headers_mut());
        let mut response = self.forward(peer, req).await;
        response
            .headers_mut()
            .entry(&headers::X_REQUEST_ID)
            .or_insert(request_id);
        response
    }

    async fn forward(&self, peer: SocketAddr, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let Some(cluster) = self.default_cluster.as_ref() else {
            return LocalError::NoRoute.response(&format!(
                "listener {:?} has no route for this request",
                self.listener
            ));
        };

        let upgrade = headers::is_upgrade_request(&req);
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let version = req.version();
        headers::strip_hop_by_hop(req.headers_mut(), upgrade);
        headers::add_forwarding(req.headers_mut(), peer.ip(), self.scheme, version);
        let http2 = cluster.config.protocol == UpstreamProtocol::Http2;
        if let Err(e) = headers::set_upstream_target(&mut req, http2) {
            return LocalError::BadRequest.response(&format!("cannot forward this request: {e}"));
        }

        let hash = cluster
            .wants_hash()
            .then(|| request_hash(&req, cluster, peer));
        let Some(endpoint) = cluster.pick(hash) else {
            return LocalError::NoEndpoint.response(&format!(
                "cluster {:?} has no endpoint to send to",
                cluster.name()
            ));
        };

        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, ProxyBody::Streaming(body));
        match self.send(cluster, &endpoint, req).await {
            Ok(response) => self.respond(response, &endpoint, downstream_upgrade),
            Err(local) => local,
        }
    }

    /// Sends to the endpoint under the cluster's deadline; the in-flight count rides along with
    /// the response body.
    async fn send(
        &self,
        cluster: &Cluster,
        endpoint: &Arc<Endpoint>,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, crate::upstream::InFlight), Response<ProxyBody>> {
        let in_flight = endpoint.start_request();
        let started = Instant::now();
        let deadline = cluster.config.timeout;
        match tokio::time::timeout(deadline, endpoint.send(req)).await {
            Ok(Ok(response)) => {
                endpoint.observe_latency(started.elapsed());
                Ok((response, in_flight))
            }
            Ok(Err(e)) => {
                // A failing endpoint should look slow to `ewma`, not fast.
                endpoint.observe_latency(started.elapsed().max(cluster.config.connect_timeout));
                warn!(listener = %self.listener, cluster = %cluster.name(), error = %e, "upstream request failed");
                let kind = if e.is_connect() {
                    LocalError::ConnectFailure
                } else {
                    LocalError::UpstreamReset
                };
                Err(kind.response(&format!("cluster {:?}: {e}", cluster.name())))
            }
            Err(_) => {
                endpoint.observe_latency(deadline);
                warn!(listener = %self.listener, cluster = %cluster.name(), endpoint = %endpoint.addr, ?deadline, "upstream timed out");
                Err(LocalError::UpstreamTimeout.response(&format!(
                    "cluster {:?}: {} did not answer within {deadline:?}",
                    cluster.name(),
                    endpoint.addr
                )))
            }
        }
    }

    fn respond(
        &self,
        (mut response, in_flight): (Response<Incoming>, crate::upstream::InFlight),
        endpoint: &Endpoint,
        downstream_upgrade: Option<OnUpgrade>,
    ) -> Response<ProxyBody> {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            match downstream_upgrade {
                Some(downstream) => {
                    let upstream = hyper::upgrade::on(&mut response);
                    tokio::spawn(tunnel(downstream, upstream, endpoint.addr));
                }
                None => {
                    return LocalError::UpstreamReset.response(&format!(
                        "{} switched protocols without being asked to",
                        endpoint.addr
                    ));
                }
            }
        }
        let version = response.version();
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        headers::append_via(&mut parts.headers, version);
        let body = if switching {
            ProxyBody::Empty
        } else {
            ProxyBody::Upstream {
                body,
                _in_flight: in_flight,
            }
        };
        Response::from_parts(parts, body)
    }
}

/// The key `ring_hash` uses: the configured header's value, else the client's IP address.
fn request_hash(req: &Request<Incoming>, cluster: &Cluster, peer: SocketAddr) -> u64 {
    let header: Option<&HeaderValue> = cluster
        .config
        .hash_header
        .as_deref()
        .and_then(|name| req.headers().get(name));
    match header {
        Some(value) => hash_bytes(value.as_bytes()),
        None => hash_bytes(peer.ip().to_string().as_bytes()),
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections (WebSocket etc.).
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, endpoint: SocketAddr) {
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
