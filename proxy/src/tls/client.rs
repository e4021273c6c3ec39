//! TLS to a cluster's endpoints: the upstream must present a certificate from the configured CA
//! for the expected name — or, with `spiffe_id`, carrying exactly that SPIFFE ID, as mesh
//! workloads' certificates do — and we present a client certificate when configured (mTLS).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{PeerIdentity, TlsError, pem, provider};
use crate::config::{ClusterTlsConfig, UpstreamProtocol};

/// What a pool needs to open TLS connections to one endpoint.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// Builds the TLS settings for a cluster whose endpoints are reached as `host`.
pub fn upstream_tls(
    tls: &ClusterTlsConfig,
    host: &str,
    protocol: UpstreamProtocol,
) -> Result<UpstreamTls, TlsError> {
    let roots = Arc::new(pem::roots(&tls.ca)?);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))?;
    let builder = match &tls.spiffe_id {
        Some(spiffe_id) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeVerifier {
                roots,
                expected: spiffe_id.clone(),
            })),
        None => {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| {
                    TlsError::file(&tls.ca, format!("cannot check servers with this CA: {e}"))
                })?;
            builder.with_webpki_verifier(verifier)
        }
    };
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let certified = pem::certified_key(cert, key)?;
            builder
                .with_client_auth_cert(certified.cert.clone(), pem::key(key)?)
                .map_err(|e| {
                    TlsError::file(cert, format!("cannot use as a client certificate: {e}"))
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
    };
    let name = tls.server_name.clone().unwrap_or_else(|| host.to_owned());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| TlsError::Config(format!("{name:?} is not a valid TLS server name")))?;
    Ok(UpstreamTls {
        config: Arc::new(config),
        server_name,
    })
}

/// Checks the chain against the CA and the SPIFFE ID instead of a DNS name.
#[derive(Debug)]
struct SpiffeVerifier {
    roots: Arc<RootCertStore>,
    expected: String,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        let found = PeerIdentity::from_cert(end_entity).and_then(|id| id.spiffe_id);
        if found.as_deref() == Some(self.expected.as_str()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the upstream certificate has SPIFFE ID {}, expected {}",
                found.as_deref().unwrap_or("(none)"),
                self.expected
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
