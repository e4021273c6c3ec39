//! Writing a response head: the status line, the fields as given, and the framing the body
//! needs (RFC 9112 §6) — the engine owns `content-length`, `transfer-encoding` and `connection`.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::{StatusCode, Version};

use crate::added::AddedField;
use crate::fields::FramingFields;
use crate::passed::PassedFields;
use crate::writer::{Outbound, write_field, write_length};

/// What the response's framing depends on, besides the response.
pub(crate) struct Exchange {
    pub(crate) method_is_head: bool,
    pub(crate) request_version: Version,
    /// The connection stays open after this response (the engine may turn this off).
    pub(crate) keep_alive: bool,
    /// The response switches protocols: its `connection: upgrade` goes out as given.
    pub(crate) switching: bool,
}

/// What the body says about itself before it is read.
pub(crate) struct BodyShape {
    pub(crate) is_end_stream: bool,
    pub(crate) exact: Option<u64>,
}

/// Encodes the head into `out`, returning how the body is framed; turns `keep_alive` off when
/// only closing the connection can end the body. An upstream's `passed` fields go first, as
/// they came, then those of `headers`.
pub(crate) fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    passed: Option<&PassedFields>,
    added: &[AddedField<'_>],
    body: &BodyShape,
    exchange: &mut Exchange,
) -> Outbound {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");

    let mut fields = FramingFields::default();
    let mut has_date = false;
    if let Some(passed) = passed {
        passed.write(out);
        has_date = passed.has_date();
    }
    for (name, value) in headers {
        // The fields the engine writes itself; only those are noted.
        let framing_field = name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == header::CONTENT_LENGTH;
        if framing_field {
            fields.note(name, value.as_bytes());
            // The engine writes the length it frames by (a 1xx or 204 has none) and its own
            // `connection`, except the `upgrade` a protocol switch goes out with.
            if name != header::CONNECTION || !exchange.switching {
                continue;
            }
        }
        has_date |= name == header::DATE;
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in added {
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }

    // Decided after the fields are written, from what they said: the framing's own fields come
    // last.
    let no_body_allowed = status.is_informational() || status == StatusCode::NO_CONTENT;
    let bodiless = no_body_allowed
        || exchange.switching
        || exchange.method_is_head
        || status == StatusCode::NOT_MODIFIED;
    let declared = fields
        .content_length()
        .or(passed.and_then(PassedFields::content_length));
    let framing = if bodiless {
        Outbound::Empty
    } else if let Some(length) = declared {
        Outbound::Length(length)
    } else if body.is_end_stream {
        Outbound::Length(0)
    } else if let Some(length) = body.exact {
        Outbound::Length(length)
    } else if exchange.request_version == Version::HTTP_11 {
        Outbound::Chunked
    } else {
        exchange.keep_alive = false;
        Outbound::UntilClose
    };
    if fields.close {
        exchange.keep_alive = false;
    }
    match framing {
        Outbound::Length(length) => write_length(out, length),
        Outbound::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Outbound::Empty if !no_body_allowed => {
            // HEAD and 304 say what the body would have been.
            if let Some(length) = declared.or(body.exact.filter(|&n| n > 0)) {
                write_length(out, length);
            }
        }
        Outbound::Empty | Outbound::UntilClose => {}
    }
    if exchange.switching {
        // The connection is the new protocol's now.
    } else if !exchange.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if exchange.request_version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !has_date {
        write_date(out);
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// A whole response made by the engine itself (a refused request head): a short text body,
/// and the connection closes after it.
pub(crate) fn refusal(out: &mut Vec<u8>, status: StatusCode, reason: &str) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let body = BodyShape {
        is_end_stream: false,
        exact: Some(reason.len() as u64 + 1),
    };
    let mut exchange = Exchange {
        method_is_head: false,
        request_version: Version::HTTP_11,
        keep_alive: false,
        switching: false,
    };
    encode_head(out, status, &headers, None, &[], &body, &mut exchange);
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

/// The interim response that tells a client waiting on `Expect: 100-continue` to send its body.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Whether a response with `status` (to a CONNECT or not) switches the connection to another protocol.
pub(crate) fn switches_protocols(is_connect: bool, status: StatusCode) -> bool {
    status == StatusCode::SWITCHING_PROTOCOLS || (is_connect && status.is_success())
}

thread_local! {
    /// The `date` field line, formatted once a second per thread.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
}

fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            cached.1.clear();
            write_field(
                &mut cached.1,
                b"date",
                httpdate::fmt_http_date(now).as_bytes(),
            );
            cached.0 = second;
        }
        out.extend_from_slice(&cached.1);
    });
}
