//! Every limit of the plugin sandbox, in one place: what a plugin may use (CPU, memory, state,
//! callouts, ticks) and how the instance pool that runs plugins is sized. The per-plugin ones
//! have defaults here and are set with `[plugin.limits]`.

use std::time::Duration;

/// CPU time one hook call may use by default (`limits.time`).
pub const DEFAULT_TIME: Duration = Duration::from_millis(10);
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

/// Instance slots in the engine's pool, across all plugins.
pub const POOLED_INSTANCES: u32 = 256;
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
