//! One client connection and the upstream connection it has to itself, as a state machine both
//! I/O loops drive: it says which operation comes next (a receive or a send, on which side, into
//! or out of which bytes) and is told what each did. Requests and responses are forwarded
//! unchanged, one exchange at a time; a pipelined request waits in the buffer for its turn.

use crate::message::{request, response};

/// How many bytes of a message may be in flight on one side: the benchmark's messages are a few
/// hundred bytes.
const BUFFER_BYTES: usize = 16 * 1024;

/// Which socket of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// What the pair needs done next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Receive from this side into [`Conn::spare`].
    Recv(Side),
    /// Send [`Conn::unsent`] to this side.
    Send(Side),
    /// Close both connections (a side closed, or a message the probe does not forward).
    Close,
}

impl Side {
    /// Where what this side sends goes.
    fn peer(self) -> Self {
        match self {
            Self::Client => Self::Upstream,
            Self::Upstream => Self::Client,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a message from this side: a request from the client, a response from upstream.
    Read(Side),
    /// Forwarding the first `end` bytes read from the other side to this one.
    Send {
        to: Side,
        end: usize,
        sent: usize,
    },
    Closed,
}

/// The bytes received from one side and not yet forwarded. Boxed and never resized, so an
/// operation in flight (io_uring's) may hold a pointer into it.
pub struct Buffer {
    bytes: Box<[u8]>,
    filled: usize,
}

impl Buffer {
    fn new() -> Self {
        Self {
            bytes: vec![0; BUFFER_BYTES].into_boxed_slice(),
            filled: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        &self.bytes[..self.filled]
    }

    /// Drops the first `n` bytes (a forwarded message), keeping what follows.
    fn consume(&mut self, n: usize) {
        self.bytes.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

/// A client connection's exchange with its upstream.
pub struct Conn {
    phase: Phase,
    /// The exchange in flight ends the connection (a `Connection: close` either way).
    last: bool,
    /// From the client: a request being read, and any pipelined after it.
    request: Buffer,
    /// From the upstream: a response being read.
    response: Buffer,
}

impl Default for Conn {
    fn default() -> Self {
        Self {
            phase: Phase::Read(Side::Client),
            last: false,
            request: Buffer::new(),
            response: Buffer::new(),
        }
    }
}

impl Conn {
    /// The operation to do next.
    pub fn next(&mut self) -> Op {
        loop {
            match self.phase {
                Phase::Read(from) => {
                    let read = self.buffer(from);
                    let room = read.filled < BUFFER_BYTES;
                    let parsed = match from {
                        Side::Client => request(read.filled()),
                        Side::Upstream => response(read.filled()),
                    };
                    match parsed {
                        Ok(Some(whole)) => {
                            // Either message may end the connection after this exchange (a
                            // request is read only while `last` is false).
                            self.last |= whole.close;
                            self.phase = Phase::Send {
                                to: from.peer(),
                                end: whole.len,
                                sent: 0,
                            };
                        }
                        Ok(None) if room => return Op::Recv(from),
                        Ok(None) | Err(_) => self.phase = Phase::Closed,
                    }
                }
                Phase::Send { to, end, sent } if sent == end => {
                    self.buffer(to.peer()).consume(end);
                    self.phase = match to {
                        Side::Upstream => Phase::Read(Side::Upstream),
                        Side::Client if self.last => Phase::Closed,
                        Side::Client => Phase::Read(Side::Client),
                    };
                }
                Phase::Send { to, .. } => return Op::Send(to),
                Phase::Closed => return Op::Close,
            }
        }
    }

    /// Where an [`Op::Recv`] puts what it receives.
    pub fn spare(&mut self, side: Side) -> &mut [u8] {
        let buffer = self.buffer(side);
        &mut buffer.bytes[buffer.filled..]
    }

    /// What an [`Op::Send`] sends.
    pub fn unsent(&self) -> &[u8] {
        match self.phase {
            Phase::Send { to, end, sent } => {
                let read = match to.peer() {
                    Side::Client => &self.request,
                    Side::Upstream => &self.response,
                };
                &read.bytes[sent..end]
            }
            Phase::Read(_) | Phase::Closed => &[],
        }
    }

    /// An [`Op::Recv`] received `n` bytes (0: the side closed).
    pub fn received(&mut self, side: Side, n: usize) {
        if n == 0 {
            self.phase = Phase::Closed;
            return;
        }
        let buffer = self.buffer(side);
        buffer.filled = (buffer.filled + n).min(BUFFER_BYTES);
    }

    /// An [`Op::Send`] sent `n` bytes.
    pub fn sent(&mut self, n: usize) {
        if let Phase::Send { end, sent, .. } = &mut self.phase {
            *sent = (*sent + n).min(*end);
        }
    }

    /// The operation failed: the pair is closed.
    pub fn failed(&mut self) {
        self.phase = Phase::Closed;
    }

    /// What has been read from `side`.
    fn buffer(&mut self, side: Side) -> &mut Buffer {
        match side {
            Side::Client => &mut self.request,
            Side::Upstream => &mut self.response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(conn: &mut Conn, side: Side, bytes: &[u8]) {
        conn.spare(side)[..bytes.len()].copy_from_slice(bytes);
        conn.received(side, bytes.len());
    }

    #[test]
    fn an_exchange_forwards_the_request_then_the_response_and_keeps_a_pipelined_request() {
        let mut conn = Conn::default();
        assert_eq!(conn.next(), Op::Recv(Side::Client));
        receive(&mut conn, Side::Client, b"GET /a HTTP/1.1\r\n\r\nGET /b HT");
        assert_eq!(conn.next(), Op::Send(Side::Upstream));
        assert_eq!(conn.unsent(), b"GET /a HTTP/1.1\r\n\r\n");
        conn.sent(4);
        assert_eq!(conn.next(), Op::Send(Side::Upstream));
        assert_eq!(conn.unsent(), b"/a HTTP/1.1\r\n\r\n");
        conn.sent(15);
        assert_eq!(conn.next(), Op::Recv(Side::Upstream));
        receive(
            &mut conn,
            Side::Upstream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        );
        assert_eq!(conn.next(), Op::Send(Side::Client));
        conn.sent(conn.unsent().len());
        // The pipelined request is not whole yet: read the rest.
        assert_eq!(conn.next(), Op::Recv(Side::Client));
        receive(&mut conn, Side::Client, b"TP/1.1\r\n\r\n");
        assert_eq!(conn.next(), Op::Send(Side::Upstream));
        assert_eq!(conn.unsent(), b"GET /b HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_response_to_a_request_that_asked_to_close_is_the_last() {
        let mut conn = Conn::default();
        receive(
            &mut conn,
            Side::Client,
            b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n",
        );
        assert_eq!(conn.next(), Op::Send(Side::Upstream));
        conn.sent(conn.unsent().len());
        receive(
            &mut conn,
            Side::Upstream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        );
        assert_eq!(conn.next(), Op::Send(Side::Client));
        conn.sent(conn.unsent().len());
        assert_eq!(conn.next(), Op::Close);
    }

    #[test]
    fn a_closed_side_or_an_unforwardable_message_closes_the_pair() {
        let mut conn = Conn::default();
        conn.received(Side::Client, 0);
        assert_eq!(conn.next(), Op::Close);
        let mut conn = Conn::default();
        receive(
            &mut conn,
            Side::Client,
            b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        assert_eq!(conn.next(), Op::Close);
    }
}
