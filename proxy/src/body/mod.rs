//! The one body type the proxy sends in either direction: streamed from a peer, or made locally.
//!
//! An enum rather than a boxed trait object keeps the hot path free of an allocation per request.
//! Beside it: `chunks` (a body streamed through plugins' chunk hooks) and `replay` (the copy of a
//! request body kept so a retry can send it again).

pub mod chunks;
pub mod replay;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::replay::ReplayBody;
use crate::grpc::web::WebBody;
use crate::plugin::{Chain, RequestState};
use crate::telemetry::ListenerTelemetry;
use crate::upstream::{Admission, InFlight, UpstreamBody};

/// A request or response body as the proxy forwards it.
#[derive(Debug)]
pub enum ProxyBody {
    /// No body at all.
    Empty,
    /// A small body made by the proxy itself (errors, admin answers).
    Full(Option<Bytes>),
    /// Streamed from the peer frame by frame, never buffered whole.
    Streaming(Incoming),
    /// A request body streamed with a size cap (`max_request_body`): past it the stream fails
    /// with [`BodyTooLarge`], which the proxy answers with 413.
    Capped {
        body: Incoming,
        remaining: u64,
        limit: u64,
    },
    /// A request body sent by one attempt while a copy is kept for retries. Boxed: attempts
    /// that can be retried are the rarer kind, and the enum stays small for the rest.
    Replay(Box<ReplayBody<ProxyBody>>),
    /// A gRPC response on its way to a gRPC-Web client: trailers become a last data frame.
    GrpcWeb(Box<WebBody>),
    /// A body through the plugins that stream it, chunk by chunk.
    Chunked(Box<crate::body::chunks::ChunkStream>),
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

/// The response body as the client gets it: counts the bytes sent and, once done with (ended,
/// or abandoned by the client), reports the request to telemetry and runs the `on_log` hooks,
/// off the request path. Inline, not boxed: no allocation per request.
#[derive(Debug)]
pub struct ServedBody {
    body: ProxyBody,
    bytes: u64,
    done: Option<Done>,
}

/// What is reported when a served body is done with.
pub struct Done {
    pub state: Box<RequestState>,
    pub status: u16,
    pub telemetry: Arc<ListenerTelemetry>,
    /// Set when some plugin of the chain has an `on_log` hook.
    pub log_chain: Option<Arc<Chain>>,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl ServedBody {
    pub fn new(body: ProxyBody, done: Option<Done>) -> Self {
        Self {
            body,
            bytes: 0,
            done,
        }
    }
}

impl Drop for ServedBody {
    fn drop(&mut self) {
        let Some(done) = self.done.take() else {
            return;
        };
        done.telemetry
            .finish(&done.state.finished(), done.status, self.bytes);
        if let (Some(chain), Ok(runtime)) = (done.log_chain, tokio::runtime::Handle::try_current())
        {
            let state = done.state;
            runtime.spawn(async move { chain.on_log(state).await });
        }
    }
}

impl Body for ServedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.bytes += data.len() as u64;
            } else if let (Some(trailers), Some(done)) = (frame.trailers_ref(), &mut this.done)
                && done.state.exchange.grpc
            {
                done.state.exchange.grpc_status = crate::grpc::status(trailers);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl ProxyBody {
    /// A locally made body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }
}

/// Errors a [`ProxyBody`] can yield: the peer's, or the proxy's own cap.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

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
        let this = self.get_mut();
        let polled = match this {
            Self::Empty => return Poll::Ready(None),
            Self::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Replay(body) => return Pin::new(body.as_mut()).poll_frame(cx),
            Self::GrpcWeb(body) => return Pin::new(body.as_mut()).poll_frame(cx),
            Self::Chunked(body) => return Pin::new(body.as_mut()).poll_frame(cx),
            Self::Upstream { body, .. } => return Pin::new(body).poll_frame(cx),
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
        };
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Replay(body) => body.is_end_stream(),
            Self::GrpcWeb(body) => body.is_end_stream(),
            Self::Chunked(body) => body.is_end_stream(),
            Self::Upstream { body, .. } => body.is_end_stream(),
            Self::Streaming(body) | Self::Capped { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Replay(body) => body.size_hint(),
            Self::GrpcWeb(body) => body.size_hint(),
            Self::Chunked(body) => body.size_hint(),
            Self::Upstream { body, .. } => body.size_hint(),
            Self::Streaming(body) | Self::Capped { body, .. } => body.size_hint(),
        }
    }
}
