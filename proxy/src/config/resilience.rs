//! `[cluster.health_check]`, `[cluster.outlier]` and `[cluster.circuit_breaker]`.

use std::time::Duration;

use toml::Spanned;

use super::error::Diagnostics;
use super::raw::{RawCircuitBreaker, RawHealthCheck, RawOutlier};
use super::validate::{int_in_range, optional_duration};
use super::{CircuitBreakerConfig, HealthCheckConfig, OutlierConfig};

fn count(
    raw: &Option<Spanned<i64>>,
    min: i64,
    max: i64,
    default: u32,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> u32 {
    raw.as_ref()
        .and_then(|n| int_in_range(n, min, max, key, d))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(default)
}

pub(super) fn health_check(
    raw: &Spanned<RawHealthCheck>,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> HealthCheckConfig {
    let raw = raw.get_ref();
    let k = |name: &str| format!("{key}.{name}");
    let path = raw
        .path
        .as_ref()
        .map_or_else(|| "/healthz".to_owned(), |p| p.get_ref().clone());
    if !path.starts_with('/')
        && let Some(p) = &raw.path
    {
        d.error(p.span(), k("path"), "expected a path starting with '/'");
    }
    let expected_statuses = raw
        .expected_statuses
        .as_ref()
        .map(|list| {
            list.get_ref()
                .iter()
                .filter_map(|s| int_in_range(s, 100, 599, &k("expected_statuses"), d))
                .filter_map(|s| u16::try_from(s).ok())
                .collect()
        })
        .unwrap_or_default();
    HealthCheckConfig {
        path,
        interval: optional_duration(&raw.interval, Duration::from_secs(5), &k("interval"), d),
        timeout: optional_duration(&raw.timeout, Duration::from_secs(1), &k("timeout"), d),
        healthy_threshold: count(
            &raw.healthy_threshold,
            1,
            100,
            1,
            &k("healthy_threshold"),
            d,
        ),
        unhealthy_threshold: count(
            &raw.unhealthy_threshold,
            1,
            100,
            2,
            &k("unhealthy_threshold"),
            d,
        ),
        expected_statuses,
        grpc_service: raw.grpc_service.as_ref().map(|s| s.get_ref().clone()),
    }
}

pub(super) fn outlier(
    raw: &Spanned<RawOutlier>,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> OutlierConfig {
    let raw = raw.get_ref();
    let k = |name: &str| format!("{key}.{name}");
    OutlierConfig {
        consecutive_5xx: count(&raw.consecutive_5xx, 1, 1000, 5, &k("consecutive_5xx"), d),
        consecutive_connect_failures: count(
            &raw.consecutive_connect_failures,
            1,
            1000,
            5,
            &k("consecutive_connect_failures"),
            d,
        ),
        base_ejection_time: optional_duration(
            &raw.base_ejection_time,
            Duration::from_secs(30),
            &k("base_ejection_time"),
            d,
        ),
        max_ejection_percent: count(
            &raw.max_ejection_percent,
            0,
            100,
            50,
            &k("max_ejection_percent"),
            d,
        ),
        panic_threshold: count(&raw.panic_threshold, 0, 100, 50, &k("panic_threshold"), d),
    }
}

pub(super) fn circuit_breaker(
    raw: Option<&Spanned<RawCircuitBreaker>>,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> CircuitBreakerConfig {
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return CircuitBreakerConfig::default();
    };
    let mut limit = |value: &Option<Spanned<i64>>, name: &str| {
        value
            .as_ref()
            .and_then(|n| int_in_range(n, 1, 10_000_000, &format!("{key}.{name}"), d))
    };
    CircuitBreakerConfig {
        max_connections: limit(&raw.max_connections, "max_connections"),
        max_pending_requests: limit(&raw.max_pending_requests, "max_pending_requests"),
        max_requests: limit(&raw.max_requests, "max_requests"),
        max_retries: limit(&raw.max_retries, "max_retries"),
    }
}
