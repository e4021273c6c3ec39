//! The `request` and `response` imports as a core module imports them: reading and changing the
//! two heads, and the headers added to the client's response.

use std::borrow::Cow;

use wasmtime::Linker;

use super::guest::{
    Result, area, memory_of, put, return_bytes, return_list, return_option_bytes,
    return_unit_result, text,
};
use super::imports::{Ctx, with_memory, with_memory_mut};
use crate::plugin::bindings::switchyard::plugin::{request, response};
use crate::plugin::heads::{HeaderChange, READ_ABSENT, value_text};
use crate::plugin::host::HostState;

const REQUEST: &str = "switchyard:plugin/request@0.1.0";
const RESPONSE: &str = "switchyard:plugin/response@0.1.0";
const READS: &str = "switchyard:plugin/reads@0.1.0";

/// The `request`, `response` and `reads` interfaces.
pub fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    define_request(linker)?;
    define_response(linker)?;
    define_reads(linker)
}

/// `reads`: text written where the plugin says, no call back into its allocator.
fn define_reads(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        READS,
        "path-into",
        |mut c: Ctx<'_>, at: i32, capacity: i32| {
            with_memory_mut(&mut c, |m, s| {
                let path = s.req().and_then(|r| r.head.uri.path_and_query());
                let text = path.map_or("/", |p| p.as_str());
                write_into(m, at, capacity, Some(text))
            })
        },
    )?;
    for (name, head) in [
        ("request-header-into", Head::Request),
        ("response-header-into", Head::Response),
    ] {
        linker.func_wrap(
            READS,
            name,
            move |mut c: Ctx<'_>, p: i32, l: i32, at: i32, capacity: i32| {
                with_memory_mut(&mut c, |m, s| {
                    let value = head.value(s, text(m, p, l)?);
                    let text = value.as_ref().map(value_text);
                    write_into(m, at, capacity, text.as_deref())
                })
            },
        )?;
    }
    Ok(())
}

/// Writes `text` at `at` when it fits in `capacity` bytes; its length either way
/// ([`READ_ABSENT`] for none).
fn write_into(memory: &mut [u8], at: i32, capacity: i32, text: Option<&str>) -> Result<i32> {
    let Some(text) = text else {
        return Ok(READ_ABSENT as i32);
    };
    let len = u32::try_from(text.len())
        .ok()
        .filter(|&len| len < READ_ABSENT - 1)
        .ok_or_else(|| wasmtime::Error::msg("a value too long for the plugin's memory"))?;
    if len <= capacity as u32 {
        let at = area(memory, at, 1, text.len())?;
        put(memory, at, text.as_bytes())?;
    }
    Ok(len as i32)
}

fn define_request(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(REQUEST, "method", |mut c: Ctx<'_>, ret: i32| {
        let method = c.data().req().map(|r| r.head.method.clone());
        let text = method.as_ref().map_or("", |m| m.as_str());
        return_bytes(&mut c, ret, text.as_bytes())
    })?;
    linker.func_wrap(REQUEST, "path", |mut c: Ctx<'_>, ret: i32| {
        let path = c
            .data()
            .req()
            .and_then(|r| r.head.uri.path_and_query().cloned());
        let text = path.as_ref().map_or("/", |p| p.as_str());
        return_bytes(&mut c, ret, text.as_bytes())
    })?;
    linker.func_wrap(
        REQUEST,
        "set-path",
        |mut c: Ctx<'_>, p: i32, l: i32, ret: i32| {
            let result = with_memory(&mut c, |m, s| {
                Ok(request::Host::set_path(s, text(m, p, l)?.to_owned()))
            })?;
            return_unit_result(&mut c, ret, result)
        },
    )?;
    linker.func_wrap(REQUEST, "authority", |mut c: Ctx<'_>, ret: i32| {
        let authority = request::Host::authority(c.data_mut());
        return_option_bytes(&mut c, ret, authority.as_deref().map(str::as_bytes))
    })?;
    define_head(linker, Head::Request)?;
    linker.func_wrap(
        REQUEST,
        "add-response-header",
        |mut c: Ctx<'_>, p: i32, l: i32, vp: i32, vl: i32, ret: i32| {
            let result = with_memory(&mut c, |m, s| {
                let value = text(m, vp, vl)?.as_bytes();
                Ok(s.add_client_response_header(text(m, p, l)?, value))
            })?;
            return_unit_result(&mut c, ret, result)
        },
    )?;
    Ok(())
}

