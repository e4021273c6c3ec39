//! The engine every plugin runs on: wasmtime's settings, its pooling allocator, and the on-disk
//! cache of compiled plugins (the epoch ticker that enforces CPU deadlines is in `epoch`).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::hex::hex;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig, ProfilingStrategy,
};

use crate::sandbox::{MAX_MEMORY as MAX_PLUGIN_MEMORY, POOLED_INSTANCES, SLOTS_VARIABLE};

/// The pool's instance slots: `SWITCHYARD_PLUGIN_SLOTS` as read the first time, or the default.
/// Read once, so the engine and every plugin's share of it agree.
fn pool_slots() -> Result<u32, String> {
    static SLOTS: OnceLock<Result<u32, String>> = OnceLock::new();
    SLOTS
        .get_or_init(|| crate::sandbox::pool_slots(std::env::var(SLOTS_VARIABLE).ok().as_deref()))
        .clone()
}

/// Set to `1` to have the plugins' compiled functions named in `perf` profiles: wasmtime writes
/// `/tmp/perf-PID.map` as plugins load (their own function names when built with the name
/// section kept).
const PERF_MAP_VARIABLE: &str = "SWITCHYARD_PERF_MAP";

/// How many live instances each of `plugins` plugins may have, leaving half the slots free so a
/// new generation of plugins can start while the old one drains.
pub fn instances_per_plugin(plugins: usize) -> usize {
    // A bad variable has already stopped the engine from starting.
    let slots = pool_slots().unwrap_or(POOLED_INSTANCES);
    (slots as usize / 2 / plugins.max(1)).max(4)
}

/// The variable that keeps explicit bounds checks in plugins' code (`checked`), to compare the
/// two memory layouts.
pub const MEMORY_LAYOUT_VARIABLE: &str = "SWITCHYARD_PLUGIN_MEMORY";

/// How the pool lays out plugins' linear memories in the address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLayout {
    /// 4 GiB reserved for each memory, followed by a guard: every address a 32-bit plugin can
    /// form lands in its own reservation, so the compiled code checks no bounds (a stray access
    /// faults on a page that is not mapped and traps). The benchmark's program ran 19% fewer
    /// instructions in its plugins' code than with checks. 256 slots reserve ~2 TiB of address
    /// space (none of it memory until a plugin grows into it).
    Guarded,
    /// Only the largest memory a plugin may have reserved, and a bounds check before every
    /// access: for when the address space for [`MemoryLayout::Guarded`] cannot be had
    /// (`ulimit -v`; valgrind maps at most 64 GiB).
    Checked,
}

impl MemoryLayout {
    /// What each memory reserves, and the guard after it.
    fn reservation_and_guard(self) -> (u64, u64) {
        match self {
            // The guard covers the static offsets of a plugin's loads and stores, so an address
            // plus its offset never reaches past it unchecked.
            Self::Guarded => (1 << 32, 32 * 1024 * 1024),
            Self::Checked => (MAX_PLUGIN_MEMORY as u64, 64 * 1024),
        }
    }
}

/// Builds the engine every plugin runs on, with the guarded memory layout unless its address
/// space cannot be reserved (or `SWITCHYARD_PLUGIN_MEMORY=checked`). Its epoch ticker starts with
/// the first plugin ([`super::epoch::start`]), so a proxy without plugins has no ticker at all.
pub fn new_engine() -> wasmtime::Result<Engine> {
    let checked = std::env::var_os(MEMORY_LAYOUT_VARIABLE).is_some_and(|v| v == "checked");
    if !checked {
        match engine_with(MemoryLayout::Guarded) {
            Ok(engine) => return Ok(engine),
            Err(e) => warn!(
                error = %format!("{e:#}"),
                "cannot reserve 4 GiB of address space for each plugin memory slot; plugins' \
                 code checks bounds instead"
            ),
        }
    }
    engine_with(MemoryLayout::Checked)
}

/// The engine with plugin memories laid out as `layout` says.
pub fn engine_with(layout: MemoryLayout) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Memories are capped per instance by the store's limiter and the pool's largest size; the
    // layout decides only how much address space each one reserves.
    let (reservation, guard) = layout.reservation_and_guard();
    config.memory_reservation(reservation);
    config.memory_guard_size(guard);
    let slots = pool_slots().map_err(wasmtime::Error::msg)?;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * 4)
        .total_memories(slots * 2)
        .total_tables(slots * 4)
        .max_memory_size(MAX_PLUGIN_MEMORY);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if std::env::var_os(PERF_MAP_VARIABLE).is_some_and(|v| v == "1") {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    Engine::new(&config)
}

