//! A body passed through the plugins that stream it (`on-request-chunk`, `on-response-chunk`),
//! piece by piece as it flows, never buffered whole. The plugins see a copy of the request
//! ([`RequestState::view`]): the heads have gone already, so what they change there stays with
//! them; what they return replaces each chunk.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{BodyOf, Chain, RequestState};
use crate::body::{BodyError, ProxyBody};

/// A chunk on its way through the plugins, with the request copy they are lent.
type Pending = Pin<Box<dyn Future<Output = (Box<RequestState>, Result<Bytes, Arc<str>>)> + Send>>;
/// The trailers on their way through the plugins.
type PendingTrailers =
    Pin<Box<dyn Future<Output = (Box<RequestState>, Result<http::HeaderMap, Arc<str>>)> + Send>>;

/// `inner`, chunk by chunk through `chain`'s streaming plugins.
pub struct ChunkStream {
    inner: ProxyBody,
    chain: Arc<Chain>,
    body: BodyOf,
    /// The request copy, between chunks.
    state: Option<Box<RequestState>>,
    pending: Option<Pending>,
    /// Trailers held back until the last chunk call has run.
    trailers: Option<http::HeaderMap>,
    /// The trailers passing through the plugins, once the last chunk call has run.
    pending_trailers: Option<PendingTrailers>,
    /// `inner` has ended and the last chunk call was made.
    ended: bool,
}

impl std::fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream")
            .field("body", &self.body)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ChunkStream {
    pub fn new(inner: ProxyBody, chain: Arc<Chain>, body: BodyOf, view: Box<RequestState>) -> Self {
        Self {
            inner,
            chain,
            body,
            state: Some(view),
            pending: None,
            trailers: None,
            pending_trailers: None,
            ended: false,
        }
    }

    /// Sends `chunk` through the plugins, lending them the request copy.
    fn start(&mut self, chunk: Bytes, end: bool) {
        let Some(state) = self.state.take() else {
            return;
        };
        let (chain, body) = (Arc::clone(&self.chain), self.body);
        self.pending = Some(Box::pin(async move {
            chain.on_chunk(state, body, chunk, end).await
        }));
    }
}

impl Body for ChunkStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if let Some(pending) = this.pending.as_mut() {
                let (state, result) = std::task::ready!(pending.as_mut().poll(cx));
                this.pending = None;
                this.state = Some(state);
                match result {
                    Ok(chunk) if chunk.is_empty() => {}
                    Ok(chunk) => return Poll::Ready(Some(Ok(Frame::data(chunk)))),
                    Err(plugin) => {
                        let error = format!("plugin {plugin:?} failed on the body");
                        return Poll::Ready(Some(Err(error.into())));
                    }
                }
            }
            if let Some(pending) = this.pending_trailers.as_mut() {
                let (state, result) = std::task::ready!(pending.as_mut().poll(cx));
                this.pending_trailers = None;
                this.state = Some(state);
                return Poll::Ready(Some(match result {
                    Ok(trailers) => Ok(Frame::trailers(trailers)),
                    Err(plugin) => Err(format!("plugin {plugin:?} failed on the trailers").into()),
                }));
            }
            if this.ended {
                let (Some(trailers), Some(state)) = (this.trailers.take(), this.state.take())
                else {
                    return Poll::Ready(None);
                };
                let (chain, body) = (Arc::clone(&this.chain), this.body);
                this.pending_trailers = Some(Box::pin(async move {
                    chain.on_trailers(state, body, trailers).await
                }));
                continue;
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    // A body that knows its last piece (a length, a whole buffer) says so with
                    // it: one plugin call, not one more with nothing, and the piece goes out
                    // with the body's end rather than in a write of its own.
                    Ok(chunk) if this.inner.is_end_stream() => {
                        this.ended = true;
                        this.start(chunk, true);
                    }
                    Ok(chunk) => this.start(chunk, false),
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        this.ended = true;
                        this.start(Bytes::new(), true);
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.ended = true;
                    this.start(Bytes::new(), true);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
            && self.pending.is_none()
            && self.trailers.is_none()
            && self.pending_trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // The plugins may change the length.
        SizeHint::default()
    }
}
