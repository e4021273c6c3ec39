//! Sending a message: its head, then its body frame by frame, each piece with its framing in one
//! write (a plain one when it all fits one buffer, vectored when a piece is large). Both sides use
//! it — the client for requests, the server for responses.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::io::AsyncWrite;

use super::chunked;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body piece up to this size is copied next to the head (or chunk line) it follows, to go
/// out in one plain write; copying it costs less than a vectored write's extra kernel work. Small,
/// as the buffer is kept for the connection's next message.
const GATHERED_DATA_BYTES: usize = 1024;

/// How a body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outbound {
    Empty,
    /// This many bytes left to send.
    Length(u64),
    Chunked,
    /// Until the connection closes (a response to an HTTP/1.0 client, of unknown length).
    UntilClose,
}

/// Why a body could not be sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("the body failed: {0}")]
    Body(#[source] BoxError),
    #[error("the body does not match its content-length")]
    Length,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A message on its way out.
pub(crate) struct BodyWriter<B> {
    body: Option<B>,
    pub(crate) framing: Outbound,
    /// Bytes before `data`: the head, a chunk-size line, the last chunk and trailers.
    prefix: Vec<u8>,
    written: usize,
    data: Bytes,
    /// Bytes after `data` (the CRLF that ends a chunk).
    suffix: &'static [u8],
    /// The body's first frame has been asked for before the head went out.
    coalesced: bool,
    /// Trailers are dropped: the peer did not say it accepts them (`TE: trailers`).
    drop_trailers: bool,
    pub(crate) done: bool,
}

impl<B> BodyWriter<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// `head`: the encoded head, ending with its empty line; the body follows it as `framing`
    /// says (not at all when [`Outbound::Empty`]).
    pub(crate) fn new(head: Vec<u8>, body: B, framing: Outbound) -> Self {
        let empty = framing == Outbound::Empty;
        Self {
            body: (!empty).then_some(body),
            framing,
            prefix: head,
            written: 0,
            data: Bytes::new(),
            suffix: b"",
            coalesced: empty,
            drop_trailers: false,
            done: false,
        }
    }

    /// Sends no trailers, whatever the body ends with.
    pub(crate) fn without_trailers(mut self) -> Self {
        self.drop_trailers = true;
        self
    }

    /// The head buffer, to be reused by the next message. Taken out rather than the writer
    /// consumed: a writer holds the message's body, and moving it costs a copy of all of it.
    pub(crate) fn take_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.prefix)
    }

    fn pending(&self) -> bool {
        self.written < self.prefix.len() || !self.data.is_empty() || !self.suffix.is_empty()
    }

    /// Writes what there is to write; ready when the whole message has gone out and been
    /// flushed.
    pub(crate) fn poll_write<S: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            if !self.coalesced {
                // The body's first piece rides with the head when it is already there.
                self.coalesced = true;
                if let Poll::Ready(frame) = self.poll_body(cx) {
                    self.take_frame(frame)?;
                }
            }
            if self.pending() {
                let n = ready!(self.poll_write_pending(cx, io))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.advance(n);
                continue;
            }
            if self.body.is_none() {
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let frame = ready!(self.poll_body(cx));
            self.take_frame(frame)?;
        }
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn poll_write_pending<S: AsyncWrite + Unpin + ?Sized>(
        &self,
        cx: &mut Context<'_>,
        io: &mut S,
    ) -> Poll<io::Result<usize>> {
        if self.data.is_empty() && self.suffix.is_empty() {
            // One buffer: a plain `send`, which the kernel serves with less work than a
            // `writev` of one slice (no iovec array to import, no file-position layer).
            return Pin::new(io).poll_write(cx, &self.prefix[self.written..]);
        }
        let slices = [
            IoSlice::new(&self.prefix[self.written..]),
            IoSlice::new(&self.data),
            IoSlice::new(self.suffix),
        ];
        Pin::new(io).poll_write_vectored(cx, &slices)
    }

    fn advance(&mut self, mut n: usize) {
        let from_prefix = n.min(self.prefix.len() - self.written);
        self.written += from_prefix;
        n -= from_prefix;
        let from_data = n.min(self.data.len());
        let _ = self.data.split_to(from_data);
        n -= from_data;
        self.suffix = &self.suffix[n.min(self.suffix.len())..];
        if self.written == self.prefix.len() {
            self.prefix.clear();
            self.written = 0;
        }
    }

    /// Queues one frame of the body (or its end) with its framing.
    fn take_frame(
        &mut self,
        frame: Option<Result<Frame<Bytes>, B::Error>>,
    ) -> Result<(), WriteError> {
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                self.body = None;
                return Err(WriteError::Body(e.into()));
            }
            None => return self.end_body(None),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                let trailers = frame.into_trailers().ok().filter(|_| !self.drop_trailers);
                return self.end_body(trailers.as_ref());
            }
        };
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            Outbound::Length(left) => {
                let len = data.len() as u64;
                if len > *left {
                    return Err(WriteError::Length);
                }
                *left -= len;
            }
            Outbound::Chunked => {
                chunked::chunk_header(data.len(), &mut self.prefix);
                self.suffix = b"\r\n";
            }
            Outbound::UntilClose => {}
            Outbound::Empty => return Err(WriteError::Length),
        }
        self.data = data;
        if self.body.as_ref().is_some_and(Body::is_end_stream) {
            // The body says this was its last frame: it ends now, its end going out with these
            // bytes, and is dropped before they are written (what it holds is released before
            // the peer can have the message).
            self.body = None;
            match self.framing {
                Outbound::Chunked => self.suffix = b"\r\n0\r\n\r\n",
                Outbound::Length(0) | Outbound::UntilClose => {}
                Outbound::Length(_) | Outbound::Empty => return Err(WriteError::Length),
            }
        }
        self.gather_small_data();
        Ok(())
    }

    /// Copies a small piece of body (and its framing) after the bytes already waiting, so that
    /// the whole goes out from one buffer in one `send` (a head with a small body, the common
    /// API response); a larger piece stays where it is and goes in a vectored write.
    fn gather_small_data(&mut self) {
        if self.data.len() <= GATHERED_DATA_BYTES {
            self.prefix.extend_from_slice(&self.data);
            self.prefix.extend_from_slice(self.suffix);
            self.data = Bytes::new();
            self.suffix = b"";
        }
    }

    /// The body has ended (with trailers, perhaps): the last chunk, or a length check.
    /// Trailers go only where chunked framing can carry them.
    fn end_body(&mut self, trailers: Option<&HeaderMap>) -> Result<(), WriteError> {
        self.body = None;
        match self.framing {
            Outbound::Chunked => chunked::last_chunk(trailers, &mut self.prefix),
            Outbound::Length(0) | Outbound::Empty | Outbound::UntilClose => {}
            Outbound::Length(_) => return Err(WriteError::Length),
        }
        Ok(())
    }
}

