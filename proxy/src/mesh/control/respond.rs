//! Small pieces both control plane APIs answer with.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

/// How long a client may take to send a request head.
pub(super) const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest CSR, report or weights body accepted.
const MAX_REQUEST_BODY: usize = 64 * 1024;

/// The token of an `Authorization: Bearer` header.
pub(super) fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The whole body, or `None` past [`MAX_REQUEST_BODY`] or on a broken connection.
pub(super) async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    read_body_up_to(req, MAX_REQUEST_BODY).await
}

/// The whole body, or `None` past `limit` bytes or on a broken connection.
pub(super) async fn read_body_up_to(req: Request<Incoming>, limit: usize) -> Option<Bytes> {
    Limited::new(req.into_body(), limit)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

/// A plain-text answer.
pub(super) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON answer.
pub(super) fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
