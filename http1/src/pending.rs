//! A head's fields taken off the read buffer without copying it. The parser's view borrows the
//! buffer, so what the header map needs of each field — its name, parsed, and where its value
//! is — is set aside while the view lasts; then the head is split off the buffer (shared with
//! it, not copied: the buffer is reference-counted) and each value is a slice of the head.
//!
//! A value kept after its message keeps the buffer's chunk (8 KiB) alive with it; the engine's
//! own messages are dropped before the next head is read, so the buffer is reused in place.

use std::cell::Cell;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, InvalidHeaderValue};
use http::{HeaderMap, HeaderName};

use crate::spare;

/// Fields set aside: each name and where its value is in the head.
pub(crate) type Pending = Vec<(HeaderName, Range<usize>)>;

thread_local! {
    /// Each thread's list, lent to one parse at a time so that a warm parse does not allocate.
    static PENDING: Cell<Pending> = const { Cell::new(Vec::new()) };
}

/// An empty list to set a head's fields aside in; [`split_head`] gives it back.
pub(crate) fn take() -> Pending {
    PENDING.take()
}

/// Splits the head (its first `len` bytes) off `read` once the parser's view of it has ended,
/// and builds its map from the fields set aside, each value a slice of the head; `room`: fields
/// the map has room for beyond these. The list goes back for the next parse.
pub(crate) fn split_head(
    read: &mut BytesMut,
    len: usize,
    mut pending: Pending,
    room: usize,
) -> Result<(Bytes, HeaderMap), InvalidHeaderValue> {
    let head = read.split_to(len).freeze();
    let mut headers = spare::header_map(pending.len() + room);
    // Drained whole even when a value is refused, so the list goes back empty either way.
    let filled = pending.drain(..).try_for_each(|(name, value_at)| {
        headers.append(name, HeaderValue::from_maybe_shared(head.slice(value_at))?);
        Ok(())
    });
    PENDING.set(pending);
    filled.map(|()| (head, headers))
}

/// Where `part`, a slice of the buffer starting at `start`, is in it.
pub(crate) fn range_of(part: &[u8], start: *const u8) -> Range<usize> {
    let at = part.as_ptr() as usize - start as usize;
    at..at + part.len()
}
