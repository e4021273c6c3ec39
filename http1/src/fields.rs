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
    tokens(headers, &header::TE).any(is_trailers)
}

/// The items of the comma-separated list in the `name` fields, trimmed.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| list_items(v.as_bytes()))
}

/// What a message's framing and its connection depend on, gathered field by field in the pass a
/// parser or an encoder makes over the fields anyway, so that none of them is looked up by name
/// afterwards (each lookup hashes the name; most messages carry few of these fields or none).
/// Reads the fields as [`has_token`] and [`accepts_trailers`] do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FramingFields {
    /// How many `content-length` fields there are.
    pub length_fields: usize,
    /// Whether any `content-length` field holds a list (a comma).
    pub length_list: bool,
    /// The length they agree on; `None` after one that is not a number or disagrees.
    length: Option<u64>,
    length_invalid: bool,
    /// How many `transfer-encoding` fields there are.
    pub transfer_encoding_fields: usize,
    /// `connection` lists `close`.
    pub close: bool,
    /// `connection` lists `keep-alive`.
    pub keep_alive: bool,
    /// `connection` lists `upgrade`.
    pub upgrade: bool,
    /// An `upgrade` field is present.
    pub upgrade_field: bool,
    /// `te` lists `trailers`.
    pub te_trailers: bool,
    /// The first `expect` field is `100-continue`.
    pub expect_continue: bool,
    expect_seen: bool,
}

