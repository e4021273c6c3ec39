//! gRPC-Web at the edge, as Envoy's `grpc_web` filter: a browser's gRPC-Web call
//! (`application/grpc-web`, or `application/grpc-web-text` with a base64 body) goes upstream as
//! plain gRPC, and the answer comes back as gRPC-Web, its trailers carried in the body as a last
//! frame flagged `0x80` (grpc/doc/PROTOCOL-WEB.md). Browsers cannot stream requests, so a text
//! request body is read whole before it is decoded; responses stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, TE};
use http_body::{Body, Frame, SizeHint};

use crate::body::{BodyError, ProxyBody};

/// How a gRPC-Web body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/grpc-web[+proto]`: gRPC's own framing.
    Binary,
    /// `application/grpc-web-text[+proto]`: the same, base64-encoded.
    Text,
}

/// The request is gRPC-Web: how its body is encoded.
pub fn request_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let content_type = headers.get(CONTENT_TYPE)?.as_bytes();
    let (encoding, rest) =
        if let Some(rest) = content_type.strip_prefix(b"application/grpc-web-text") {
            (Encoding::Text, rest)
        } else {
            (
                Encoding::Binary,
                content_type.strip_prefix(b"application/grpc-web")?,
            )
        };
    (rest.is_empty() || rest[0] == b'+' || rest[0] == b';').then_some(encoding)
}

/// Turns a gRPC-Web request head into a gRPC one: the content type (keeping a `+proto` suffix),
/// `te: trailers`, and no length for a text body, whose decoded length differs.
pub fn to_grpc_request(headers: &mut HeaderMap, encoding: Encoding) {
    let prefix: &[u8] = match encoding {
        Encoding::Binary => b"application/grpc-web",
        Encoding::Text => b"application/grpc-web-text",
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(prefix))
        .and_then(|suffix| HeaderValue::from_bytes(&[b"application/grpc", suffix].concat()).ok())
        .unwrap_or(HeaderValue::from_static("application/grpc"));
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if encoding == Encoding::Text {
        headers.remove(CONTENT_LENGTH);
    }
}

/// Decodes a `grpc-web-text` body: base64, possibly as several padded chunks one after another.
pub fn decode_text(body: &[u8]) -> Result<Bytes, base64::DecodeError> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    // Each chunk ends after its padding; decode chunk by chunk.
    let mut start = 0;
    while start < text.len() {
        let mut end = start;
        while end < text.len() && text[end] != b'=' {
            end += 1;
        }
        while end < text.len() && text[end] == b'=' {
            end += 1;
        }
        STANDARD.decode_vec(&text[start..end], &mut out)?;
        start = end;
    }
    Ok(out.into())
}

/// What the browser asked for: the encoding, and the content type its answer carries (the
/// request's own, as Envoy answers).
#[derive(Debug, Clone)]
pub struct WebCall {
    pub encoding: Encoding,
    pub content_type: HeaderValue,
}

impl WebCall {
    /// The request is a gRPC-Web call: what it is, before its head is turned into gRPC.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        Some(Self {
            encoding: request_encoding(headers)?,
            content_type: headers.get(CONTENT_TYPE)?.clone(),
        })
    }
}

/// Turns the gRPC response into a gRPC-Web one for the browser: its content type, no length,
/// and a body that carries the trailers (and is base64 for text).
pub fn to_web_response(response: Response<ProxyBody>, call: &WebCall) -> Response<ProxyBody> {
    let (mut head, body) = response.into_parts();
    if !super::is_grpc(&head.headers) {
        // Not a gRPC answer (a plugin's or the proxy's plain one): left as it is.
        return Response::from_parts(head, body);
    }
    head.headers.insert(CONTENT_TYPE, call.content_type.clone());
    let encoding = call.encoding;
    head.headers.remove(CONTENT_LENGTH);
    head.headers.remove(http::header::TRAILER);
    let body = if body.is_end_stream() {
        // Trailers-only: the status is in the head, where gRPC-Web clients read it too.
        body
    } else {
        ProxyBody::boxed(WebBody {
            inner: body,
            text: encoding == Encoding::Text,
            carry: BytesMut::new(),
            finished: false,
        })
    };
    Response::from_parts(head, body)
}

/// A gRPC response body as gRPC-Web: data as it is (or base64), trailers as a last frame.
#[derive(Debug)]
pub struct WebBody {
    inner: ProxyBody,
    text: bool,
    /// Text: bytes not yet encoded, fewer than 3, so no padding lands mid-stream.
    carry: BytesMut,
    finished: bool,
}

impl WebBody {
    /// `bytes` as they go to the browser: as they are, or base64 in whole 3-byte groups (all of
    /// it, padded, when `last`).
    fn encode(&mut self, bytes: &[u8], last: bool) -> Bytes {
        if !self.text {
            return Bytes::copy_from_slice(bytes);
        }
        self.carry.extend_from_slice(bytes);
        let whole = if last {
            self.carry.len()
        } else {
            self.carry.len() / 3 * 3
        };
        let ready = self.carry.split_to(whole);
        Bytes::from(STANDARD.encode(&ready))
    }
}

/// The trailer frame of gRPC-Web: flag `0x80`, length, then `name: value\r\n` lines.
fn trailer_frame(trailers: &HeaderMap) -> BytesMut {
    let mut lines = BytesMut::new();
    for (name, value) in trailers {
        lines.put_slice(name.as_str().as_bytes());
        lines.put_slice(b": ");
        lines.put_slice(value.as_bytes());
        lines.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + lines.len());
    frame.put_u8(0x80);
    frame.put_u32(u32::try_from(lines.len()).unwrap_or(u32::MAX));
    frame.put_slice(&lines);
    frame
}

impl Body for WebBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.finished = true;
                    let rest = this.encode(&[], true);
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let encoded = match frame.into_data() {
                Ok(data) => this.encode(&data, false),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        this.finished = true;
                        let frame = trailer_frame(&trailers);
                        this.encode(&frame, true)
                    }
                    Err(_) => continue,
                },
            };
            if !encoded.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(encoded))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_recognized_and_mapped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web-text+proto"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(request_encoding(&headers), Some(Encoding::Text));
        to_grpc_request(&mut headers, Encoding::Text);
        assert_eq!(headers[CONTENT_TYPE], "application/grpc+proto");
        assert_eq!(headers[TE], "trailers");
        assert!(!headers.contains_key(CONTENT_LENGTH));

        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web"),
        );
        assert_eq!(request_encoding(&headers), Some(Encoding::Binary));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        assert_eq!(request_encoding(&headers), None);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-webx"),
        );
        assert_eq!(request_encoding(&headers), None);
    }

    #[test]
    fn text_bodies_decode_in_padded_chunks() {
        assert_eq!(decode_text(b"aGVsbG8=").unwrap(), "hello");
        assert_eq!(decode_text(b"aGk=aGk=").unwrap(), "hihi");
        assert_eq!(decode_text(b"aGVs\r\nbG8=").unwrap(), "hello");
        assert!(decode_text(b"!!!!").is_err());
    }

    #[test]
    fn trailers_become_the_last_frame() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frame = trailer_frame(&trailers);
        assert_eq!(&frame[..5], &[0x80, 0, 0, 0, 16]);
        assert_eq!(&frame[5..], b"grpc-status: 0\r\n");
    }
}
