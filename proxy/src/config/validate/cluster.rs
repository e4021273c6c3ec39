//! A `[[cluster]]`: its endpoints, balancing, protocol, TLS and resilience settings.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

// Sizes in config (plugin memory, request bodies) take the range of a plugin's memory cap.

use crate::config::error::Diagnostics;
use crate::config::raw::RawCluster;
use crate::config::{ClusterConfig, EndpointConfig, LbPolicy, UpstreamProtocol};

use super::values::{int_in_range, memory_size, one_of, optional_duration, socket_addr};

pub(super) const LB_POLICIES: &[(&str, LbPolicy)] = &[
    ("round_robin", LbPolicy::RoundRobin),
    ("least_request", LbPolicy::LeastRequest),
    ("ewma", LbPolicy::Ewma),
    ("random", LbPolicy::Random),
    ("ring_hash", LbPolicy::RingHash),
];

pub(super) const PROTOCOLS: &[(&str, UpstreamProtocol)] = &[
    ("http1", UpstreamProtocol::Http1),
    ("http2", UpstreamProtocol::Http2),
];

/// Largest weight an endpoint may have; keeps weighted schedules and hash rings small.
pub(super) const MAX_WEIGHT: i64 = 1000;

pub(super) fn cluster(
    i: usize,
    raw: &RawCluster,
    base: &Path,
    d: &mut Diagnostics<'_>,
) -> ClusterConfig {
    let key = |k: &str| format!("cluster[{i}].{k}");
    let kubernetes_service = raw.kubernetes_service.as_ref().and_then(|s| {
        let parsed = crate::config::ServiceRef::parse(s.get_ref());
        if parsed.is_none() {
            d.error(
                s.span(),
                key("kubernetes_service"),
                format!(
                    "{:?} is not \"name.namespace:port\" (a Service, and the pods' port number or a Service port name)",
                    s.get_ref()
                ),
            );
        }
        parsed
    });
    let discovered_from = raw.discovered_from.as_ref().and_then(|s| {
        let parsed = crate::config::ServiceRef::parse(s.get_ref());
        if parsed.is_none() || raw.kubernetes_service.is_some() {
            d.error(
                s.span(),
                key("discovered_from"),
                "set by the control plane beside the `endpoints` it discovered for a \
                 \"name.namespace:port\" Service, never with `kubernetes_service`",
            );
        }
        parsed
    });
    let listed = raw.endpoints.as_ref().filter(|e| !e.get_ref().is_empty());
    match (listed, &raw.kubernetes_service) {
        // A discovered set may be empty: the Service has no ready pods right now.
        (None, None) if discovered_from.is_some() => {}
        (Some(e), Some(_)) => d.error(
            e.span(),
            key("endpoints"),
            "give `endpoints` or `kubernetes_service`, not both",
        ),
        (None, None) => d.error(
            raw.endpoints.as_ref().map_or(raw.name.span(), |e| e.span()),
            key("endpoints"),
            "a cluster needs at least one endpoint, \"host:port\" (or a `kubernetes_service`)",
        ),
        _ => {}
    }
    let endpoints = raw
        .endpoints
        .iter()
        .flat_map(|e| e.get_ref().iter())
        .enumerate()
        .filter_map(|(j, e)| endpoint(e, &key(&format!("endpoints[{j}]")), d))
        .collect();
    let lb = raw
        .lb
        .as_ref()
        .and_then(|lb| one_of(lb, LB_POLICIES, &key("lb"), d))
        .unwrap_or(LbPolicy::RoundRobin);
    let hash_header = raw.hash_header.as_ref().and_then(|h| {
        // Parsed names are lower case, as the map compares them.
        let parsed = http::HeaderName::from_bytes(h.get_ref().as_bytes());
        if parsed.is_err() {
            d.error(
                h.span(),
                key("hash_header"),
                format!("{:?} is not a valid header name", h.get_ref()),
            );
        }
        parsed.ok()
    });
    let service_addresses = raw
        .service_addresses
        .iter()
        .enumerate()
        .map(|(j, a)| socket_addr(a, &key(&format!("service_addresses[{j}]")), d))
        .collect();
    let protocol = raw
        .protocol
        .as_ref()
        .and_then(|p| one_of(p, PROTOCOLS, &key("protocol"), d))
        .unwrap_or(UpstreamProtocol::Http1);
    if let Some(grpc) = raw
        .health_check
        .as_ref()
        .and_then(|h| h.get_ref().grpc_service.as_ref())
        && protocol != UpstreamProtocol::Http2
    {
        d.error(
            grpc.span(),
            key("health_check.grpc_service"),
            "gRPC health checks need an HTTP/2 cluster: set protocol = \"http2\"",
        );
    }
    ClusterConfig {
        name: raw.name.get_ref().clone(),
        endpoints,
        kubernetes_service,
        discovered_from,
        service_addresses,
        lb,
        protocol,
        connect_timeout: optional_duration(
            &raw.connect_timeout,
            Duration::from_secs(1),
            &key("connect_timeout"),
            d,
        ),
        timeout: optional_duration(&raw.timeout, Duration::from_secs(15), &key("timeout"), d),
        dns_refresh: optional_duration(
            &raw.dns_refresh,
            Duration::from_secs(5),
            &key("dns_refresh"),
            d,
        ),
        hash_header,
        idle_timeout: optional_duration(
            &raw.idle_timeout,
            Duration::from_secs(60),
            &key("idle_timeout"),
            d,
        ),
        max_idle_per_endpoint: raw
            .max_idle_per_endpoint
            .as_ref()
            .and_then(|n| int_in_range(n, 0, 100_000, &key("max_idle_per_endpoint"), d))
            .unwrap_or(256),
        max_replay_body: raw
            .max_replay_body
            .as_ref()
            .map_or(64 * 1024, |m| memory_size(m, &key("max_replay_body"), d)),
        tls: raw
            .tls
            .as_ref()
            .and_then(|t| crate::config::tls::cluster_tls(t, &key("tls"), base, d)),
        health_check: raw
            .health_check
            .as_ref()
            .map(|h| crate::config::resilience::health_check(h, &key("health_check"), d)),
        outlier: raw
            .outlier
            .as_ref()
            .map(|o| crate::config::resilience::outlier(o, &key("outlier"), d)),
        circuit_breaker: crate::config::resilience::circuit_breaker(
            raw.circuit_breaker.as_ref(),
            &key("circuit_breaker"),
            d,
        ),
    }
}