impl FramingFields {
    /// Reads `name: value` if it is one of the fields this looks at.
    pub fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if *name == header::CONTENT_LENGTH {
            self.length_fields += 1;
            // Nearly always the digits alone: read without splitting a list.
            if let Some(n) = decimal(value) {
                match self.length {
                    Some(l) if l != n => self.length_invalid = true,
                    _ => self.length = Some(n),
                }
                return;
            }
            self.length_list |= value.contains(&b',');
            for item in list_items(value) {
                match decimal(item) {
                    Some(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                    _ => self.length_invalid = true,
                }
            }
        } else if *name == header::CONNECTION {
            for token in list_items(value) {
                // Tokens as they are usually written first: comparing without case is a loop.
                match token {
                    b"keep-alive" => self.keep_alive = true,
                    b"close" => self.close = true,
                    b"upgrade" => self.upgrade = true,
                    _ => {
                        self.close |= token.eq_ignore_ascii_case(b"close");
                        self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                        self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                    }
                }
            }
        } else if *name == header::TRANSFER_ENCODING {
            self.transfer_encoding_fields += 1;
        } else if *name == header::TE {
            self.te_trailers |= list_items(value).any(is_trailers);
        } else if *name == header::UPGRADE {
            self.upgrade_field = true;
        } else if *name == header::EXPECT && !self.expect_seen {
            self.expect_seen = true;
            self.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }

    /// The one length all `content-length` fields agree on (repeats and lists of the same number
    /// are allowed, anything else is not).
    pub fn content_length(&self) -> Option<u64> {
        self.length.filter(|_| !self.length_invalid)
    }
}

/// The hop-by-hop fields a proxy drops whatever `connection` says (RFC 9110 §7.6.1, with the
/// `keep-alive` and `proxy-connection` of older peers); `te: trailers` is the exception gRPC
/// needs end to end.
pub const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Whether a `connection` value names a field of its own — a token other than `close` and the
/// [`HOP_BY_HOP`] names — which is then hop-by-hop too.
pub fn names_other_fields(value: &[u8]) -> bool {
    list_items(value).any(|token| !token.is_empty() && !is_connection_only(token))
}

/// A `connection` token that names no field of its own: `close` or a [`HOP_BY_HOP`] name.
pub fn is_connection_only(token: &[u8]) -> bool {
    // The usual tokens as they are usually written first: comparing without case is a
    // byte-by-byte loop.
    matches!(token, b"keep-alive" | b"close" | b"upgrade")
        || token.eq_ignore_ascii_case(b"close")
        || HOP_BY_HOP
            .iter()
            .any(|name| token.eq_ignore_ascii_case(name.as_bytes()))
}

/// Whether the last coding the `transfer-encoding` values (in order) list is `chunked`.
pub fn chunked_last<'a>(mut values: impl DoubleEndedIterator<Item = &'a [u8]>) -> bool {
    values
        .next_back()
        .and_then(|v| v.rsplit(|&b| b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The items of a comma-separated list, trimmed.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// A `te` item naming `trailers` (parameters after a `;` aside).
fn is_trailers(item: &[u8]) -> bool {
    item.split(|&b| b == b';')
        .next()
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"trailers"))
}

/// A length: ASCII digits only, at most 19 of them (every such number fits in a u64).
fn decimal(item: &[u8]) -> Option<u64> {
    if item.is_empty() || item.len() > 19 {
        return None;
    }
    item.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
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

    /// Every field of `headers`, noted.
    fn noted(headers: &HeaderMap) -> FramingFields {
        let mut fields = FramingFields::default();
        for (name, value) in headers {
            fields.note(name, value.as_bytes());
        }
        fields
    }

    fn content_length(headers: &HeaderMap) -> Option<u64> {
        noted(headers).content_length()
    }

    /// The length as the engine read it by name before `FramingFields`, kept as the reference
    /// the one-pass reading is compared with.
    fn content_length_by_lookup(headers: &HeaderMap) -> Option<u64> {
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

    #[test]
    fn each_field_read_is_noted_alone() {
        let one = |name: &str, value: &str| {
            let mut fields = FramingFields::default();
            fields.note(
                &HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.as_bytes(),
            );
            fields
        };
        assert_eq!(one("content-length", "5").content_length(), Some(5));
        assert!(one("connection", "close").close);
        assert_eq!(
            one("transfer-encoding", "chunked").transfer_encoding_fields,
            1
        );
        assert!(one("te", "trailers").te_trailers);
        assert!(one("upgrade", "websocket").upgrade_field);
        assert!(one("expect", "100-continue").expect_continue);
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

    /// The fields gathered in one pass read every message as the lookups by name do.
    #[test]
    fn framing_fields_agree_with_the_lookups() {
        let cases: &[&[(&str, &[u8])]] = &[
            &[],
            &[("host", b"a"), ("content-length", b"12")],
            &[("content-length", b"3, 3"), ("content-length", b"3")],
            &[("content-length", b"3"), ("content-length", b"4")],
            &[("content-length", b"3"), ("content-length", b"3, 4")],
            &[("content-length", b"3, 4"), ("content-length", b"3")],
            &[("content-length", b"x"), ("content-length", b"3")],
            &[("content-length", b"3"), ("content-length", b"3")],
            &[("content-length", b"+3")],
            &[("content-length", b"")],
            &[("content-length", b"99999999999999999999")],
            &[("content-length", b"9999999999999999999")],
            &[
                ("connection", b"Keep-Alive, Upgrade"),
                ("upgrade", b"websocket"),
            ],
            &[("connection", b"keep-alive"), ("connection", b" close ")],
            &[("connection", b"closed")],
            &[("te", b"gzip, Trailers;q=0.5"), ("expect", b"100-Continue")],
            &[("expect", b"nothing"), ("expect", b"100-continue")],
            &[
                ("transfer-encoding", b"gzip"),
                ("transfer-encoding", b"chunked"),
            ],
        ];
        for fields in cases {
            let mut headers = HeaderMap::new();
            for (name, value) in *fields {
                headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            let seen = noted(&headers);
            let case = format!("{fields:?}");
            let by_lookup = content_length_by_lookup(&headers);
            assert_eq!(seen.content_length(), by_lookup, "{case}");
            assert_eq!(seen.close, has_token(&headers, "close"), "{case}");
            assert_eq!(seen.keep_alive, has_token(&headers, "keep-alive"), "{case}");
            assert_eq!(seen.upgrade, has_token(&headers, "upgrade"), "{case}");
            assert_eq!(seen.te_trailers, accepts_trailers(&headers), "{case}");
            assert_eq!(
                seen.length_fields,
                headers.get_all(header::CONTENT_LENGTH).iter().count(),
                "{case}"
            );
            assert_eq!(
                seen.transfer_encoding_fields,
                headers.get_all(header::TRANSFER_ENCODING).iter().count(),
                "{case}"
            );
            assert_eq!(seen.upgrade_field, headers.contains_key(header::UPGRADE));
            let expect = headers.get(header::EXPECT);
            let continues =
                expect.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            assert_eq!(seen.expect_continue, continues, "{case}");
        }
        let big = noted(&with(header::CONTENT_LENGTH, b"9999999999999999999"));
        assert_eq!(big.content_length(), Some(9_999_999_999_999_999_999));
    }
}