/// Compiled components on disk, keyed by the component's sha256 and the engine's compatibility
/// hash (wasmtime version and settings): loading from here takes well under a millisecond where
/// compiling takes tens.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Returns the compiled component, from the cache when possible.
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        self.cached(
            engine,
            hex(&Sha256::digest(bytes)),
            || Component::new(engine, bytes),
            Component::serialize,
            load_precompiled_component,
        )
    }

    /// Returns the compiled core module (a proxy-wasm filter), from the cache when possible:
    /// compiling one at every start also left cranelift's code and memory in the proxy's RSS.
    pub fn module(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Module> {
        self.cached(
            engine,
            hex(&Sha256::digest(bytes)),
            || Module::new(engine, bytes),
            Module::serialize,
            load_precompiled_module,
        )
    }

    /// Returns the compiled core module a component wraps (the core entry's), from the cache
    /// when possible: filed under the component's sha256 (with `-core`), so a plugin's compiled
    /// files are found by the digest of the `.wasm` it ships.
    pub fn core_module_of(
        &self,
        engine: &Engine,
        component: &[u8],
        module: &[u8],
    ) -> wasmtime::Result<Module> {
        self.cached(
            engine,
            format!("{}-core", hex(&Sha256::digest(component))),
            || Module::new(engine, module),
            Module::serialize,
            load_precompiled_module,
        )
    }

    /// `name` is the digest the file is filed under; the engine's compatibility hash is added.
    fn cached<T>(
        &self,
        engine: &Engine,
        name: String,
        compile: impl FnOnce() -> wasmtime::Result<T>,
        serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
        load: impl FnOnce(&Engine, &Path) -> wasmtime::Result<T>,
    ) -> wasmtime::Result<T> {
        let path = self.dir.join(format!("{}.cwasm", cache_key(engine, &name)));
        if path.exists() {
            match load(engine, &path) {
                Ok(compiled) => return Ok(compiled),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "ignoring unusable cached plugin")
                }
            }
        }
        let compiled = compile()?;
        let stored = serialize(&compiled)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| self.store(&path, &bytes));
        if let Err(e) = stored {
            debug!(path = %path.display(), error = %e, "cannot cache compiled plugin");
        }
        Ok(compiled)
    }

    fn store(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

fn cache_key(engine: &Engine, name: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{name}-{:016x}", hasher.finish())
}

#[allow(unsafe_code)]
fn load_precompiled_component(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be wasmtime's own output. Only this cache
    // writes here (atomically, via rename), file names carry the sha256 of the source and the
    // engine's compatibility hash, and wasmtime rejects files from another version or config.
    unsafe { Component::deserialize_file(engine, path) }
}

#[allow(unsafe_code)]
fn load_precompiled_module(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    // SAFETY: as for components above; a file holding a component (or anything else) is
    // refused by wasmtime's header check and compiled again.
    unsafe { Module::deserialize_file(engine, path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid core module: the magic number and version.
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn cached_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }

    /// A module with one page of memory and `load(address) -> i32`, an `i32.load` at `address`.
    const LOAD_MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f, // type: (i32) -> i32
        0x03, 0x02, 0x01, 0x00, // one function of that type
        0x05, 0x03, 0x01, 0x00, 0x01, // memory: one page, no maximum
        0x07, 0x08, 0x01, 0x04, b'l', b'o', b'a', b'd', 0x00, 0x00, // export "load"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x20, 0x00, 0x28, 0x02, 0x00,
        0x0b, // local.get 0; i32.load
    ];

    #[test]
    fn both_memory_layouts_trap_every_access_outside_the_memory() {
        for layout in [MemoryLayout::Guarded, MemoryLayout::Checked] {
            let engine = engine_with(layout).unwrap();
            let module = Module::new(&engine, LOAD_MODULE).unwrap();
            let mut store = wasmtime::Store::new(&engine, ());
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
            let load = instance
                .get_typed_func::<i32, i32>(&mut store, "load")
                .unwrap();
            assert_eq!(load.call(&mut store, 0).unwrap(), 0, "{layout:?}");
            assert_eq!(load.call(&mut store, 65532).unwrap(), 0, "{layout:?}");
            // Past the page, across its end, past the guard, and the highest addresses.
            for address in [65533, 65536, 64 << 20, i32::MAX, -4] {
                let trap = load.call(&mut store, address).unwrap_err();
                assert_eq!(
                    trap.downcast_ref::<wasmtime::Trap>(),
                    Some(&wasmtime::Trap::MemoryOutOfBounds),
                    "{layout:?} at {address}"
                );
            }
        }
    }

    #[test]
    fn a_core_module_is_compiled_once_then_read_from_the_cache() {
        let dir = std::env::temp_dir().join(format!("switchyard-cache-{}", fastrand::u64(..)));
        let engine = new_engine().unwrap();
        let cache = CompileCache::new(&dir);

        cache.module(&engine, EMPTY_MODULE).unwrap();
        let files = cached_files(&dir);
        assert_eq!(files.len(), 1, "one compiled file: {files:?}");
        let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

        cache.module(&engine, EMPTY_MODULE).unwrap();
        assert_eq!(cached_files(&dir), files);
        assert_eq!(
            std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
            written,
            "the second load read the file instead of compiling and writing it again"
        );

        // A damaged file is ignored: the module is compiled again and the file replaced.
        std::fs::write(&files[0], b"not wasmtime's output").unwrap();
        cache.module(&engine, EMPTY_MODULE).unwrap();
        assert_ne!(std::fs::read(&files[0]).unwrap(), b"not wasmtime's output");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
