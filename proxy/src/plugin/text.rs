//! Text crossing between the proxy and a plugin — header names and values, cluster names, the
//! strings of a batch — checked as UTF-8 with a shortcut for ASCII, which nearly all of it is.
//!
//! `std::str::from_utf8` takes ~90 instructions for a 10-byte string (its word-at-a-time path
//! starts at 16 aligned bytes); `is_ascii` reads such a string in two words. The program's
//! plugins hand over about eight such strings a request.

use std::str::Utf8Error;

/// `bytes` as text if they are UTF-8, as `std::str::from_utf8` answers.
#[allow(unsafe_code)]
pub fn utf8(bytes: &[u8]) -> Result<&str, Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_from_utf8_does() {
        let samples: [&[u8]; 9] = [
            b"",
            b"x-api-key",
            b"a longer ascii string than two words",
            "caf\u{e9}".as_bytes(),
            "\u{1f980} crab".as_bytes(),
            b"\xff",
            b"ascii then \xc3",
            b"\xe2\x82",
            b"\x7f\x00 control bytes are ascii",
        ];
        for bytes in samples {
            assert_eq!(
                utf8(bytes).ok(),
                std::str::from_utf8(bytes).ok(),
                "{bytes:?}"
            );
        }
    }
}
