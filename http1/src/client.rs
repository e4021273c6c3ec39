//! The upstream side of the HTTP/1.1 engine: one request at a time on a kept-alive connection.
//!
//! The task that owns the request writes it — the head and the first piece of the body in one
//! vectored write — and reads the response head; the response body then owns the connection and
//! reads it as the client takes the bytes, sending whatever is left of the request body on the
//! way (full duplex). There is no connection task and no channel between the two halves. When
//! the response has been read to its end on a connection that can stay open, the body hands the
//! connection back through [`Keep`] at once — before the client has been sent the last bytes.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub use super::added::AddedField;
use super::chunked::{ChunkedDecoder, ChunkedError};
use super::fields::FramingFields;
pub use super::framing::Framing;
use super::framing::Piece;
use super::passed::PassedBuilder;
pub use super::passed::{PassedFields, ResponseFields};
use super::writer::{BodyWriter, Outbound, WriteError, write_field, write_length};

/// The largest response head accepted (status line and fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most response header fields accepted (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// How much the read buffer grows by when it runs out of room.
const READ_CHUNK: usize = 8 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an exchange on a connection failed. The connection is gone with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the connection closed before any response")]
    Closed,
    #[error("the connection closed in the middle of the response head")]
    IncompleteHead,
    #[error("the connection closed before the response body ended")]
    IncompleteBody,
    #[error("malformed response head: {0}")]
    BadHead(httparse::Error),
    #[error("the response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the response has an invalid content-length")]
    BadContentLength,
    #[error("malformed chunked response body: {0}")]
    Chunked(#[from] ChunkedError),
    #[error("the request body failed: {0}")]
    RequestBody(#[source] BoxError),
    #[error("the request body does not match its content-length")]
    RequestBodyLength,
    #[error("no response head came by the deadline")]
    TimedOut,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<WriteError> for Error {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Body(e) => Self::RequestBody(e),
            WriteError::Length => Self::RequestBodyLength,
            WriteError::Io(e) => Self::Io(e),
        }
    }
}

/// A failed exchange, with the request head back when it is known that no response was begun
/// to a request without a body: the connection closed before a single byte came back. (A kept
/// connection the endpoint closed while idle fails this way; an idempotent request can then be
/// sent again on another connection.)
#[derive(Debug)]
pub struct SendError {
    pub error: Error,
    pub unanswered: Option<http::request::Parts>,
}

/// Takes a connection back when a response on it has ended and it can carry another request
/// (the pool implements it). Dropped unused when the connection cannot be kept.
pub trait Keep<S>: Send + Unpin + 'static {
    fn keep(self, connection: Connection<S>);
}

/// One HTTP/1.1 connection to an upstream, idle between requests.
#[derive(Debug)]
pub struct Connection<S> {
    io: S,
    /// Its buffers and timer, boxed: the connection is part of every response body, which
    /// moves through every level of a proxy's request path (above 256 bytes, each move is a
    /// `memcpy` loop rather than a few vector moves).
    retained: Box<Retained>,
}

/// What a [`Connection`] keeps from one request to the next.
#[derive(Debug)]
struct Retained {
    /// Bytes read and not yet parsed.
    read: BytesMut,
    /// The buffer request heads are written into.
    head: Vec<u8>,
    /// Wakes a request waiting for its response head at its deadline; made on the first
    /// request sent with one (see [`Connection::deadline_passed`]).
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the connection can carry another request once the response being read ends.
    keep_alive: bool,
}

