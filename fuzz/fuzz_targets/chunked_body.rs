//! Any bytes as a chunked body, arriving in pieces of a size the input picks: the decoder reads
//! the same body whatever the pieces, and never panics.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_http1::chunked::{ChunkedDecoder, Decoded};

/// The body's bytes and how it ended, fed `step` bytes at a time.
fn decode(input: &[u8], step: usize) -> (Vec<u8>, Option<String>) {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(bytes)) => data.extend_from_slice(&bytes),
            Ok(Decoded::Trailers(trailers)) => return (data, Some(format!("{trailers:?}"))),
            Ok(Decoded::End) => return (data, Some(String::new())),
            Ok(Decoded::NeedMore) if fed < input.len() => {
                let next = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..next]);
                fed = next;
            }
            Ok(Decoded::NeedMore) => return (data, None),
            Err(e) => return (data, Some(format!("error: {e}"))),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len().max(1));
    let pieces = decode(input, usize::from(step % 16) + 1);
    // The same ending, and the same bytes up to it.
    assert_eq!(whole.1, pieces.1, "{input:?}");
    if whole.1.is_some() {
        assert_eq!(whole.0, pieces.0, "{input:?}");
    }
});
