//! Service discovery from Kubernetes EndpointSlices, as kube-proxy and every mesh do it: one
//! watch per service (list, then watch from the list's resource version, relisting when the
//! API server says the version is too old), publishing the ready addresses of all the
//! service's slices. The API is found as kubectl finds it: `KUBECONFIG` or `~/.kube/config`,
//! else the in-cluster service account.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{PortRef, ServiceRef};
use crate::discovery::Resolved;

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Kubernetes API (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
pub struct KubernetesError(String);

/// The endpoints of `service`, kept current for the life of the process: `None` until the
/// first list completes. One watch per service, shared by every cluster (and reload) naming it.
pub async fn endpoints(
    service: &ServiceRef,
) -> Result<watch::Receiver<Option<Resolved>>, KubernetesError> {
    static WATCHES: Watches<Resolved> = OnceLock::new();
    shared_watch(&WATCHES, service, follow).await
}

/// The addresses clients dial for `service` — its cluster IPs on the Service port that leads to
/// `service.port` — kept current: what a sidecar's outbound capture recognizes the Service by.
/// `None` until the Service has been read; empty for a headless Service or none at all.
pub async fn service_addresses(
    service: &ServiceRef,
) -> Result<watch::Receiver<Option<Vec<SocketAddr>>>, KubernetesError> {
    static WATCHES: Watches<Vec<SocketAddr>> = OnceLock::new();
    shared_watch(&WATCHES, service, follow_service).await
}

/// One watch per service of what `follow` publishes, made on first use.
type Watches<T> = OnceLock<Mutex<HashMap<ServiceRef, watch::Receiver<Option<T>>>>>;

/// The watch of `service` in `watches`, started with `follow` if there is none yet.
async fn shared_watch<T, F, Fut>(
    watches: &Watches<T>,
    service: &ServiceRef,
    follow: F,
) -> Result<watch::Receiver<Option<T>>, KubernetesError>
where
    F: FnOnce(kube::Client, ServiceRef, watch::Sender<Option<T>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let watches = watches.get_or_init(Default::default);
    if let Some(existing) = lock(watches).get(service) {
        return Ok(existing.clone());
    }
    let client = client().await?;
    let mut watches = lock(watches);
    if let Some(existing) = watches.get(service) {
        return Ok(existing.clone());
    }
    let (tx, rx) = watch::channel(None);
    tokio::spawn(follow(client, service.clone(), tx));
    watches.insert(service.clone(), rx.clone());
    Ok(rx)
}

/// Waits up to `deadline` for the first value of a watch, so a cluster does not start empty.
pub async fn first_endpoints<T: Clone>(
    rx: &mut watch::Receiver<Option<T>>,
    deadline: Duration,
) -> Option<T> {
    let listed = tokio::time::timeout(deadline, rx.wait_for(Option::is_some)).await;
    match listed {
        Ok(Ok(resolved)) => resolved.clone(),
        _ => None,
    }
}

/// Who a service-account token belongs to, as the API server says (a TokenReview):
/// `(namespace, service account)`, or `None` if the token is not a valid service-account token.
pub async fn review_token(token: &str) -> Result<Option<(String, String)>, KubernetesError> {
    let client = client().await?;
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            ..TokenReviewSpec::default()
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(client)
        .create(&kube::api::PostParams::default(), &review)
        .await
        .map_err(|e| KubernetesError(format!("TokenReview: {e}")))?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Ok(None);
    }
    let username = status.user.and_then(|u| u.username).unwrap_or_default();
    Ok(username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(namespace, name)| (namespace.to_owned(), name.to_owned())))
}

/// One client per process, built on first use.
async fn client() -> Result<kube::Client, KubernetesError> {
    static CLIENT: tokio::sync::OnceCell<kube::Client> = tokio::sync::OnceCell::const_new();
    CLIENT
        .get_or_try_init(|| async {
            kube::Client::try_default()
                .await
                .map_err(|e| KubernetesError(e.to_string()))
        })
        .await
        .cloned()
}

/// Runs the watch of `service`'s slices, publishing on every change, until nobody listens.
async fn follow(client: kube::Client, service: ServiceRef, tx: watch::Sender<Option<Resolved>>) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &service.namespace);
    let selector = format!("kubernetes.io/service-name={}", service.name);
    let config = watcher::Config::default().labels(&selector);
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    // By slice name: the current set, and the one being listed after a (re)start.
    let mut slices: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    let mut listing: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    while let Some(event) = events.next().await {
        let changed = match event {
            Ok(Event::Init) => {
                listing.clear();
                false
            }
            Ok(Event::InitApply(slice)) => {
                listing.insert(slice_name(&slice), ready_addresses(&slice, &service.port));
                false
            }
            Ok(Event::InitDone) => {
                slices = std::mem::take(&mut listing);
                true
            }
            Ok(Event::Apply(slice)) => {
                slices.insert(slice_name(&slice), ready_addresses(&slice, &service.port));
                true
            }
            Ok(Event::Delete(slice)) => slices.remove(&slice_name(&slice)).is_some(),
            Err(e) => {
                warn!(%service, error = %e, "EndpointSlice watch failed; retrying");
                false
            }
        };
        if changed {
            let resolved: Resolved = slices.values().flatten().map(|a| (*a, 1)).collect();
            info!(%service, endpoints = resolved.len(), "Kubernetes endpoints changed");
            if tx.send(Some(resolved)).is_err() {
                return;
            }
        }
    }
}

