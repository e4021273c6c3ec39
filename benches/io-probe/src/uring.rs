//! The completion loop: every operation a pair asks for is queued on an io_uring, and one
//! `io_uring_enter` both submits all that the last batch of completions produced and waits for
//! the next. Where the readiness loop makes one system call per `recv` and `send` (plus
//! `epoll_wait`), this one makes one per turn of the loop, whatever the number of connections
//! served in that turn.
//!
//! The only unsafe code of the probe is here: the kernel reads and writes the buffers of queued
//! operations, so each buffer must stay put and untouched until its completion. A pair has at
//! most one operation in flight, its buffers are boxed and never resized, and a pair is dropped
//! only when its operation has completed.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use io_uring::{IoUring, opcode, squeue, types};

use crate::conn::{Conn, Op, Side};
use crate::{connect_upstream, free_slot};

/// The accept operation's tag; a pair's operation is tagged with the pair's index.
const ACCEPT: u64 = u64::MAX;
/// Room in the rings: one operation per pair and the accept, for the benchmark's 64 clients.
const ENTRIES: u32 = 1024;

struct Pair {
    /// Boxed so that the buffers a queued operation points into stay put.
    conn: Box<Conn>,
    client: TcpStream,
    upstream: TcpStream,
    /// What the operation in flight is.
    in_flight: Op,
}

/// When the kernel completes the operations that had to wait (a `recv` whose data came later).
#[derive(Debug, Clone, Copy)]
pub enum TaskRun {
    /// As the data arrives, interrupting the loop (io_uring's default).
    Eager,
    /// At the loop's next `io_uring_enter`, in one batch (`IORING_SETUP_DEFER_TASKRUN`, for a
    /// ring only one thread uses; Linux 6.1).
    Deferred,
}

/// Serves on `listen`, forwarding to `origin`, until the process is killed.
pub fn serve(listen: SocketAddr, origin: SocketAddr, task_run: TaskRun) -> io::Result<()> {
    let mut builder = IoUring::builder();
    if let TaskRun::Deferred = task_run {
        builder.setup_single_issuer().setup_defer_taskrun();
    }
    let mut ring = builder.build(ENTRIES)?;
    let listener = TcpListener::bind(listen)?;
    let mut pairs: Vec<Option<Pair>> = Vec::new();
    let mut completions: Vec<(u64, i32)> = Vec::with_capacity(ENTRIES as usize);
    queue(&mut ring, accept(listener.as_raw_fd()))?;
    loop {
        match ring.submit_and_wait(1) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            submitted => submitted?,
        };
        completions.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (tag, result) in completions.drain(..) {
            if tag == ACCEPT {
                if result >= 0 {
                    // SAFETY: a successful accept's result is a new descriptor nothing else owns.
                    let client = unsafe { TcpStream::from_raw_fd(result) };
                    let index = add_pair(&mut pairs, client, origin)?;
                    issue(&mut ring, &mut pairs, index)?;
                }
                queue(&mut ring, accept(listener.as_raw_fd()))?;
                continue;
            }
            let index = usize::try_from(tag).unwrap_or(usize::MAX);
            let Some(pair) = pairs.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            match (pair.in_flight, usize::try_from(result)) {
                (_, Err(_)) => pair.conn.failed(),
                (Op::Recv(side), Ok(n)) => pair.conn.received(side, n),
                (Op::Send(_), Ok(n)) => pair.conn.sent(n),
                (Op::Close, Ok(_)) => {}
            }
            issue(&mut ring, &mut pairs, index)?;
        }
    }
}

fn add_pair(
    pairs: &mut Vec<Option<Pair>>,
    client: TcpStream,
    origin: SocketAddr,
) -> io::Result<usize> {
    client.set_nodelay(true)?;
    let upstream = connect_upstream(origin)?;
    let index = free_slot(pairs);
    pairs[index] = Some(Pair {
        conn: Box::default(),
        client,
        upstream,
        in_flight: Op::Close,
    });
    Ok(index)
}

/// Queues the operation pair `index` asks for next, or drops the pair when it is done.
fn issue(ring: &mut IoUring, pairs: &mut [Option<Pair>], index: usize) -> io::Result<()> {
    let Some(pair) = pairs.get_mut(index).and_then(Option::as_mut) else {
        return Ok(());
    };
    let op = pair.conn.next();
    let fd = |side| -> RawFd {
        match side {
            Side::Client => pair.client.as_raw_fd(),
            Side::Upstream => pair.upstream.as_raw_fd(),
        }
    };
    let entry = match op {
        Op::Recv(side) => {
            let fd = fd(side);
            let spare = pair.conn.spare(side);
            let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
            opcode::Recv::new(types::Fd(fd), spare.as_mut_ptr(), len).build()
        }
        Op::Send(side) => {
            let fd = fd(side);
            let unsent = pair.conn.unsent();
            let len = u32::try_from(unsent.len()).unwrap_or(u32::MAX);
            opcode::Send::new(types::Fd(fd), unsent.as_ptr(), len).build()
        }
        Op::Close => {
            pairs[index] = None;
            return Ok(());
        }
    };
    pair.in_flight = op;
    queue(ring, entry.user_data(index as u64))
}

fn accept(listener: RawFd) -> squeue::Entry {
    opcode::Accept::new(
        types::Fd(listener),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .build()
    .user_data(ACCEPT)
}

/// Adds `entry` to the submission queue, submitting what is queued first if it is full.
fn queue(ring: &mut IoUring, entry: squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: the entry's buffer (if any) is in a boxed `Conn` that stays in place, unread
        // and unwritten by the probe, until this operation's completion (see the module doc);
        // the accept passes no address buffers.
        if unsafe { ring.submission().push(&entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}
