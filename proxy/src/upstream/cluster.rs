//! A cluster: its settings and its current endpoint set, swapped atomically when discovery
//! changes it, so requests never wait on a lock to pick an endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::ResponseFields;
use super::endpoint::Endpoint;
use super::health::Observed;
use super::limits::ClusterLimits;
use super::pool::{Pace, Pool, PoolSettings};
use crate::balance::Balancer;
use crate::config::{ClusterConfig, HealthCheckConfig, LbPolicy};
use crate::discovery::{self, Resolved};
use crate::telemetry::ClusterMetrics;
use crate::telemetry::traffic::ClusterTag;
use crate::tls::client::UpstreamTls;

/// A named group of endpoints serving the same thing.
#[derive(Debug)]
pub struct Cluster {
    pub config: ClusterConfig,
    /// TLS to the endpoints, built from `config.tls`.
    tls: Option<Arc<UpstreamTls>>,
    /// Circuit-breaker counters, shared with the pools.
    pub limits: Arc<ClusterLimits>,
    endpoints: ArcSwap<EndpointSet>,
    /// The name and traffic counters, shared cheaply with the telemetry of each request sent
    /// here.
    pub tag: Arc<ClusterTag>,
    /// Attempt latency and retries, registered once.
    pub metrics: ClusterMetrics,
}

/// A snapshot of a cluster's endpoints with the balancer state built for the live ones.
#[derive(Debug)]
struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    /// The endpoints that get traffic: healthy and not ejected — or all of them when too few
    /// are (panic mode), so a cluster never routes to nothing because of its own checks.
    live: Vec<Arc<Endpoint>>,
    panic: bool,
    balancer: Balancer,
}

