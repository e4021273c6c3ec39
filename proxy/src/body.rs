//! The one body type the proxy sends in either direction: streamed from a peer, or made locally.
//!
//! An enum rather than a boxed trait object keeps the hot path free of an allocation per request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::plugin::{Chain, RequestState};
use crate::upstream::{Admission, InFlight};

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
    /// An upstream response body; holds the endpoint's in-flight count until the body ends or the
    /// client goes away, so least-request balancing sees streaming responses as load.
    Upstream {
        body: Incoming,
        _in_flight: InFlight,
        /// The cluster's circuit-breaker slot for this request, held until the body is done.
        _admission: Option<Admission>,
    },
    /// A body whose end (or abandonment) runs the chain's `on_log` hooks, off the request path.
    Logged {
        body: Box<ProxyBody>,
        _log: Box<LogOnDrop>,
    },
}

/// Runs `on_log` for a request once its response body is done with.
pub struct LogOnDrop {
    chain: std::sync::Arc<Chain>,
    state: Option<Box<RequestState>>,
}

impl LogOnDrop {
    pub fn new(chain: std::sync::Arc<Chain>, state: Box<RequestState>) -> Self {
        Self {
            chain,
            state: Some(state),
        }
    }
}

impl std::fmt::Debug for LogOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogOnDrop")
    }
}

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        let (Some(state), Ok(runtime)) = (self.state.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let chain = std::sync::Arc::clone(&self.chain);
        runtime.spawn(async move { chain.on_log(state).await });
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
            Self::Streaming(body) | Self::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
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
            Self::Logged { body, .. } => return Pin::new(body.as_mut()).poll_frame(cx),
        };
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Streaming(body) | Self::Upstream { body, .. } | Self::Capped { body, .. } => {
                body.is_end_stream()
            }
            Self::Logged { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Streaming(body) | Self::Upstream { body, .. } | Self::Capped { body, .. } => {
                body.size_hint()
            }
            Self::Logged { body, .. } => body.size_hint(),
        }
    }
}
