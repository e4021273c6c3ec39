//! `http.call`: a plugin's request to a named cluster, sent with the proxy's own pools and
//! balancers, awaited without blocking a proxy thread.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};

use super::bindings::{HttpCallError, HttpRequest, HttpResponse};
use crate::body::ProxyBody;
use crate::config::UpstreamProtocol;
use crate::headers;
use crate::upstream::{Clusters, Pace, ResponseFields};

use crate::sandbox::{
    CALLOUT_DEFAULT_TIMEOUT as DEFAULT_TIMEOUT, CALLOUT_MAX_BODY as MAX_BODY,
    CALLOUT_MAX_TIMEOUT as MAX_TIMEOUT,
};

pub async fn call(
    clusters: &Clusters,
    cluster_name: &str,
    request: HttpRequest,
) -> Result<HttpResponse, HttpCallError> {
    let cluster = clusters
        .by_name(cluster_name)
        .ok_or(HttpCallError::UnknownCluster)?;
    let endpoint = cluster.pick(None).ok_or(HttpCallError::NoEndpoint)?;
    let timeout = request
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, |ms| Duration::from_millis(u64::from(ms)))
        .min(MAX_TIMEOUT);

    let method =
        Method::from_bytes(request.method.as_bytes()).map_err(|_| HttpCallError::Invalid)?;
    let mut req = Request::builder()
        .method(method)
        .uri(request.path.as_str())
        .body(ProxyBody::full(request.body))
        .map_err(|_| HttpCallError::Invalid)?;
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| HttpCallError::Invalid)?;
        let value = HeaderValue::from_str(value).map_err(|_| HttpCallError::Invalid)?;
        req.headers_mut().append(name, value);
    }
    if !req.headers().contains_key(http::header::HOST)
        && let Ok(host) = HeaderValue::from_str(cluster_name)
    {
        req.headers_mut().insert(http::header::HOST, host);
    }
    headers::set_upstream_target(&mut req, cluster.config.protocol == UpstreamProtocol::Http2)
        .map_err(|_| HttpCallError::Invalid)?;

    let in_flight = endpoint.start_request();
    let endpoint = in_flight.endpoint();
    let exchange = async {
        // Made by a plugin's hook, so paced as requests on a listener with plugins are.
        let response = endpoint
            .send(
                req,
                &[],
                Pace::AfterReadyRequests,
                ResponseFields::Map,
                None,
            )
            .await
            .map_err(|e| {
                if e.is_connect() {
                    HttpCallError::ConnectFailure
                } else {
                    HttpCallError::Reset
                }
            })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|_| HttpCallError::Invalid)?
            .to_bytes();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpCallError::Timeout)?
}
