//! The control plane's side of Kubernetes discovery: for each Service any workload names in
//! `kubernetes_service`, one EndpointSlice watch (its pods) and one Service watch (its cluster
//! IPs) for the whole mesh; every change re-renders the bundles, and the proxies whose bundles
//! changed get them at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::info;

use super::render::DiscoveredEndpoints;
use crate::config::ServiceRef;
use crate::discovery::Resolved;
use crate::discovery::kubernetes;

/// How long a new Service's first list is waited for before bundles are rendered without it.
const FIRST_LIST: Duration = Duration::from_secs(5);

/// What is known of every watched Service, and a signal when it changes.
#[derive(Default)]
pub struct MeshDiscovery {
    discovered: Mutex<DiscoveredEndpoints>,
    watching: Mutex<HashSet<ServiceRef>>,
    changed: Notify,
}

impl MeshDiscovery {
    /// Starts watching every Service in `services` not watched yet, waiting for its first list.
    pub async fn watch_all(self: &Arc<Self>, services: Vec<ServiceRef>) -> Result<(), String> {
        for service in services {
            if !lock(&self.watching).insert(service.clone()) {
                continue;
            }
            let watches = async {
                Ok::<_, kubernetes::KubernetesError>((
                    kubernetes::endpoints(&service).await?,
                    kubernetes::service_addresses(&service).await?,
                ))
            };
            let (mut endpoints, mut addresses) = match watches.await {
                Ok(watches) => watches,
                Err(e) => {
                    lock(&self.watching).remove(&service);
                    return Err(format!("kubernetes_service {service}: {e}"));
                }
            };
            let first = kubernetes::first_endpoints(&mut endpoints, FIRST_LIST).await;
            self.publish_endpoints(&service, first);
            let first = kubernetes::first_endpoints(&mut addresses, FIRST_LIST).await;
            self.publish_addresses(&service, first);
            let this = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        changed = endpoints.changed() => {
                            let Some(this) = this.upgrade().filter(|_| changed.is_ok()) else {
                                return;
                            };
                            let resolved = endpoints.borrow_and_update().clone();
                            this.publish_endpoints(&service, resolved);
                            this.changed.notify_one();
                        }
                        changed = addresses.changed() => {
                            let Some(this) = this.upgrade().filter(|_| changed.is_ok()) else {
                                return;
                            };
                            let resolved = addresses.borrow_and_update().clone();
                            this.publish_addresses(&service, resolved);
                            this.changed.notify_one();
                        }
                    }
                }
            });
        }
        Ok(())
    }

    fn publish_endpoints(&self, service: &ServiceRef, resolved: Option<Resolved>) {
        let Some(resolved) = resolved else { return };
        let addrs: Vec<SocketAddr> = resolved.into_iter().map(|(addr, _)| addr).collect();
        info!(%service, endpoints = addrs.len(), "mesh endpoints discovered");
        lock(&self.discovered)
            .endpoints
            .insert(service.clone(), addrs);
    }

    fn publish_addresses(&self, service: &ServiceRef, addresses: Option<Vec<SocketAddr>>) {
        let Some(addresses) = addresses else { return };
        info!(%service, ?addresses, "mesh service addresses discovered");
        lock(&self.discovered)
            .service_addresses
            .insert(service.clone(), addresses);
    }

    /// What is known now.
    pub fn snapshot(&self) -> DiscoveredEndpoints {
        lock(&self.discovered).clone()
    }

    /// Completes after the next change of any watched Service.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
