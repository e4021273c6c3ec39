//! Telemetry each worker thread writes into its own cache lines.
//!
//! A request updates a dozen counters (the golden signals, the mesh view's traffic, a plugin's
//! calls); as shared atomics each update is a locked instruction, which on this machine costs
//! ~4 ns and holds up the stores around it, and the request path has nothing else to gain from
//! being atomic. A [`Sharded`] value keeps one copy per worker thread: a worker that owns its
//! shard adds with a plain load and store ([`Writer::Only`]), any other thread (the admin API,
//! tests, a runtime's blocking pool) adds to the last shard with an atomic add
//! ([`Writer::Shared`]), and a reading sums the shards. Envoy's thread-local stats make the same
//! trade.
//!
//! A thread owns a shard only after [`claim`], and a shard index is handed out once in the
//! process, so no two threads ever write one shard with plain stores; the number of shards to
//! hand out is fixed by [`set_workers`] before the first sharded value is made.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The most threads that get a shard of their own: past it, threads share the last shard.
const MAX_OWNED: usize = 256;

/// How many threads get a shard of their own; unset (no server started: tests, tools) means none.
static OWNED: OnceLock<usize> = OnceLock::new();
/// The next shard index to hand out.
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's own shard, or `usize::MAX` when it shares the last one.
    static OWN_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Sets how many threads will get a shard of their own (the runtime's workers, plus the thread
/// that drives it). Only the first call counts; call it before any sharded value is made.
pub fn set_workers(threads: usize) {
    let _ = OWNED.set(threads.min(MAX_OWNED));
}

/// Gives the calling thread a shard of its own if one is left (each index once in the
/// process). Called as a runtime's threads start; a thread that calls it again keeps its shard.
pub fn claim() {
    OWN_SHARD.with(|own| {
        if own.get() != usize::MAX {
            return;
        }
        let owned = owned();
        let index = NEXT.fetch_add(1, Ordering::Relaxed);
        if index < owned {
            own.set(index);
        }
    });
}

fn owned() -> usize {
    OWNED.get().copied().unwrap_or(0)
}

/// How a thread adds to the shard it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The thread owns the shard: no other thread writes it.
    Only,
    /// The shard is shared with other threads.
    Shared,
}

impl Writer {
    /// Adds `n` to `cell`.
    #[inline]
    pub fn add(self, cell: &AtomicU64, n: u64) {
        match self {
            Writer::Only => cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            ),
            Writer::Shared => {
                cell.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Adds `value` to the `f64` whose bits `cell` holds.
    #[inline]
    pub fn add_f64(self, cell: &AtomicU64, value: f64) {
        let add = |bits: u64| (f64::from_bits(bits) + value).to_bits();
        match self {
            Writer::Only => cell.store(add(cell.load(Ordering::Relaxed)), Ordering::Relaxed),
            Writer::Shared => {
                let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(add(b)));
            }
        }
    }
}

/// One copy of `T` per owning thread plus one shared, each on cache lines of its own.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[Padded<T>]>,
}

/// A shard aligned to a cache line, so two threads' shards never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded<T>(T);

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self::new_with(T::default)
    }
}

impl<T> Sharded<T> {
    /// Shards made by `make`: one per thread that can own one, and the shared one.
    pub fn new_with(mut make: impl FnMut() -> T) -> Self {
        Self {
            shards: (0..=owned()).map(|_| Padded(make())).collect(),
        }
    }

    /// The calling thread's shard, and how it may write it.
    #[inline]
    pub fn local(&self) -> (&T, Writer) {
        let own = OWN_SHARD.with(Cell::get);
        let shared = self.shards.len() - 1;
        match self.shards.get(own) {
            Some(shard) if own < shared => (&shard.0, Writer::Only),
            _ => (&self.shards[shared].0, Writer::Shared),
        }
    }

    /// Every shard, to sum for a reading.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|shard| &shard.0)
    }
}

/// The sum of `read` over the shards of `sharded`.
pub fn sum<T>(sharded: &Sharded<T>, read: impl Fn(&T) -> &AtomicU64) -> u64 {
    sharded
        .iter()
        .map(|shard| read(shard).load(Ordering::Relaxed))
        .fold(0, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unclaimed_threads_add_to_the_shared_shard_atomically() {
        let counter: std::sync::Arc<Sharded<AtomicU64>> = std::sync::Arc::default();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = std::sync::Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let (cell, writer) = counter.local();
                        assert_eq!(writer, Writer::Shared);
                        writer.add(cell, 1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(sum(&counter, |c| c), 40_000);
    }

    #[test]
    fn threads_that_claim_a_shard_write_it_alone_and_the_sum_loses_nothing() {
        // The only test here that claims: shards are handed out once per process.
        set_workers(MAX_OWNED);
        let counter: std::sync::Arc<Sharded<AtomicU64>> = std::sync::Arc::default();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = std::sync::Arc::clone(&counter);
                std::thread::spawn(move || {
                    claim();
                    let mut writers = Vec::new();
                    for _ in 0..10_000 {
                        let (cell, writer) = counter.local();
                        writer.add(cell, 1);
                        writers.push(writer);
                    }
                    writers
                })
            })
            .collect();
        let mut own_shards = 0;
        for thread in threads {
            let writers = thread.join().unwrap();
            assert!(writers.windows(2).all(|w| w[0] == w[1]));
            own_shards += usize::from(writers[0] == Writer::Only);
        }
        assert_eq!(sum(&counter, |c| c), 40_000);
        // Unless another caller fixed fewer owned shards first, every thread got its own.
        if owned() == MAX_OWNED {
            assert_eq!(own_shards, 4);
        }
    }

    #[test]
    fn an_owned_shard_adds_with_plain_stores_and_sums_with_the_rest() {
        let cell = AtomicU64::new(5);
        Writer::Only.add(&cell, 3);
        Writer::Shared.add(&cell, 2);
        assert_eq!(cell.load(Ordering::Relaxed), 10);
        let sum_bits = AtomicU64::new(0f64.to_bits());
        Writer::Only.add_f64(&sum_bits, 0.25);
        Writer::Shared.add_f64(&sum_bits, 0.5);
        assert_eq!(f64::from_bits(sum_bits.load(Ordering::Relaxed)), 0.75);
    }
}