/// Runs the watch of the Service object itself, publishing its addresses on every change.
async fn follow_service(
    client: kube::Client,
    service: ServiceRef,
    tx: watch::Sender<Option<Vec<SocketAddr>>>,
) {
    let api: Api<Service> = Api::namespaced(client, &service.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", service.name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed = None;
    while let Some(event) = events.next().await {
        let addresses = match event {
            Ok(Event::Init) => {
                listed = Some(Vec::new());
                continue;
            }
            Ok(Event::InitApply(object)) => {
                listed = Some(cluster_addresses(&object, &service.port));
                continue;
            }
            Ok(Event::InitDone) => listed.take().unwrap_or_default(),
            Ok(Event::Apply(object)) => cluster_addresses(&object, &service.port),
            Ok(Event::Delete(_)) => Vec::new(),
            Err(e) => {
                warn!(%service, error = %e, "Service watch failed; retrying");
                continue;
            }
        };
        if tx.send(Some(addresses)).is_err() {
            return;
        }
    }
}

/// A Service's cluster IPs on the port that leads to `port`: the Service port of that name, or
/// the one whose target port (or, failing that, own port) is that number.
fn cluster_addresses(object: &Service, port: &PortRef) -> Vec<SocketAddr> {
    let Some(spec) = &object.spec else {
        return Vec::new();
    };
    let ports = spec.ports.iter().flatten();
    let service_port = match port {
        PortRef::Name(name) => ports
            .clone()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.port),
        PortRef::Number(n) => {
            let target = |p: &&k8s_openapi::api::core::v1::ServicePort| match &p.target_port {
                Some(IntOrString::Int(t)) => *t == i32::from(*n),
                None => p.port == i32::from(*n),
                Some(IntOrString::String(_)) => false,
            };
            ports
                .clone()
                .find(target)
                .or_else(|| ports.clone().find(|p| p.port == i32::from(*n)))
                .map(|p| p.port)
        }
    };
    let Some(service_port) = service_port.and_then(|p| u16::try_from(p).ok()) else {
        return Vec::new();
    };
    let ips = spec
        .cluster_ips
        .clone()
        .unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect());
    ips.iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, service_port))
        .collect()
}

fn slice_name(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// The addresses of a slice's endpoints that are ready (absent `ready` means ready, as the API
/// documents). A port number is the pods' port, used as is; a port name is looked up among the
/// slice's ports (named after the Service's ports).
fn ready_addresses(slice: &EndpointSlice, port: &PortRef) -> Vec<SocketAddr> {
    let number = match port {
        PortRef::Number(n) => Some(*n),
        PortRef::Name(name) => slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| p.port)
            .and_then(|n| u16::try_from(n).ok()),
    };
    let Some(number) = number else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, number))
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_dialed_on_its_cluster_ips_and_the_port_leading_to_the_pods() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "orders", "namespace": "default"},
            "spec": {
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                    {"name": "admin", "port": 9000, "protocol": "TCP", "targetPort": "admin"}
                ]
            }
        }))
        .unwrap();
        let http: SocketAddr = "10.96.0.10:80".parse().unwrap();
        assert_eq!(
            cluster_addresses(&service, &PortRef::Name("http".into())),
            [http]
        );
        assert_eq!(cluster_addresses(&service, &PortRef::Number(8080)), [http]);
        assert!(cluster_addresses(&service, &PortRef::Number(1234)).is_empty());
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
        }))
        .unwrap();
        assert!(cluster_addresses(&headless, &PortRef::Name("pg".into())).is_empty());
    }

    #[test]
    fn only_ready_endpoints_on_the_named_port_count() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "orders-abc12"},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"]}
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        let addrs = ready_addresses(&slice, &PortRef::Name("http".into()));
        assert_eq!(
            addrs,
            [
                "10.0.0.1:8080".parse().unwrap(),
                "10.0.0.3:8080".parse().unwrap()
            ]
        );
        assert!(ready_addresses(&slice, &PortRef::Name("grpc".into())).is_empty());
    }
}
