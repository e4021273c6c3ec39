//! The client-facing side of the HTTP/1.1 engine: one task per connection reads a request head
//! off the connection's buffer, calls the service in the same task, and writes the response —
//! the head and the body's first piece in one vectored write — then reads the next head.
//!
//! The request body reads the connection itself, as the service polls it (straight into the
//! upstream request, with no channel between), and hands the read side back at its last byte.
//! A connection that starts with the HTTP/2 preface is handed back to the caller whole.

mod body;
mod request;
mod response;
mod upgrade;

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::added::AddedList;
use crate::coarse_clock::CoarseInstant;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

pub use body::{BodyError, Reader, RequestBody};
pub use request::{Head, MAX_HEADERS_LIMIT, Refusal, parse_head};
pub use upgrade::{NotUpgraded, OnUpgrade, Rewound, Writer};

use crate::framing::{Framing, Piece};
use crate::passed::PassedFields;
use crate::writer::{BodyWriter, Outbound};
use body::{Handoff, Inbound};
use response::{BodyShape, Exchange};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The limits a listener serves HTTP/1.1 with.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a request head may take to arrive, from when the connection starts waiting for
    /// it (an idle kept-alive connection is closed after this too).
    pub header_timeout: Duration,
    /// The largest request head, request line and fields together (more gets 431).
    pub max_head: usize,
    /// The most header fields in a request (more gets 431); at most [`MAX_HEADERS_LIMIT`].
    pub max_headers: usize,
}

/// How a connection's HTTP/1.1 service ended.
#[derive(Debug)]
pub enum Ended {
    /// The connection is closed (or was handed to an upgraded request).
    Closed,
    /// A request head was refused with this status (answered, and the connection closed).
    Refused(Refusal),
    /// The client spoke HTTP/2 (prior knowledge): the connection, its first bytes put back.
    Http2(Rewound),
}

/// The HTTP/2 connection preface, which a client with prior knowledge starts with.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a connection being closed is read (and what is read dropped) so that the client
/// gets the last response before the close, rather than a reset for bytes it sent unread.
const LINGER: Duration = Duration::from_secs(2);
/// The most bytes read and dropped while lingering.
const LINGER_BYTES: usize = 256 * 1024;
/// The most bytes a pipelining client may send ahead of the request being served.
const READ_AHEAD: usize = 256 * 1024;

/// A response body that may carry its head's fields as an upstream sent them (a proxy's body
/// over a [`crate::client::ResponseBody`] whose fields were passed): they go out before the
/// fields of the head's map. Other bodies carry none, the default.
pub trait PassesFields {
    fn passed_fields(&self) -> Option<&PassedFields> {
        None
    }

    /// Fields written after the head's map (see [`crate::added`]); none by default.
    fn added_fields(&self) -> AddedList<'_> {
        AddedList::default()
    }
}

#[cfg(test)]
impl<B> PassesFields for http_body_util::Full<B> {}
#[cfg(test)]
impl<D, E> PassesFields for http_body_util::combinators::UnsyncBoxBody<D, E> {}

impl<S, B, K> PassesFields for crate::client::ResponseBody<S, B, K> {
    fn passed_fields(&self) -> Option<&PassedFields> {
        self.passed_fields()
    }
}

