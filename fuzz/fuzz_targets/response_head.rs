//! Any bytes as a response head: parsed or refused, never a panic, never more consumed than given.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_http1::client::{ResponseFields, parse_head};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let mut read = BytesMut::from(input);
    let wanted = if flags & 2 == 2 {
        ResponseFields::Passed
    } else {
        ResponseFields::Map
    };
    if let Ok(Some(_)) = parse_head(&mut read, flags & 1 == 1, wanted) {
        assert!(read.len() < input.len());
    }
});
