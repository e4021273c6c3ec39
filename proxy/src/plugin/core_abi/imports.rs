//! The host functions as a plugin's core module imports them: each WIT function lowered by the
//! canonical ABI (strings and lists as pointer and length, results past one value through a
//! pointer to a result area), acting through the same `HostState` methods the component
//! bindings call. Arguments are read where they lie in the plugin's memory.

use wasmtime::{Caller, Linker};

use super::guest::{
    self, Result, area, copy_in, copy_list, memory_of, pair, put, return_bytes,
    return_option_bytes, return_unit_result, slice, text,
};
use crate::plugin::bindings::LogLevel;
use crate::plugin::bindings::switchyard::plugin::{
    attempts, calls, clock, log, properties, random, routing, shared, streaming, timer,
};
use crate::plugin::host::{HostState, MetricHandle, MetricKind};

pub(super) type Ctx<'a> = Caller<'a, HostState>;
/// A property read from the host state.
type Read<T> = fn(&mut HostState) -> T;

/// Runs `f` with the plugin's memory (to read arguments from) beside the host state.
pub(super) fn with_memory<R>(
    caller: &mut Ctx<'_>,
    f: impl FnOnce(&[u8], &mut HostState) -> Result<R>,
) -> Result<R> {
    let memory = memory_of(&*caller)?;
    let (bytes, state) = memory.data_and_store_mut(caller);
    f(bytes, state)
}

/// Runs `f` with the plugin's memory to write into beside the host state.
pub(super) fn with_memory_mut<R>(
    caller: &mut Ctx<'_>,
    f: impl FnOnce(&mut [u8], &mut HostState) -> Result<R>,
) -> Result<R> {
    let memory = memory_of(&*caller)?;
    let (bytes, state) = memory.data_and_store_mut(caller);
    f(bytes, state)
}

/// Defines every import a plugin may have. `http.call` cannot wait here (a hook that waits runs
/// on a fiber, where a host function cannot call back into the plugin's allocator without
/// starting another fiber): it refuses, and only a plugin that said in `init` that it never
/// calls out keeps the core entry (the loader runs the others as components).
pub fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    super::head_imports::define(linker)?;
    define_properties(linker)?;
    define_routing_and_context(linker)?;
    define_shared(linker)?;
    define_metrics(linker)?;
    define_small(linker)?;
    define_calls(linker)?;
    Ok(())
}

/// `http-call-error.invalid`: its case number in the WIT's enum.
const HTTP_CALL_INVALID: u8 = 5;

/// `calls.never-call-out`, and `http.call` refused (`result<http-response, http-call-error>`:
/// the error's tag at 0, its case at 4).
fn define_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "switchyard:plugin/calls@0.1.0",
        "never-call-out",
        |mut c: Ctx<'_>| {
            calls::Host::never_call_out(c.data_mut());
        },
    )?;
    linker.func_wrap(
        "switchyard:plugin/http@0.1.0",
        "call",
        |mut c: Ctx<'_>,
         cp: i32,
         cl: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         ret: i32| {
            with_memory(&mut c, |m, s| {
                s.refuse_call_out(text(m, cp, cl)?);
                Ok(())
            })?;
            let memory = memory_of(&c)?;
            let at = area(memory.data(&c), ret, 4, 24)?;
            put(
                memory.data_mut(&mut c),
                at,
                &[1, 0, 0, 0, HTTP_CALL_INVALID],
            )
        },
    )?;
    Ok(())
}

