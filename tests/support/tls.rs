//! Certificates made in the test (with `switchyard certs`, as a user would) and a TLS client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::client::Reply;
use super::proxy::scratch_dir;
use super::run_ok;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A mesh CA in a scratch directory.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// `switchyard certs ca`.
    pub fn new() -> Self {
        let dir = scratch_dir();
        run_ok(
            Command::new(BIN)
                .args(["certs", "ca", "--out"])
                .arg(dir.join("ca")),
        );
        Self { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca/ca.pem")
    }

    /// `switchyard certs issue` into `<dir>/<name>/`.
    pub fn issue(&self, name: &str, spiffe_id: Option<&str>, dns: &[&str]) -> Issued {
        let out = self.dir.join(name);
        let mut cmd = Command::new(BIN);
        cmd.args(["certs", "issue", "--ca"])
            .arg(self.dir.join("ca"))
            .arg("--out")
            .arg(&out);
        if let Some(id) = spiffe_id {
            cmd.args(["--spiffe-id", id]);
        }
        for d in dns {
            cmd.args(["--dns", d]);
        }
        run_ok(&mut cmd);
        Issued {
            cert: out.join("cert.pem"),
            key: out.join("key.pem"),
        }
    }

    /// A certificate for `localhost` from this CA with the given key (for key types the CLI
    /// does not make: RSA, Ed25519).
    pub fn issue_with_key(&self, name: &str, key: rcgen::KeyPair) -> Issued {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        self.sign(name, params, key)
    }

    /// A certificate from this CA that expired yesterday (made directly with rcgen: the CLI
    /// will not make one).
    pub fn issue_expired(&self, name: &str) -> Issued {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now - time::Duration::days(1);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ];
        self.sign(name, params, rcgen::KeyPair::generate().unwrap())
    }

    /// Signs `params` for `key` with this CA and writes `<dir>/<name>/{cert,key}.pem`.
    fn sign(&self, name: &str, params: rcgen::CertificateParams, key: rcgen::KeyPair) -> Issued {
        let ca_key = rcgen::KeyPair::from_pem(
            &std::fs::read_to_string(self.dir.join("ca/ca-key.pem")).unwrap(),
        )
        .unwrap();
        let issuer =
            rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(self.ca()).unwrap(), ca_key)
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let out = self.dir.join(name);
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(out.join("key.pem"), key.serialize_pem()).unwrap();
        Issued {
            cert: out.join("cert.pem"),
            key: out.join("key.pem"),
        }
    }
}

/// What a TLS exchange showed besides the reply.
pub struct TlsReply {
    pub reply: Reply,
    /// The negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// The DNS names of the certificate the server presented.
    pub server_dns_names: Vec<String>,
}

/// A GET over TLS to `addr` as `server_name`, trusting `ca`, with a client certificate if
/// given, offering `alpn`. Any failure (handshake included) is an `Err` with the reason.
pub async fn tls_get(
    addr: SocketAddr,
    server_name: &str,
    ca: &Path,
    client: Option<&Issued>,
    alpn: &[&str],
) -> Result<TlsReply, String> {
    tls_get_path(addr, server_name, "/", ca, client, alpn).await
}

/// [`tls_get`] for `path` instead of `/`.
pub async fn tls_get_path(
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    ca: &Path,
    client: Option<&Issued>,
    alpn: &[&str],
) -> Result<TlsReply, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some(issued) => {
            let certs = CertificateDer::pem_file_iter(&issued.cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let server_dns_names = session
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| switchyard::tls::PeerIdentity::from_cert(c))
        .map(|id| id.dns_names)
        .unwrap_or_default();
    let req = Request::get(format!("https://{server_name}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if alpn.as_deref() == Some("h2") {
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = path.parse().unwrap();
        req.headers_mut()
            .insert("host", server_name.parse().unwrap());
        sender.send_request(req).await.map_err(|e| e.to_string())?
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(TlsReply {
        reply: Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        },
        alpn,
        server_dns_names,
    })
}
