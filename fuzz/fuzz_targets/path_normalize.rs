//! Any text as a request path through every normalization setting: it never panics, the result
//! starts with `/` and has no dot segment left, and normalizing it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::path::{EscapedSlashes, PathNormalization};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = format!("/{text}");
    for escaped_slashes in [EscapedSlashes::Keep, EscapedSlashes::Reject, EscapedSlashes::Decode] {
        for merge_slashes in [false, true] {
            let settings = PathNormalization {
                enabled: true,
                merge_slashes,
                escaped_slashes,
            };
            let Ok(once) = settings.normalize(&path) else {
                continue;
            };
            assert!(once.starts_with('/'), "{path:?} -> {once:?}");
            assert!(
                !once.split('/').any(|s| s == "." || s == ".."),
                "{path:?} -> {once:?}"
            );
            let twice = settings.normalize(&once).expect("a normalized path is accepted");
            assert_eq!(once, twice, "{path:?}");
        }
    }
});
