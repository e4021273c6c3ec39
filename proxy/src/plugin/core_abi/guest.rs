//! The plugin's side of a core call: its linear memory and its allocator, and the canonical
//! ABI's rules for reading arguments from that memory and writing results into it.
//!
//! Everything the plugin hands over is checked as the component model checks it — a pointer
//! out of bounds or misaligned, text that is not UTF-8 — and answered with a trap, never a
//! panic: the hook fails and its instance is discarded.

use std::borrow::Cow;

use wasmtime::{AsContext, AsContextMut, Memory, TypedFunc};

use crate::plugin::host::HostState;

/// What a host function returns: a trap ends the hook.
pub type Result<T> = wasmtime::Result<T>;

/// The plugin's memory and `cabi_realloc`, looked up once when the instance starts.
pub struct Guest {
    pub memory: Memory,
    pub realloc: TypedFunc<(i32, i32, i32, i32), i32>,
}

/// The instance's memory, found right after instantiation.
pub fn memory_of(store: &impl AsContext<Data = HostState>) -> Result<Memory> {
    store
        .as_context()
        .data()
        .guest
        .as_ref()
        .map(|guest| guest.memory)
        .ok_or_else(not_started)
}

fn not_started() -> wasmtime::Error {
    wasmtime::Error::msg("the plugin called the host before it started")
}

/// `len` bytes at `ptr` in `memory`.
pub fn slice(memory: &[u8], ptr: i32, len: i32) -> Result<&[u8]> {
    let start = ptr as u32 as usize;
    start
        .checked_add(len as u32 as usize)
        .and_then(|end| memory.get(start..end))
        .ok_or_else(|| wasmtime::Error::msg("the plugin passed a pointer out of bounds"))
}

/// Text at `ptr`: like the component model, text that is not UTF-8 traps.
pub fn text(memory: &[u8], ptr: i32, len: i32) -> Result<&str> {
    crate::plugin::text::utf8(slice(memory, ptr, len)?)
        .map_err(|_| wasmtime::Error::msg("the plugin passed text that is not UTF-8"))
}

/// A little-endian `u32` at `at`.
pub fn u32_at(memory: &[u8], at: u32) -> Result<u32> {
    let bytes = slice(memory, at as i32, 4)?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// A `(pointer, length)` pair at `at`, as lists and strings are laid out.
pub fn pair_at(memory: &[u8], at: u32) -> Result<(i32, i32)> {
    Ok((u32_at(memory, at)? as i32, u32_at(memory, at + 4)? as i32))
}

/// Checks that `size` bytes at `at` (a result area, a list) are in bounds and aligned to
/// `align`.
pub fn area(memory: &[u8], at: i32, align: u32, size: usize) -> Result<u32> {
    let at = at as u32;
    if !at.is_multiple_of(align) {
        return Err(wasmtime::Error::msg(
            "the plugin passed a misaligned pointer",
        ));
    }
    let size = i32::try_from(size)
        .map_err(|_| wasmtime::Error::msg("the plugin passed a list too long"))?;
    slice(memory, at as i32, size)?;
    Ok(at)
}

/// Writes `bytes` at `at`, which [`area`] or [`alloc`] checked.
pub fn put(memory: &mut [u8], at: u32, bytes: &[u8]) -> Result<()> {
    let start = at as usize;
    memory
        .get_mut(start..start + bytes.len())
        .ok_or_else(|| wasmtime::Error::msg("a result does not fit the plugin's memory"))?
        .copy_from_slice(bytes);
    Ok(())
}

/// `size` bytes allocated by the plugin's `cabi_realloc`, checked in bounds and aligned.
pub fn alloc(
    caller: &mut impl AsContextMut<Data = HostState>,
    align: u32,
    size: usize,
) -> Result<u32> {
    if size == 0 {
        return Ok(align);
    }
    let size_arg = i32::try_from(size)
        .map_err(|_| wasmtime::Error::msg("a result is too large for the plugin's memory"))?;
    // Taken out of the store for the call (which needs the store) and put back after.
    let guest = caller
        .as_context_mut()
        .data_mut()
        .guest
        .take()
        .ok_or_else(not_started)?;
    let ptr = guest
        .realloc
        .call(&mut *caller, (0, 0, align as i32, size_arg));
    let memory = guest.memory;
    caller.as_context_mut().data_mut().guest = Some(guest);
    area(memory.data(&*caller), ptr?, align, size)
}

/// Copies `bytes` into a new allocation of the plugin's: its `(pointer, length)`.
pub fn copy_in(
    caller: &mut impl AsContextMut<Data = HostState>,
    bytes: &[u8],
) -> Result<(u32, u32)> {
    let ptr = alloc(caller, 1, bytes.len())?;
    let memory = memory_of(&*caller)?;
    put(memory.data_mut(&mut *caller), ptr, bytes)?;
    Ok((ptr, bytes.len() as u32))
}

/// The eight bytes of a `(pointer, length)` pair.
pub fn pair(ptr: u32, len: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&ptr.to_le_bytes());
    out[4..].copy_from_slice(&len.to_le_bytes());
    out
}

/// Writes at `ret` the `(pointer, length)` of what `copy` puts in the plugin's memory: a
/// string, a byte list or a list result.
fn return_pair<C: AsContextMut<Data = HostState>>(
    caller: &mut C,
    ret: i32,
    copy: impl FnOnce(&mut C) -> Result<(u32, u32)>,
) -> Result<()> {
    let memory = memory_of(&*caller)?;
    let ret = area(memory.data(&*caller), ret, 4, 8)?;
    let (ptr, len) = copy(caller)?;
    put(memory.data_mut(&mut *caller), ret, &pair(ptr, len))
}

