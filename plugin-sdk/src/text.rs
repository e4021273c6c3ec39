//! Byte-string checks for code that runs on every request. In Wasm, `==` and `starts_with` on
//! strings call a `memcmp` that compares one byte per loop turn, and `split_once(char)` or
//! `contains` on bytes a `memchr` built for long inputs; a plugin's strings (paths, header values,
//! keys) are short, and these helpers compare them eight bytes at a time and search them with a
//! plain loop. Natively they give the same answers as the standard ones (tested below).

/// `a == b`.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && same_len(a, b)
}

/// `text.starts_with(prefix)`.
pub fn starts_with(text: &[u8], prefix: &[u8]) -> bool {
    text.len() >= prefix.len() && same_len(&text[..prefix.len()], prefix)
}

/// The index of the first `byte` in `text`.
pub fn find(text: &[u8], byte: u8) -> Option<usize> {
    text.iter().position(|&b| b == byte)
}

/// `a == b` for slices of one length.
fn same_len(a: &[u8], b: &[u8]) -> bool {
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    tail(a_words.remainder()) == tail(b_words.remainder())
        && a_words.zip(b_words).all(|(x, y)| word(x) == word(y))
}

/// Eight bytes as one integer.
fn word(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// Up to seven bytes as one integer, built byte by byte (a copy of a length not known at compile
/// time would be a `memcpy` call).
fn tail(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .enumerate()
        .fold(0, |word, (i, &b)| word | u64::from(b) << (8 * i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pair of short strings over a small alphabet, including every length up to two words
    /// and strings differing only in their last byte or their tail.
    fn samples() -> Vec<Vec<u8>> {
        let mut samples = vec![Vec::new()];
        for len in 1..=17 {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 3) as u8).collect();
            let mut last = base.clone();
            *last.last_mut().unwrap() = b'z';
            let mut first = base.clone();
            first[0] = b'z';
            samples.extend([base, last, first]);
        }
        samples
    }

    #[test]
    fn answers_as_the_standard_checks_do() {
        let samples = samples();
        for a in &samples {
            for b in &samples {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
                assert_eq!(starts_with(a, b), a.starts_with(b), "{a:?} {b:?}");
            }
            for byte in [b'a', b'c', b'z', b'?'] {
                let before = a.split(|&b| b == byte).next().unwrap().len();
                assert_eq!(find(a, byte), a.contains(&byte).then_some(before));
            }
        }
    }

    #[test]
    fn a_zero_byte_in_the_tail_is_not_taken_for_a_shorter_string() {
        assert!(!same(b"ab\0", b"ab"));
        assert!(!same(b"abcdefgh\0", b"abcdefgh"));
        assert!(starts_with(b"ab\0c", b"ab\0"));
        assert!(!starts_with(b"ab", b"ab\0"));
    }
}