pub(super) fn endpoint(
    raw: &Spanned<crate::config::raw::RawEndpoint>,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Option<EndpointConfig> {
    let e = raw.get_ref();
    let expected =
        "expected \"host:port\", e.g. \"127.0.0.1:9001\" or \"myservice.default.svc:80\"";
    let Some((host, port)) = split_host_port(&e.address) else {
        d.error(
            raw.span(),
            key,
            format!("{:?} is not host:port; {expected}", e.address),
        );
        return None;
    };
    let Ok(port) = port.parse::<u16>() else {
        d.error(
            raw.span(),
            key,
            format!("{:?} has a bad port; {expected}", e.address),
        );
        return None;
    };
    if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
        d.error(
            raw.span(),
            key,
            format!("{host:?} is neither an IP address nor a DNS name; {expected}"),
        );
        return None;
    }
    let weight = match e.weight {
        None => 1,
        Some(w) if (1..=MAX_WEIGHT).contains(&w) => w as u32,
        Some(w) => {
            d.error(
                raw.span(),
                format!("{key}.weight"),
                format!("{w} is out of range, expected a weight from 1 to {MAX_WEIGHT}"),
            );
            return None;
        }
    };
    Some(EndpointConfig {
        host: host.to_owned(),
        port,
        weight,
    })
}

/// Splits "host:port" and "[v6]:port".
pub(super) fn split_host_port(address: &str) -> Option<(&str, &str)> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host, port));
    }
    let (host, port) = address.rsplit_once(':')?;
    (!host.is_empty() && !host.contains(':')).then_some((host, port))
}

pub(super) fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        })
}