/// Serves HTTP/1.1 on a connection until it closes, goes HTTP/2, or `drain` completes (then the
/// request in flight, if any, is answered with `connection: close`).
pub async fn serve<F, Fut, B>(
    reader: Reader,
    writer: Writer,
    config: &Config,
    drain: impl Future<Output = ()>,
    mut service: F,
) -> Ended
where
    F: FnMut(Request<RequestBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin + PassesFields,
    B::Error: Into<BoxError>,
{
    let mut connection = Connection {
        inbound: Some(Inbound::new(reader)),
        writer,
        out: Vec::with_capacity(1024),
        handoff: Arc::new(Handoff::default()),
        draining: false,
        first: true,
    };
    let mut drain = pin!(drain);
    let mut timer = pin!(tokio::time::sleep(config.header_timeout));
    loop {
        let head = match connection
            .read_head(config, drain.as_mut(), timer.as_mut())
            .await
        {
            Next::Head(head) => head,
            Next::Closed => return Ended::Closed,
            Next::Http2 => return connection.into_http2(),
            Next::Refused(refusal) => {
                connection.refuse(refusal.status, refusal.reason).await;
                return Ended::Refused(refusal);
            }
        };
        connection.first = false;
        match connection
            .exchange(head, &mut service, drain.as_mut())
            .await
        {
            After::Next => {}
            After::Close => {
                connection.close().await;
                return Ended::Closed;
            }
            After::Gone => return Ended::Closed,
            After::Upgrade(sender) => {
                if let Some(inbound) = connection.inbound.take() {
                    let upgraded =
                        Rewound::new(inbound.read.freeze(), inbound.io, connection.writer);
                    let _ = sender.send(upgraded);
                }
                return Ended::Closed;
            }
        }
    }
}

/// What waiting for a request head gave.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request and unpacked at once; boxing the head would cost an allocation each time"
)]
enum Next {
    Head(Head),
    Closed,
    Http2,
    Refused(Refusal),
}

/// What comes after an exchange.
enum After {
    /// Read the next request.
    Next,
    /// Close the connection (after lingering).
    Close,
    /// The connection is done for: close it as it is.
    Gone,
    /// The response switched protocols: the connection goes to the request that asked.
    Upgrade(tokio::sync::oneshot::Sender<Rewound>),
}

/// One client connection between requests.
struct Connection {
    /// The read side; lent to a request's body while the body is read.
    inbound: Option<Inbound>,
    writer: Writer,
    /// The buffer response heads are encoded into, kept for the next response.
    out: Vec<u8>,
    handoff: Arc<Handoff>,
    /// The listener is shutting down: no more requests after the one in flight.
    draining: bool,
    /// No request has been read yet (the HTTP/2 preface can only come first).
    first: bool,
}

