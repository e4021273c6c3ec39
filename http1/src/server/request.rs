//! Reading a request head off the connection's buffer and deciding how its body is framed —
//! strictly, since a proxy that reads a message's end differently from the server behind it is
//! how requests get smuggled (RFC 9112 §6.3, §11.2).

use bytes::{Bytes, BytesMut};
use http::header;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};

use crate::chunked::ChunkedDecoder;
use crate::fields::FramingFields;
use crate::framing::Framing;
use crate::pending;

/// Fields a request's map has room for beyond those it came with.
const ROOM_TO_ADD: usize = 6;

/// The most header fields a listener may be configured to accept.
pub const MAX_HEADERS_LIMIT: usize = 1000;

/// Why a request head was refused, with the status the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Refusal {
    fn bad(reason: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }
}

/// A request head that parsed, with what the connection needs to know about it.
#[derive(Debug)]
pub struct Head {
    pub parts: http::request::Parts,
    pub framing: Framing,
    /// The client asked to keep the connection open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a 100 before sending the body.
    pub expects_continue: bool,
    /// The client asked to switch protocols (`Upgrade`, or CONNECT).
    pub upgrade: bool,
    /// `TE: trailers`: the client takes a trailer section after a chunked response body.
    pub accepts_trailers: bool,
}

/// Parses a complete request head at the start of `read`, consuming it; `None` while it is
/// partial (and under `max_head` bytes).
pub fn parse_head(
    read: &mut BytesMut,
    max_head: usize,
    max_headers: usize,
) -> Result<Option<Head>, Refusal> {
    const TOO_LARGE: Refusal = Refusal {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        reason: "the request head is too large",
    };
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS_LIMIT];
    let mut request = httparse::Request::new(&mut []);
    let fields = &mut fields[..max_headers.min(MAX_HEADERS_LIMIT)];
    let len = match request.parse_with_uninit_headers(read, fields) {
        Ok(httparse::Status::Complete(len)) if len > max_head => return Err(TOO_LARGE),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if read.len() > max_head => return Err(TOO_LARGE),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason: "the request has too many header fields",
            });
        }
        Err(httparse::Error::Version) => {
            return Err(Refusal {
                status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                reason: "only HTTP/1.0 and HTTP/1.1 are spoken here",
            });
        }
        Err(_) => return Err(Refusal::bad("malformed request head")),
    };
    let start = read.as_ptr();
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refusal::bad("malformed method"))?;
    let target_at = pending::range_of(request.path.unwrap_or_default().as_bytes(), start);
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut fields = FramingFields::default();
    let mut pending = pending::take();
    for field in request.headers.iter() {
        let name = crate::names::header_name(field.name.as_bytes())
            .map_err(|_| Refusal::bad("malformed header field name"))?;
        fields.note(&name, field.value);
        pending.push((name, pending::range_of(field.value, start)));
    }
    // The head leaves the buffer (shared, not copied); the target is a slice of it too.
    let (head, headers) = pending::split_head(read, len, pending, ROOM_TO_ADD)
        .map_err(|_| Refusal::bad("malformed header field value"))?;
    let target = head.slice(target_at);

    let uri = request_target(&method, target)?;
    let framing = body_framing(&headers, &fields, version)?;
    let keep_alive = match version {
        Version::HTTP_10 => fields.keep_alive,
        _ => !fields.close,
    };
    let expects_continue = version == Version::HTTP_11 && fields.expect_continue;
    let upgrade = method == Method::CONNECT || (fields.upgrade_field && fields.upgrade);
    let accepts_trailers = fields.te_trailers;
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
        expects_continue,
        upgrade,
        accepts_trailers,
    }))
}

/// The request target in one of its four forms (RFC 9112 §3.2): origin (`/path`), absolute
/// (`http://host/path`), authority (`host:port`, CONNECT only) and asterisk (`*`, OPTIONS only).
fn request_target(method: &Method, target: Bytes) -> Result<Uri, Refusal> {
    let asterisk = target.as_ref() == b"*";
    let uri =
        Uri::from_maybe_shared(target).map_err(|_| Refusal::bad("malformed request target"))?;
    let fits = if method == Method::CONNECT {
        uri.authority().is_some() && uri.scheme().is_none() && uri.path_and_query().is_none()
    } else if asterisk {
        method == Method::OPTIONS
    } else {
        uri.path().starts_with('/')
    };
    if fits {
        Ok(uri)
    } else {
        Err(Refusal::bad("the request target does not fit the method"))
    }
}

/// How the request body is delimited. Anything two parsers could read two ways is refused:
/// a length beside chunked, more than one length, a transfer coding other than a single
/// final `chunked`, and Transfer-Encoding in HTTP/1.0.
fn body_framing(
    headers: &HeaderMap,
    fields: &FramingFields,
    version: Version,
) -> Result<Framing, Refusal> {
    let coded = fields.transfer_encoding_fields > 0;
    let has_length = fields.length_fields > 0;
    if coded {
        if version == Version::HTTP_10 {
            return Err(Refusal::bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if has_length {
            return Err(Refusal::bad(
                "both Content-Length and Transfer-Encoding: the body's end is ambiguous",
            ));
        }
        let mut codings = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii);
        let last = codings.next_back();
        if !last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")) {
            return Err(Refusal::bad(
                "the last transfer coding is not chunked: the body's end is unknown",
            ));
        }
        if codings.any(|c| c.eq_ignore_ascii_case(b"chunked")) {
            return Err(Refusal::bad("chunked is applied more than once"));
        }
        if fields.transfer_encoding_fields > 1
            || headers[header::TRANSFER_ENCODING]
                .as_bytes()
                .contains(&b',')
        {
            return Err(Refusal {
                status: StatusCode::NOT_IMPLEMENTED,
                reason: "transfer codings other than chunked are not supported",
            });
        }
        return Ok(Framing::Chunked(ChunkedDecoder::default()));
    }
    if has_length {
        // One field with one number: a list or a repeat, even of the same number, is refused
        // (RFC 9110 §8.6 allows it, and a request has no reason to send one).
        let single = fields.length_fields == 1 && !fields.length_list;
        return match fields.content_length().filter(|_| single) {
            Some(0) => Ok(Framing::Empty),
            Some(length) => Ok(Framing::Length(length)),
            None => Err(Refusal::bad(
                "invalid, repeated or conflicting Content-Length",
            )),
        };
    }
    Ok(Framing::Empty)
}
