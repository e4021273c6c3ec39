//! `switchyard-io-probe`: what io_uring would save on the proxy's loopback I/O pattern (issue 22,
//! step 3), and what the async runtime costs. A minimal HTTP/1.1 keep-alive forwarder — each
//! client connection with an upstream connection of its own, requests and responses forwarded
//! unchanged — with one state machine and three ways of doing its I/O: `--mode epoll`
//! (readiness, one system call per receive and send, as the proxy and nginx make them),
//! `--mode io-uring` (completions, one system call per turn of the loop; `io-uring-eager`
//! without deferred task running) and `--mode tokio` (tokio tasks over epoll, as the proxy runs).
//! `cargo xtask bench --io-uring` runs the first two beside nginx and Switchyard.
//! It is a measuring tool, not a proxy: no header rewriting, no limits, no TLS.

mod conn;
mod epoll;
mod message;
mod runtime;
mod uring;

use std::net::{SocketAddr, TcpStream};

use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(about = "A minimal HTTP/1.1 forwarder to measure epoll against io_uring")]
struct Args {
    /// Where clients connect.
    #[arg(long)]
    listen: SocketAddr,
    /// Where every request is forwarded.
    #[arg(long)]
    origin: SocketAddr,
    /// The I/O loop.
    #[arg(long, value_enum)]
    mode: Mode,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Epoll,
    /// io_uring with deferred task running: completions are gathered at each enter.
    IoUring,
    /// io_uring with the kernel's default task running, for comparison.
    IoUringEager,
    /// tokio's current-thread runtime over epoll, as the proxy runs: what the runtime costs.
    Tokio,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode {
        Mode::Epoll => epoll::serve(args.listen, args.origin)?,
        Mode::IoUring => uring::serve(args.listen, args.origin, uring::TaskRun::Deferred)?,
        Mode::IoUringEager => uring::serve(args.listen, args.origin, uring::TaskRun::Eager)?,
        Mode::Tokio => runtime::serve(args.listen, args.origin)?,
    }
    Ok(())
}

/// The index of a free slot in `slots` (a closed pair's, or a new one at the end).
fn free_slot<T>(slots: &mut Vec<Option<T>>) -> usize {
    slots.iter().position(Option::is_none).unwrap_or_else(|| {
        slots.push(None);
        slots.len() - 1
    })
}

/// A connection to the origin for one client, with Nagle off as for the client side.
fn connect_upstream(origin: SocketAddr) -> std::io::Result<TcpStream> {
    let upstream = TcpStream::connect(origin)?;
    upstream.set_nodelay(true)?;
    Ok(upstream)
}
