//! `[listener.tls]` and `[cluster.tls]`: structure and names only. Reading and checking the
//! certificates themselves (do they parse, does the key match, has the certificate expired) is
//! `crate::tls`'s job, at start and on every reload, so a bad file is refused with its path.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::Diagnostics;
use super::raw::{RawClusterTls, RawListenerTls};
use super::{ClusterTlsConfig, ListenerTlsConfig, ServedCert};

pub(super) fn listener_tls(
    raw: &Spanned<RawListenerTls>,
    key: &str,
    base: &Path,
    d: &mut Diagnostics<'_>,
) -> Option<ListenerTlsConfig> {
    let span = raw.span();
    let raw = raw.get_ref();
    let mut certs = Vec::new();
    match (&raw.cert, &raw.key) {
        (Some(cert), Some(key_file)) => certs.push(ServedCert {
            server_names: Vec::new(),
            cert: base.join(cert.get_ref()),
            key: base.join(key_file.get_ref()),
        }),
        (None, None) if !raw.sni.is_empty() => {}
        _ => {
            d.error(
                span.clone(),
                format!("{key}.cert"),
                "give both `cert` and `key` (PEM files): the certificate chain and its private key",
            );
            return None;
        }
    }
    for (j, sni) in raw.sni.iter().enumerate() {
        let sni = sni.get_ref();
        let names: Vec<String> = sni
            .server_names
            .get_ref()
            .iter()
            .map(|n| n.get_ref().trim().to_ascii_lowercase())
            .collect();
        if names.is_empty() || names.iter().any(String::is_empty) {
            d.error(
                sni.server_names.span(),
                format!("{key}.sni[{j}].server_names"),
                "name at least one server name (\"api.example.com\" or \"*.example.com\")",
            );
        }
        certs.push(ServedCert {
            server_names: names,
            cert: base.join(sni.cert.get_ref()),
            key: base.join(sni.key.get_ref()),
        });
    }
    let forward_client_cert = raw.forward_client_cert.as_ref().and_then(|h| {
        let parsed = http::HeaderName::from_bytes(h.get_ref().as_bytes());
        if parsed.is_err() {
            d.error(
                h.span(),
                format!("{key}.forward_client_cert"),
                format!("{:?} is not a valid header name", h.get_ref()),
            );
        }
        parsed.ok()
    });
    let client_ca = raw.client_ca.as_ref().map(|c| base.join(c.get_ref()));
    if client_ca.is_none()
        && let Some(require) = raw.require_client_cert.as_ref().filter(|r| *r.get_ref())
    {
        d.error(
            require.span(),
            format!("{key}.require_client_cert"),
            "client certificates need `client_ca`: the CA they must chain to",
        );
    }
    Some(ListenerTlsConfig {
        certs,
        require_client_cert: client_ca.is_some()
            && raw
                .require_client_cert
                .as_ref()
                .is_none_or(|r| *r.get_ref()),
        client_ca,
        forward_client_cert,
        handshake_timeout: super::validate::optional_duration(
            &raw.handshake_timeout,
            Duration::from_secs(10),
            &format!("{key}.handshake_timeout"),
            d,
        ),
    })
}

pub(super) fn cluster_tls(
    raw: &Spanned<RawClusterTls>,
    key: &str,
    base: &Path,
    d: &mut Diagnostics<'_>,
) -> Option<ClusterTlsConfig> {
    let span = raw.span();
    let raw = raw.get_ref();
    let Some(ca) = &raw.ca else {
        d.error(
            span,
            format!("{key}.ca"),
            "give `ca`: the CA bundle (PEM) the upstream's certificate must chain to",
        );
        return None;
    };
    if raw.cert.is_some() != raw.key.is_some() {
        d.error(
            raw.cert
                .as_ref()
                .or(raw.key.as_ref())
                .map_or(span, |s| s.span()),
            format!("{key}.cert"),
            "a client certificate needs both `cert` and `key`",
        );
    }
    let spiffe_id = raw.spiffe_id.as_ref().and_then(|s| {
        if !s.get_ref().starts_with("spiffe://") {
            d.error(
                s.span(),
                format!("{key}.spiffe_id"),
                "expected a SPIFFE ID: spiffe://trust-domain/path",
            );
            return None;
        }
        Some(s.get_ref().clone())
    });
    Some(ClusterTlsConfig {
        ca: base.join(ca.get_ref()),
        cert: raw.cert.as_ref().map(|c| base.join(c.get_ref())),
        key: raw.key.as_ref().map(|k| base.join(k.get_ref())),
        server_name: raw.server_name.as_ref().map(|s| s.get_ref().clone()),
        spiffe_id,
    })
}
