//! Where an HTTP/1.1 message ends in a buffer: the head (parsed with httparse) and a
//! `Content-Length` body. The probe forwards bytes unchanged and only needs to know when a whole
//! request or response has arrived; anything else (chunked bodies, no length) closes the
//! connection, which the benchmark's plain GETs and nginx's fixed answers never need.

/// Why a message cannot be forwarded by the probe.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsupported;

/// A whole message at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Whole {
    /// Its length, head and body.
    pub len: usize,
    /// It ends the connection (`Connection: close`, or HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// The most header fields a message may have.
const MAX_FIELDS: usize = 64;

/// The request that starts `buf`, once all of it is there.
pub fn request(buf: &[u8]) -> Result<Option<Whole>, Unsupported> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(buf).map_err(|_| Unsupported)? {
        httparse::Status::Complete(head) => whole(
            buf,
            head,
            body_length(request.headers, Some(0))?,
            closes(request.version, request.headers),
        ),
        httparse::Status::Partial => Ok(None),
    }
}

/// The response that starts `buf`, once all of it is there.
pub fn response(buf: &[u8]) -> Result<Option<Whole>, Unsupported> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(buf).map_err(|_| Unsupported)? {
        httparse::Status::Complete(head) => whole(
            buf,
            head,
            body_length(response.headers, None)?,
            closes(response.version, response.headers),
        ),
        httparse::Status::Partial => Ok(None),
    }
}

fn whole(buf: &[u8], head: usize, body: usize, close: bool) -> Result<Option<Whole>, Unsupported> {
    let len = head.checked_add(body).ok_or(Unsupported)?;
    Ok((buf.len() >= len).then_some(Whole { len, close }))
}

/// Whether a message with these fields ends its connection.
fn closes(version: Option<u8>, fields: &[httparse::Header<'_>]) -> bool {
    let connection = |token: &str| {
        fields.iter().any(|field| {
            field.name.eq_ignore_ascii_case("connection")
                && field
                    .value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    match version {
        Some(0) => !connection("keep-alive"),
        _ => connection("close"),
    }
}

/// The `Content-Length`, or `otherwise` when there is none (requests without one have no body).
fn body_length(
    fields: &[httparse::Header<'_>],
    otherwise: Option<usize>,
) -> Result<usize, Unsupported> {
    let mut length = None;
    for field in fields {
        if field.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Unsupported);
        }
        if field.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(field.value).map_err(|_| Unsupported)?;
            let value: usize = value.trim().parse().map_err(|_| Unsupported)?;
            if length.is_some_and(|l| l != value) {
                return Err(Unsupported);
            }
            length = Some(value);
        }
    }
    length.or(otherwise).ok_or(Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_len(buf: &[u8]) -> Result<Option<usize>, Unsupported> {
        request(buf).map(|whole| whole.map(|w| w.len))
    }

    fn response_len(buf: &[u8]) -> Result<Option<usize>, Unsupported> {
        response(buf).map(|whole| whole.map(|w| w.len))
    }

    #[test]
    fn a_request_is_whole_at_its_head_without_a_length_and_after_its_body_with_one() {
        let get = b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET /next";
        assert_eq!(request_len(get), Ok(Some(27)));
        assert_eq!(request_len(&get[..20]), Ok(None));
        let post = b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nab";
        assert_eq!(request_len(post), Ok(None));
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc"),
            Ok(Some(41))
        );
    }

    #[test]
    fn a_response_needs_its_length_and_chunked_is_not_forwarded() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";
        assert_eq!(response_len(ok), Ok(Some(ok.len())));
        assert_eq!(response_len(&ok[..ok.len() - 1]), Ok(None));
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\n\r\n"), Err(Unsupported));
        assert_eq!(
            response_len(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(Unsupported)
        );
        assert_eq!(
            request_len(b"GET / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            Err(Unsupported)
        );
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_connection() {
        let closes = |buf: &[u8]| request(buf).map(|w| w.map(|w| w.close));
        assert_eq!(closes(b"GET / HTTP/1.1\r\n\r\n"), Ok(Some(false)));
        assert_eq!(
            closes(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"),
            Ok(Some(true))
        );
        assert_eq!(closes(b"GET / HTTP/1.0\r\n\r\n"), Ok(Some(true)));
        assert_eq!(
            closes(b"GET / HTTP/1.0\r\nconnection: te, keep-alive\r\n\r\n"),
            Ok(Some(false))
        );
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert_eq!(response(ok).map(|w| w.map(|w| w.close)), Ok(Some(true)));
    }
}
