//! The control plane's HTTPS API, which proxies call (see [`crate::mesh::api`]): identities for
//! bootstrap or service-account tokens, bundles (long-polled), plugin binaries, reports.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::respond::{bearer, json, read_body, text};
use super::{ControlError, ControlPlane, ProxySeen, lock};
use crate::mesh::api::{self, IdentityGrant, Report};
use crate::mesh::settings::{self, MeshSettings};
use crate::tls::issue::{MeshCa, Workload};
use crate::tls::{PeerIdentity, provider};
use crate::unix_time::now as unix_now;

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl ControlPlane {
    pub(super) async fn serve_api(self: Arc<Self>, listener: TlsListener) {
        if let Ok(addr) = listener.socket.local_addr() {
            info!(%addr, "control plane API listening");
        }
        loop {
            let (tcp, remote) = match listener.socket.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = listener.acceptor.clone();
            let plane = Arc::clone(&self);
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => return debug!(%remote, "TLS handshake timed out"),
                };
                let spiffe_id = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(PeerIdentity::from_cert)
                    .and_then(|id| id.spiffe_id);
                let service = service_fn(move |req| {
                    let plane = Arc::clone(&plane);
                    let spiffe_id = spiffe_id.clone();
                    async move {
                        Ok::<_, Infallible>(plane.api(req, spiffe_id.as_deref(), remote).await)
                    }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                // A client that trickles its request head is dropped (slowloris).
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(super::respond::HEADER_READ_TIMEOUT);
                if let Err(e) = http.serve_connection(TokioIo::new(tls), service).await {
                    debug!(%remote, error = %e, "API connection error");
                }
            });
        }
    }

    async fn api(
        &self,
        req: Request<Incoming>,
        spiffe_id: Option<&str>,
        remote: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        match (req.method().clone(), path.as_str()) {
            (Method::POST, api::IDENTITY_PATH) => self.issue_identity(req).await,
            (Method::GET, api::BUNDLE_PATH) => match spiffe_id {
                Some(id) => self.bundle(id, &req).await,
                None => no_identity(),
            },
            (Method::GET, p) if p.starts_with(api::PLUGINS_PATH) => match spiffe_id {
                Some(_) => self.plugin(&p[api::PLUGINS_PATH.len()..]),
                None => no_identity(),
            },
            (Method::POST, api::REPORT_PATH) => match spiffe_id {
                Some(id) => self.report(id, remote, req).await,
                None => no_identity(),
            },
            (Method::POST, api::STATS_PATH) => match spiffe_id {
                Some(id) => self.take_stats(id, req).await,
                None => no_identity(),
            },
            _ => text(StatusCode::NOT_FOUND, "no such API\n"),
        }
    }

    /// Signs the CSR's public key for the workload the bootstrap token belongs to.
    async fn issue_identity(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let state = self.state.load_full();
        let token = bearer(&req).unwrap_or_default().to_owned();
        let workload = match self.authenticate(&state.settings, &token).await {
            Ok(Some(workload)) => workload,
            Ok(None) => {
                warn!("identity refused: the token is no workload's");
                return text(StatusCode::UNAUTHORIZED, "the token is no workload's\n");
            }
            Err(e) => {
                warn!(error = %e, "identity refused: cannot check the token");
                return text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n"));
            }
        };
        let workload = &workload;
        let Some(body) = read_body(req).await else {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "the CSR is too large\n");
        };
        let csr = std::str::from_utf8(&body)
            .ok()
            .and_then(|pem| rcgen::CertificateSigningRequestParams::from_pem(pem).ok());
        let Some(csr) = csr else {
            return text(
                StatusCode::BAD_REQUEST,
                "expected a PEM certificate signing request\n",
            );
        };
        let spiffe_id = workload.spiffe_id(&state.settings.control.trust_domain);
        let request = Workload {
            spiffe_id: Some(spiffe_id.clone()),
            dns_names: vec![format!("{}.{}.svc", workload.name, workload.namespace)],
            valid_for: state.settings.control.cert_lifetime,
        };
        match self.ca.sign(&request, &csr.public_key) {
            Ok(certificate) => {
                info!(%spiffe_id, "identity issued");
                metrics::counter!("switchyard_control_identities_issued_total").increment(1);
                json(
                    StatusCode::OK,
                    &IdentityGrant {
                        spiffe_id,
                        certificate,
                        ca: self.ca.ca_pem().to_owned(),
                    },
                )
            }
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("cannot sign: {e}\n")),
        }
    }

    /// The workload a token stands for: a bootstrap token, or (with `kubernetes_tokens`) a
    /// service-account token the API server vouches for.
    async fn authenticate(
        &self,
        settings: &MeshSettings,
        token: &str,
    ) -> Result<Option<settings::WorkloadSpec>, String> {
        let by_bootstrap = settings.workloads.iter().find(|w| {
            !w.token.is_empty()
                && crate::operations::admin::constant_time_eq(w.token.as_bytes(), token.as_bytes())
        });
        if let Some(w) = by_bootstrap {
            return Ok(Some(w.clone()));
        }
        if !settings.control.kubernetes_tokens || token.is_empty() {
            return Ok(None);
        }
        let account = crate::discovery::kubernetes::review_token(token)
            .await
            .map_err(|e| e.to_string())?;
        Ok(account.and_then(|(namespace, name)| {
            settings
                .workloads
                .iter()
                .find(|w| w.namespace == namespace && w.name == name)
                .cloned()
        }))
    }

    /// The caller's bundle; with `If-None-Match` equal to it, waits for a change first.
    async fn bundle(&self, spiffe_id: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let known = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_owned());
        let wait = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("wait=")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .min(api::MAX_WAIT_SECS);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let instance = req
            .headers()
            .get(api::INSTANCE_HEADER)
            .and_then(|v| v.to_str().ok());
        self.seen(spiffe_id, instance);
        let mut changes = self.generation.subscribe();
        let mut response = loop {
            let state = self.state.load_full();
            let Some(bundle) = state.bundles.get(spiffe_id) else {
                return text(
                    StatusCode::FORBIDDEN,
                    &format!("{spiffe_id} is not a workload of this mesh\n"),
                );
            };
            if known.as_deref() != Some(bundle.etag.as_str()) {
                let mut response = json(StatusCode::OK, bundle.as_ref());
                if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", bundle.etag)) {
                    response.headers_mut().insert(header::ETAG, etag);
                }
                break response;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    let mut response = text(StatusCode::NOT_MODIFIED, "");
                    *response.body_mut() = Full::new(Bytes::new());
                    break response;
                }
            }
        };
        self.seen(spiffe_id, instance);
        let generation = *self.generation.borrow();
        response
            .headers_mut()
            .insert(api::GENERATION_HEADER, HeaderValue::from(generation));
        response
    }

    /// Notes that a proxy this control plane has a report from is still polling.
    fn seen(&self, spiffe_id: &str, instance: Option<&str>) {
        let mut proxies = lock(&self.proxies);
        let known = instance.and_then(|i| proxies.get_mut(spiffe_id)?.get_mut(i));
        if let Some(proxy) = known {
            proxy.last_seen = unix_now();
        }
    }

    fn plugin(&self, sha256: &str) -> Response<Full<Bytes>> {
        match self.state.load().binaries.get(sha256) {
            Some(bytes) => {
                let mut response = Response::new(Full::new(bytes.clone()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/wasm"),
                );
                response
            }
            None => text(StatusCode::NOT_FOUND, "no plugin with that sha256\n"),
        }
    }

    async fn report(
        &self,
        spiffe_id: &str,
        remote: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let report = read_body(req)
            .await
            .and_then(|b| serde_json::from_slice::<Report>(&b).ok());
        let Some(report) = report else {
            return text(StatusCode::BAD_REQUEST, "expected a JSON report\n");
        };
        let instance = if report.instance.is_empty() {
            remote.to_string()
        } else {
            report.instance.clone()
        };
        if report.result != "ok" {
            warn!(%spiffe_id, %instance, etag = %report.etag, result = %report.result, "a proxy refused its bundle");
        }
        lock(&self.proxies)
            .entry(spiffe_id.to_owned())
            .or_default()
            .insert(
                instance.clone(),
                ProxySeen {
                    instance,
                    peer: remote.to_string(),
                    etag: report.etag,
                    version: report.version,
                    result: report.result,
                    reported_at: unix_now(),
                    last_seen: unix_now(),
                },
            );
        text(StatusCode::NO_CONTENT, "")
    }
}

/// The accepting socket of the HTTPS API.
pub(super) struct TlsListener {
    pub(super) socket: TcpListener,
    pub(super) acceptor: TlsAcceptor,
}

/// The API's TLS: a serving certificate from the mesh CA (made in memory at start), and client
/// certificates from the same CA asked for but optional — a proxy without an identity yet
/// calls `/v1/identity` with its bootstrap token.
pub(super) fn api_tls(
    ca: &MeshCa,
    settings: &MeshSettings,
) -> Result<Arc<ServerConfig>, ControlError> {
    let key = rcgen::KeyPair::generate().map_err(|e| ControlError::Tls(e.to_string()))?;
    let serving = Workload {
        spiffe_id: None,
        dns_names: settings.control.server_names.clone(),
        valid_for: Duration::from_secs(365 * 24 * 3600),
    };
    let chain = ca.sign(&serving, &key)?;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.ca_pem().as_bytes()).flatten()
    {
        roots
            .add(cert)
            .map_err(|e| ControlError::Tls(format!("mesh CA: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ControlError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

fn no_identity() -> Response<Full<Bytes>> {
    text(
        StatusCode::UNAUTHORIZED,
        "present the workload certificate from /v1/identity\n",
    )
}
