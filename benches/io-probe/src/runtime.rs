//! The same forwarder on tokio's current-thread runtime, as the proxy runs it: a task per client
//! connection awaiting each read and write. Beside the plain epoll loop, it shows what the
//! runtime's machinery (tasks, wakers, readiness tracking) costs a request on this traffic.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::conn::{Conn, Op, Side};

/// Serves on `listen`, forwarding to `origin`, until the process is killed.
pub fn serve(listen: SocketAddr, origin: SocketAddr) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            client.set_nodelay(true)?;
            let upstream = TcpStream::connect(origin).await?;
            upstream.set_nodelay(true)?;
            tokio::spawn(forward(client, upstream));
        }
    })
}

/// Does what the pair asks for, one operation at a time, until it closes.
async fn forward(mut client: TcpStream, mut upstream: TcpStream) {
    let mut conn = Box::new(Conn::default());
    loop {
        let (side, receive) = match conn.next() {
            Op::Recv(side) => (side, true),
            Op::Send(side) => (side, false),
            Op::Close => return,
        };
        let stream = match side {
            Side::Client => &mut client,
            Side::Upstream => &mut upstream,
        };
        if receive {
            match stream.read(conn.spare(side)).await {
                Ok(n) => conn.received(side, n),
                Err(_) => conn.failed(),
            }
        } else {
            match stream.write(conn.unsent()).await {
                Ok(n) => conn.sent(n),
                Err(_) => conn.failed(),
            }
        }
    }
}
