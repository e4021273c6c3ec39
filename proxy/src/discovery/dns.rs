//! Service discovery for a cluster's endpoints: IP addresses are used as they are; DNS names are
//! resolved with the system resolver (so /etc/hosts and search domains work as for any program)
//! and resolved again every `dns_refresh`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use tracing::warn;

use crate::config::{ClusterConfig, EndpointConfig};

/// One resolved endpoint: where to connect and with what weight.
pub type Resolved = BTreeSet<(SocketAddr, u32)>;

/// Whether any endpoint needs DNS (and so a refresh task).
pub fn needs_dns(cluster: &ClusterConfig) -> bool {
    cluster
        .endpoints
        .iter()
        .any(|e| e.host.parse::<IpAddr>().is_err())
}

/// Resolves every endpoint. `None` when every DNS lookup failed, so a refresh can keep the
/// previous set instead of dropping to zero on a resolver hiccup.
pub async fn resolve(cluster: &ClusterConfig) -> Option<Resolved> {
    let mut out = Resolved::new();
    let mut lookups = 0;
    let mut failures = 0;
    for e in &cluster.endpoints {
        if let Ok(ip) = e.host.parse::<IpAddr>() {
            out.insert((SocketAddr::new(ip, e.port), e.weight));
            continue;
        }
        lookups += 1;
        match lookup(e).await {
            Ok(addrs) => out.extend(addrs.into_iter().map(|a| (a, e.weight))),
            Err(error) => {
                failures += 1;
                warn!(cluster = %cluster.name, host = %e.host, %error, "DNS lookup failed");
            }
        }
    }
    (lookups == 0 || failures < lookups).then_some(out)
}

async fn lookup(e: &EndpointConfig) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((e.host.as_str(), e.port))
        .await?
        .collect();
    Ok(addrs)
}
