//! The listener's stop flag as a future an HTTP/1.1 connection can poll on every wake-up.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;

/// Resolves once the stop flag is true. The HTTP/1.1 engine polls it each time the connection
/// wakes (twice a request). The first poll puts the connection's task on the channel's waiting
/// list; later polls compare the channel's version (one atomic load) and leave the waiting future
/// alone until the version moves, where polling `wait_for` again took the value's read lock and
/// the waiters' lock every time. The task's waker does not change, so the one registered first
/// stays good.
pub struct Stopped<F> {
    version: watch::Receiver<bool>,
    waiting: F,
    registered: bool,
}

/// The future for `stop`.
pub fn stopped(stop: watch::Receiver<bool>) -> Stopped<impl Future<Output = ()> + Unpin> {
    let version = stop.clone();
    let mut stop = stop;
    Stopped {
        version,
        waiting: Box::pin(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }),
        registered: false,
    }
}

impl<F: Future<Output = ()> + Unpin> Future for Stopped<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // `Err` (the sender is gone) and `Ok(true)` both go to the waiting future, which knows
        // what they mean.
        if this.registered && matches!(this.version.has_changed(), Ok(false)) {
            return Poll::Pending;
        }
        this.registered = true;
        Pin::new(&mut this.waiting).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_the_first_pollers_task_and_resolves_once_the_flag_is_true() {
        let (flag, stop) = watch::channel(false);
        let counter = Arc::new(Counter::default());
        let waker = Arc::clone(&counter).into();
        let mut cx = Context::from_waker(&waker);
        let mut stopped = pin!(stopped(stop));
        for _ in 0..3 {
            assert!(stopped.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        flag.send_replace(true);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(stopped.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn resolves_at_once_when_already_stopped_or_when_the_sender_is_gone() {
        let waker = Arc::new(Counter::default()).into();
        let mut cx = Context::from_waker(&waker);
        let (_flag, stop) = watch::channel(true);
        assert!(pin!(stopped(stop)).poll(&mut cx).is_ready());

        let (flag, stop) = watch::channel(false);
        let mut stopped = pin!(stopped(stop));
        assert!(stopped.as_mut().poll(&mut cx).is_pending());
        drop(flag);
        assert!(stopped.as_mut().poll(&mut cx).is_ready());
    }
}
