//! Who a verified peer certificate says it is: its SPIFFE ID (a `spiffe://` URI SAN), DNS
//! names and subject — what plugins, the forwarded-client-cert header and logs see.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The identity in a verified certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub spiffe_id: Option<String>,
    pub dns_names: Vec<String>,
    pub subject: Option<String>,
}

impl PeerIdentity {
    /// Reads the identity of a (verified) end-entity certificate.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Option<Self> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let mut identity = Self::default();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                        identity.spiffe_id.get_or_insert_with(|| (*uri).to_owned());
                    }
                    GeneralName::DNSName(dns) => identity.dns_names.push((*dns).to_owned()),
                    _ => {}
                }
            }
        }
        let subject = parsed.subject().to_string();
        identity.subject = (!subject.is_empty()).then_some(subject);
        Some(identity)
    }

    /// The `x-forwarded-client-cert`-style value: `URI=...;DNS=...;Subject="..."`.
    pub fn header_value(&self) -> String {
        let mut parts = Vec::new();
        if let Some(uri) = &self.spiffe_id {
            parts.push(format!("URI={uri}"));
        }
        for dns in &self.dns_names {
            parts.push(format!("DNS={dns}"));
        }
        if let Some(subject) = &self.subject {
            parts.push(format!("Subject=\"{}\"", subject.replace('"', "'")));
        }
        parts.join(";")
    }
}

/// What a request knows about the TLS session it came on: made by the listener at the
/// handshake, read by the proxy, plugins and telemetry.
#[derive(Debug, Default)]
pub struct TlsSession {
    /// The server name the client asked for.
    pub sni: Option<String>,
    /// The verified client certificate's identity (mTLS).
    pub identity: Option<PeerIdentity>,
}