impl<S> Connection<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            retained: Box::new(Retained {
                read: BytesMut::with_capacity(READ_CHUNK),
                head: Vec::with_capacity(512),
                timer: None,
                keep_alive: false,
            }),
        }
    }

    /// The byte stream, to check it is still open while the connection is idle.
    pub fn io(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Sends `req` and waits for the response head. The response's body owns the connection from
    /// then on; `keeper` gets it back when it can carry another request.
    ///
    /// The head is encoded before the future exists, so the future holds the encoded request,
    /// not the request too (a caller's future holds this one, and moves it).
    ///
    /// `added` fields are written after the request's map (a proxy's own fields, kept out of
    /// the map: each insertion hashes the name and may grow the map); they are never framing or
    /// connection fields. A request that comes back unanswered ([`SendError::unanswered`]) has
    /// its map only: it goes again with the same `added`.
    ///
    /// Without a response head by `deadline`, the exchange fails with [`Error::TimedOut`].
    pub fn send<B, K>(
        mut self,
        req: Request<B>,
        added: &[AddedField<'_>],
        keeper: K,
        wanted: ResponseFields,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Response<ResponseBody<S, B, K>>, SendError>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
        K: Keep<S>,
    {
        let (parts, body) = req.into_parts();
        let head_request = parts.method == Method::HEAD;
        let (mut writer, wants_close) =
            request_writer(&parts, added, body, std::mem::take(&mut self.retained.head));
        // A block, not an `async fn`: an async fn's future keeps its arguments twice.
        async move {
            let mut write_error = None;
            let parsed = poll_fn(|cx| {
                if !writer.done && write_error.is_none() {
                    match writer.poll_write(cx, &mut self.io).map_err(Error::from) {
                        Poll::Ready(Ok(())) => {}
                        // The client's body failed: the request cannot be completed, and the
                        // endpoint may be waiting for the rest of it.
                        Poll::Ready(Err(
                            e @ (Error::RequestBody(_) | Error::RequestBodyLength),
                        )) => {
                            return Poll::Ready(Err(e));
                        }
                        // The endpoint may have answered early and stopped reading: read on.
                        Poll::Ready(Err(e)) => write_error = Some(e),
                        Poll::Pending => {}
                    }
                }
                let head = self.poll_head(cx, head_request, wanted);
                if head.is_pending()
                    && let Some(deadline) = deadline
                    && self.deadline_passed(cx, deadline)
                {
                    return Poll::Ready(Err(Error::TimedOut));
                }
                head
            })
            .await;
            let parsed = match (parsed, write_error) {
                (Ok(parsed), write_error) => (parsed, write_error.is_some()),
                (Err(read_error), write_error) => {
                    // The failed write explains a missing response best.
                    let error = match (read_error, write_error) {
                        (Error::Closed, Some(e)) => e,
                        (e, _) => e,
                    };
                    let unanswered = writer.framing == Outbound::Empty
                        && self.retained.read.is_empty()
                        && matches!(error, Error::Closed | Error::Io(_));
                    return Err(SendError {
                        error,
                        unanswered: unanswered.then_some(parts),
                    });
                }
            };
            crate::spare::give_back(parts.headers);
            let (
                ParsedHead {
                    head,
                    framing,
                    keep_alive,
                    passed,
                },
                write_failed,
            ) = parsed;
            let writer = if writer.done {
                self.retained.head = writer.take_buffer();
                None
            } else if write_failed {
                None
            } else {
                Some(Box::new(writer))
            };
            self.retained.keep_alive = keep_alive && !write_failed && !wants_close;
            let mut body = ResponseBody {
                conn: Some(self),
                framing,
                writer,
                keeper: Some(keeper),
                passed: passed.unwrap_or(PassedFields::none()),
            };
            if body.framing.is_empty() {
                // Nothing to read: the connection can take the next request now, whether or not
                // anybody polls this body.
                body.finish();
            }
            Ok(Response::from_parts(head, body))
        }
    }

    /// Reads until a final response head is complete (interim 1xx responses are skipped).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        wanted: ResponseFields,
    ) -> Poll<Result<ParsedHead, Error>> {
        loop {
            if let Some(parsed) = parse_head(&mut self.retained.read, head_request, wanted)? {
                let status = parsed.head.status;
                if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                return Poll::Ready(Ok(parsed));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(if self.retained.read.is_empty() {
                    Error::Closed
                } else {
                    Error::IncompleteHead
                }));
            }
        }
    }

    /// Whether `deadline` has passed; if not, the task is woken by then. The connection's timer
    /// is not moved to each request's deadline (taking it out of the runtime's timer wheel and
    /// putting it back, under the wheel's lock, on every request): deadlines mostly move later,
    /// so a timer still set for an earlier request's fires early, at most once a timeout, and is
    /// then set for this one. Only a deadline earlier than the timer's moves it at once.
    fn deadline_passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        let timer = self
            .retained
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                return true;
            }
            timer.as_mut().reset(deadline);
        }
        false
    }

    /// Reads what the connection has into the buffer; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.retained.read.capacity() - self.retained.read.len() < 1024 {
            self.retained.read.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.retained.read)
    }
}

