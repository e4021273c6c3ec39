//! The proxy's workload identity: a key made here, a certificate for it from the control plane,
//! renewed at two thirds of its life.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use tracing::{info, warn};

use super::settings::Token;
use super::{Agent, Backoff, write_atomically};
use crate::mesh::api::{self, IdentityGrant};
use crate::mesh::render::{IDENTITY_FILE, MESH_CA_FILE};
use crate::operations::reload::Reloader;

impl Agent {
    /// A new key, a certificate for it from the control plane, both written in one rename.
    pub(super) async fn request_identity(&self) -> Result<(), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|e| e.to_string())?;
        let token = match &self.settings.token {
            Token::Inline(t) => t.clone(),
            Token::File(f) => std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?
                .trim()
                .to_owned(),
        };
        let client = self.client(false).map_err(|e| e.to_string())?;
        let authorization = format!("Bearer {token}");
        let answer = client
            .call(
                Method::POST,
                api::IDENTITY_PATH,
                &[("authorization", authorization.as_str())],
                Bytes::from(csr),
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| {
                self.link.failed(e.to_string());
                e.to_string()
            })?;
        self.link.answered(None);
        if answer.status != StatusCode::OK {
            return Err(format!(
                "identity refused: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            ));
        }
        let grant: IdentityGrant =
            serde_json::from_slice(&answer.body).map_err(|e| format!("not a grant: {e}"))?;
        // A token that belongs to another workload is a deployment mistake worth stopping on.
        let expected = format!(
            "/ns/{}/sa/{}",
            self.settings.namespace, self.settings.workload
        );
        if !grant.spiffe_id.ends_with(&expected) {
            return Err(format!(
                "the token is {}'s, but this proxy is {}/{}",
                grant.spiffe_id, self.settings.namespace, self.settings.workload
            ));
        }
        write_atomically(&self.path(MESH_CA_FILE), grant.ca.as_bytes())
            .map_err(|e| e.to_string())?;
        let identity = format!("{}{}", grant.certificate, key.serialize_pem());
        write_atomically(&self.path(IDENTITY_FILE), identity.as_bytes())
            .map_err(|e| e.to_string())?;
        info!(spiffe_id = %grant.spiffe_id, "identity issued");
        publish_identity_expiry(&self.path(IDENTITY_FILE));
        Ok(())
    }

    /// Renews the certificate at two thirds of its life, for the life of the process.
    pub(super) async fn renew(self: Arc<Self>, reloader: Arc<Reloader>) {
        loop {
            let renew_at = identity_span(&self.path(IDENTITY_FILE))
                .map_or_else(SystemTime::now, |(_, renew_at, _)| renew_at);
            if let Ok(wait) = renew_at.duration_since(SystemTime::now()) {
                tokio::time::sleep(wait).await;
            }
            let mut backoff = Backoff::default();
            while let Err(e) = self.request_identity().await {
                warn!(error = %e, "cannot renew the identity; retrying");
                backoff.wait().await;
            }
            match reloader.reload("identity").await {
                Ok(_) => info!("identity renewed"),
                Err(e) => warn!("renewed identity refused: {e}"),
            }
        }
    }
}

/// `switchyard_identity_expiry_timestamp_seconds`: alert on it coming close (renewal failing).
pub(super) fn publish_identity_expiry(path: &Path) {
    if let Some((_, _, expires)) = identity_span(path) {
        let at = expires
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("switchyard_identity_expiry_timestamp_seconds").set(at);
    }
}

/// When the certificate in `path` was issued, when to renew it (two thirds into its life) and
/// when it expires; `None` if there is no readable certificate.
pub(super) fn identity_span(path: &Path) -> Option<(SystemTime, SystemTime, SystemTime)> {
    let chain = crate::tls::pem::certs(path).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let renew_at = not_before + (not_after - not_before) * 2 / 3;
    Some((at(not_before), at(renew_at), at(not_after)))
}

/// The SPIFFE ID of the certificate in `path`, if it has one.
pub(super) fn spiffe_id(path: &Path) -> Option<String> {
    let chain = crate::tls::pem::certs(path).ok()?;
    crate::tls::PeerIdentity::from_cert(chain.first()?)?.spiffe_id
}
