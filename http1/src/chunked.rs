//! `Transfer-Encoding: chunked` (RFC 9112 §7.1): the decoder for bodies read off a connection's
//! buffer, and the framing written around each chunk sent.
//!
//! The decoder is strict where leniency lets two parsers disagree on where a message ends
//! (request smuggling): lines end in CRLF, a size is at most 16 hex digits, and the line, its
//! extensions and the trailer section are bounded.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The longest chunk-size line accepted, extensions included.
const MAX_SIZE_LINE: usize = 4096;
/// The largest trailer section accepted.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// The most trailer fields accepted.
const MAX_TRAILER_FIELDS: usize = 64;

/// Why a chunked body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("a chunk size is not hexadecimal, or too large")]
    BadSize,
    #[error("a chunk-size line is longer than {MAX_SIZE_LINE} bytes")]
    SizeLineTooLong,
    #[error("a chunk is not followed by CRLF")]
    MissingCrlf,
    #[error("the trailer section is malformed")]
    BadTrailers,
    #[error(
        "the trailer section is larger than {MAX_TRAILERS} bytes or {MAX_TRAILER_FIELDS} fields"
    )]
    TrailersTooLarge,
}

/// What the decoder made of the bytes it was given.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes, sliced off the buffer without copying.
    Data(Bytes),
    /// The trailer fields after the last chunk; the body has ended.
    Trailers(HeaderMap),
    /// The body has ended, without trailers.
    End,
    /// The buffer holds no complete next piece: read more and call again.
    NeedMore,
}

/// Where the decoder is in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// After a chunk's bytes, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    /// The body has ended.
    Done,
}

/// Decodes one chunked body, piece by piece, from a connection's read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self { state: State::Size }
    }
}

impl ChunkedDecoder {
    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next piece of the body from `buf`, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Size => match size_line(buf)? {
                    None => return Ok(Decoded::NeedMore),
                    Some((0, used)) => {
                        buf.advance(used);
                        self.state = State::Trailers;
                    }
                    Some((size, used)) => {
                        buf.advance(used);
                        self.state = State::Data(size);
                    }
                },
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkedError::MissingCrlf);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => return self.trailers(buf),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        if buf.len() >= 2 && &buf[..2] == b"\r\n" {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Decoded::End);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let (used, parsed) = match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete(done)) => done,
            Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                return Err(ChunkedError::TrailersTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
            Err(httparse::Error::TooManyHeaders) => return Err(ChunkedError::TrailersTooLarge),
            Err(_) => return Err(ChunkedError::BadTrailers),
        };
        if used > MAX_TRAILERS {
            return Err(ChunkedError::TrailersTooLarge);
        }
        // httparse takes a bare LF for a line end; a body's end is not left to that leniency.
        let section = &buf[..used];
        if section
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || section[i - 1] != b'\r'))
        {
            return Err(ChunkedError::MissingCrlf);
        }
        let mut trailers = HeaderMap::with_capacity(parsed.len());
        for field in parsed.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| ChunkedError::BadTrailers)?;
            let value =
                HeaderValue::from_bytes(field.value).map_err(|_| ChunkedError::BadTrailers)?;
            trailers.append(name, value);
        }
        buf.advance(used);
        self.state = State::Done;
        Ok(if trailers.is_empty() {
            Decoded::End
        } else {
            Decoded::Trailers(trailers)
        })
    }
}