impl Connection {
    /// Waits for the next request head, up to the header timeout.
    async fn read_head(
        &mut self,
        config: &Config,
        mut drain: Pin<&mut impl Future<Output = ()>>,
        mut timer: Pin<&mut Sleep>,
    ) -> Next {
        let Some(inbound) = self.inbound.as_mut() else {
            return Next::Closed;
        };
        // When the head must arrive by. The timer is not moved forward for each head (taking it
        // out of the runtime's timer wheel and putting it back, under the wheel's lock): a
        // deadline only ever moves later, so a timer still set for an earlier one fires early,
        // at most once a timeout, and is then set for this one.
        let mut deadline = None;
        poll_fn(|cx| {
            loop {
                if self.first
                    && HTTP2_PREFACE
                        .starts_with(&inbound.read[..inbound.read.len().min(HTTP2_PREFACE.len())])
                {
                    if inbound.read.len() >= HTTP2_PREFACE.len() {
                        return Poll::Ready(Next::Http2);
                    }
                } else {
                    match parse_head(&mut inbound.read, config.max_head, config.max_headers) {
                        Ok(Some(head)) => return Poll::Ready(Next::Head(head)),
                        Ok(None) => {}
                        Err(refusal) => return Poll::Ready(Next::Refused(refusal)),
                    }
                }
                match inbound.poll_fill(cx) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Next::Closed),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => {}
                }
                if !self.draining && drain.as_mut().poll(cx).is_ready() {
                    self.draining = true;
                }
                if self.draining && inbound.read.is_empty() {
                    return Poll::Ready(Next::Closed);
                }
                // On the coarse clock, a tick later so it is never early.
                let deadline = *deadline.get_or_insert_with(|| {
                    CoarseInstant::now() + config.header_timeout + CoarseInstant::RESOLUTION
                });
                if timer.as_mut().poll(cx).is_ready() {
                    let now = CoarseInstant::now();
                    if now < deadline {
                        let left = deadline.saturating_duration_since(now);
                        timer.as_mut().reset(Instant::now() + left);
                        continue;
                    }
                    return Poll::Ready(if inbound.read.is_empty() {
                        Next::Closed
                    } else {
                        Next::Refused(Refusal {
                            status: StatusCode::REQUEST_TIMEOUT,
                            reason: "the request head did not arrive in time",
                        })
                    });
                }
                return Poll::Pending;
            }
        })
        .await
    }

    /// One request and its response.
    async fn exchange<F, Fut, B>(
        &mut self,
        head: Head,
        service: &mut F,
        drain: Pin<&mut impl Future<Output = ()>>,
    ) -> After
    where
        F: FnMut(Request<RequestBody>) -> Fut,
        Fut: Future<Output = Response<B>>,
        B: Body<Data = Bytes> + Unpin + PassesFields,
        B::Error: Into<BoxError>,
    {
        let Head {
            mut parts,
            framing,
            keep_alive,
            expects_continue,
            upgrade,
            accepts_trailers,
        } = head;
        let method_is_head = parts.method == Method::HEAD;
        let is_connect = parts.method == Method::CONNECT;
        let request_version = parts.version;
        let mut upgrade_sender = None;
        if upgrade {
            let (sender, on_upgrade) = OnUpgrade::pair();
            parts.extensions.insert(on_upgrade);
            upgrade_sender = Some(sender);
        }
        let body = match (framing.is_empty(), self.inbound.take()) {
            (false, Some(inbound)) => RequestBody::lend(
                inbound,
                framing,
                Arc::clone(&self.handoff),
                expects_continue,
            ),
            (_, inbound) => {
                self.inbound = inbound;
                RequestBody::empty()
            }
        };
        // The service's future (the whole proxy path, kilobytes) is made where it stays, in
        // this exchange's state: moving it anywhere would cost a copy of all of it.
        let in_flight = pin!(service(Request::from_parts(parts, body)));
        let response = self
            .await_response(in_flight, expects_continue, drain)
            .await;
        let Some(response) = response else {
            // Dropped on return: the service sees its request cancelled.
            return After::Gone;
        };

        let (parts, body) = response.into_parts();
        let switching =
            upgrade_sender.is_some() && response::switches_protocols(is_connect, parts.status);
        let mut exchange = Exchange {
            method_is_head,
            request_version,
            keep_alive: keep_alive && !self.draining,
            switching,
        };
        let shape = BodyShape {
            is_end_stream: body.is_end_stream(),
            exact: body.size_hint().exact(),
        };
        let framing = response::encode_head(
            &mut self.out,
            parts.status,
            &parts.headers,
            body.passed_fields(),
            body.added_fields().as_slice(),
            &shape,
            &mut exchange,
        );
        crate::spare::give_back(parts.headers);
        let mut writer = BodyWriter::new(std::mem::take(&mut self.out), body, framing);
        if !accepts_trailers {
            writer = writer.without_trailers();
        }
        // While the response goes out, a client that closes its connection has gone: a stream
        // it was given (server-sent events, a long poll) stops now, not at its next write.
        let written = poll_fn(|cx| match writer.poll_write(cx, &mut self.writer) {
            Poll::Ready(result) => Poll::Ready(result.is_ok()),
            Poll::Pending if client_gone(&mut self.inbound, cx) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        })
        .await;
        if !written {
            return After::Gone;
        }
        self.out = writer.take_buffer();

        if let (true, Some(sender)) = (switching, upgrade_sender) {
            return After::Upgrade(sender);
        }
        if self.inbound.is_none() {
            // The body had the read side: it is back if the body was read to its end, or its
            // rest is already in the buffer.
            match self.handoff.take_back() {
                Some((mut inbound, mut framing)) => {
                    let read_through = skip_buffered(&mut framing, &mut inbound.read);
                    self.inbound = Some(inbound);
                    if !read_through {
                        return After::Close;
                    }
                }
                None => return After::Gone,
            }
        }
        if exchange.keep_alive && framing != Outbound::UntilClose {
            After::Next
        } else {
            After::Close
        }
    }

    /// Runs the service until its response head, meanwhile sending a `100 Continue` when the
    /// body asks for one and watching a bodiless request's connection: a client that closes it
    /// has given up, and the service is dropped (`None`).
    async fn await_response<B, Fut: Future<Output = Response<B>>>(
        &mut self,
        mut in_flight: Pin<&mut Fut>,
        expects_continue: bool,
        mut drain: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Response<B>> {
        let mut interim: &[u8] = b"";
        poll_fn(|cx| {
            if let Poll::Ready(response) = in_flight.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            if !self.draining && drain.as_mut().poll(cx).is_ready() {
                self.draining = true;
            }
            if expects_continue && self.handoff.poll_continue_wanted(cx) {
                interim = response::CONTINUE;
            }
            while !interim.is_empty() {
                match Pin::new(&mut self.writer).poll_write(cx, interim) {
                    Poll::Ready(Ok(n)) if n > 0 => interim = &interim[n..],
                    Poll::Ready(_) => return Poll::Ready(None),
                    Poll::Pending => break,
                }
                if interim.is_empty() && Pin::new(&mut self.writer).poll_flush(cx).is_ready() {
                    break;
                }
            }
            if client_gone(&mut self.inbound, cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Answers a request head that cannot be served, and closes.
    async fn refuse(&mut self, status: StatusCode, reason: &str) {
        response::refusal(&mut self.out, status, reason);
        if self.writer.write_all(&self.out).await.is_ok() && self.writer.flush().await.is_ok() {
            self.close().await;
        }
    }

    /// Closes the write side, then reads (and drops) what the client still sends for a while,
    /// so that unread bytes do not turn the close into a reset that loses the last response.
    async fn close(&mut self) {
        if self.writer.shutdown().await.is_err() {
            return;
        }
        let Some(inbound) = self.inbound.as_mut() else {
            return;
        };
        let mut dropped = 0;
        let _ = tokio::time::timeout(LINGER, async {
            while dropped < LINGER_BYTES {
                // Read into the connection's own buffer, emptied each time: no scratch buffer
                // in this future (it would be as large as the buffer).
                inbound.read.clear();
                match poll_fn(|cx| inbound.poll_fill(cx)).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => dropped += n,
                }
            }
        })
        .await;
    }

    /// The connection, for HTTP/2, with the bytes read so far put back.
    fn into_http2(mut self) -> Ended {
        match self.inbound.take() {
            Some(inbound) => {
                Ended::Http2(Rewound::new(inbound.read.freeze(), inbound.io, self.writer))
            }
            None => Ended::Closed,
        }
    }
}

/// Reads what a client sends while its request is served, when the connection holds the read
/// side (a request without a body, or one read to its end): bytes a pipelining client sends
/// ahead are kept for the next request (up to [`READ_AHEAD`]); the end of the stream means the
/// client has gone (true).
fn client_gone(inbound: &mut Option<Inbound>, cx: &mut Context<'_>) -> bool {
    let Some(inbound) = inbound.as_mut() else {
        return false;
    };
    while inbound.read.len() < READ_AHEAD {
        match inbound.poll_fill(cx) {
            Poll::Ready(Ok(0) | Err(_)) => return true,
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => break,
        }
    }
    false
}

/// Reads the rest of a body out of the buffer, if it is all there; whether it was.
fn skip_buffered(framing: &mut Framing, read: &mut bytes::BytesMut) -> bool {
    loop {
        match framing.next(read) {
            Ok(Piece::Data(_)) => {}
            Ok(Piece::Trailers(_) | Piece::End) => return true,
            Ok(Piece::NeedMore) | Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
