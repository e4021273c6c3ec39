//! The control plane's side of Kubernetes discovery: one EndpointSlice watch per Service any
//! workload names in `kubernetes_service`, for the whole mesh; every change re-renders the
//! bundles, and the proxies whose bundles changed get them at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::info;

use super::render::DiscoveredEndpoints;
use crate::kubernetes::{self, ServiceRef};

/// How long a new Service's first list is waited for before bundles are rendered without it.
const FIRST_LIST: Duration = Duration::from_secs(5);

/// The endpoints of every watched Service, and a signal when they change.
#[derive(Default)]
pub struct MeshDiscovery {
    endpoints: Mutex<DiscoveredEndpoints>,
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
            let mut rx = match kubernetes::endpoints(&service).await {
                Ok(rx) => rx,
                Err(e) => {
                    lock(&self.watching).remove(&service);
                    return Err(format!("kubernetes_service {service}: {e}"));
                }
            };
            let first = kubernetes::first_endpoints(&mut rx, FIRST_LIST).await;
            self.publish(&service, first);
            let this = Arc::downgrade(self);
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let Some(this) = this.upgrade() else { return };
                    let resolved = rx.borrow_and_update().clone();
                    this.publish(&service, resolved);
                    this.changed.notify_one();
                }
            });
        }
        Ok(())
    }

    fn publish(
        &self,
        service: &ServiceRef,
        resolved: Option<crate::upstream::discovery::Resolved>,
    ) {
        let Some(resolved) = resolved else { return };
        let addrs: Vec<_> = resolved.into_iter().map(|(addr, _)| addr).collect();
        info!(%service, endpoints = addrs.len(), "mesh endpoints discovered");
        lock(&self.endpoints).insert(service.clone(), addrs);
    }

    /// The endpoints as they are now.
    pub fn snapshot(&self) -> DiscoveredEndpoints {
        lock(&self.endpoints).clone()
    }

    /// Completes after the next change of any watched Service.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