/// Which head a `request` or `response` import reads or changes.
#[derive(Clone, Copy)]
enum Head {
    Request,
    Response,
}

impl Head {
    fn interface(self) -> &'static str {
        match self {
            Head::Request => REQUEST,
            Head::Response => RESPONSE,
        }
    }

    fn value(self, state: &mut HostState, name: &str) -> Option<http::HeaderValue> {
        match self {
            Head::Request => state.request_header(name),
            Head::Response => state.response_header(name),
        }
    }

    fn values(self, state: &mut HostState, name: &str) -> Vec<http::HeaderValue> {
        match self {
            Head::Request => state.request_header_all(name),
            Head::Response => state.response_header_all(name),
        }
    }

    fn names(self, state: &mut HostState) -> Vec<String> {
        match self {
            Head::Request => request::Host::header_names(state),
            Head::Response => response::Host::header_names(state),
        }
    }

    fn change(
        self,
        state: &mut HostState,
        change: HeaderChange,
        name: &str,
        value: bytes::Bytes,
    ) -> std::result::Result<(), String> {
        match self {
            Head::Request => state.change_request_header(change, name, value),
            Head::Response => state.change_response_header(change, name, value),
        }
    }

    fn remove(self, state: &mut HostState, name: &str) {
        match self {
            Head::Request => state.remove_request_header(name),
            Head::Response => state.remove_response_header(name),
        }
    }
}

/// The header imports both heads have: `header`, `header-all`, `header-names`, `set-header`,
/// `add-header`, `remove-header`.
fn define_head(linker: &mut Linker<HostState>, head: Head) -> wasmtime::Result<()> {
    let interface = head.interface();
    linker.func_wrap(
        interface,
        "header",
        move |mut c: Ctx<'_>, p: i32, l: i32, ret: i32| {
            let value = with_memory(&mut c, |m, s| Ok(head.value(s, text(m, p, l)?)))?;
            let text = value.as_ref().map(value_text);
            return_option_bytes(&mut c, ret, text.as_deref().map(str::as_bytes))
        },
    )?;
    linker.func_wrap(
        interface,
        "header-all",
        move |mut c: Ctx<'_>, p: i32, l: i32, ret: i32| {
            let values = with_memory(&mut c, |m, s| Ok(head.values(s, text(m, p, l)?)))?;
            let texts: Vec<Cow<'_, str>> = values.iter().map(value_text).collect();
            return_list(&mut c, ret, &texts)
        },
    )?;
    linker.func_wrap(
        interface,
        "header-names",
        move |mut c: Ctx<'_>, ret: i32| {
            let names = head.names(c.data_mut());
            return_list(&mut c, ret, &names)
        },
    )?;
    for (name, change) in [
        ("set-header", HeaderChange::Set),
        ("add-header", HeaderChange::Add),
    ] {
        linker.func_wrap(
            interface,
            name,
            move |mut c: Ctx<'_>, p: i32, l: i32, vp: i32, vl: i32, ret: i32| {
                let result = with_memory(&mut c, |m, s| {
                    let value = bytes::Bytes::copy_from_slice(text(m, vp, vl)?.as_bytes());
                    Ok(head.change(s, change, text(m, p, l)?, value))
                })?;
                return_unit_result(&mut c, ret, result)
            },
        )?;
    }
    linker.func_wrap(
        interface,
        "remove-header",
        move |mut c: Ctx<'_>, p: i32, l: i32| {
            with_memory(&mut c, |m, s| {
                head.remove(s, text(m, p, l)?);
                Ok(())
            })
        },
    )?;
    Ok(())
}

fn define_response(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(RESPONSE, "status", |mut c: Ctx<'_>, ret: i32| {
        let status = response::Host::status(c.data_mut());
        let memory = memory_of(&c)?;
        // option<u16>: a tag byte, the value at offset 2.
        let at = area(memory.data(&c), ret, 2, 4)?;
        let Some(status) = status else {
            return put(memory.data_mut(&mut c), at, &[0]);
        };
        let [lo, hi] = status.to_le_bytes();
        put(memory.data_mut(&mut c), at, &[1, 0, lo, hi])
    })?;
    linker.func_wrap(
        RESPONSE,
        "set-status",
        |mut c: Ctx<'_>, status: i32, ret: i32| {
            let result = response::Host::set_status(c.data_mut(), status as u16);
            return_unit_result(&mut c, ret, result)
        },
    )?;
    define_head(linker, Head::Response)
}
