//! Certificates and keys from PEM files, checked enough to fail early and clearly: the file is
//! readable, holds what it should, the key belongs to the certificate, and the certificate is
//! within its validity period.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// Every certificate in a PEM file, in order (a chain: leaf first).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| {
        TlsError::file(
            path,
            format!("cannot read: {}", crate::file_access::describe(&e)),
        )
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::file(
            path,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| {
        TlsError::file(
            path,
            format!("cannot read: {}", crate::file_access::describe(&e)),
        )
    })?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| TlsError::file(path, format!("holds no usable private key: {e}")))
}

/// A certificate chain with its key, ready to serve or to present as a client: the key must
/// match the leaf, and the leaf must be valid now.
pub fn certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certs(cert_path)?;
    let key = key(key_path)?;
    let signing = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::file(key_path, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        TlsError::file(
            key_path,
            format!(
                "this key does not belong to the certificate in {}",
                cert_path.display()
            ),
        )
    })?;
    check_validity(&certified.cert[0], cert_path)?;
    Ok(certified)
}

/// Refuses a certificate that has expired or is not valid yet.
fn check_validity(cert: &CertificateDer<'_>, path: &Path) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| TlsError::file(path, format!("cannot parse the certificate: {e}")))?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(TlsError::file(
            path,
            format!("the certificate expired on {}", validity.not_after),
        ));
    }
    if validity.not_before > now {
        return Err(TlsError::file(
            path,
            format!(
                "the certificate is not valid before {}",
                validity.not_before
            ),
        ));
    }
    Ok(())
}

/// A trust store from a CA bundle.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::file(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}
