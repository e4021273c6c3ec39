//! Responses the proxy makes itself when it cannot forward: short plain text naming what failed,
//! and an `x-switchyard-error` header a program can match on.

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;

/// Names the reason for a locally made error response.
pub static X_SWITCHYARD_ERROR: HeaderName = HeaderName::from_static("x-switchyard-error");

/// Why the proxy answered by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalError {
    /// No destination: the listener has no default cluster and no plugin chose one.
    NoRoute,
    /// The destination cluster has no endpoint to send to.
    NoEndpoint,
    /// Could not connect to, or talk HTTP with, the chosen endpoint.
    ConnectFailure,
    /// The upstream closed or reset the connection before answering.
    UpstreamReset,
    /// The upstream did not answer within the cluster's timeout.
    UpstreamTimeout,
    /// The request could not be turned into a valid upstream request.
    BadRequest,
    /// A plugin routed the request to a cluster that does not exist (a config mistake).
    UnknownDestination,
    /// A circuit breaker is open: the cluster has as many connections, waiting requests,
    /// requests or retries as it may.
    Overloaded,
    /// The request target is longer than the listener allows.
    UriTooLong,
    /// The request body is larger than the listener allows.
    BodyTooLarge,
}

/// Names the circuit-breaker limit that refused a request.
pub static X_SWITCHYARD_OVERLOADED: HeaderName = HeaderName::from_static("x-switchyard-overloaded");

impl LocalError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Self::ConnectFailure | Self::UpstreamReset => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::UnknownDestination => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The `x-switchyard-error` value.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoRoute => "no-route",
            Self::NoEndpoint => "no-endpoint",
            Self::ConnectFailure => "connect-failure",
            Self::UpstreamReset => "upstream-reset",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::BadRequest => "bad-request",
            Self::UnknownDestination => "unknown-destination",
            Self::Overloaded => "overloaded",
            Self::UriTooLong => "uri-too-long",
            Self::BodyTooLarge => "body-too-large",
        }
    }

    /// A response saying `detail`, e.g. `cluster "v1": connection refused`.
    pub fn response(self, detail: &str) -> Response<ProxyBody> {
        text_response(self.status(), HeaderValue::from_static(self.code()), detail)
    }
}

/// A locally made error: `"<status> <reason>: <detail>"` as plain text, with `code` in
/// `x-switchyard-error`.
pub fn text_response(status: StatusCode, code: HeaderValue, detail: &str) -> Response<ProxyBody> {
    let text = format!(
        "{} {}: {detail}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(&X_SWITCHYARD_ERROR, code);
    response
}
