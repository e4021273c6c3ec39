//! A mesh CA in two commands (`switchyard certs ca`, `switchyard certs issue`): an ECDSA P-256 CA
//! and workload certificates carrying a SPIFFE ID and DNS names, usable both to serve and as
//! client certificates.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{0}")]
    Cert(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Writes `ca.pem` and `ca-key.pem` into `out`.
pub fn make_ca(out: &Path, name: &str, valid_for: Duration) -> Result<(), IssueError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "switchyard mesh");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, valid_for);
    let cert = params.self_signed(&key)?;
    write(out, "ca.pem", &cert.pem())?;
    write(out, "ca-key.pem", &key.serialize_pem())
}

/// What a workload certificate names.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub spiffe_id: Option<String>,
    pub dns_names: Vec<String>,
    pub valid_for: Duration,
}

/// Issues `cert.pem` (leaf, then the CA) and `key.pem` into `out`, signed by the CA in `ca_dir`.
pub fn issue(ca_dir: &Path, workload: &Workload, out: &Path) -> Result<(), IssueError> {
    let ca = MeshCa::load(&ca_dir.join("ca.pem"), &ca_dir.join("ca-key.pem"))?;
    let key = KeyPair::generate()?;
    let chain = ca.sign(workload, &key)?;
    write(out, "cert.pem", &chain)?;
    write(out, "key.pem", &key.serialize_pem())
}

/// A CA that signs workload certificates: `switchyard certs issue` and the control plane's
/// identity service (which signs the public key of a CSR, never seeing the workload's key).
pub struct MeshCa {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl MeshCa {
    /// Reads the CA certificate and its key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, IssueError> {
        let ca_key = KeyPair::from_pem(&read(key)?)?;
        let ca_pem = read(cert)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        Ok(Self { issuer, ca_pem })
    }

    /// The CA certificate, PEM: the trust anchor workloads verify each other with.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A certificate for `workload` over `public_key`: the leaf then the CA, PEM.
    pub fn sign(
        &self,
        workload: &Workload,
        public_key: &impl rcgen::PublicKeyData,
    ) -> Result<String, IssueError> {
        let params = workload_params(workload)?;
        let cert = params.signed_by(public_key, &self.issuer)?;
        Ok(format!("{}{}", cert.pem(), self.ca_pem))
    }
}

/// What a workload certificate says: its names, usable to serve and as a client.
fn workload_params(workload: &Workload) -> Result<CertificateParams, IssueError> {
    let mut params = CertificateParams::default();
    let common_name = workload
        .spiffe_id
        .clone()
        .or_else(|| workload.dns_names.first().cloned())
        .ok_or_else(|| IssueError::Invalid("name the workload: --spiffe-id and/or --dns".into()))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(id) = &workload.spiffe_id {
        if !id.starts_with("spiffe://") {
            return Err(IssueError::Invalid(format!(
                "{id:?} is not a SPIFFE ID (spiffe://trust-domain/path)"
            )));
        }
        params
            .subject_alt_names
            .push(SanType::URI(id.clone().try_into()?));
    }
    for name in &workload.dns_names {
        // An address as a name ("127.0.0.1") is an IP SAN, which is what clients check for it.
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut params, workload.valid_for);
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that run behind: five minutes, or a tenth of a short lifetime, so
    // a holder that renews at two thirds of the certificate's span still renews late enough.
    let slack = (valid_for / 10).min(Duration::from_secs(300));
    params.not_before = now - slack;
    params.not_after = now + valid_for;
}

fn read(path: &Path) -> Result<String, IssueError> {
    std::fs::read_to_string(path).map_err(|source| IssueError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<(), IssueError> {
    let io = |source| IssueError::Io {
        path: dir.join(name).display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join(name), contents).map_err(|source| IssueError::Io {
        path: dir.join(name).display().to_string(),
        source,
    })
}
