//! The engine every plugin runs on: wasmtime's settings, its pooling allocator, and the on-disk
//! cache of compiled plugins (the epoch ticker that enforces CPU deadlines is in `epoch`).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::hex::hex;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::sandbox::{MAX_MEMORY as MAX_PLUGIN_MEMORY, POOLED_INSTANCES};

/// How many live instances each of `plugins` plugins may have, leaving half the slots free so a
/// new generation of plugins can start while the old one drains.
pub fn instances_per_plugin(plugins: usize) -> usize {
    (POOLED_INSTANCES as usize / 2 / plugins.max(1)).max(4)
}

/// Builds the engine every plugin runs on. Its epoch ticker starts with the first plugin
/// ([`super::epoch::start`]), so a proxy without plugins has no ticker at all.
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Memories are capped per instance by the store's limiter; the pool only needs room for the
    // largest cap. Bounds checks instead of a 4 GiB reservation per slot keep the address space
    // the pool reserves modest (256 slots x 256 MiB).
    config.memory_reservation(MAX_PLUGIN_MEMORY as u64);
    config.memory_guard_size(64 * 1024);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOLED_INSTANCES)
        .total_core_instances(POOLED_INSTANCES * 4)
        .total_memories(POOLED_INSTANCES * 2)
        .total_tables(POOLED_INSTANCES * 4)
        .max_memory_size(MAX_PLUGIN_MEMORY);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
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
        let path = self.dir.join(format!("{}.cwasm", cache_key(engine, bytes)));
        if path.exists() {
            match load_precompiled(engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "ignoring unusable cached plugin")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            debug!(path = %path.display(), error = %e, "cannot cache compiled plugin");
        }
        Ok(component)
    }

    fn store(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::create_dir_all(&self.dir)?;
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{}-{:016x}", hex(&Sha256::digest(bytes)), hasher.finish())
}

#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be wasmtime's own output. Only this cache
    // writes here (atomically, via rename), file names carry the sha256 of the source and the
    // engine's compatibility hash, and wasmtime rejects files from another version or config.
    unsafe { Component::deserialize_file(engine, path) }
}
