//! Lowercase hex, for digests (plugin sha256 pins, the files' hashes a reload compares) and
//! trace ids: the one place every module that prints bytes as hex takes it from.

/// `bytes` as lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.extend(digits(b).map(char::from));
    }
    out
}

/// A byte's two lowercase hex digits, in one lookup: what a request id (written on every
/// request) is made of.
pub fn digits(byte: u8) -> [u8; 2] {
    PAIRS[usize::from(byte)]
}

/// Every byte's two digits.
static PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
        byte += 1;
    }
    pairs
};

#[cfg(test)]
mod tests {
    #[test]
    fn two_lowercase_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
        assert_eq!(super::digits(0x7c), *b"7c");
    }
}
