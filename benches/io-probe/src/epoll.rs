//! The readiness loop, as nginx and tokio do it: edge-triggered epoll (through mio), and a
//! non-blocking `recv` or `send` for each operation a pair asks for. A short read means the
//! socket is drained (the next arrival is a new edge), so a request costs one `recv` and one
//! `send` per direction, as in the proxy.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::conn::{Conn, Op, Side};
use crate::{connect_upstream, free_slot};

const LISTENER: Token = Token(usize::MAX);

/// A pair with its two sockets and what epoll last said about each.
struct Pair {
    conn: Conn,
    client: Socket,
    upstream: Socket,
}

struct Socket {
    stream: TcpStream,
    readable: bool,
    writable: bool,
}

impl Socket {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            readable: false,
            writable: true,
        }
    }
}

/// Serves on `listen`, forwarding to `origin`, until the process is killed.
pub fn serve(listen: SocketAddr, origin: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut pairs: Vec<Option<Pair>> = Vec::new();
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            polled => polled?,
        }
        for event in &events {
            if event.token() == LISTENER {
                accept(&listener, &poll, &mut pairs, origin)?;
                continue;
            }
            let (index, side) = (event.token().0 / 2, event.token().0 % 2);
            let Some(pair) = pairs.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let socket = if side == 0 {
                &mut pair.client
            } else {
                &mut pair.upstream
            };
            socket.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
            socket.writable |= event.is_writable() || event.is_error();
            if !drive(pair) {
                pairs[index] = None;
            }
        }
    }
}

/// Accepts every waiting client, each with an upstream connection of its own.
fn accept(
    listener: &TcpListener,
    poll: &Poll,
    pairs: &mut Vec<Option<Pair>>,
    origin: SocketAddr,
) -> io::Result<()> {
    loop {
        let (client, _) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        client.set_nodelay(true)?;
        let upstream = connect_upstream(origin)?;
        upstream.set_nonblocking(true)?;
        let upstream = TcpStream::from_std(upstream);
        let index = free_slot(pairs);
        let mut pair = Pair {
            conn: Conn::default(),
            client: Socket::new(client),
            upstream: Socket::new(upstream),
        };
        let both = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut pair.client.stream, Token(index * 2), both)?;
        poll.registry()
            .register(&mut pair.upstream.stream, Token(index * 2 + 1), both)?;
        pairs[index] = Some(pair);
    }
}

/// Does what the pair asks for while its sockets are ready; false once it is closed.
fn drive(pair: &mut Pair) -> bool {
    loop {
        let op = pair.conn.next();
        let (side, socket) = match op {
            Op::Recv(side) | Op::Send(side) => match side {
                Side::Client => (side, &mut pair.client),
                Side::Upstream => (side, &mut pair.upstream),
            },
            Op::Close => return false,
        };
        match op {
            Op::Recv(_) if socket.readable => {
                let spare = pair.conn.spare(side);
                let room = spare.len();
                match socket.stream.read(spare) {
                    Ok(n) => {
                        socket.readable = n == room;
                        pair.conn.received(side, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.readable = false,
                    Err(_) => pair.conn.failed(),
                }
            }
            Op::Send(_) if socket.writable => {
                let unsent = pair.conn.unsent();
                let len = unsent.len();
                match socket.stream.write(unsent) {
                    Ok(n) => {
                        socket.writable = n == len;
                        pair.conn.sent(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.writable = false,
                    Err(_) => pair.conn.failed(),
                }
            }
            _ => return true,
        }
    }
}
