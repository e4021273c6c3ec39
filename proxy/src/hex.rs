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

/// `word`'s eight lowercase hex digits, most significant first, computed a word at a time (no
/// loop): a request id is four of these.
pub fn word_digits(word: u32) -> [u8; 8] {
    // Each nibble into a byte of its own, the lowest nibble in the lowest byte.
    let mut x = u64::from(word);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 0x01 in each byte that holds 10 or more (adding 6 carries it into bit 4).
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    // '0' + nibble, and 'a' - '0' - 10 = 39 more for the letters.
    (x + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
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

    #[test]
    fn a_words_digits_are_its_bytes_digits() {
        let mut word: u32 = 0;
        for _ in 0..100_000 {
            assert_eq!(
                super::word_digits(word).to_vec(),
                super::hex(&word.to_be_bytes()).into_bytes(),
                "{word:#x}"
            );
            word = word.wrapping_mul(2_654_435_761).wrapping_add(0x9e37);
        }
        for word in [0, u32::MAX, 0x0123_4567, 0x89ab_cdef, 0x9a9a_9a9a] {
            assert_eq!(
                super::word_digits(word).to_vec(),
                format!("{word:08x}").into_bytes()
            );
        }
    }
}
