//! TLS with rustls: serving HTTPS and mTLS on listeners (`server`), TLS and mTLS origination to
//! clusters (`client`), reading PEM files with errors that name them (`pem`), the verified
//! peer's identity (`identity`), and a small mesh CA for `switchyard certs` (`issue`).
//! One crypto provider (ring) and rustls' safe defaults: TLS 1.2 and 1.3 only.

pub mod client;
pub mod identity;
pub mod issue;
pub mod pem;
pub mod server;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use identity::{PeerIdentity, TlsSession};

/// The crypto provider every TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// Why TLS material was refused; every variant names the file or the setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Config(String),
}

impl TlsError {
    pub(crate) fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        Self::File {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}
