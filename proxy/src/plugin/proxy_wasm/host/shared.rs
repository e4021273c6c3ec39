//! What a filter's instances share: data with compare-and-set (the plugin's shared state),
//! queues, and metrics.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{
    Ctx, HostResult, MAX_DEFINED, MAX_QUEUED, Metric, give, lock, ok, read, read_string, status,
    write_bytes, write_u32,
};
use crate::plugin::proxy_wasm::abi::{Status, metric};

pub(super) fn get_shared_data(
    mut c: Ctx<'_>,
    k: i32,
    kl: i32,
    ret_ptr: i32,
    ret_len: i32,
    ret_cas: i32,
) -> HostResult {
    let key = read_string(&mut c, k, kl)?;
    let Some((value, version)) = c.data().env.shared.kv_get(&key) else {
        return Ok(status(Status::NotFound));
    };
    give(&mut c, &value, ret_ptr, ret_len)?;
    write_u32(&mut c, ret_cas, cas_of(version))?;
    Ok(ok())
}

/// A KV version as the 32-bit CAS value filters see (never 0, which means "no check").
fn cas_of(version: u64) -> u32 {
    (version % u64::from(u32::MAX)) as u32 + 1
}

pub(super) fn set_shared_data(
    mut c: Ctx<'_>,
    k: i32,
    kl: i32,
    v: i32,
    vl: i32,
    cas: i32,
) -> HostResult {
    let key = read_string(&mut c, k, kl)?;
    let value = read(&mut c, v, vl)?;
    let shared = &c.data().env.shared;
    if cas == 0 {
        shared.kv_set(&key, value, None);
        return Ok(ok());
    }
    let current = shared.kv_get(&key).map(|(_, version)| version);
    match current {
        Some(version) if cas_of(version) == cas as u32 => {
            match shared.kv_compare_and_set(&key, Some(version), value, None) {
                Some(_) => Ok(ok()),
                None => Ok(status(Status::CasMismatch)),
            }
        }
        _ => Ok(status(Status::CasMismatch)),
    }
}

pub(super) fn register_queue(mut c: Ctx<'_>, ptr: i32, len: i32, ret: i32) -> HostResult {
    let name = read_string(&mut c, ptr, len)?;
    let slot = c.data().slot;
    let id = {
        let mut queues = lock(&c.data().shared.queues);
        match queues.iter().position(|(n, _, _)| *n == name) {
            Some(id) => {
                queues[id].2 = Some(slot);
                id
            }
            None if queues.len() < MAX_DEFINED => {
                queues.push((name, VecDeque::new(), Some(slot)));
                queues.len() - 1
            }
            None => return Ok(status(Status::InternalFailure)),
        }
    };
    write_u32(&mut c, ret, id as u32)?;
    Ok(ok())
}

pub(super) fn resolve_queue(
    mut c: Ctx<'_>,
    _vm: i32,
    _vm_len: i32,
    ptr: i32,
    len: i32,
    ret: i32,
) -> HostResult {
    let name = read_string(&mut c, ptr, len)?;
    let id = lock(&c.data().shared.queues)
        .iter()
        .position(|(n, _, _)| *n == name);
    match id {
        Some(id) => write_u32(&mut c, ret, id as u32).map(|()| ok()),
        None => Ok(status(Status::NotFound)),
    }
}

pub(super) fn enqueue(mut c: Ctx<'_>, id: i32, ptr: i32, len: i32) -> HostResult {
    let value = read(&mut c, ptr, len)?;
    let shared = &c.data().shared;
    let owner = {
        let mut queues = lock(&shared.queues);
        match queues.get_mut(id as u32 as usize) {
            Some((_, queue, owner)) if queue.len() < MAX_QUEUED => {
                queue.push_back(value);
                *owner
            }
            Some(_) => return Ok(status(Status::InternalFailure)),
            None => return Ok(status(Status::NotFound)),
        }
    };
    // Its owner is told (`proxy_on_queue_ready`) before its instance's next call.
    if let Some(slot) = owner {
        let mut ready = lock(&shared.ready);
        if !ready.contains(&(slot, id as u32)) {
            ready.push((slot, id as u32));
        }
    }
    Ok(ok())
}