fn define_properties(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const PROPERTIES: &str = "switchyard:plugin/properties@0.1.0";
    let strings: [(&str, Read<String>); 3] = [
        ("listener", properties::Host::listener),
        ("peer-address", properties::Host::peer_address),
        ("request-id", properties::Host::request_id),
    ];
    for (name, read) in strings {
        linker.func_wrap(PROPERTIES, name, move |mut c: Ctx<'_>, ret: i32| {
            let value = read(c.data_mut());
            return_bytes(&mut c, ret, value.as_bytes())
        })?;
    }
    let options: [(&str, Read<Option<String>>); 2] = [
        ("sni", properties::Host::sni),
        ("destination", properties::Host::destination),
    ];
    for (name, read) in options {
        linker.func_wrap(PROPERTIES, name, move |mut c: Ctx<'_>, ret: i32| {
            let value = read(c.data_mut());
            return_option_bytes(&mut c, ret, value.as_deref().map(str::as_bytes))
        })?;
    }
    linker.func_wrap(PROPERTIES, "attempt", |mut c: Ctx<'_>| {
        properties::Host::attempt(c.data_mut()) as i32
    })?;
    linker.func_wrap(PROPERTIES, "identity", |mut c: Ctx<'_>, ret: i32| {
        let identity = properties::Host::identity(c.data_mut());
        let memory = memory_of(&c)?;
        let at = area(memory.data(&c), ret, 4, 36)?;
        let Some(identity) = identity else {
            return put(memory.data_mut(&mut c), at, &[0]);
        };
        // option<record { spiffe-id: option<string>, dns-names: list<string>, subject: option<string> }>
        let mut out = [0u8; 36];
        out[0] = 1;
        for (offset, value) in [(4, &identity.spiffe_id), (24, &identity.subject)] {
            if let Some(value) = value {
                let (ptr, len) = copy_in(&mut c, value.as_bytes())?;
                out[offset] = 1;
                out[offset + 4..offset + 12].copy_from_slice(&pair(ptr, len));
            }
        }
        let (ptr, len) = copy_list(&mut c, &identity.dns_names)?;
        out[16..24].copy_from_slice(&pair(ptr, len));
        put(memory.data_mut(&mut c), at, &out)
    })?;
    Ok(())
}

fn define_routing_and_context(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const ROUTING: &str = "switchyard:plugin/routing@0.1.0";
    const CONTEXT: &str = "switchyard:plugin/context@0.1.0";
    linker.func_wrap(
        ROUTING,
        "set-destination",
        |mut c: Ctx<'_>, p: i32, l: i32, ret: i32| {
            let result = with_memory(&mut c, |m, s| Ok(s.set_destination(text(m, p, l)?)))?;
            return_unit_result(&mut c, ret, result)
        },
    )?;
    linker.func_wrap(ROUTING, "set-timeout", |mut c: Ctx<'_>, ms: i32| {
        routing::Host::set_timeout(c.data_mut(), ms as u32);
    })?;
    linker.func_wrap(ROUTING, "set-per-try-timeout", |mut c: Ctx<'_>, ms: i32| {
        routing::Host::set_per_try_timeout(c.data_mut(), ms as u32);
    })?;
    linker.func_wrap(
        CONTEXT,
        "get",
        |mut c: Ctx<'_>, p: i32, l: i32, ret: i32| {
            let value = with_memory(&mut c, |m, s| {
                let key = text(m, p, l)?;
                Ok(s.req().and_then(|r| r.context.get(key)).map(<[u8]>::to_vec))
            })?;
            return_option_bytes(&mut c, ret, value.as_deref())
        },
    )?;
    linker.func_wrap(
        CONTEXT,
        "set",
        |mut c: Ctx<'_>, p: i32, l: i32, vp: i32, vl: i32| {
            with_memory(&mut c, |m, s| {
                s.set_context(text(m, p, l)?, slice(m, vp, vl)?);
                Ok(())
            })
        },
    )?;
    Ok(())
}

