//! A request body read off the client's connection by whoever polls it — the proxy forwarding
//! it, a plugin reading it whole — and handed back to the connection at its last byte so the
//! next request can be read.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncRead;

use crate::chunked::ChunkedError;
use crate::framing::{Framing, Piece};

/// How much the read buffer grows by when it runs out of room.
const READ_CHUNK: usize = 8 * 1024;

/// The read side of a client connection, whatever its transport.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// The read side with the bytes read and not yet used.
pub(crate) struct Inbound {
    pub(crate) io: Reader,
    pub(crate) read: BytesMut,
}

impl Inbound {
    pub(crate) fn new(io: Reader) -> Self {
        Self {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Reads what the connection has into the buffer; 0 at the end of the stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < 1024 {
            self.read.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }
}

/// Why a request body could not be read. The connection closes after the response.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection before the request body ended")]
    Incomplete,
    #[error("malformed chunked request body: {0}")]
    Chunked(#[from] ChunkedError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a connection and the body of its current request share: the read side on its way back,
/// and the body's wish for a `100 Continue`.
#[derive(Default)]
pub(crate) struct Handoff {
    state: Mutex<HandoffState>,
}

#[derive(Default)]
struct HandoffState {
    /// The read side, back from the body with its framing (done, or where it stopped).
    returned: Option<(Inbound, Framing)>,
    /// The body waits for the client's bytes, which the client sends after a 100.
    continue_wanted: bool,
    /// The connection's task, woken when the body wants a 100.
    connection: Option<Waker>,
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, HandoffState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn give_back(&self, inbound: Inbound, framing: Framing) {
        self.lock().returned = Some((inbound, framing));
    }

    /// The read side, if the body gave it back.
    pub(crate) fn take_back(&self) -> Option<(Inbound, Framing)> {
        self.lock().returned.take()
    }

    fn want_continue(&self) {
        let mut state = self.lock();
        state.continue_wanted = true;
        if let Some(waker) = state.connection.take() {
            waker.wake();
        }
    }

    /// Whether the body asked for a 100 since the last call; registers the connection's task
    /// to hear of it otherwise.
    pub(crate) fn poll_continue_wanted(&self, cx: &Context<'_>) -> bool {
        let mut state = self.lock();
        if std::mem::take(&mut state.continue_wanted) {
            return true;
        }
        state.connection = Some(cx.waker().clone());
        false
    }
}

/// The body of a request from a client, read off its connection as it is polled.
pub struct RequestBody {
    lent: Option<Lent>,
}

/// The connection's read side while the body has it.
struct Lent {
    inbound: Option<Inbound>,
    framing: Framing,
    handoff: Arc<Handoff>,
    /// A 100 is to be asked for before the first read that has to wait.
    expects_continue: bool,
}

impl RequestBody {
    /// A request without a body.
    pub(crate) fn empty() -> Self {
        Self { lent: None }
    }

    pub(crate) fn lend(
        inbound: Inbound,
        framing: Framing,
        handoff: Arc<Handoff>,
        expects_continue: bool,
    ) -> Self {
        Self {
            lent: Some(Lent {
                inbound: Some(inbound),
                framing,
                handoff,
                expects_continue,
            }),
        }
    }
}

impl Lent {
    fn give_back(&mut self) {
        if let Some(inbound) = self.inbound.take() {
            let framing = std::mem::replace(&mut self.framing, Framing::Empty);
            self.handoff.give_back(inbound, framing);
        }
    }
}

impl Drop for Lent {
    /// A body dropped before its end still gives the read side back: the connection may find
    /// the rest of the body already read and go on with the next request.
    fn drop(&mut self) {
        self.give_back();
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let framing = self.lent.as_ref().map(|lent| &lent.framing);
        f.debug_struct("RequestBody")
            .field("framing", &framing)
            .finish()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(lent) = self.get_mut().lent.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let Some(inbound) = lent.inbound.as_mut() else {
                return Poll::Ready(None);
            };
            match lent.framing.next(&mut inbound.read) {
                Ok(Piece::Data(data)) => {
                    if lent.framing.is_done() {
                        lent.give_back();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Piece::Trailers(trailers)) => {
                    lent.give_back();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Piece::End) => {
                    lent.give_back();
                    return Poll::Ready(None);
                }
                Ok(Piece::NeedMore) => {}
                Err(e) => {
                    // Where the body ends is unknown now: the connection cannot be kept.
                    lent.inbound = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            if std::mem::take(&mut lent.expects_continue) {
                lent.handoff.want_continue();
            }
            let Some(inbound) = lent.inbound.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(inbound.poll_fill(cx)) {
                Ok(0) => {
                    lent.inbound = None;
                    return Poll::Ready(Some(Err(BodyError::Incomplete)));
                }
                Ok(_) => {}
                Err(e) => {
                    lent.inbound = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lent
            .as_ref()
            .is_none_or(|lent| lent.inbound.is_none() || lent.framing.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        match self.lent.as_ref().map(|lent| &lent.framing) {
            None | Some(Framing::Empty | Framing::Upgrade) => SizeHint::with_exact(0),
            Some(Framing::Length(left)) => SizeHint::with_exact(*left),
            Some(Framing::Chunked(_) | Framing::UntilClose) => SizeHint::default(),
        }
    }
}
