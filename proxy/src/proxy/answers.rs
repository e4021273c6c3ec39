//! Answers: the response on its way to the client before the response hooks — the upstream's,
//! a plugin's own, or the proxy's error for what went wrong.

use std::sync::Arc;

use super::upgrade::DownstreamUpgrade;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use tracing::warn;

use crate::body::{BodyTooLarge, ProxyBody};
use crate::headers;
use crate::local_response::{LocalError, X_SWITCHYARD_OVERLOADED, text_response};
use crate::plugin::{Decided, LocalResponse, RequestState};
use crate::upstream::{Admission, Cluster, UpstreamBody, UpstreamError as SendError};

use super::attempts::Attempted;
use super::upgrade::tunnel;

/// A response on its way to the client, before the response hooks ran.
pub(super) struct Answer {
    pub(super) head: http::response::Parts,
    pub(super) body: ProxyBody,
}

/// The upstream's response as the client will get it: hop-by-hop headers stripped, `via`
/// added, upgrades wired up.
pub(super) fn upstream_answer(
    response: Response<UpstreamBody>,
    attempted: Attempted,
    admission: Option<Admission>,
    downstream_upgrade: &mut Option<DownstreamUpgrade>,
) -> Answer {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let version = response.version();
    let (mut head, body) = response.into_parts();
    let body = if switching {
        match (downstream_upgrade.take(), body.into_upgraded()) {
            (Some(downstream), Some(upstream)) => {
                tokio::spawn(tunnel(
                    downstream,
                    upstream,
                    attempted.in_flight.endpoint().addr,
                ));
                ProxyBody::Empty
            }
            _ => {
                let detail = format!(
                    "{} switched protocols without being asked to",
                    attempted.in_flight.endpoint().addr
                );
                return error_answer(LocalError::UpstreamReset, &detail);
            }
        }
    } else {
        ProxyBody::Upstream {
            body,
            _in_flight: attempted.in_flight,
            _admission: admission,
        }
    };
    headers::strip_hop_by_hop(&mut head.headers, switching);
    if body.passed_fields().is_none() {
        crate::forwarding::append_via(&mut head.headers, version);
    }
    // Else `via` goes after the passed fields (`ListenerProxy::finish`).
    Answer { head, body }
}

/// An upstream answer's passed fields read into its head's map after all (for a hook, or a
/// translation, that reads them), with the `via` [`upstream_answer`] left to go after them.
pub(super) fn unpass_answer(
    headers: &mut http::HeaderMap,
    version: http::Version,
    passed: Option<switchyard_http1::client::PassedFields>,
) {
    if passed.is_some() {
        headers::unpass(headers, passed);
        crate::forwarding::append_via(headers, version);
    }
}

/// 503 with `x-switchyard-overloaded` naming the circuit breaker that refused the request.
pub(super) fn overloaded(cluster: &Cluster, limit: &'static str) -> Answer {
    let mut answer = error_answer(
        LocalError::Overloaded,
        &format!("cluster {:?} is at its {limit} limit", cluster.name()),
    );
    answer
        .head
        .headers
        .insert(&X_SWITCHYARD_OVERLOADED, HeaderValue::from_static(limit));
    metrics::counter!("switchyard_circuit_breaker_overflows_total", "cluster" => cluster.name().to_owned(), "limit" => limit).increment(1);
    answer
}

/// When sending failed because the client's own body did (cut short, malformed chunks, over
/// `max_request_body`), the client gets 400 or 413, not a 502 blaming the upstream.
pub(super) fn downstream_body_error(error: &SendError) -> Option<Answer> {
    let SendError::Reset { source, .. } = error else {
        return None;
    };
    if !source.is_request_body() {
        return None;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(source);
    while let Some(e) = cause {
        if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
            return Some(error_answer(
                LocalError::BodyTooLarge,
                &too_large.to_string(),
            ));
        }
        cause = e.source();
    }
    Some(error_answer(
        LocalError::BadRequest,
        &format!("the request body could not be read: {source}"),
    ))
}

pub(super) fn error_answer(kind: LocalError, detail: &str) -> Answer {
    let (head, body) = kind.response(detail).into_parts();
    Answer { head, body }
}

pub(super) fn error_answer_status(status: StatusCode, code: HeaderValue, detail: &str) -> Answer {
    let (head, body) = text_response(status, code, detail).into_parts();
    Answer { head, body }
}

/// A plugin's own response; headers it got wrong are dropped with a warning, not a failure. An
/// empty body ends the stream with the head (one HTTP/2 HEADERS frame with END_STREAM), which
/// is what makes a gRPC status given as headers a valid trailers-only response.
pub(super) fn local_answer(local: LocalResponse) -> Answer {
    let body = if local.body.is_empty() {
        ProxyBody::Empty
    } else {
        ProxyBody::full(local.body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(local.status).unwrap_or_else(|_| {
        warn!(
            status = local.status,
            "plugin answered with an invalid status; sending 500"
        );
        StatusCode::INTERNAL_SERVER_ERROR
    });
    for (name, value) in local.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().append(name, value);
            }
            _ => warn!(header = %name, "plugin response header is not valid HTTP; dropped"),
        }
    }
    let (head, body) = response.into_parts();
    Answer { head, body }
}

pub(super) fn plugin_failed(plugin: &str) -> Response<ProxyBody> {
    let Answer { head, body } = plugin_failed_answer(plugin);
    Response::from_parts(head, body)
}

/// 503 for a fail-closed plugin that trapped, ran out of time or memory.
pub(super) fn plugin_failed_answer(plugin: &str) -> Answer {
    let code = HeaderValue::from_str(&format!("plugin {plugin}"))
        .unwrap_or(HeaderValue::from_static("plugin"));
    error_answer_status(
        StatusCode::SERVICE_UNAVAILABLE,
        code,
        &format!("plugin {plugin:?} failed while handling this request"),
    )
}

/// Applies a response hook's decision: a plugin's own answer replaces head and body. Returns
/// the name of a fail-closed plugin that failed, whose 503 then becomes the response.
pub(super) fn apply_response_step(
    decided: Decided,
    state: &mut RequestState,
    body: &mut ProxyBody,
) -> Option<Arc<str>> {
    match decided {
        Decided::Continue => None,
        Decided::Respond(local) => {
            let replaced = local_answer(local);
            state.response = Some(replaced.head);
            *body = replaced.body;
            None
        }
        Decided::Failed(plugin) => Some(plugin),
    }
}
