//! The one body type the proxy sends in either direction: streamed from a peer, or made locally.
//!
//! An enum rather than a boxed trait object keeps the hot path free of an allocation per request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::plugin::{Chain, RequestState};
use crate::upstream::InFlight;

/// A request or response body as the proxy forwards it.
#[derive(Debug)]
pub enum ProxyBody {
    /// No body at all.
    Empty,
    /// A small body made by the proxy itself (errors, admin answers).
    Full(Option<Bytes>),
    /// Streamed from the peer frame by frame, never buffered whole.
    Streaming(Incoming),
    /// An upstream response body; holds the endpoint's in-flight count until the body ends or the
    /// client goes away, so least-request balancing sees streaming responses as load.
    Upstream {
        body: Incoming,
        _in_flight: InFlight,
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

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Streaming(body) | Self::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            Self::Logged { body, .. } => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Streaming(body) | Self::Upstream { body, .. } => body.is_end_stream(),
            Self::Logged { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Streaming(body) | Self::Upstream { body, .. } => body.size_hint(),
            Self::Logged { body, .. } => body.size_hint(),
        }
    }
}
