//! Where a message body ends (RFC 9112 §6.3), and reading it piece by piece off a connection's
//! read buffer. Both sides use it — the client for responses, the server for requests.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::chunked::{ChunkedDecoder, ChunkedError, Decoded};

/// How a body arriving on a connection is delimited.
#[derive(Debug)]
pub enum Framing {
    /// No body: HEAD, 204, 304, a request without a length.
    Empty,
    /// `content-length`: this many bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the peer closes the connection (responses only).
    UntilClose,
    /// 101: the connection now carries another protocol.
    Upgrade,
}

/// The next piece of a body.
#[derive(Debug)]
pub(crate) enum Piece {
    Data(Bytes),
    /// The trailer section; the body has ended.
    Trailers(HeaderMap),
    /// The body has ended.
    End,
    /// The buffer holds no complete next piece: read more (or, for [`Framing::UntilClose`],
    /// the end of the stream ends the body).
    NeedMore,
}

impl Framing {
    /// No bytes are left to read.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Self::Empty | Self::Length(0))
    }

    /// The body has been read to its end (an upgrade has no body to read).
    pub(crate) fn is_done(&self) -> bool {
        match self {
            Self::Empty | Self::Length(0) | Self::Upgrade => true,
            Self::Chunked(decoder) => decoder.is_done(),
            Self::Length(_) | Self::UntilClose => false,
        }
    }

    /// The next piece of the body from `read`, consuming what it used.
    pub(crate) fn next(&mut self, read: &mut BytesMut) -> Result<Piece, ChunkedError> {
        Ok(match self {
            Self::Empty | Self::Length(0) | Self::Upgrade => Piece::End,
            Self::Length(left) if !read.is_empty() => {
                let take = usize::try_from(*left).map_or(read.len(), |l| l.min(read.len()));
                *left -= take as u64;
                Piece::Data(read.split_to(take).freeze())
            }
            Self::Chunked(decoder) => match decoder.decode(read)? {
                Decoded::Data(data) => Piece::Data(data),
                Decoded::Trailers(trailers) => Piece::Trailers(trailers),
                Decoded::End => Piece::End,
                Decoded::NeedMore => Piece::NeedMore,
            },
            Self::UntilClose if !read.is_empty() => Piece::Data(read.split().freeze()),
            Self::Length(_) | Self::UntilClose => Piece::NeedMore,
        })
    }
}
