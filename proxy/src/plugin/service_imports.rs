//! The imports a plugin calls for what is not a head: the request's facts, routing, the
//! request context, state shared between instances, metrics by name, logs, clocks, randomness
//! and callouts. Each acts on the request the current hook runs for ([`HostState::req`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::switchyard::plugin::{
    clock, context, http as wit_http, log, metrics as wit_metrics, properties, random, routing,
    shared, types,
};
use super::bindings::{HttpCallError, HttpRequest, HttpResponse, KvEntry, LogLevel, PeerIdentity};
use super::callout;
use super::heads::NO_REQUEST;
use super::host::{HostState, MetricHandle, MetricKind};
use crate::sandbox::MAX_CONTEXT_BYTES;

/// How the SDK's panic hook starts the error it logs (`panicked at src/lib.rs:12:5: message`).
const PANIC_PREFIX: &str = "panicked at ";
/// How the SDK starts the message of a hook that answered `Action::Fail` (an `Err`).
const FAIL_PREFIX: &str = "hook failed: ";

impl properties::Host for HostState {
    fn listener(&mut self) -> String {
        self.req()
            .map(|r| r.scope.listener.to_string())
            .unwrap_or_default()
    }

    fn peer_address(&mut self) -> String {
        self.req().map(|r| r.peer.to_string()).unwrap_or_default()
    }

    fn sni(&mut self) -> Option<String> {
        self.req()?.tls.as_ref()?.sni.clone()
    }

    fn identity(&mut self) -> Option<PeerIdentity> {
        let id = self.req()?.tls.as_ref()?.identity.as_ref()?;
        Some(PeerIdentity {
            spiffe_id: id.spiffe_id.clone(),
            dns_names: id.dns_names.clone(),
            subject: id.subject.clone(),
        })
    }

    fn request_id(&mut self) -> String {
        self.req()
            .map(|r| String::from_utf8_lossy(r.request_id.as_bytes()).into_owned())
            .unwrap_or_default()
    }

    fn attempt(&mut self) -> u32 {
        self.req().map_or(0, |r| r.attempt)
    }

    fn destination(&mut self) -> Option<String> {
        self.req()?
            .destination
            .as_ref()
            .map(|c| c.name().to_owned())
    }
}

impl routing::Host for HostState {
    fn set_destination(&mut self, cluster: String) -> Result<(), String> {
        self.set_destination(&cluster)
    }

    fn set_timeout(&mut self, ms: u32) {
        if let Some(req) = self.req_mut() {
            req.timeout = Some(Duration::from_millis(u64::from(ms)));
        }
    }

    fn set_per_try_timeout(&mut self, ms: u32) {
        if let Some(req) = self.req_mut() {
            req.per_try_timeout = Some(Duration::from_millis(u64::from(ms)));
        }
    }
}

impl HostState {
    /// `routing.set-destination`: the last call wins; a name that is no cluster is remembered
    /// (the request is answered 500 unless a later call names one that exists).
    pub(super) fn set_destination(&mut self, cluster: &str) -> Result<(), String> {
        let req = self.request.as_deref_mut().ok_or(NO_REQUEST)?;
        let found = req.scope.clusters.by_name(cluster).cloned();
        match found {
            Some(found) => {
                req.destination = Some(found);
                req.bad_destination = None;
                Ok(())
            }
            None => {
                let plugin = &self.env.name;
                tracing::warn!(%plugin, %cluster, "plugin chose a cluster that does not exist");
                req.bad_destination = Some(format!(
                    "plugin {plugin:?} chose cluster {cluster:?}, which does not exist"
                ));
                Err(format!("no cluster is named {cluster:?}"))
            }
        }
    }
}

impl context::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.req()?.context.get(&key).map(<[u8]>::to_vec)
    }

    fn set(&mut self, key: String, value: Vec<u8>) {
        self.set_context(&key, &value);
    }
}

impl HostState {
    /// `context.set`, from any entry: a value over the cap is dropped with a warning.
    pub(super) fn set_context(&mut self, key: &str, value: &[u8]) {
        if value.len() > MAX_CONTEXT_BYTES {
            tracing::warn!(plugin = %self.env.name, %key, "context value over 64 KiB dropped");
            return;
        }
        if let Some(req) = self.request.as_deref_mut() {
            req.context.set(key, value, &mut self.route_names);
        }
    }
}

impl shared::Host for HostState {
    fn counter_add(&mut self, name: String, delta: i64) -> i64 {
        self.env.shared.counter_add(&name, delta)
    }

    fn counter_get(&mut self, name: String) -> i64 {
        self.env.shared.counter_get(&name)
    }

    fn kv_get(&mut self, key: String) -> Option<KvEntry> {
        self.env
            .shared
            .kv_get(&key)
            .map(|(value, version)| KvEntry { value, version })
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u32>) -> u64 {
        self.env.shared.kv_set(&key, value, ttl(ttl_ms))
    }

    fn kv_compare_and_set(
        &mut self,
        key: String,
        expected_version: Option<u64>,
        value: Vec<u8>,
        ttl_ms: Option<u32>,
    ) -> Option<u64> {
        self.env
            .shared
            .kv_compare_and_set(&key, expected_version, value, ttl(ttl_ms))
    }

    fn kv_delete(&mut self, key: String) {
        self.env.shared.kv_delete(&key);
    }
}

fn ttl(ms: Option<u32>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(u64::from(ms)))
}

/// Shadowed on the linker by `metric_imports`, which reads names and labels in place; these
/// owned-argument versions are what `bindgen!`'s trait requires.
impl wit_metrics::Host for HostState {
    fn counter_add(&mut self, name: String, labels: Vec<(String, String)>, value: u64) {
        if let MetricHandle::Counter(c) = self.metric((MetricKind::Counter, name, labels)) {
            c.increment(value);
        }
    }

    fn gauge_set(&mut self, name: String, labels: Vec<(String, String)>, value: f64) {
        if let MetricHandle::Gauge(g) = self.metric((MetricKind::Gauge, name, labels)) {
            g.set(value);
        }
    }

    fn histogram_record(&mut self, name: String, labels: Vec<(String, String)>, value: f64) {
        if let MetricHandle::Histogram(h) = self.metric((MetricKind::Histogram, name, labels)) {
            h.record(value);
        }
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        // The SDK's panic hook reports the panic just before the trap it ends in: it is logged
        // once, as part of the failure (rate-limited there), rather than as a line of its own.
        if level == LogLevel::Error
            && (message.starts_with(PANIC_PREFIX) || message.starts_with(FAIL_PREFIX))
        {
            self.panic = Some(message);
            return;
        }
        let plugin = &*self.env.name;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl clock::Host for HostState {
    fn monotonic_ns(&mut self) -> u64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let start = START.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl random::Host for HostState {
    fn next_u64(&mut self) -> u64 {
        fastrand::u64(..)
    }
}

impl wit_http::Host for HostState {
    async fn call(
        &mut self,
        cluster: String,
        request: HttpRequest,
    ) -> Result<HttpResponse, HttpCallError> {
        let clusters = match &self.request {
            Some(request) => Some(Arc::clone(&request.scope.clusters)),
            None => self.tick_clusters.clone(),
        };
        let Some(clusters) = clusters else {
            return Err(HttpCallError::UnknownCluster);
        };
        // Waiting for the network is not the plugin's CPU time.
        self.pause_cpu_clock();
        let result = callout::call(&clusters, &cluster, request).await;
        self.resume_cpu_clock();
        result
    }
}

impl types::Host for HostState {}
