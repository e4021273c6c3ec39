//! A cluster: its settings and its current endpoint set, swapped atomically when discovery
//! changes it, so requests never wait on a lock to pick an endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::info;

use super::discovery::{self, Resolved};
use super::endpoint::Endpoint;
use super::pool::{Pool, PoolSettings};
use crate::balance::Balancer;
use crate::config::{ClusterConfig, Config};
use crate::tls::client::UpstreamTls;

/// A named group of endpoints serving the same thing.
#[derive(Debug)]
pub struct Cluster {
    pub config: ClusterConfig,
    /// TLS to the endpoints, built from `config.tls`.
    tls: Option<Arc<UpstreamTls>>,
    endpoints: ArcSwap<EndpointSet>,
}

/// A snapshot of a cluster's endpoints with the balancer state built for exactly these.
#[derive(Debug)]
struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
}

impl Cluster {
    /// A cluster with these endpoints; those also in `previous` keep their pools.
    fn new(
        config: ClusterConfig,
        tls: Option<Arc<UpstreamTls>>,
        resolved: &Resolved,
        previous: &[Arc<Endpoint>],
    ) -> Self {
        let set = build_set(&config, tls.as_ref(), resolved, previous);
        Self {
            config,
            tls,
            endpoints: ArcSwap::from_pointee(set),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether `pick` uses a request hash (ring_hash).
    pub fn wants_hash(&self) -> bool {
        self.endpoints.load().balancer.wants_hash()
    }

    /// Chooses the endpoint for one request; `None` when the cluster has no endpoints.
    pub fn pick(&self, hash: Option<u64>) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        let i = set.balancer.pick(&set.endpoints, hash)?;
        set.endpoints.get(i).cloned()
    }

    /// The current endpoint addresses, for the admin API and tests.
    pub fn endpoint_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .load()
            .endpoints
            .iter()
            .map(|e| e.addr)
            .collect()
    }

    /// Replaces the endpoint set; endpoints that stay keep their pools and load statistics.
    fn update(&self, resolved: &Resolved) {
        let current = self.endpoints.load();
        let now: Resolved = current
            .endpoints
            .iter()
            .map(|e| (e.addr, e.weight))
            .collect();
        if &now == resolved {
            return;
        }
        info!(
            cluster = %self.config.name,
            endpoints = ?resolved.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            "endpoints changed"
        );
        self.endpoints.store(Arc::new(build_set(
            &self.config,
            self.tls.as_ref(),
            resolved,
            &current.endpoints,
        )));
    }

    fn evict_expired_connections(&self) {
        for e in &self.endpoints.load().endpoints {
            e.pool().evict_expired();
        }
    }
}

fn build_set(
    config: &ClusterConfig,
    tls: Option<&Arc<UpstreamTls>>,
    resolved: &Resolved,
    previous: &[Arc<Endpoint>],
) -> EndpointSet {
    let previous: HashMap<SocketAddr, &Arc<Endpoint>> =
        previous.iter().map(|e| (e.addr, e)).collect();
    let settings = PoolSettings::from(config);
    let endpoints: Vec<Arc<Endpoint>> = resolved
        .iter()
        .map(|&(addr, weight)| match previous.get(&addr) {
            Some(e) if e.weight == weight => Arc::clone(e),
            Some(e) => Arc::new(Endpoint::new(addr, weight, Arc::clone(e.pool()))),
            None => Arc::new(Endpoint::new(
                addr,
                weight,
                Pool::new(addr, settings, tls.cloned()),
            )),
        })
        .collect();
    let balancer = Balancer::new(config.lb, &endpoints);
    EndpointSet {
        endpoints,
        balancer,
    }
}

/// Every cluster of a config, by index (listeners and plugins refer to clusters by index).
#[derive(Debug, Default)]
pub struct Clusters {
    clusters: Vec<Arc<Cluster>>,
}

impl Clusters {
    /// Resolves every cluster's endpoints and starts its background upkeep (DNS refresh, idle
    /// connection eviction). The tasks end when the cluster is dropped.
    pub async fn start(config: &Config) -> Result<Self, String> {
        Self::start_from(config, &Self::default()).await
    }

