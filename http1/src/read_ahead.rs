//! Bytes read off a connection ahead of whoever takes it next (after a 101, or when a client
//! turns out to speak HTTP/2): they are read first, then the connection.

use bytes::Bytes;
use tokio::io::ReadBuf;

/// Moves what fits of `read_ahead` into `buf`; true when it moved anything, and the read is
/// done without touching the connection.
pub(crate) fn give(read_ahead: &mut Bytes, buf: &mut ReadBuf<'_>) -> bool {
    if read_ahead.is_empty() {
        return false;
    }
    let n = read_ahead.len().min(buf.remaining());
    buf.put_slice(&read_ahead.split_to(n));
    true
}
