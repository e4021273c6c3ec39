//! The proxy-wasm ABI 0.2.1 as the host sees it: the numbers that cross the boundary and the
//! byte formats of header maps and property paths (as the Rust, Go and C++ SDKs write them).

/// `proxy_status_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// What a stream callback answers.
pub const ACTION_CONTINUE: i32 = 0;

/// `proxy_map_type_t`.
pub mod map {
    pub const REQUEST_HEADERS: i32 = 0;
    pub const REQUEST_TRAILERS: i32 = 1;
    pub const RESPONSE_HEADERS: i32 = 2;
    pub const RESPONSE_TRAILERS: i32 = 3;
    pub const CALL_RESPONSE_HEADERS: i32 = 6;
    pub const CALL_RESPONSE_TRAILERS: i32 = 7;
}

/// `proxy_buffer_type_t`.
pub mod buffer {
    pub const REQUEST_BODY: i32 = 0;
    pub const RESPONSE_BODY: i32 = 1;
    pub const CALL_RESPONSE_BODY: i32 = 4;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
}

/// `proxy_stream_type_t` of `proxy_continue_stream` / `proxy_close_stream`.
pub mod stream {
    pub const REQUEST: i32 = 0;
    pub const RESPONSE: i32 = 1;
}

/// `proxy_metric_type_t`.
pub mod metric {
    pub const COUNTER: i32 = 0;
    pub const GAUGE: i32 = 1;
    pub const HISTOGRAM: i32 = 2;
}

/// The exports a filter must have to be run as proxy-wasm: the ABI version marker.
pub const ABI_MARKER: &str = "proxy_abi_version_0_2_1";
/// Older filters (ABI 0.2.0) differ only in what this host does not look at.
pub const ABI_MARKER_0_2_0: &str = "proxy_abi_version_0_2_0";

/// A header map as the SDKs serialize it: the pair count, each pair's name and value lengths
/// (all u32 little-endian), then each name and value followed by a NUL.
pub fn serialize_map<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let count = pairs.clone().into_iter().count();
    let mut out = Vec::with_capacity(4 + count * 40);
    out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    for (name, value) in pairs.clone() {
        out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(0).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Reads a map [`serialize_map`] wrote; `None` when the bytes are not one.
pub fn deserialize_map(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = u32_at(0)?;
    if count > bytes.len() / 8 {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        sizes.push((u32_at(4 + i * 8)?, u32_at(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for (name_len, value_len) in sizes {
        let name = bytes.get(at..at + name_len)?.to_vec();
        at += name_len + 1;
        let value = bytes.get(at..at + value_len)?.to_vec();
        at += value_len + 1;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// A property path: its parts, NUL-separated (`["request", "path"]`).
pub fn property_path(bytes: &[u8]) -> Vec<&str> {
    bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .filter_map(|part| std::str::from_utf8(part).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_reads_back_as_written() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/a"), (b"x-b", b""), (b"k", b"v\xff")];
        let bytes = serialize_map(pairs.iter().copied());
        let back = deserialize_map(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0], (b":path".to_vec(), b"/a".to_vec()));
        assert_eq!(back[2].1, b"v\xff".to_vec());
        assert_eq!(deserialize_map(&[]), Some(Vec::new()));
        assert_eq!(
            deserialize_map(&[9, 0, 0, 0, 1]),
            None,
            "a count the bytes cannot hold"
        );
        assert_eq!(property_path(b"request\0path\0"), ["request", "path"]);
    }
}
