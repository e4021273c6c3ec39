//! The response body as the client gets it, and the end of the request: when the client has had
//! it all (or gone away), the exchange goes to telemetry and the `on_log` hooks run.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use switchyard_http1::added::AddedList;

use crate::body::{BodyError, ProxyBody};
use crate::plugin::{Chain, RequestState};
use crate::telemetry::ListenerTelemetry;

/// The response body as the client gets it: counts the bytes sent and, once done with (ended,
/// or abandoned by the client), reports the request to telemetry and runs the `on_log` hooks,
/// off the request path. Inline, not boxed: no allocation per request.
#[derive(Debug)]
pub struct ServedBody {
    body: ProxyBody,
    bytes: u64,
    done: Option<Done>,
    /// This proxy's own fields, written after the upstream's passed fields rather than put in
    /// the head's map (see `forwarding`).
    added: ResponseAdded,
}

/// The fields this proxy adds to a response whose upstream fields are passed as they came:
/// `via`, and the request id when the upstream sent none.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResponseAdded {
    pub via: Option<&'static http::HeaderValue>,
    pub request_id: bool,
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

/// The upstream's passed fields go out with the head the HTTP/1.1 engine writes.
impl switchyard_http1::server::PassesFields for ServedBody {
    fn passed_fields(&self) -> Option<&switchyard_http1::client::PassedFields> {
        self.body.passed_fields()
    }

    fn added_fields(&self) -> AddedList<'_> {
        let mut added = AddedList::default();
        if let Some(via) = self.added.via {
            added.push((&http::header::VIA, via));
        }
        if let (true, Some(done)) = (self.added.request_id, &self.done) {
            added.push((&crate::headers::X_REQUEST_ID, &done.state.request_id));
        }
        added
    }
}

impl ServedBody {
    pub fn new(body: ProxyBody, done: Option<Done>) -> Self {
        Self::with_added(body, done, ResponseAdded::default())
    }

    /// A body whose head the HTTP/1.1 engine writes with `added` after its fields.
    pub fn with_added(body: ProxyBody, done: Option<Done>, added: ResponseAdded) -> Self {
        Self {
            body,
            bytes: 0,
            done,
            added,
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
