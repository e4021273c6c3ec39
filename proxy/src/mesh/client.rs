//! The agent's HTTPS calls to the control plane: one request per connection (they are rare:
//! a long poll, a renewal, a plugin download), the control plane verified against the mesh CA,
//! and the workload's certificate presented once it has one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::tls::{TlsError, pem, provider};

/// The largest answer read (a plugin binary is the largest thing served).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("control plane at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("control plane answered: {0}")]
    Refused(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// An answer: status, headers and the whole body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Where the control plane is and how to reach it.
#[derive(Clone)]
pub struct ControlClient {
    base: Uri,
    host: String,
    port: u16,
    tls: Arc<ClientConfig>,
}

impl ControlClient {
    /// A client that trusts `ca` and, when `identity` (chain and key in one PEM file) is given,
    /// presents it.
    pub fn new(url: &Uri, ca: &Path, identity: Option<&Path>) -> Result<Self, TlsError> {
        let roots = Arc::new(pem::roots(ca)?);
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
        let config = match identity {
            Some(file) => builder
                .with_client_auth_cert(pem::certs(file)?, pem::key(file)?)
                .map_err(|e| TlsError::file(file, format!("cannot use as a client cert: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        let host = url.host().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            base: url.clone(),
            port: url.port_u16().unwrap_or(443),
            host,
            tls: Arc::new(config),
        })
    }

    /// Sends one request and reads the whole answer within `timeout`.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        tokio::time::timeout(
            timeout,
            self.call_now(method, path_and_query, headers, body),
        )
        .await
        .unwrap_or_else(|_| Err(self.failed(format!("no answer within {timeout:?}"))))
    }

    async fn call_now(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, CallError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.failed(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| self.failed(format!("bad host name: {e}")))?;
        let tls = TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| self.failed(format!("TLS handshake: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.failed(format!("HTTP handshake: {e}")))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(http::header::HOST, self.authority());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| self.failed(format!("bad request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.failed(format!("request failed: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| self.failed(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    fn authority(&self) -> String {
        self.base
            .authority()
            .map_or_else(|| self.host.clone(), |a| a.to_string())
    }

    fn failed(&self, reason: String) -> CallError {
        CallError::Unreachable {
            url: self.base.to_string(),
            reason,
        }
    }
}
