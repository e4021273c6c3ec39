//! Reading header fields the way both sides of the engine (and the proxy) must agree on: a
//! list's comma-separated tokens, compared without case, by bytes rather than text (a value
//! with non-ASCII bytes elsewhere still lists its tokens); and the message's length.

use http::header::{self, HeaderMap, HeaderName};

/// Whether the `connection` header lists `token`.
pub fn has_token(headers: &HeaderMap, token: &str) -> bool {
    tokens(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether `te` lists `trailers` (parameters after a `;` aside): the client takes a trailer
/// section after a chunked body.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    tokens(headers, &header::TE).any(|t| {
        t.split(|&b| b == b';')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

/// The items of the comma-separated list in the `name` fields, trimmed.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// The one length all `content-length` fields agree on (repeats and lists of the same number
/// are allowed, anything else is not).
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: u64 = std::str::from_utf8(item).ok()?.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: HeaderName, value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn tokens_are_read_by_bytes_without_case_and_parameters() {
        assert!(has_token(
            &with(header::CONNECTION, b"keep-alive, Upgrade"),
            "upgrade"
        ));
        assert!(has_token(
            &with(header::CONNECTION, b"upgrade, caf\xe9"),
            "upgrade"
        ));
        assert!(!has_token(
            &with(header::CONNECTION, b"upgraded"),
            "upgrade"
        ));
        assert!(accepts_trailers(&with(header::TE, b"gzip, Trailers")));
        assert!(accepts_trailers(&with(header::TE, b"trailers;q=1")));
        assert!(!accepts_trailers(&with(header::TE, b"gzip")));
        assert_eq!(
            content_length(&with(header::CONTENT_LENGTH, b"3, 3")),
            Some(3)
        );
        assert_eq!(content_length(&with(header::CONTENT_LENGTH, b"3, 4")), None);
        assert_eq!(content_length(&HeaderMap::new()), None);
    }
}
