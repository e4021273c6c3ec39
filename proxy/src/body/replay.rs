//! A request body that can be sent again while it is still streaming, as Linkerd's replay body:
//! the first attempt streams the client's body to the upstream frame by frame (a gRPC stream is
//! never held back waiting for its end) while a copy of each frame is kept, up to a cap. A retry
//! replays the copy and then carries on with the live stream; past the cap the copy is dropped
//! and the request can no longer be retried.
//!
//! Every attempt's body shares one state, so an earlier attempt that is still being written
//! (an HTTP/1.1 connection finishing its request) and a retry both see the whole stream.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::BodyError;

/// The client's body and the copy kept for retries, shared by every attempt's [`ReplayBody`].
#[derive(Debug)]
pub struct Replay<B> {
    shared: Arc<Mutex<Shared<B>>>,
}

#[derive(Debug)]
struct Shared<B> {
    /// The client's body, read by whichever attempt is furthest ahead.
    source: B,
    /// Data frames read so far, while they fit in `cap`.
    frames: Vec<Bytes>,
    buffered: usize,
    cap: usize,
    /// The client's trailers, once read.
    trailers: Option<HeaderMap>,
    /// The source has ended (after its trailers, if any).
    ended: bool,
    /// The copy went over the cap and was dropped: no more retries.
    overflowed: bool,
    /// How many frames were read in all (the copy holds all of them unless it overflowed).
    read: usize,
    /// Attempts waiting for the source, woken when any of them reads on: the source only
    /// remembers the last one to poll it.
    waiting: Vec<Waker>,
}

impl<B> Shared<B> {
    fn wake_others(&mut self, own: &Waker) {
        for waker in self.waiting.drain(..) {
            if !waker.will_wake(own) {
                waker.wake();
            }
        }
    }
}

/// Why a request body could not be sent again.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body went over the {cap} bytes kept for retries while an earlier attempt was still sending it"
)]
pub struct ReplayLost {
    cap: usize,
}

impl<B> Clone for Replay<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<B: Body> Replay<B> {
    /// Wraps the client's body, keeping up to `cap` bytes of it for retries.
    pub fn new(source: B, cap: usize) -> Self {
        let ended = source.is_end_stream();
        Self {
            shared: Arc::new(Mutex::new(Shared {
                source,
                frames: Vec::new(),
                buffered: 0,
                cap,
                trailers: None,
                ended,
                overflowed: false,
                read: 0,
                waiting: Vec::new(),
            })),
        }
    }

    /// Whether another attempt can still get the whole body.
    pub fn replayable(&self) -> bool {
        !self.lock().overflowed
    }

    /// A body for the next attempt: the kept copy first, then the live stream.
    pub fn attempt(&self) -> ReplayBody<B> {
        ReplayBody {
            shared: Arc::clone(&self.shared),
            position: 0,
            trailers_sent: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        lock(&self.shared)
    }
}

/// The shared state, whatever a panicking holder left (nothing here can be left half-updated
/// in a way that matters: the worst is a frame counted and not kept, which fails a replay).
fn lock<B>(shared: &Mutex<Shared<B>>) -> MutexGuard<'_, Shared<B>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One attempt's view of a [`Replay`].
#[derive(Debug)]
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// Frames of the stream this attempt has sent.
    position: usize,
    trailers_sent: bool,
}

impl<B> ReplayBody<B> {
    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        lock(&self.shared)
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes, Error = BodyError> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        if this.position < shared.read {
            if shared.overflowed {
                return Poll::Ready(Some(Err(Box::new(ReplayLost { cap: shared.cap }))));
            }
            let frame = shared.frames[this.position].clone();
            this.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if shared.ended {
            return Poll::Ready(match shared.trailers.clone() {
                Some(trailers) if !this.trailers_sent => {
                    this.trailers_sent = true;
                    Some(Ok(Frame::trailers(trailers)))
                }
                _ => None,
            });
        }
        // This attempt is the furthest ahead: read on from the client.
        let polled = Pin::new(&mut shared.source).poll_frame(cx);
        if polled.is_ready() {
            // Attempts behind this one may now have a frame (or the end) to replay.
            shared.wake_others(cx.waker());
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    shared.read += 1;
                    this.position = shared.read;
                    if !shared.overflowed && shared.buffered + data.len() <= shared.cap {
                        shared.buffered += data.len();
                        shared.frames.push(data.clone());
                    } else {
                        shared.overflowed = true;
                        shared.frames = Vec::new();
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        shared.trailers = Some(trailers.clone());
                        this.trailers_sent = true;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
            Poll::Ready(None) => {
                shared.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                if !shared.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                    shared.waiting.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        shared.ended
            && self.position >= shared.read
            && (self.trailers_sent || shared.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.lock();
        // What this attempt has still to replay, plus what the client has yet to send.
        let unsent: usize = shared
            .frames
            .get(self.position..)
            .map_or(0, |frames| frames.iter().map(Bytes::len).sum());
        let unsent = unsent as u64;
        if shared.ended {
            return SizeHint::with_exact(unsent);
        }
        let source = shared.source.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(source.lower() + unsent);
        if let Some(upper) = source.upper() {
            hint.set_upper(upper + unsent);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    type Chunks = http_body_util::StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BodyError>>>,
    >;

    fn chunks(parts: &[&'static str]) -> Chunks {
        let frames: Vec<Result<Frame<Bytes>, BodyError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn read_all(body: ReplayBody<Chunks>) -> Result<Bytes, BodyError> {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn a_body_under_the_cap_is_sent_again_whole() {
        let replay = Replay::new(chunks(&["ab", "cd", "ef"]), 16);
        assert_eq!(read_all(replay.attempt()).await.unwrap(), "abcdef");
        assert!(replay.replayable());
        assert_eq!(read_all(replay.attempt()).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn a_retry_started_mid_stream_replays_then_continues() {
        let replay = Replay::new(chunks(&["ab", "cd", "ef"]), 16);
        let mut first = replay.attempt();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        drop(first);
        assert!(replay.replayable());
        assert_eq!(read_all(replay.attempt()).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn a_retry_declares_the_length_still_to_send() {
        let replay = Replay::new(
            http_body_util::Full::new(Bytes::from_static(b"hello"))
                .map_err(|e| match e {})
                .boxed_unsync(),
            16,
        );
        assert_eq!(replay.attempt().size_hint().exact(), Some(5));
        assert_eq!(read_all_boxed(replay.attempt()).await, "hello");
        assert_eq!(replay.attempt().size_hint().exact(), Some(5));
    }

    async fn read_all_boxed(
        body: ReplayBody<http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>>,
    ) -> Bytes {
        body.collect().await.expect("reads").to_bytes()
    }

    #[tokio::test]
    async fn past_the_cap_the_stream_goes_on_but_cannot_be_replayed() {
        let replay = Replay::new(chunks(&["abcd", "efgh", "ij"]), 6);
        assert_eq!(read_all(replay.attempt()).await.unwrap(), "abcdefghij");
        assert!(!replay.replayable());
        assert!(read_all(replay.attempt()).await.is_err());
    }
}