pub(super) fn dequeue(mut c: Ctx<'_>, id: i32, ret_ptr: i32, ret_len: i32) -> HostResult {
    let value = {
        let mut queues = lock(&c.data().shared.queues);
        match queues.get_mut(id as u32 as usize) {
            Some((_, queue, _)) => queue.pop_front(),
            None => return Ok(status(Status::NotFound)),
        }
    };
    match value {
        Some(value) => give(&mut c, &value, ret_ptr, ret_len).map(|()| ok()),
        None => Ok(status(Status::Empty)),
    }
}

pub(super) fn define_metric(mut c: Ctx<'_>, kind: i32, ptr: i32, len: i32, ret: i32) -> HostResult {
    let name = read_string(&mut c, ptr, len)?;
    let plugin = Arc::clone(&c.data().env.name);
    let id = {
        let mut all = lock(&c.data().shared.metrics);
        if let Some(id) = all.iter().position(|(n, k, _)| *n == name && *k == kind) {
            id
        } else {
            if all.len() >= MAX_DEFINED {
                return Ok(status(Status::InternalFailure));
            }
            let handle = crate::telemetry::plugin_metric(&plugin, &name, Vec::new());
            let metric = match kind {
                metric::COUNTER => Metric::Counter(handle.counter(), Arc::default()),
                metric::GAUGE => Metric::Gauge(handle.gauge(), Arc::default()),
                metric::HISTOGRAM => Metric::Histogram(handle.histogram()),
                _ => return Ok(status(Status::BadArgument)),
            };
            all.push((name, kind, metric));
            all.len() - 1
        }
    };
    write_u32(&mut c, ret, id as u32)?;
    Ok(ok())
}

pub(super) fn with_metric(c: &Ctx<'_>, id: i32, apply: impl FnOnce(&Metric)) -> i32 {
    let metric = lock(&c.data().shared.metrics)
        .get(id as u32 as usize)
        .map(|(_, _, m)| m.clone());
    match metric {
        Some(metric) => {
            apply(&metric);
            ok()
        }
        None => status(Status::NotFound),
    }
}

pub(super) fn increment_metric(c: Ctx<'_>, id: i32, offset: i64) -> i32 {
    with_metric(&c, id, |m| match m {
        Metric::Counter(counter, value) => {
            let by = u64::try_from(offset).unwrap_or(0);
            counter.increment(by);
            value.fetch_add(by, Ordering::Relaxed);
        }
        Metric::Gauge(gauge, value) => {
            let now = (value.load(Ordering::Relaxed) as i64).saturating_add(offset);
            value.store(now.max(0) as u64, Ordering::Relaxed);
            gauge.set(now as f64);
        }
        Metric::Histogram(h) => h.record(offset as f64),
    })
}

pub(super) fn record_metric(c: Ctx<'_>, id: i32, value: i64) -> i32 {
    // The ABI passes an unsigned 64-bit value.
    let value = value as u64;
    with_metric(&c, id, |m| match m {
        Metric::Counter(counter, total) => {
            counter.absolute(value);
            total.store(value, Ordering::Relaxed);
        }
        Metric::Gauge(gauge, now) => {
            gauge.set(value as f64);
            now.store(value, Ordering::Relaxed);
        }
        Metric::Histogram(h) => h.record(value as f64),
    })
}

pub(super) fn get_metric(mut c: Ctx<'_>, id: i32, ret: i32) -> HostResult {
    let value = lock(&c.data().shared.metrics)
        .get(id as u32 as usize)
        .map(|(_, _, m)| match m {
            Metric::Counter(_, v) | Metric::Gauge(_, v) => Some(v.load(Ordering::Relaxed)),
            Metric::Histogram(_) => None,
        });
    match value {
        Some(Some(v)) => write_bytes(&mut c, ret, &v.to_le_bytes()).map(|()| ok()),
        Some(None) => Ok(status(Status::BadArgument)),
        None => Ok(status(Status::NotFound)),
    }
}
