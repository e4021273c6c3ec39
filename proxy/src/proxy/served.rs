//! The response body as the client gets it, and the end of the request: when the client has had
//! it all (or gone away), the exchange goes to telemetry and the `on_log` hooks run.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use switchyard_http1::added::AddedList;

use crate::body::{BodyError, ProxyBody};
use crate::plugin::RequestState;

use super::ListenerProxy;

/// The response body as the client gets it: counts the bytes sent and, once done with (ended,
/// or abandoned by the client), reports the request to telemetry and runs the `on_log` hooks,
/// off the request path. Inline, not boxed: no allocation per request.
///
/// Two words beside the body: what else a request's end needs is in its state (the status,
/// the bytes, this proxy's own response fields), so the response stays within 256 bytes, which
/// every level of the request path moves with a few vector stores rather than a `memcpy` loop.
#[derive(Debug)]
pub struct ServedBody {
    body: ProxyBody,
    done: Option<Done>,
}

/// What is reported when a served body is done with: the request's state, and the listener's
/// proxy that reports it (its telemetry, and its chain's `on_log` hooks).
pub struct Done {
    pub state: Box<RequestState>,
    pub proxy: Arc<ListenerProxy>,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("status", &self.state.exchange.status)
            .finish_non_exhaustive()
    }
}

/// The upstream's passed fields go out with the head the HTTP/1.1 engine writes.
impl switchyard_http1::server::PassesFields for ServedBody {
    fn passed_fields(&self) -> Option<&switchyard_http1::client::PassedFields> {
        self.body.passed_fields()
    }

    fn added_fields(&self) -> AddedList<'_> {
        let mut added = AddedList::default();
        let Some(done) = &self.done else {
            return added;
        };
        let state = &done.state;
        if let Some(via) = state.response_added.via {
            added.push((&http::header::VIA, via));
        }
        if state.response_added.request_id {
            added.push((&crate::headers::X_REQUEST_ID, &state.request_id));
        }
        added
    }
}

impl ServedBody {
    /// A body whose head the HTTP/1.1 engine writes with the state's `response_added` fields
    /// after its own, reported through `done` when done with.
    pub fn new(body: ProxyBody, done: Option<Done>) -> Self {
        Self { body, done }
    }
}

impl Drop for ServedBody {
    fn drop(&mut self) {
        let Some(Done { state, proxy }) = self.done.take() else {
            return;
        };
        proxy.telemetry.finish(&state.finished());
        if proxy.chain.wants_log()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let chain = Arc::clone(&proxy.chain);
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
        if let (Poll::Ready(Some(Ok(frame))), Some(done)) = (&polled, &mut this.done) {
            let exchange = &mut done.state.exchange;
            if let Some(data) = frame.data_ref() {
                exchange.bytes += data.len() as u64;
            } else if let Some(trailers) = frame.trailers_ref()
                && exchange.grpc
            {
                exchange.grpc_status = crate::grpc::status(trailers);
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
