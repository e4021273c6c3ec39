//! The TOML file exactly as written: plain serde structs with spans kept for error messages.
//!
//! Nothing here is checked beyond its TOML type; `validate.rs` turns these into a [`super::Config`]
//! that cannot be invalid. Unknown keys are collected by the loader (see `load.rs`) rather than
//! rejected here, so one run reports every mistake in a file instead of only the first.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub admin: Option<Spanned<RawAdmin>>,
    pub runtime: Option<Spanned<RawRuntime>>,
    #[serde(default)]
    pub listener: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub cluster: Vec<Spanned<RawCluster>>,
    #[serde(default)]
    pub plugin: Vec<Spanned<RawPlugin>>,
    pub access_log: Option<Spanned<RawAccessLog>>,
    pub tracing: Option<Spanned<RawTracing>>,
}

/// `[access_log]`
#[derive(Debug, Deserialize)]
pub struct RawAccessLog {
    pub path: Option<Spanned<String>>,
    pub fields: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[tracing]`
#[derive(Debug, Deserialize)]
pub struct RawTracing {
    pub otlp_endpoint: Spanned<String>,
    pub sampling: Option<Spanned<f64>>,
    pub service_name: Option<Spanned<String>>,
    pub batch_size: Option<Spanned<i64>>,
    pub flush_interval: Option<Spanned<String>>,
    pub max_queue: Option<Spanned<i64>>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub history_resolution: Option<Spanned<String>>,
}

/// `[runtime]`
#[derive(Debug, Deserialize)]
pub struct RawRuntime {
    pub worker_threads: Option<Spanned<i64>>,
    pub drain_timeout: Option<Spanned<String>>,
    pub plugin_cache: Option<Spanned<String>>,
}

/// `[[listener]]`
#[derive(Debug, Deserialize)]
pub struct RawListener {
    pub name: Spanned<String>,
    pub listen: Spanned<String>,
    pub default_cluster: Option<Spanned<String>>,
    #[serde(default)]
    pub plugins: Vec<Spanned<String>>,
    pub request_header_timeout: Option<Spanned<String>>,
    pub max_request_head: Option<Spanned<i64>>,
    pub max_request_headers: Option<Spanned<i64>>,
    pub max_uri_length: Option<Spanned<i64>>,
    pub max_request_body: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawListenerTls>>,
    pub protocol: Option<Spanned<String>>,
    pub original_destination: Option<Spanned<bool>>,
    pub tcp_idle_timeout: Option<Spanned<String>>,
    pub normalize_path: Option<Spanned<bool>>,
    pub merge_slashes: Option<Spanned<bool>>,
    pub escaped_slashes: Option<Spanned<String>>,
    pub grpc_web: Option<Spanned<bool>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
}

/// `[[listener.route]]`
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub name: Spanned<String>,
    #[serde(default)]
    pub skip: Vec<Spanned<String>>,
    #[serde(default)]
    pub add: Vec<Spanned<String>>,
}

/// `[listener.tls]`
#[derive(Debug, Deserialize)]
pub struct RawListenerTls {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    #[serde(default)]
    pub sni: Vec<Spanned<RawSniCert>>,
    pub client_ca: Option<Spanned<String>>,
    pub require_client_cert: Option<Spanned<bool>>,
    pub forward_client_cert: Option<Spanned<String>>,
    pub handshake_timeout: Option<Spanned<String>>,
}

/// `[[listener.tls.sni]]`
#[derive(Debug, Deserialize)]
pub struct RawSniCert {
    pub server_names: Spanned<Vec<Spanned<String>>>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[cluster.tls]`
#[derive(Debug, Deserialize)]
pub struct RawClusterTls {
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    pub spiffe_id: Option<Spanned<String>>,
}

/// `[[cluster]]`
#[derive(Debug, Deserialize)]
pub struct RawCluster {
    pub name: Spanned<String>,
    pub endpoints: Option<Spanned<Vec<Spanned<RawEndpoint>>>>,
    pub kubernetes_service: Option<Spanned<String>>,
    pub discovered_from: Option<Spanned<String>>,
    pub lb: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
    pub dns_refresh: Option<Spanned<String>>,
    pub hash_header: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_idle_per_endpoint: Option<Spanned<i64>>,
    pub max_replay_body: Option<Spanned<String>>,
    #[serde(default)]
    pub service_addresses: Vec<Spanned<String>>,
    pub tls: Option<Spanned<RawClusterTls>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub outlier: Option<Spanned<RawOutlier>>,
    pub circuit_breaker: Option<Spanned<RawCircuitBreaker>>,
}

/// `[cluster.health_check]`
#[derive(Debug, Deserialize)]
pub struct RawHealthCheck {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub healthy_threshold: Option<Spanned<i64>>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
    pub expected_statuses: Option<Spanned<Vec<Spanned<i64>>>>,
    pub grpc_service: Option<Spanned<String>>,
}

/// `[cluster.outlier]`
#[derive(Debug, Deserialize)]
pub struct RawOutlier {
    pub consecutive_5xx: Option<Spanned<i64>>,
    pub consecutive_connect_failures: Option<Spanned<i64>>,
    pub base_ejection_time: Option<Spanned<String>>,
    pub max_ejection_percent: Option<Spanned<i64>>,
    pub panic_threshold: Option<Spanned<i64>>,
}

/// `[cluster.circuit_breaker]`
#[derive(Debug, Deserialize)]
pub struct RawCircuitBreaker {
    pub max_connections: Option<Spanned<i64>>,
    pub max_pending_requests: Option<Spanned<i64>>,
    pub max_requests: Option<Spanned<i64>>,
    pub max_retries: Option<Spanned<i64>>,
}

/// One entry of `endpoints`: `"host:port"` or `{ address = "host:port", weight = N }`.
#[derive(Debug)]
pub struct RawEndpoint {
    pub address: String,
    pub weight: Option<i64>,
}

/// `[[plugin]]`
#[derive(Debug, Deserialize)]
pub struct RawPlugin {
    pub name: Spanned<String>,
    pub path: Spanned<String>,
    pub sha256: Option<Spanned<String>>,
    pub on_error: Option<Spanned<String>>,
    pub limits: Option<RawLimits>,
    pub config: Option<serde_json::Value>,
}

/// `[plugin.limits]`
#[derive(Debug, Deserialize)]
pub struct RawLimits {
    pub time: Option<Spanned<String>>,
    pub memory: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Weighted {
            address: String,
            weight: Option<i64>,
        }

        impl<'de> serde::de::Visitor<'de> for EndpointVisitor {
            type Value = RawEndpoint;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#""host:port" or { address = "host:port", weight = N }"#)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawEndpoint, E> {
                Ok(RawEndpoint {
                    address: v.to_owned(),
                    weight: None,
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawEndpoint, A::Error> {
                let w = Weighted::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawEndpoint {
                    address: w.address,
                    weight: w.weight,
                })
            }
        }

        de.deserialize_any(EndpointVisitor)
    }
}