impl Cluster {
    /// A cluster with these endpoints; those also in `previous` keep their pools.
    pub(super) fn new(
        config: ClusterConfig,
        tls: Option<Arc<UpstreamTls>>,
        resolved: &Resolved,
        previous: &[Arc<Endpoint>],
    ) -> Self {
        let limits = ClusterLimits::new(config.circuit_breaker.clone());
        let set = build_set(&config, tls.as_ref(), &limits, resolved, previous);
        Self {
            tag: Arc::new(ClusterTag::new(&config.name)),
            metrics: ClusterMetrics::new(&config.name),
            config,
            tls,
            limits,
            endpoints: ArcSwap::from_pointee(set),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether `pick` uses a request hash (ring_hash): the config says, without loading the
    /// endpoint set (an atomic step `pick` takes anyway).
    pub fn wants_hash(&self) -> bool {
        self.config.lb == LbPolicy::RingHash
    }

    /// Chooses the endpoint for one request; `None` when the cluster has no endpoints.
    pub fn pick(&self, hash: Option<u64>) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        let i = set.balancer.pick(&set.live, hash)?;
        set.live.get(i).cloned()
    }

    /// Every endpoint with its health, for the admin API.
    pub fn endpoint_states(&self) -> Vec<EndpointState> {
        let set = self.endpoints.load();
        set.endpoints
            .iter()
            .map(|e| EndpointState {
                addr: e.addr,
                healthy: !e.health.check_failed(),
                ejected_for: e.health.ejected_for(),
                live: set.live.iter().any(|l| Arc::ptr_eq(l, e)),
                in_flight: crate::balance::Target::in_flight(e),
                idle_connections: e.pool().idle_connections(),
            })
            .collect()
    }

    /// Whether too few endpoints are usable and the cluster uses them all regardless.
    pub fn in_panic(&self) -> bool {
        self.endpoints.load().panic
    }

    /// Records how long `endpoint` took to answer (or to fail) when the cluster balances by
    /// latency (`ewma`); no other policy reads the estimate, which costs a clock reading and a
    /// lock per response.
    pub fn observe_latency(&self, endpoint: &Endpoint, took: Duration) {
        if self.config.lb == LbPolicy::Ewma {
            endpoint.observe_latency(took);
        }
    }

    /// Outlier detection: counts what a real request to `endpoint` showed and ejects it when
    /// it crosses a threshold (within `max_ejection_percent`).
    pub fn observe(&self, endpoint: &Endpoint, observed: Observed) {
        let Some(outlier) = &self.config.outlier else {
            return;
        };
        if !endpoint.health.record_outcome(observed, outlier) || endpoint.health.ejected() {
            return;
        }
        let set = self.endpoints.load();
        let ejected = set.endpoints.iter().filter(|e| e.health.ejected()).count();
        let allowed = (set.endpoints.len() * outlier.max_ejection_percent as usize / 100).max(1);
        if ejected >= allowed || set.endpoints.len() < 2 {
            return;
        }
        let length = endpoint.health.eject(outlier.base_ejection_time);
        warn!(cluster = %self.config.name, endpoint = %endpoint.addr, ?length, ?observed, "outlier ejected");
        metrics::counter!("switchyard_outlier_ejections_total", "cluster" => self.config.name.clone()).increment(1);
        drop(set);
        self.rebuild_live();
    }

    /// Recomputes which endpoints get traffic after a health or ejection change.
    fn rebuild_live(&self) {
        let current = self.endpoints.load();
        let (live, panic) = live_endpoints(&self.config, &current.endpoints);
        let same = live.len() == current.live.len()
            && live
                .iter()
                .zip(&current.live)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same && panic == current.panic {
            return;
        }
        if panic && !current.panic {
            warn!(cluster = %self.config.name, "too few healthy endpoints: using all of them (panic mode)");
        }
        let balancer = Balancer::new(self.config.lb, &live);
        self.endpoints.store(Arc::new(EndpointSet {
            endpoints: current.endpoints.clone(),
            live,
            panic,
            balancer,
        }));
    }

    /// One round of active health checks on every endpoint, at once.
    async fn check_health(self: &Arc<Self>, check: &HealthCheckConfig) {
        let endpoints = self.endpoints.load().endpoints.clone();
        let checks = endpoints.iter().map(|e| async move {
            let passed = probe(e, check, &self.config.name).await;
            if e.health.record_check(passed, check) {
                let state = if passed { "healthy again" } else { "unhealthy" };
                warn!(cluster = %self.config.name, endpoint = %e.addr, "endpoint is {state}");
                true
            } else {
                false
            }
        });
        let changed = futures_util::future::join_all(checks).await;
        if changed.contains(&true) {
            self.rebuild_live();
        }
    }

    /// Ends ejections whose time is up.
    fn expire_ejections(&self) {
        let mut any = false;
        for e in &self.endpoints.load().endpoints {
            any |= e.health.expire_ejection();
        }
        if any {
            self.rebuild_live();
        }
    }

    /// The current endpoint addresses, for the admin API and tests.
    /// Every endpoint, pools and all, for a rebuilt cluster to keep those it still has.
    pub(super) fn endpoints_for_reuse(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints.load().endpoints.clone()
    }

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
            &self.limits,
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
    limits: &Arc<ClusterLimits>,
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
                Pool::new(addr, settings, tls.cloned(), Arc::clone(limits)),
            )),
        })
        .collect();
    let (live, panic) = live_endpoints(config, &endpoints);
    let balancer = Balancer::new(config.lb, &live);
    EndpointSet {
        endpoints,
        live,
        panic,
        balancer,
    }
}

/// The endpoints that should get traffic, and whether the cluster is in panic mode (too few
/// usable, so all are used).
fn live_endpoints(config: &ClusterConfig, all: &[Arc<Endpoint>]) -> (Vec<Arc<Endpoint>>, bool) {
    let live: Vec<Arc<Endpoint>> = all
        .iter()
        .filter(|e| e.health.available())
        .cloned()
        .collect();
    if live.len() == all.len() {
        return (live, false);
    }
    let threshold = config.outlier.as_ref().map_or(50, |o| o.panic_threshold) as usize;
    if live.is_empty() || live.len() * 100 < all.len() * threshold {
        return (all.to_vec(), true);
    }
    (live, false)
}