/// One header field line.
pub(crate) fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The `content-length` field line.
pub(crate) fn write_length(out: &mut Vec<u8>, length: u64) {
    write_field(
        out,
        b"content-length",
        itoa::Buffer::new().format(length).as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;

    /// Takes every write whole, noting whether it was vectored.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<(bool, Vec<u8>)>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().writes.push((false, buf.to_vec()));
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = bytes.len();
            self.get_mut().writes.push((true, bytes));
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

    /// The writes `body` goes out in after [`HEAD`], framed as `framing`.
    fn writes(body: Bytes, framing: Outbound) -> Vec<(bool, Vec<u8>)> {
        let mut writer = BodyWriter::new(HEAD.to_vec(), Full::new(body), framing);
        let mut recorder = Recorder::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            writer.poll_write(&mut cx, &mut recorder),
            Poll::Ready(Ok(()))
        ));
        recorder.writes
    }

    fn joined(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn a_head_and_a_small_body_go_out_in_one_plain_write() {
        let body = Bytes::from_static(b"hello");
        assert_eq!(
            writes(body, Outbound::Length(5)),
            vec![(false, joined(&[HEAD, b"hello"]))]
        );
        // A chunked one carries its size line, its end and the last chunk in the same write.
        assert_eq!(
            writes(Bytes::from_static(b"hi"), Outbound::Chunked),
            vec![(false, joined(&[HEAD, b"2\r\nhi\r\n0\r\n\r\n"]))]
        );
    }

    #[test]
    fn a_larger_body_piece_is_not_copied_but_written_beside_the_head() {
        let body = Bytes::from(vec![b'x'; GATHERED_DATA_BYTES + 1]);
        let length = body.len() as u64;
        assert_eq!(
            writes(body.clone(), Outbound::Length(length)),
            vec![(true, joined(&[HEAD, &body]))]
        );
    }
}
