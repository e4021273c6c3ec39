//! `[access_log]` and `[tracing]`.

use std::path::Path;
use std::time::Duration;

use super::error::Diagnostics;
use super::raw::{RawAccessLog, RawTracing};
use super::validate::{int_in_range, optional_duration};
use super::{AccessLogConfig, AccessLogField, AccessLogTarget, TracingConfig};

pub(super) fn access_log(
    raw: &RawAccessLog,
    base: &Path,
    d: &mut Diagnostics<'_>,
) -> AccessLogConfig {
    let target = match &raw.path {
        None => AccessLogTarget::Stdout,
        Some(p) if p.get_ref() == "stdout" || p.get_ref() == "-" => AccessLogTarget::Stdout,
        Some(p) if p.get_ref().trim().is_empty() => {
            d.error(
                p.span(),
                "access_log.path",
                "expected \"stdout\" or a file path",
            );
            AccessLogTarget::Stdout
        }
        Some(p) => AccessLogTarget::File(base.join(p.get_ref())),
    };
    let fields = match &raw.fields {
        None => AccessLogField::ALL.to_vec(),
        Some(list) => {
            if list.get_ref().is_empty() {
                d.error(list.span(), "access_log.fields", "name at least one field");
            }
            list.get_ref()
                .iter()
                .filter_map(|f| {
                    let found = AccessLogField::ALL
                        .into_iter()
                        .find(|known| known.name() == f.get_ref());
                    if found.is_none() {
                        let names: Vec<&str> =
                            AccessLogField::ALL.iter().map(|f| f.name()).collect();
                        d.error(
                            f.span(),
                            "access_log.fields",
                            format!(
                                "unknown field {:?}, expected any of: {}",
                                f.get_ref(),
                                names.join(", ")
                            ),
                        );
                    }
                    found
                })
                .collect()
        }
    };
    AccessLogConfig { target, fields }
}

pub(super) fn tracing(raw: &RawTracing, d: &mut Diagnostics<'_>) -> TracingConfig {
    let endpoint = raw.otlp_endpoint.get_ref();
    let otlp_endpoint = match endpoint.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => uri,
        _ => {
            d.error(
                raw.otlp_endpoint.span(),
                "tracing.otlp_endpoint",
                format!(
                    "{endpoint:?} is not an OTLP/HTTP address; expected e.g. \"http://127.0.0.1:4318/v1/traces\""
                ),
            );
            http::Uri::from_static("http://127.0.0.1:4318/v1/traces")
        }
    };
    let sampling = match &raw.sampling {
        None => 1.0,
        Some(s) if (0.0..=1.0).contains(s.get_ref()) => *s.get_ref(),
        Some(s) => {
            d.error(
                s.span(),
                "tracing.sampling",
                format!("{} is out of range, expected 0.0 to 1.0", s.get_ref()),
            );
            1.0
        }
    };
    let size = |raw: &Option<toml::Spanned<i64>>,
                max: i64,
                default: usize,
                key: &str,
                d: &mut Diagnostics<'_>| {
        raw.as_ref()
            .and_then(|n| int_in_range(n, 1, max, key, d))
            .unwrap_or(default)
    };
    TracingConfig {
        otlp_endpoint,
        sampling,
        service_name: raw
            .service_name
            .as_ref()
            .map_or_else(|| "switchyard".to_owned(), |s| s.get_ref().clone()),
        batch_size: size(&raw.batch_size, 10_000, 512, "tracing.batch_size", d),
        flush_interval: optional_duration(
            &raw.flush_interval,
            Duration::from_secs(1),
            "tracing.flush_interval",
            d,
        ),
        max_queue: size(&raw.max_queue, 1_000_000, 4096, "tracing.max_queue", d),
    }
}
