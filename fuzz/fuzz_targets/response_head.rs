//! Any bytes as a response head: parsed or refused, never a panic, never more consumed than given.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let mut read = BytesMut::from(input);
    if let Ok(Some(_)) = switchyard_http1::client::parse_head(&mut read, flags & 1 == 1) {
        assert!(read.len() < input.len());
    }
});