fn define_shared(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const SHARED: &str = "switchyard:plugin/shared@0.1.0";
    linker.func_wrap(
        SHARED,
        "counter-add",
        |mut c: Ctx<'_>, p: i32, l: i32, delta: i64| {
            with_memory(&mut c, |m, s| {
                Ok(s.shared().counter_add(text(m, p, l)?, delta))
            })
        },
    )?;
    linker.func_wrap(SHARED, "counter-get", |mut c: Ctx<'_>, p: i32, l: i32| {
        with_memory(&mut c, |m, s| Ok(s.shared().counter_get(text(m, p, l)?)))
    })?;
    linker.func_wrap(
        SHARED,
        "kv-get",
        |mut c: Ctx<'_>, p: i32, l: i32, ret: i32| {
            let entry = with_memory(&mut c, |m, s| Ok(s.shared().kv_get(text(m, p, l)?)))?;
            let memory = memory_of(&c)?;
            // option<record { value: list<u8>, version: u64 }>: the record at offset 8.
            let at = area(memory.data(&c), ret, 8, 24)?;
            let Some((value, version)) = entry else {
                return put(memory.data_mut(&mut c), at, &[0]);
            };
            let (ptr, len) = copy_in(&mut c, &value)?;
            let mut out = [0u8; 24];
            out[0] = 1;
            out[8..16].copy_from_slice(&pair(ptr, len));
            out[16..].copy_from_slice(&version.to_le_bytes());
            put(memory.data_mut(&mut c), at, &out)
        },
    )?;
    linker.func_wrap(
        SHARED,
        "kv-set",
        |mut c: Ctx<'_>, p: i32, l: i32, vp: i32, vl: i32, has_ttl: i32, ttl: i32| {
            with_memory(&mut c, |m, s| {
                let ttl = (has_ttl != 0).then_some(ttl as u32);
                let version = shared::Host::kv_set(
                    s,
                    text(m, p, l)?.to_owned(),
                    slice(m, vp, vl)?.to_vec(),
                    ttl,
                );
                Ok(version as i64)
            })
        },
    )?;
    linker.func_wrap(
        SHARED,
        "kv-compare-and-set",
        |mut c: Ctx<'_>,
         p: i32,
         l: i32,
         has_expected: i32,
         expected: i64,
         vp: i32,
         vl: i32,
         has_ttl: i32,
         ttl: i32,
         ret: i32| {
            let version = with_memory(&mut c, |m, s| {
                Ok(shared::Host::kv_compare_and_set(
                    s,
                    text(m, p, l)?.to_owned(),
                    (has_expected != 0).then_some(expected as u64),
                    slice(m, vp, vl)?.to_vec(),
                    (has_ttl != 0).then_some(ttl as u32),
                ))
            })?;
            let memory = memory_of(&c)?;
            // option<u64>: a tag byte, the value at offset 8.
            let at = area(memory.data(&c), ret, 8, 16)?;
            let Some(version) = version else {
                return put(memory.data_mut(&mut c), at, &[0]);
            };
            let mut out = [0u8; 16];
            out[0] = 1;
            out[8..].copy_from_slice(&version.to_le_bytes());
            put(memory.data_mut(&mut c), at, &out)
        },
    )?;
    linker.func_wrap(SHARED, "kv-delete", |mut c: Ctx<'_>, p: i32, l: i32| {
        with_memory(&mut c, |m, s| {
            s.shared().kv_delete(text(m, p, l)?);
            Ok(())
        })
    })?;
    Ok(())
}

fn define_metrics(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const METRICS: &str = "switchyard:plugin/metrics@0.1.0";
    linker.func_wrap(
        METRICS,
        "counter-add",
        |mut c: Ctx<'_>, p: i32, l: i32, lp: i32, ll: i32, value: i64| {
            update_metric(&mut c, MetricKind::Counter, (p, l), (lp, ll), |handle| {
                if let MetricHandle::Counter(counter) = handle {
                    counter.increment(value as u64);
                }
            })
        },
    )?;
    linker.func_wrap(
        METRICS,
        "gauge-set",
        |mut c: Ctx<'_>, p: i32, l: i32, lp: i32, ll: i32, value: f64| {
            update_metric(&mut c, MetricKind::Gauge, (p, l), (lp, ll), |handle| {
                if let MetricHandle::Gauge(gauge) = handle {
                    gauge.set(value);
                }
            })
        },
    )?;
    linker.func_wrap(
        METRICS,
        "histogram-record",
        |mut c: Ctx<'_>, p: i32, l: i32, lp: i32, ll: i32, value: f64| {
            update_metric(&mut c, MetricKind::Histogram, (p, l), (lp, ll), |handle| {
                if let MetricHandle::Histogram(histogram) = handle {
                    histogram.record(value);
                }
            })
        },
    )?;
    Ok(())
}