/// A complete chunk-size line at the start of `buf`: the size and the line's length with its
/// CRLF. `None` when the line is not complete yet.
fn size_line(buf: &[u8]) -> Result<Option<(u64, usize)>, ChunkedError> {
    let Some(lf) = buf.iter().take(MAX_SIZE_LINE).position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_SIZE_LINE {
            Err(ChunkedError::SizeLineTooLong)
        } else {
            Ok(None)
        };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(ChunkedError::MissingCrlf);
    }
    let line = &buf[..lf - 1];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkedError::BadSize);
    }
    // What may follow the size: optional whitespace, then `;` and extensions (ignored).
    let rest = &line[digits..];
    let after_space = rest.iter().skip_while(|&&b| b == b' ' || b == b'\t');
    match after_space.clone().next() {
        None | Some(b';') => {}
        Some(_) => return Err(ChunkedError::BadSize),
    }
    if rest.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(ChunkedError::BadSize);
    }
    let size = line[..digits]
        .iter()
        .try_fold(0u64, |size, &b| {
            let digit = (b as char).to_digit(16)? as u64;
            size.checked_mul(16)?.checked_add(digit)
        })
        .ok_or(ChunkedError::BadSize)?;
    Ok(Some((size, lf + 1)))
}

/// The line that starts a chunk of `len` bytes: its size in hex and CRLF.
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// The last chunk and the trailer section that ends a chunked body.
pub fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes all of `input`, given in pieces of `step` bytes, into data and trailers.
    fn decode_in_steps(
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, usize), ChunkedError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                Decoded::Trailers(trailers) => return Ok((data, Some(trailers), buf.len())),
                Decoded::End => return Ok((data, None, buf.len())),
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err(ChunkedError::BadTrailers);
                    }
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn a_body_decodes_the_same_whatever_the_reads_look_like() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\nA \r\n0123456789\r\n0\r\nx-sum: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, input.len()] {
            let (data, trailers, left) = decode_in_steps(input, step).unwrap();
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert_eq!(trailers.unwrap()["x-sum"], "1", "step {step}");
            // What follows the body (a pipelined message) is left in the buffer.
            assert!(left <= 4, "step {step}");
        }
    }

    #[test]
    fn a_body_without_trailers_ends_after_the_empty_line() {
        let (data, trailers, left) = decode_in_steps(b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(data, b"abc");
        assert!(trailers.is_none());
        assert_eq!(left, 0);
    }

    #[test]
    fn malformed_framing_is_refused_not_guessed() {
        let refused: &[(&[u8], ChunkedError)] = &[
            (b"5\nhello\r\n0\r\n\r\n", ChunkedError::MissingCrlf),
            (b"5\r\nhelloXX0\r\n\r\n", ChunkedError::MissingCrlf),
            (b"zz\r\n", ChunkedError::BadSize),
            (b"\r\n", ChunkedError::BadSize),
            (b";ext\r\n", ChunkedError::BadSize),
            (b"5 x\r\nhello\r\n", ChunkedError::BadSize),
            (b"-5\r\n", ChunkedError::BadSize),
            (b"+5\r\n", ChunkedError::BadSize),
            (b"0x5\r\n", ChunkedError::BadSize),
            (b"10000000000000000\r\n", ChunkedError::BadSize),
            (b"0\r\nbad header\r\n\r\n", ChunkedError::BadTrailers),
            (b"0\r\n\n", ChunkedError::MissingCrlf),
            (b"0\r\nx: y\n\r\n", ChunkedError::MissingCrlf),
        ];
        for (input, expected) in refused {
            let got = decode_in_steps(input, input.len());
            assert_eq!(
                got.err(),
                Some(*expected),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = [b"1;".as_slice(), &[b'a'; MAX_SIZE_LINE]].concat();
        assert_eq!(
            decode_in_steps(&long, long.len()).err(),
            Some(ChunkedError::SizeLineTooLong)
        );
    }

    #[test]
    fn the_largest_sizes_do_not_overflow() {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"ab"))
        );
        assert_eq!(decoder.state, State::Data(u64::MAX - 2));
    }

    #[test]
    fn what_is_encoded_decodes_back() {
        let mut out = Vec::new();
        chunk_header(300, &mut out);
        out.extend_from_slice(&[b'x'; 300]);
        out.extend_from_slice(b"\r\n");
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        last_chunk(Some(&trailers), &mut out);
        let (data, decoded, left) = decode_in_steps(&out, 5).unwrap();
        assert_eq!(data, vec![b'x'; 300]);
        assert_eq!(decoded, Some(trailers));
        assert_eq!(left, 0);
    }
}
