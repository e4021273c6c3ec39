//! The epoch ticker: the thread that advances the engine's epoch, so running hooks check their
//! CPU deadline every [`EPOCH_TICK`]. It only ticks while hooks run: after [`IDLE_BEFORE_PARK`]
//! without one it parks, and the next hook to start wakes it. A sidecar that serves nothing then
//! has no thread waking a thousand times a second (16 ms of CPU a second on these machines).
//!
//! Staying awake is cheap for hooks: starting one reads a flag, and writes it only when the
//! ticker cleared it since (once per tick at most). A hook that runs for long keeps the ticker
//! awake from its deadline checks, and one resuming after a callout marks itself again, so no
//! running hook is ever left without ticks.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread::Thread;
use std::time::Duration;

use tracing::warn;
use wasmtime::{Engine, EngineWeak};

pub use crate::sandbox::EPOCH_TICK;

/// How long the ticker goes on without a hook before it parks.
pub const IDLE_BEFORE_PARK: Duration = Duration::from_secs(1);

/// Set by hooks (starting, resuming, checking their deadline); cleared by the ticker each tick.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Set by the ticker just before it parks.
static PARKED: AtomicBool = AtomicBool::new(false);
/// The ticker's thread, to unpark; set once it runs.
static TICKER: OnceLock<Thread> = OnceLock::new();

/// Starts the ticker for `engine`, once per process (the engine is one per process too).
pub fn start(engine: &Engine) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| spawn(engine.weak()));
}

/// Marks a hook as running, waking the ticker if it parked. Called when a hook starts or resumes
/// after waiting, and from its deadline checks.
pub fn hook_running() {
    // Sequentially consistent (a plain load on x86) so that this and the ticker's decision to
    // park cannot both miss each other: either the ticker sees ACTIVE, or this sees PARKED.
    if !ACTIVE.load(SeqCst) {
        ACTIVE.store(true, SeqCst);
        if PARKED.load(SeqCst)
            && let Some(ticker) = TICKER.get()
        {
            ticker.unpark();
        }
    }
}

fn spawn(engine: EngineWeak) {
    let spawned = std::thread::Builder::new()
        .name("switchyard-epoch".into())
        .spawn(move || {
            let _ = TICKER.set(std::thread::current());
            tick_while_alive(&engine);
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the epoch ticker; plugin CPU deadlines will not fire");
    }
}

fn tick_while_alive(engine: &EngineWeak) {
    let idle_ticks_before_park = (IDLE_BEFORE_PARK.as_micros() / EPOCH_TICK.as_micros()) as u32;
    let mut idle_ticks = 0u32;
    loop {
        // Sleep first: after waking, the hook that woke us gets a whole tick before its first
        // deadline check, as it would have with the ticker running.
        std::thread::sleep(EPOCH_TICK);
        let Some(engine) = engine.upgrade() else {
            return;
        };
        engine.increment_epoch();
        drop(engine);
        if ACTIVE.swap(false, SeqCst) {
            idle_ticks = 0;
            continue;
        }
        idle_ticks += 1;
        if idle_ticks < idle_ticks_before_park {
            continue;
        }
        PARKED.store(true, SeqCst);
        if !ACTIVE.load(SeqCst) {
            // Spurious wake-ups are harmless: the loop ticks and parks again when idle.
            std::thread::park();
        }
        PARKED.store(false, SeqCst);
        idle_ticks = 0;
    }
}
