//! The one body type the proxy sends in either direction: streamed from a peer, or made locally.
//!
//! An enum rather than a boxed trait object keeps the hot path free of an allocation per request;
//! the rarer kinds that are boxed anyway (a body through plugins' chunk hooks, a gRPC-Web
//! response) are one [`ProxyBody::Boxed`] variant, so this module knows nothing of plugins or
//! gRPC. Beside it: `replay` (the copy of a request body kept so a retry can send it again).

pub mod client;
pub mod replay;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub use crate::body::client::ClientBody;
use crate::body::replay::ReplayBody;
use crate::upstream::{Admission, InFlight, UpstreamBody};
use switchyard_http1::client::PassedFields;

/// A request or response body as the proxy forwards it.
pub enum ProxyBody {
    /// No body at all.
    Empty,
    /// A small body made by the proxy itself (errors, admin answers).
    Full(Option<Bytes>),
    /// Streamed from the peer frame by frame, never buffered whole.
    Streaming(ClientBody),
    /// A request body streamed with a size cap (`max_request_body`): past it the stream fails
    /// with [`BodyTooLarge`], which the proxy answers with 413.
    Capped {
        body: ClientBody,
        remaining: u64,
        limit: u64,
    },
    /// A request body sent by one attempt while a copy is kept for retries. Boxed: attempts
    /// that can be retried are the rarer kind, and the enum stays small for the rest.
    Replay(Box<ReplayBody<ProxyBody>>),
    /// A body that is a transformation of another, boxed: through the plugins that stream it
    /// chunk by chunk, or a gRPC response on its way to a gRPC-Web client.
    Boxed(BoxedBody),
    /// An upstream response body; holds the endpoint's in-flight count until the body ends or the
    /// client goes away, so least-request balancing sees streaming responses as load.
    Upstream {
        /// On HTTP/1.1 it holds the keep-alive connection, back in its pool as soon as the body
        /// has been read to the end.
        body: UpstreamBody,
        _in_flight: InFlight,
        /// The cluster's circuit-breaker slot for this request, held until the body is done.
        _admission: Option<Admission>,
    },
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Empty => "Empty",
            Self::Full(_) => "Full",
            Self::Streaming(_) => "Streaming",
            Self::Capped { .. } => "Capped",
            Self::Replay(_) => "Replay",
            Self::Boxed(_) => "Boxed",
            Self::Upstream { .. } => "Upstream",
        };
        f.debug_tuple("ProxyBody").field(&kind).finish()
    }
}

impl ProxyBody {
    /// A locally made body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// An upstream response's fields, when they were passed as they came (they ride on the
    /// body: see `switchyard_http1::client::ResponseFields`).
    pub fn passed_fields(&self) -> Option<&PassedFields> {
        match self {
            Self::Upstream { body, .. } => body.passed_fields(),
            _ => None,
        }
    }

    /// Takes the passed fields, to read them into the head's map after all.
    pub fn take_passed_fields(&mut self) -> Option<PassedFields> {
        match self {
            Self::Upstream { body, .. } => body.take_passed_fields(),
            _ => None,
        }
    }
}

/// Errors a [`ProxyBody`] can yield: the peer's, or the proxy's own cap.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A body of any kind behind a pointer, for the variants that are boxed anyway.
pub type BoxedBody = Pin<Box<dyn Body<Data = Bytes, Error = BodyError> + Send>>;

impl ProxyBody {
    /// A transformation of another body (`ProxyBody::Boxed`).
    pub fn boxed(body: impl Body<Data = Bytes, Error = BodyError> + Send + 'static) -> Self {
        Self::Boxed(Box::pin(body))
    }
}

/// The request body went over the listener's `max_request_body`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the {limit} bytes this listener accepts")]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Replay(body) => Pin::new(body.as_mut()).poll_frame(cx),
            Self::Boxed(body) => body.as_mut().poll_frame(cx),
            Self::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            Self::Streaming(body) => Pin::new(body).poll_frame(cx),
            Self::Capped {
                body,
                remaining,
                limit,
            } => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled
                    && let Some(data) = frame.data_ref()
                {
                    let len = data.len() as u64;
                    if len > *remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: *limit }))));
                    }
                    *remaining -= len;
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Replay(body) => body.is_end_stream(),
            Self::Boxed(body) => body.is_end_stream(),
            Self::Upstream { body, .. } => body.is_end_stream(),
            Self::Streaming(body) | Self::Capped { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Replay(body) => body.size_hint(),
            Self::Boxed(body) => body.size_hint(),
            Self::Upstream { body, .. } => body.size_hint(),
            Self::Streaming(body) | Self::Capped { body, .. } => body.size_hint(),
        }
    }
}
