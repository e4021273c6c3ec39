//! Reading list-valued header fields the way both sides of the engine (and the proxy) must
//! agree on: comma-separated tokens, compared without case, bytes rather than text (a value with
//! non-ASCII bytes elsewhere still lists its tokens).

use http::HeaderMap;

/// Whether the `connection` header lists `token`.
pub fn has_token(headers: &HeaderMap, token: &str) -> bool {
    lists_token(headers, &http::header::CONNECTION, token)
}

/// Whether the comma-separated list in the `name` fields holds `token` (any case).
pub fn lists_token(headers: &HeaderMap, name: &http::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}