/// Applies `apply` to one of the plugin's metrics, named and labelled in its memory.
fn update_metric(
    caller: &mut Ctx<'_>,
    kind: MetricKind,
    (p, l): (i32, i32),
    (lp, ll): (i32, i32),
    apply: impl Fn(&MetricHandle),
) -> Result<()> {
    with_memory(caller, |m, s| {
        let labels = guest::string_pairs(m, lp, ll)?;
        crate::plugin::metric_imports::apply(s, kind, text(m, p, l)?, &labels, apply);
        Ok(())
    })
}

/// The imports that take and return numbers, and the batch.
fn define_small(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "switchyard:plugin/log@0.1.0",
        "log",
        |mut c: Ctx<'_>, level: i32, p: i32, l: i32| {
            let level = match level {
                0 => LogLevel::Trace,
                1 => LogLevel::Debug,
                2 => LogLevel::Info,
                3 => LogLevel::Warn,
                4 => LogLevel::Error,
                _ => {
                    return Err(wasmtime::Error::msg(
                        "the plugin passed an unknown log level",
                    ));
                }
            };
            with_memory(&mut c, |m, s| {
                log::Host::log(s, level, text(m, p, l)?.to_owned());
                Ok(())
            })
        },
    )?;
    const CLOCK: &str = "switchyard:plugin/clock@0.1.0";
    linker.func_wrap(CLOCK, "monotonic-ns", |mut c: Ctx<'_>| {
        clock::Host::monotonic_ns(c.data_mut()) as i64
    })?;
    linker.func_wrap(CLOCK, "wall-ms", |mut c: Ctx<'_>| {
        clock::Host::wall_ms(c.data_mut()) as i64
    })?;
    linker.func_wrap(
        "switchyard:plugin/random@0.1.0",
        "next-u64",
        |mut c: Ctx<'_>| random::Host::next_u64(c.data_mut()) as i64,
    )?;
    linker.func_wrap(
        "switchyard:plugin/timer@0.1.0",
        "tick-every",
        |mut c: Ctx<'_>, ms: i32| {
            timer::Host::tick_every(c.data_mut(), ms as u32);
        },
    )?;
    const STREAMING: &str = "switchyard:plugin/streaming@0.1.0";
    linker.func_wrap(STREAMING, "stream-response-body", |mut c: Ctx<'_>| {
        streaming::Host::stream_response_body(c.data_mut());
    })?;
    linker.func_wrap(STREAMING, "stream-request-body", |mut c: Ctx<'_>| {
        streaming::Host::stream_request_body(c.data_mut());
    })?;
    linker.func_wrap(
        "switchyard:plugin/attempts@0.1.0",
        "upstream-failures-only",
        |mut c: Ctx<'_>, min_status: i32, grpc: i32| {
            attempts::Host::upstream_failures_only(c.data_mut(), min_status as u16, grpc != 0);
        },
    )?;
    linker.func_wrap(
        "switchyard:plugin/batch@0.1.0",
        "apply",
        |mut c: Ctx<'_>, p: i32, l: i32, ret: i32| {
            // Applied where it lies: the plugin's memory is not the host state.
            let result = with_memory(&mut c, |m, s| Ok(s.apply_batch(slice(m, p, l)?)))?;
            return_unit_result(&mut c, ret, result)
        },
    )?;
    Ok(())
}
