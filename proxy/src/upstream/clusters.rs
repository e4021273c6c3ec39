//! Every cluster of a config, started together and found by index, name or service address;
//! a reload's set keeps what it can of the previous one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::cluster::{Cluster, spawn_upkeep};
use super::endpoint::Endpoint;
use super::pool::PoolSettings;
use crate::config::{ClusterConfig, Config};
use crate::discovery;

/// Every cluster of a config, by index (listeners and plugins refer to clusters by index) and
/// by name (a plugin's `set-destination` on every request, among as many clusters as a mesh
/// discovers).
#[derive(Debug, Default)]
pub struct Clusters {
    clusters: Vec<Arc<Cluster>>,
    /// Each name's index in `clusters` (the first, were a name given twice).
    names: rustc_hash::FxHashMap<String, usize>,
}

/// Up to this many clusters, [`Clusters::by_name`] compares names in order instead of hashing.
const SCANNED_CLUSTERS: usize = 8;

/// Why a cluster could not start, naming it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterStartError {
    #[error("cluster {cluster:?}: {source}")]
    Tls {
        cluster: String,
        source: crate::tls::TlsError,
    },
    #[error("cluster {cluster:?}: Kubernetes discovery: {source}")]
    Kubernetes {
        cluster: String,
        source: crate::discovery::kubernetes::KubernetesError,
    },
}

impl Clusters {
    /// Resolves every cluster's endpoints and starts its background upkeep (DNS refresh, idle
    /// connection eviction). The tasks end when the cluster is dropped.
    pub async fn start(config: &Config) -> Result<Self, ClusterStartError> {
        Self::start_from(config, &Self::default()).await
    }

    /// Like [`Clusters::start`], for a reload: a cluster whose config is unchanged is kept as
    /// it is (endpoints, pools, balancer state); a changed one keeps the pooled connections of
    /// the endpoints it still has, as long as its connection settings are the same. Clusters
    /// with TLS are always rebuilt, so rotated certificates and CAs apply to new connections.
    /// Fails on unusable TLS material, naming the cluster and file.
    pub async fn start_from(
        config: &Config,
        previous: &Clusters,
    ) -> Result<Self, ClusterStartError> {
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
                    let built = crate::tls::client::upstream_tls(tls, host, c.protocol).map_err(
                        |source| ClusterStartError::Tls {
                            cluster: c.name.clone(),
                            source,
                        },
                    )?;
                    Some(Arc::new(built))
                }
                None => None,
            };
            let (resolved, kubernetes) = match &c.kubernetes_service {
                Some(service) => {
                    let mut endpoints = crate::discovery::kubernetes::endpoints(service)
                        .await
                        .map_err(|source| ClusterStartError::Kubernetes {
                            cluster: c.name.clone(),
                            source,
                        })?;
                    let first = crate::discovery::kubernetes::first_endpoints(
                        &mut endpoints,
                        KUBERNETES_FIRST_LIST,
                    )
                    .await
                    .unwrap_or_default();
                    (first, Some(endpoints))
                }
                None => (discovery::dns::resolve(c).await.unwrap_or_default(), None),
            };
            let reusable: Vec<Arc<Endpoint>> = before
                .filter(|b| PoolSettings::from(&b.config) == PoolSettings::from(c))
                .map(|b| b.endpoints_for_reuse())
                .unwrap_or_default();
            let cluster = Arc::new(Cluster::new(c.clone(), tls, &resolved, &reusable));
            spawn_upkeep(Arc::downgrade(&cluster), kubernetes);
            clusters.push(cluster);
        }
        let mut names = rustc_hash::FxHashMap::default();
        for (index, cluster) in clusters.iter().enumerate() {
            names.entry(cluster.name().to_owned()).or_insert(index);
        }
        Ok(Self { clusters, names })
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Cluster>> {
        self.clusters.get(index)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Cluster>> {
        // A few names are compared faster than one is hashed.
        if self.clusters.len() <= SCANNED_CLUSTERS {
            return self.clusters.iter().find(|c| c.name() == name);
        }
        self.clusters.get(*self.names.get(name)?)
    }

    /// The cluster a client reaches by dialing `addr` (one of its `service_addresses`).
    pub fn by_service_address(&self, addr: SocketAddr) -> Option<&Arc<Cluster>> {
        self.clusters
            .iter()
            .find(|c| c.config.service_addresses.contains(&addr))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.iter()
    }
}

fn same_config(a: &ClusterConfig, b: &ClusterConfig) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// How long a cluster with a `kubernetes_service` waits at start for the first list, so it does
/// not begin without endpoints.
const KUBERNETES_FIRST_LIST: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    /// Scanned (a few clusters) or hashed (many), every name finds its cluster.
    #[tokio::test]
    async fn clusters_are_found_by_name() {
        for count in [3, SCANNED_CLUSTERS + 1, 40] {
            let mut text = String::from(
                "[[listener]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"c0\"\n",
            );
            for i in 0..count {
                text.push_str(&format!(
                    "[[cluster]]\nname = \"c{i}\"\nendpoints = [\"127.0.0.1:{}\"]\n",
                    1000 + i
                ));
            }
            let config = crate::config::load_str(std::path::Path::new("clusters.toml"), &text)
                .expect("a valid config");
            let clusters = Clusters::start(&config).await.expect("clusters start");
            for i in 0..count {
                let name = format!("c{i}");
                let found = clusters.by_name(&name).map(|c| c.name().to_owned());
                assert_eq!(found.as_deref(), Some(name.as_str()), "of {count}");
            }
            assert!(clusters.by_name(&format!("c{count}")).is_none());
            assert!(clusters.by_name("").is_none());
        }
    }
}
