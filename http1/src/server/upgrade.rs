//! A client connection leaving HTTP/1.1: switched to another protocol after a 101 (WebSocket
//! and the like), or found to speak HTTP/2 from its first bytes. Either way it is the
//! connection's two halves with the bytes already read from it put back in front.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::body::Reader;

/// The write side of a client connection, whatever its transport.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A client connection with bytes read ahead of whoever takes it now (none: just the two
/// halves as one stream).
pub struct Rewound {
    read_ahead: Bytes,
    reader: Reader,
    writer: Writer,
}

impl Rewound {
    pub fn new(read_ahead: Bytes, reader: Reader, writer: Writer) -> Self {
        Self {
            read_ahead,
            reader,
            writer,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if crate::read_ahead::give(&mut this.read_ahead, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.writer.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_shutdown(cx)
    }
}

/// The upgraded connection of a request that asked to switch protocols, once the response
/// switching them has been written. Found in the request's extensions (a clone of it is the
/// same upgrade; the first to wait gets the connection).
#[derive(Debug, Clone)]
pub struct OnUpgrade {
    receiver: Arc<Mutex<Option<oneshot::Receiver<Rewound>>>>,
}

/// The response did not switch protocols, or the connection ended first.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the connection was not upgraded")]
pub struct NotUpgraded;

impl OnUpgrade {
    pub(crate) fn pair() -> (oneshot::Sender<Rewound>, Self) {
        let (sender, receiver) = oneshot::channel();
        let receiver = Arc::new(Mutex::new(Some(receiver)));
        (sender, Self { receiver })
    }

    /// The connection, once the response has switched protocols.
    pub async fn upgraded(self) -> Result<Rewound, NotUpgraded> {
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(NotUpgraded)?;
        receiver.await.map_err(|_| NotUpgraded)
    }
}

impl std::fmt::Debug for Rewound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewound")
            .field("read_ahead", &self.read_ahead.len())
            .finish_non_exhaustive()
    }
}