/// Writes a string or byte-list result at `ret`.
pub fn return_bytes(
    caller: &mut impl AsContextMut<Data = HostState>,
    ret: i32,
    bytes: &[u8],
) -> Result<()> {
    return_pair(caller, ret, |caller| copy_in(caller, bytes))
}

/// Writes an `option<string>` or `option<list<u8>>` result at `ret`: a tag byte, then the pair
/// at offset 4.
pub fn return_option_bytes(
    caller: &mut impl AsContextMut<Data = HostState>,
    ret: i32,
    bytes: Option<&[u8]>,
) -> Result<()> {
    let memory = memory_of(&*caller)?;
    let ret = area(memory.data(&*caller), ret, 4, 12)?;
    let Some(bytes) = bytes else {
        return put(memory.data_mut(&mut *caller), ret, &[0]);
    };
    let (ptr, len) = copy_in(caller, bytes)?;
    let mut out = [0; 12];
    out[0] = 1;
    out[4..].copy_from_slice(&pair(ptr, len));
    put(memory.data_mut(&mut *caller), ret, &out)
}

/// Writes a `result<_, string>` at `ret`, laid out as an `option<string>` holding the error: a
/// tag byte, then the error's pair at offset 4.
pub fn return_unit_result(
    caller: &mut impl AsContextMut<Data = HostState>,
    ret: i32,
    result: std::result::Result<(), String>,
) -> Result<()> {
    return_option_bytes(caller, ret, result.err().as_deref().map(str::as_bytes))
}

/// Copies `items` into the plugin's memory as a `list<string>` and returns its pair.
pub fn copy_list<T: AsRef<str>>(
    caller: &mut impl AsContextMut<Data = HostState>,
    items: &[T],
) -> Result<(u32, u32)> {
    let mut pairs = Vec::with_capacity(items.len() * 8);
    for item in items {
        let (ptr, len) = copy_in(caller, item.as_ref().as_bytes())?;
        pairs.extend_from_slice(&pair(ptr, len));
    }
    let list = alloc(caller, 4, pairs.len())?;
    let memory = memory_of(&*caller)?;
    put(memory.data_mut(&mut *caller), list, &pairs)?;
    Ok((list, items.len() as u32))
}

/// Writes a `list<string>` result at `ret`.
pub fn return_list<T: AsRef<str>>(
    caller: &mut impl AsContextMut<Data = HostState>,
    ret: i32,
    items: &[T],
) -> Result<()> {
    return_pair(caller, ret, |caller| copy_list(caller, items))
}

/// Reads a `list<tuple<string, string>>` (16 bytes an element) where it lies.
pub fn string_pairs(
    memory: &[u8],
    ptr: i32,
    len: i32,
) -> Result<Vec<(Cow<'_, str>, Cow<'_, str>)>> {
    let size = (len as u32 as usize).saturating_mul(16);
    let at = area(memory, ptr, 4, size)?;
    let elements = slice(memory, at as i32, size as i32)?;
    elements
        .chunks_exact(16)
        .map(|element| {
            let word = |i: usize| {
                i32::from_le_bytes([element[i], element[i + 1], element[i + 2], element[i + 3]])
            };
            Ok((
                Cow::Borrowed(text(memory, word(0), word(4))?),
                Cow::Borrowed(text(memory, word(8), word(12))?),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_out_of_bounds_or_not_utf8_are_refused() {
        let memory = b"hello\xffworld".to_vec();
        assert_eq!(slice(&memory, 0, 5).unwrap(), b"hello");
        assert_eq!(text(&memory, 6, 5).unwrap(), "world");
        assert!(slice(&memory, 6, 6).is_err(), "one byte past the end");
        assert!(slice(&memory, -1, 1).is_err(), "a pointer past 2 GiB");
        assert!(
            slice(&memory, 8, i32::MAX).is_err(),
            "a length past the end"
        );
        assert!(text(&memory, 0, 6).is_err(), "text that is not UTF-8");
    }

    #[test]
    fn result_areas_must_fit_and_be_aligned() {
        let memory = vec![0u8; 32];
        assert_eq!(area(&memory, 8, 4, 12).unwrap(), 8);
        assert!(area(&memory, 6, 4, 12).is_err(), "misaligned");
        assert!(area(&memory, 24, 4, 12).is_err(), "past the end");
        assert!(area(&memory, 2, 2, 4).is_ok());
        assert!(
            area(&memory, 0, 4, (1 << 32) + 8).is_err(),
            "a size past 2 GiB, which an i32 would wrap to 8"
        );
    }

    #[test]
    fn string_pairs_are_read_where_they_lie() {
        // Two strings at 32 and 35, one element at 0: ("key", "va").
        let mut memory = vec![0u8; 40];
        memory[..8].copy_from_slice(&pair(32, 3));
        memory[8..16].copy_from_slice(&pair(35, 2));
        memory[32..37].copy_from_slice(b"keyva");
        let pairs = string_pairs(&memory, 0, 1).unwrap();
        assert_eq!(pairs, [(Cow::Borrowed("key"), Cow::Borrowed("va"))]);
        assert!(string_pairs(&memory, 2, 1).is_err(), "misaligned list");
        assert!(
            string_pairs(&memory, 0, 3).is_err(),
            "elements past the end"
        );
        memory[32] = 0xff;
        assert!(
            string_pairs(&memory, 0, 1).is_err(),
            "a key that is not UTF-8"
        );
    }
}