/// A response head as [`parse_head`] read it.
#[derive(Debug)]
pub struct ParsedHead {
    /// The status and version, and the fields unless they were passed.
    pub head: http::response::Parts,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection can carry another request after this response.
    pub keep_alive: bool,
    /// The fields, when they were asked for passed and could be.
    pub passed: Option<PassedFields>,
}

/// Parses a complete response head at the start of `read`, consuming it; `None` while it is
/// partial. `head_request` says the request was HEAD (no body follows whatever the head says);
/// `wanted`, how the fields are handed over.
/// Public for the fuzz target; [`Connection::send`] is the way in otherwise.
pub fn parse_head(
    read: &mut BytesMut,
    head_request: bool,
    wanted: ResponseFields,
) -> Result<Option<ParsedHead>, Error> {
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        read,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if read.len() > MAX_HEAD => return Err(Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::BadHead(e)),
    };
    if len > MAX_HEAD {
        return Err(Error::HeadTooLarge);
    }
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(Error::BadHead(httparse::Error::Status))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let start = read.as_ptr();
    // Passed only when every field can go out as it came (see `passed`).
    let passed = (wanted == ResponseFields::Passed && !status.is_informational())
        .then(|| {
            let mut builder = PassedBuilder::new(response.headers.len());
            let mut framing = FramingFields::default();
            for field in response.headers.iter() {
                builder.field(&mut framing, start, field.name.as_bytes(), field.value);
            }
            (builder, framing)
        })
        .filter(|(builder, framing)| {
            !builder.unusual()
                && (framing.transfer_encoding_fields == 0 || framing.length_fields == 0)
        });
    let (mut headers, fields, passed, chunked) = match passed {
        Some((builder, framing)) => {
            let head = read.split_to(len).freeze();
            let (passed, chunked) = builder.finish(head, &framing);
            // Empty, with room for what a proxy adds (via, request id).
            (crate::spare::header_map(4), framing, Some(passed), chunked)
        }
        None => {
            let mut fields = FramingFields::default();
            let mut pending = crate::pending::take();
            for field in response.headers.iter() {
                let name = crate::names::header_name(field.name.as_bytes())
                    .map_err(|_| Error::BadHead(httparse::Error::HeaderName))?;
                fields.note(&name, field.value);
                pending.push((name, crate::pending::range_of(field.value, start)));
            }
            // The head leaves the buffer (shared, not copied), with room in its map for the
            // fields a proxy adds (via, request id).
            let (_, headers) = crate::pending::split_head(read, len, pending, 4)
                .map_err(|_| Error::BadHead(httparse::Error::HeaderValue))?;
            // Looked up only when there is a coding to read (most responses have none).
            let chunked = fields.transfer_encoding_fields > 0 && {
                let codings = headers.get_all(header::TRANSFER_ENCODING).iter();
                crate::fields::chunked_last(codings.map(HeaderValue::as_bytes))
            };
            (headers, fields, None, chunked)
        }
    };
    let mut keep_alive = match version {
        Version::HTTP_10 => fields.keep_alive,
        _ => !fields.close,
    };
    let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
        keep_alive = false;
        Framing::Upgrade
    } else if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if fields.transfer_encoding_fields > 0 {
        // Transfer-Encoding wins over Content-Length, which must not reach the client beside a
        // body of another length; a message with both does not get to reuse the connection.
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        if chunked {
            Framing::Chunked(ChunkedDecoder::default())
        } else {
            keep_alive = false;
            Framing::UntilClose
        }
    } else if fields.length_fields > 0 {
        Framing::Length(fields.content_length().ok_or(Error::BadContentLength)?)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(ParsedHead {
        head: parts,
        framing,
        keep_alive,
        passed,
    }))
}

