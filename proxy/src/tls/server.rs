//! HTTPS on a listener: certificates chosen by SNI, ALPN `h2` and `http/1.1`, and optionally
//! client certificates checked against a CA (mTLS), required or optional.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use super::{TlsError, pem, provider};
use crate::config::ListenerTlsConfig;

/// Builds the rustls config of a listener, reading and checking every file it names.
pub fn server_config(tls: &ListenerTlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let mut resolver = SniResolver::default();
    for served in &tls.certs {
        let key = Arc::new(pem::certified_key(&served.cert, &served.key)?);
        if served.server_names.is_empty() || resolver.default.is_none() {
            resolver.default.get_or_insert_with(|| Arc::clone(&key));
        }
        for name in &served.server_names {
            resolver.by_name.push((name.clone(), Arc::clone(&key)));
        }
    }
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let roots = Arc::new(pem::roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if tls.require_client_cert {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| TlsError::file(ca, format!("cannot check clients with this CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Picks the certificate for a handshake by SNI: an exact name, then a `*.` wildcard, then the
/// default (so clients without SNI, or asking for an IP address, still get one).
#[derive(Debug, Default)]
struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl SniResolver {
    fn find(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let sni = sni.to_ascii_lowercase();
        let exact = self.by_name.iter().find(|(name, _)| *name == sni);
        let wildcard = || {
            self.by_name.iter().find(|(name, _)| {
                name.strip_prefix('*').is_some_and(|suffix| {
                    sni.ends_with(suffix) && !sni[..sni.len() - suffix.len()].contains('.')
                })
            })
        };
        exact.or_else(wildcard).map(|(_, key)| key)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|sni| self.find(sni))
            .or(self.default.as_ref())
            .cloned()
    }
}
