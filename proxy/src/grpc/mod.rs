//! What the proxy knows of gRPC: which requests are gRPC, the `grpc-timeout` deadline, the
//! status a response ends with, and how the proxy's own error answers become trailers-only gRPC
//! responses (HTTP 200 with `grpc-status` and `grpc-message`, one HEADERS frame), since a gRPC
//! client reads a plain 504 as `UNAVAILABLE` at best and `UNKNOWN` at worst.

pub mod web;

use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::local_response::{LocalError, X_SWITCHYARD_ERROR};

pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRPC status codes the proxy itself answers with.
pub mod code {
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const UNAUTHENTICATED: u8 = 16;
    pub const PERMISSION_DENIED: u8 = 7;
    pub const UNKNOWN: u8 = 2;
}

/// Whether a message is gRPC (`application/grpc`, `application/grpc+proto`, ...; not gRPC-Web).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
    })
}

/// The status in a `grpc-status` header or trailer.
pub fn status(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get(&GRPC_STATUS)?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// A bounded label for a gRPC status: `""` when there is none (not gRPC), the code for the 17
/// defined ones, else `other`.
pub fn status_label(status: Option<u8>) -> &'static str {
    const CODES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    match status {
        None => "",
        Some(code) => CODES.get(usize::from(code)).copied().unwrap_or("other"),
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `remaining` as a `grpc-timeout` value, in the finest unit that fits 8 digits.
pub fn format_timeout(remaining: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let value = [
        (remaining.as_nanos(), 'n'),
        (remaining.as_micros(), 'u'),
        (remaining.as_millis(), 'm'),
        (u128::from(remaining.as_secs()), 'S'),
    ]
    .into_iter()
    .find(|(n, _)| *n <= MAX)
    .map_or_else(
        || format!("{}M", (remaining.as_secs() / 60).min(99_999_999)),
        |(n, unit)| format!("{n}{unit}"),
    );
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("0n"))
}

/// The gRPC status for one of the proxy's own errors, as Envoy maps them: a timeout is
/// `DEADLINE_EXCEEDED`, an oversized body `RESOURCE_EXHAUSTED`, otherwise the HTTP-to-gRPC
/// mapping of grpc/doc/http-grpc-status-mapping.md.
fn status_for(response_status: StatusCode, error: &[u8]) -> u8 {
    if error == LocalError::UpstreamTimeout.code().as_bytes() {
        return code::DEADLINE_EXCEEDED;
    }
    if error == LocalError::BodyTooLarge.code().as_bytes() {
        return code::RESOURCE_EXHAUSTED;
    }
    match response_status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// Turns the proxy's own error answer (it carries `x-switchyard-error`) to a gRPC request into a
/// trailers-only gRPC response with the matching status and the error text as its message.
/// Anything else — the upstream's answers, plugins' own — is left as it is.
pub fn local_error_as_grpc(response: Response<ProxyBody>) -> Response<ProxyBody> {
    let Some(error) = response.headers().get(&X_SWITCHYARD_ERROR).cloned() else {
        return response;
    };
    if response.status() == StatusCode::OK || response.headers().contains_key(&GRPC_STATUS) {
        return response;
    }
    let status = status_for(response.status(), error.as_bytes());
    let message = match response.body() {
        ProxyBody::Full(Some(text)) => percent_encode_message(text.trim_ascii()),
        _ => HeaderValue::from_static(""),
    };
    let mut reply = Response::new(ProxyBody::Empty);
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(&GRPC_STATUS, HeaderValue::from(u16::from(status)));
    headers.insert(&GRPC_MESSAGE, message);
    headers.insert(&X_SWITCHYARD_ERROR, error);
    for (name, value) in response.headers() {
        if !headers.contains_key(name) && name != CONTENT_TYPE {
            headers.append(name, value.clone());
        }
    }
    reply
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode_message(text: &[u8]) -> HeaderValue {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_format() {
        let parse = |s: &'static str| parse_timeout(&HeaderValue::from_static(s));
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse("123456789m"), None, "at most 8 digits");
        assert_eq!(parse("m"), None);
        assert_eq!(parse("10x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(format_timeout(Duration::from_millis(100)), "100000u");
        assert_eq!(format_timeout(Duration::from_micros(1500)), "1500000n");
        assert_eq!(format_timeout(Duration::from_secs(5)), "5000000u");
        assert_eq!(format_timeout(Duration::from_secs(500)), "500000m");
        assert_eq!(
            parse_timeout(&format_timeout(Duration::from_millis(1234))),
            Some(Duration::from_millis(1234))
        );
    }

    #[test]
    fn statuses_and_labels_are_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert(&GRPC_STATUS, HeaderValue::from_static("14"));
        assert_eq!(status(&headers), Some(14));
        assert_eq!(status_label(Some(14)), "14");
        assert_eq!(status_label(Some(99)), "other");
        assert_eq!(status_label(None), "");
        headers.insert(&GRPC_STATUS, HeaderValue::from_static("-1"));
        assert_eq!(status(&headers), None);
    }

    #[test]
    fn the_proxys_errors_become_trailers_only_grpc_responses() {
        let timeout = local_error_as_grpc(LocalError::UpstreamTimeout.response("no answer in 1s"));
        assert_eq!(timeout.status(), StatusCode::OK);
        assert_eq!(status(timeout.headers()), Some(code::DEADLINE_EXCEEDED));
        assert!(matches!(timeout.body(), ProxyBody::Empty));
        assert_eq!(timeout.headers()[&X_SWITCHYARD_ERROR], "upstream-timeout");
        assert!(
            timeout.headers()[&GRPC_MESSAGE]
                .to_str()
                .unwrap()
                .contains("no answer in 1s")
        );
        let refused = local_error_as_grpc(LocalError::ConnectFailure.response("refused"));
        assert_eq!(status(refused.headers()), Some(code::UNAVAILABLE));
        let plain = Response::new(ProxyBody::full("from a plugin"));
        assert!(
            local_error_as_grpc(plain)
                .headers()
                .get(&GRPC_STATUS)
                .is_none()
        );
    }
}