/// The request head, encoded into `out` (reused from the last request), and the writer that
/// sends it with the body; and whether the request asks to close the connection after it.
fn request_writer<B>(
    parts: &http::request::Parts,
    added: &[AddedField<'_>],
    body: B,
    mut out: Vec<u8>,
) -> (BodyWriter<B>, bool)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut fields = FramingFields::default();
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            fields.note(name, value.as_bytes());
            continue;
        }
        if name == header::CONNECTION {
            fields.note(name, value.as_bytes());
        }
        write_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in added {
        write_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    // Decided after the fields are written, from what they said: the framing's own field comes
    // last.
    let declared = fields.content_length();
    let framing = if body.is_end_stream() {
        Outbound::Empty
    } else if let Some(length) = declared.or(body.size_hint().exact()) {
        Outbound::Length(length)
    } else {
        Outbound::Chunked
    };
    match framing {
        Outbound::Empty => {
            let says_body = declared.is_some()
                || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
            if says_body {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Outbound::Length(length) => write_length(&mut out, length),
        Outbound::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Outbound::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
    (BodyWriter::new(out, body, framing), fields.close)
}

/// A response body read off the connection as the client takes it. Holds the connection (and
/// what is left to send of the request body) until the response ends.
///
/// Every word counts: the body moves through each level of a proxy's request path, and above
/// 256 bytes a response's move is a `memcpy` loop rather than a few vector stores.
pub struct ResponseBody<S, B, K> {
    /// The connection, which also knows whether it can carry another request after this
    /// response ([`Retained::keep_alive`]).
    conn: Option<Connection<S>>,
    framing: Framing,
    /// The rest of a request body still being sent while the response streams back.
    writer: Option<Box<BodyWriter<B>>>,
    keeper: Option<K>,
    /// The head's fields when they were passed: they travel with the body (a response's
    /// extensions would cost three allocations) to the server that writes the head.
    passed: PassedFields,
}

impl<S, B, K> std::fmt::Debug for ResponseBody<S, B, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl<S, B, K> ResponseBody<S, B, K> {
    /// The response's fields, if they were passed ([`ResponseFields::Passed`]).
    pub fn passed_fields(&self) -> Option<&PassedFields> {
        (!self.passed.is_none()).then_some(&self.passed)
    }

    /// Takes the passed fields, for a caller that must read them into the head's map after all.
    pub fn take_passed_fields(&mut self) -> Option<PassedFields> {
        (!self.passed.is_none()).then(|| std::mem::replace(&mut self.passed, PassedFields::none()))
    }
}

impl<S, B, K: Keep<S>> ResponseBody<S, B, K> {
    /// The response has been read to its end: the connection goes back when it can be kept.
    fn finish(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let reusable =
            conn.retained.keep_alive && self.writer.is_none() && conn.retained.read.is_empty();
        self.writer = None;
        if reusable && let Some(keeper) = self.keeper.take() {
            keeper.keep(conn);
        }
    }

    /// After a 101: the connection, with any bytes the upstream sent past the head.
    pub fn into_upgraded(mut self) -> Option<Upgraded<S, K>> {
        if !matches!(self.framing, Framing::Upgrade) {
            return None;
        }
        let conn = self.conn.take()?;
        Some(Upgraded {
            io: conn.io,
            read_ahead: conn.retained.read.freeze(),
            _keeper: self.keeper.take(),
        })
    }
}

impl<S, B, K> Body for ResponseBody<S, B, K>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    K: Keep<S>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if let (Some(writer), Some(conn)) = (&mut this.writer, &mut this.conn) {
            match writer.poll_write(cx, &mut conn.io) {
                Poll::Ready(Ok(())) => this.writer = None,
                Poll::Ready(Err(_)) => {
                    this.writer = None;
                    conn.retained.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.next(&mut conn.retained.read) {
                Ok(Piece::Data(data)) => {
                    if this.framing.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Piece::Trailers(trailers)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Piece::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Piece::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::IncompleteBody)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing.is_empty() || matches!(self.framing, Framing::Upgrade)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) if self.conn.is_some() => SizeHint::with_exact(left),
            Framing::Empty | Framing::Upgrade | Framing::Length(_) => SizeHint::with_exact(0),
            _ if self.conn.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A connection switched to another protocol (WebSocket and the like) after a 101.
pub struct Upgraded<S, K> {
    io: S,
    /// Bytes of the new protocol that came with the 101's head.
    read_ahead: Bytes,
    /// Whatever the connection held (its place under the cluster's connection limit) lives as
    /// long as the tunnel.
    _keeper: Option<K>,
}

impl<S: AsyncRead + Unpin, K: Unpin> AsyncRead for Upgraded<S, K> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if crate::read_ahead::give(&mut this.read_ahead, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin, K: Unpin> AsyncWrite for Upgraded<S, K> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
