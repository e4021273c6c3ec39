//! Every limit of the plugin sandbox, in one place: what a plugin may use (CPU, memory, state,
//! callouts, ticks) and how the instance pool that runs plugins is sized. The per-plugin ones
//! have defaults here and are set with `[plugin.limits]`.

use std::time::Duration;

/// CPU time one hook call may use by default (`limits.time`).
pub const DEFAULT_TIME: Duration = Duration::from_millis(10);
/// The shortest `limits.time`: the deadline is checked once an epoch ([`EPOCH_TICK`]), so a
/// shorter one would fail whichever hooks happen to span a tick rather than slow ones.
pub const MIN_TIME: Duration = EPOCH_TICK;
/// Linear memory one instance may grow to by default (`limits.memory`).
pub const DEFAULT_MEMORY: usize = 32 * 1024 * 1024;
/// The largest `limits.memory` a plugin may ask for; also the pool's memory slot size.
pub const MAX_MEMORY: usize = 256 * 1024 * 1024;
/// The smallest `limits.memory` (a Rust plugin needs its stack and a little heap).
pub const MIN_MEMORY: usize = 64 * 1024;

/// CPU time allowed for `init` (parsing config), more than a hook gets.
pub const INIT_TIME: Duration = Duration::from_secs(1);
/// How often the epoch advances: a hook's CPU deadline is checked at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Instance slots in the engine's pool, across all plugins, unless [`SLOTS_VARIABLE`] says
/// otherwise.
pub const POOLED_INSTANCES: u32 = 256;
/// The environment variable that sets the pool's instance slots, read once at start. Each slot
/// reserves address space for two memories: 4 GiB each, so plugins' code needs no bounds checks
/// (256 slots: ~2 TiB), or [`MAX_MEMORY`] each where that much cannot be had (128 GiB; see
/// `plugin::engine::MemoryLayout`). Valgrind maps at most 64 GiB: 6 slots.
pub const SLOTS_VARIABLE: &str = "SWITCHYARD_PLUGIN_SLOTS";
/// The fewest and most slots [`SLOTS_VARIABLE`] may ask for.
pub const MIN_SLOTS: u32 = 4;
pub const MAX_SLOTS: u32 = 4096;

/// The pool's instance slots as [`SLOTS_VARIABLE`] gives them (`None`: not set).
pub fn pool_slots(variable: Option<&str>) -> Result<u32, String> {
    let Some(text) = variable else {
        return Ok(POOLED_INSTANCES);
    };
    text.trim()
        .parse()
        .ok()
        .filter(|n| (MIN_SLOTS..=MAX_SLOTS).contains(n))
        .ok_or_else(|| {
            format!(
                "{SLOTS_VARIABLE}={text:?}: expected a whole number of instance slots from \
                 {MIN_SLOTS} to {MAX_SLOTS}"
            )
        })
}

/// Idle instances kept per plugin (about two per worker thread).
pub const MAX_IDLE: usize = 16;
/// An instance is replaced after this many calls, to bound fragmentation and leaks.
pub const MAX_CALLS_PER_INSTANCE: u32 = 100_000;

/// Elements a Wasm table may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Per-request context is for small values; a larger value is dropped.
pub const MAX_CONTEXT_BYTES: usize = 64 * 1024;
/// Shared key-value entries per plugin; more are refused, so a misbehaving plugin cannot eat
/// the proxy's memory.
pub const MAX_KV_ENTRIES: usize = 100_000;

/// A callout without a timeout gets this one.
pub const CALLOUT_DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// No callout waits longer.
pub const CALLOUT_MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest callout response body a plugin receives.
pub const CALLOUT_MAX_BODY: usize = 1024 * 1024;

/// The shortest tick interval a plugin gets (`timer.tick-every`).
pub const MIN_TICK: Duration = Duration::from_millis(10);

/// Long-lived instances per proxy-wasm filter (at most one per CPU): each request's context
/// lives on one of them.
pub const FILTER_INSTANCES: usize = 4;
/// Metrics, and shared queues, one proxy-wasm filter may define.
pub const FILTER_MAX_DEFINED: usize = 1024;
/// Values one proxy-wasm shared queue holds; enqueueing more answers `InternalFailure`.
pub const FILTER_MAX_QUEUED: usize = 10_000;
/// The largest argument a proxy-wasm filter may pass the host in one call.
pub const FILTER_MAX_ARGUMENT: usize = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_slots_come_from_the_variable_within_bounds() {
        assert_eq!(pool_slots(None), Ok(POOLED_INSTANCES));
        assert_eq!(pool_slots(Some("32")), Ok(32));
        assert_eq!(pool_slots(Some(" 4096 ")), Ok(MAX_SLOTS));
        for bad in ["3", "4097", "-1", "lots", ""] {
            let error = pool_slots(Some(bad)).unwrap_err();
            assert!(
                error.starts_with("SWITCHYARD_PLUGIN_SLOTS=") && error.contains("from 4 to 4096"),
                "{bad:?}: {error}"
            );
        }
    }
}