/// One active health check: GET the configured path (or ask the gRPC health service) with a
/// deadline.
async fn probe(endpoint: &Endpoint, check: &HealthCheckConfig, cluster: &str) -> bool {
    if let Some(service) = &check.grpc_service {
        return super::grpc_health::probe(endpoint, service, cluster, check.timeout).await;
    }
    let request = http::Request::get(check.path.as_str())
        .header(http::header::HOST, cluster)
        .header(http::header::USER_AGENT, "switchyard-health-check")
        .body(crate::body::ProxyBody::Empty);
    let Ok(request) = request else {
        return false;
    };
    match tokio::time::timeout(
        check.timeout,
        endpoint.send(request, &[], Pace::Now, ResponseFields::Map, None),
    )
    .await
    {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            // Read the body so the connection can be reused.
            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            if check.expected_statuses.is_empty() {
                (200..400).contains(&status)
            } else {
                check.expected_statuses.contains(&status)
            }
        }
        _ => false,
    }
}

/// What the admin API shows of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointState {
    pub addr: SocketAddr,
    pub healthy: bool,
    pub ejected_for: Option<Duration>,
    /// Gets traffic now.
    pub live: bool,
    pub in_flight: u32,
    pub idle_connections: usize,
}

/// Keeps a cluster current: DNS refresh or Kubernetes endpoint changes, idle connection
/// eviction, health checks, ejection expiry. Ends when the cluster is dropped.
pub(super) fn spawn_upkeep(
    cluster: Weak<Cluster>,
    mut kubernetes: Option<tokio::sync::watch::Receiver<Option<Resolved>>>,
) {
    let Some(c) = cluster.upgrade() else { return };
    let dns = discovery::dns::needs_dns(&c.config).then_some(c.config.dns_refresh);
    let evict_every = (c.config.idle_timeout / 2).max(Duration::from_secs(1));
    let health_check = c.config.health_check.clone();
    let outlier = c.config.outlier.is_some();
    drop(c);
    tokio::spawn(async move {
        let mut evict = tokio::time::interval(evict_every);
        let mut refresh = tokio::time::interval(dns.unwrap_or(Duration::from_secs(3600)));
        refresh.tick().await; // the first tick is immediate; start() has just resolved
        let check_every = health_check
            .as_ref()
            .map_or(Duration::from_secs(3600), |h| h.interval);
        let mut check = tokio::time::interval(check_every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unejections = tokio::time::interval(Duration::from_millis(100));
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
                    let resolved = discovery::dns::resolve(&config).await;
                    let Some(c) = cluster.upgrade() else { return };
                    if let Some(resolved) = resolved {
                        c.update(&resolved);
                    }
                }
                changed = async { kubernetes.as_mut()?.changed().await.ok() }, if kubernetes.is_some() => {
                    let Some(c) = cluster.upgrade() else { return };
                    match changed {
                        Some(()) => {
                            let resolved = kubernetes.as_mut().and_then(|k| k.borrow_and_update().clone());
                            if let Some(resolved) = resolved {
                                c.update(&resolved);
                            }
                        }
                        None => kubernetes = None,
                    }
                }
                _ = check.tick(), if health_check.is_some() => {
                    let (Some(c), Some(config)) = (cluster.upgrade(), health_check.as_ref()) else { return };
                    c.check_health(config).await;
                }
                _ = unejections.tick(), if outlier => {
                    let Some(c) = cluster.upgrade() else { return };
                    c.expire_ejections();
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EndpointConfig, UpstreamProtocol};

    fn config() -> ClusterConfig {
        ClusterConfig {
            name: "app".into(),
            service_addresses: vec![],
            endpoints: vec![EndpointConfig {
                host: "app.internal".into(),
                port: 80,
                weight: 1,
            }],
            kubernetes_service: None,
            discovered_from: None,
            lb: LbPolicy::RoundRobin,
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(15),
            dns_refresh: Duration::from_secs(5),
            hash_header: None,
            idle_timeout: Duration::from_secs(60),
            max_idle_per_endpoint: 8,
            max_replay_body: 64 * 1024,
            tls: None,
            health_check: None,
            outlier: None,
            circuit_breaker: Default::default(),
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