    /// Like [`Clusters::start`], for a reload: a cluster whose config is unchanged is kept as
    /// it is (endpoints, pools, balancer state); a changed one keeps the pooled connections of
    /// the endpoints it still has, as long as its connection settings are the same. Clusters
    /// with TLS are always rebuilt, so rotated certificates and CAs apply to new connections.
    /// Fails on unusable TLS material, naming the cluster and file.
    pub async fn start_from(config: &Config, previous: &Clusters) -> Result<Self, String> {
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for c in &config.clusters {
            let before = previous.by_name(&c.name).filter(|_| c.tls.is_none());
            if let Some(same) = before.filter(|b| same_config(&b.config, c)) {
                clusters.push(Arc::clone(same));
                continue;
            }
            let tls = match &c.tls {
                Some(tls) => {
                    let host = c.endpoints.first().map_or("localhost", |e| e.host.as_str());
                    let built = crate::tls::client::upstream_tls(tls, host, c.protocol)
                        .map_err(|e| format!("cluster {:?}: {e}", c.name))?;
                    Some(Arc::new(built))
                }
                None => None,
            };
            let resolved = discovery::resolve(c).await.unwrap_or_default();
            let reusable: Vec<Arc<Endpoint>> = before
                .filter(|b| PoolSettings::from(&b.config) == PoolSettings::from(c))
                .map(|b| b.endpoints.load().endpoints.clone())
                .unwrap_or_default();
            let cluster = Arc::new(Cluster::new(c.clone(), tls, &resolved, &reusable));
            spawn_upkeep(Arc::downgrade(&cluster));
            clusters.push(cluster);
        }
        Ok(Self { clusters })
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Cluster>> {
        self.clusters.get(index)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| c.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.iter()
    }
}

fn same_config(a: &ClusterConfig, b: &ClusterConfig) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

fn spawn_upkeep(cluster: Weak<Cluster>) {
    let Some(c) = cluster.upgrade() else { return };
    let dns = discovery::needs_dns(&c.config).then_some(c.config.dns_refresh);
    let evict_every = (c.config.idle_timeout / 2).max(Duration::from_secs(1));
    drop(c);
    tokio::spawn(async move {
        let mut evict = tokio::time::interval(evict_every);
        let mut refresh = tokio::time::interval(dns.unwrap_or(Duration::from_secs(3600)));
        refresh.tick().await; // the first tick is immediate; start() has just resolved
        loop {
            tokio::select! {
                _ = evict.tick() => {
                    let Some(c) = cluster.upgrade() else { return };
                    c.evict_expired_connections();
                }
                _ = refresh.tick(), if dns.is_some() => {
                    let Some(c) = cluster.upgrade() else { return };
                    let config = c.config.clone();
                    drop(c);
                    let resolved = discovery::resolve(&config).await;
                    let Some(c) = cluster.upgrade() else { return };
                    if let Some(resolved) = resolved {
                        c.update(&resolved);
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EndpointConfig, LbPolicy, UpstreamProtocol};

    fn config() -> ClusterConfig {
        ClusterConfig {
            name: "app".into(),
            endpoints: vec![EndpointConfig {
                host: "app.internal".into(),
                port: 80,
                weight: 1,
            }],
            lb: LbPolicy::RoundRobin,
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(15),
            dns_refresh: Duration::from_secs(5),
            hash_header: None,
            idle_timeout: Duration::from_secs(60),
            max_idle_per_endpoint: 8,
            tls: None,
        }
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 80))
    }

    fn endpoint(cluster: &Cluster, at: SocketAddr) -> Option<Arc<Endpoint>> {
        cluster
            .endpoints
            .load()
            .endpoints
            .iter()
            .find(|e| e.addr == at)
            .cloned()
    }

    #[test]
    fn a_discovery_change_keeps_the_endpoints_that_stay() {
        let cluster = Cluster::new(config(), None, &[(addr(1), 1), (addr(2), 1)].into(), &[]);
        let staying = endpoint(&cluster, addr(2)).unwrap();

        cluster.update(&[(addr(2), 1), (addr(3), 1)].into());

        assert_eq!(cluster.endpoint_addrs(), vec![addr(2), addr(3)]);
        let after = endpoint(&cluster, addr(2)).unwrap();
        assert!(
            Arc::ptr_eq(&staying, &after),
            "a staying endpoint keeps its pool and load"
        );
    }

    #[test]
    fn a_weight_change_keeps_the_connection_pool() {
        let cluster = Cluster::new(config(), None, &[(addr(1), 1)].into(), &[]);
        let before = endpoint(&cluster, addr(1)).unwrap();

        cluster.update(&[(addr(1), 5)].into());

        let after = endpoint(&cluster, addr(1)).unwrap();
        assert_eq!(after.weight, 5);
        assert!(Arc::ptr_eq(before.pool(), after.pool()));
    }

    #[test]
    fn an_empty_cluster_picks_nothing() {
        let cluster = Cluster::new(config(), None, &Resolved::new(), &[]);
        assert!(cluster.pick(None).is_none());
    }
}
