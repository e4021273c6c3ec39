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

/// The index of the first `byte` in `text`, a word at a time: in Wasm a loop over bytes costs
/// ~17 instructions a byte (each turn checks the hook's deadline).
pub fn find(text: &[u8], byte: u8) -> Option<usize> {
    let len = text.len();
    if len < 8 {
        return text.iter().position(|&b| b == byte);
    }
    let pattern = ONES * u64::from(byte);
    let first_in = |at: usize| {
        let matches = zero_lanes(word(&text[at..at + 8]) ^ pattern);
        (matches != 0).then(|| at + matches.trailing_zeros() as usize / 8)
    };
    let mut at = 0;
    while at + 8 < len {
        if let Some(found) = first_in(at) {
            return Some(found);
        }
        at += 8;
    }
    // The last word overlaps the one before, whose bytes did not match.
    first_in(len - 8)
}

/// Whether every byte of `text` passes `byte_ok`; `word_ok` answers for eight at a time where
/// it can (`false` sends the word's bytes to `byte_ok`). Slices shorter than a word are read as
/// overlapping halves, their missing lanes `pad`, which must pass both.
pub(crate) fn all_bytes(
    text: &[u8],
    word_ok: impl Fn(u64) -> bool,
    byte_ok: impl Fn(u8) -> bool,
    pad: u8,
) -> bool {
    let ok = |x: u64| word_ok(x) || x.to_le_bytes().into_iter().all(&byte_ok);
    let len = text.len();
    if len < 8 {
        // The lanes `short` fills: all eight from four bytes, the low four from two or three,
        // the lowest from one.
        let filled = match len {
            0 => return true,
            1 => 1,
            2 | 3 => 4,
            _ => return ok(short(text)),
        };
        return ok(short(text) | (ONES * u64::from(pad)) << (filled * 8));
    }
    let mut at = 0;
    while at + 8 < len {
        if !ok(word(&text[at..at + 8])) {
            return false;
        }
        at += 8;
    }
    ok(word(&text[len - 8..]))
}

/// A one in each byte lane, and each lane's high bit.
pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each lane whose byte is zero (exact: no lane is marked wrongly).
pub(crate) fn zero_lanes(x: u64) -> u64 {
    !(((x & !HIGHS) + !HIGHS) | x) & HIGHS
}

/// The high bit of each lane whose byte is at least `c`, for bytes below 0x80 and `c` at most
/// 0x80.
pub(crate) fn lanes_at_least(x: u64, c: u8) -> u64 {
    ((x | HIGHS) - ONES * u64::from(c)) & HIGHS
}

/// `a == b` for slices of one length: whole words, then the last word overlapping the ones
/// before it (a string of 8 to 16 bytes is two loads a side); shorter strings by halves.
fn same_len(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len < 8 {
        return short(a) == short(b);
    }
    let mut at = 0;
    while at + 8 < len {
        if word(&a[at..at + 8]) != word(&b[at..at + 8]) {
            return false;
        }
        at += 8;
    }
    word(&a[len - 8..]) == word(&b[len - 8..])
}

/// Eight bytes as one integer.
fn word(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// Up to seven bytes as one integer: the first and last four (or two, or one) bytes, which
/// overlap; for slices of one length, equal integers mean equal bytes.
fn short(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    if len >= 4 {
        let half = |at: usize| {
            let mut half = [0; 4];
            half.copy_from_slice(&bytes[at..at + 4]);
            u64::from(u32::from_le_bytes(half))
        };
        half(0) | half(len - 4) << 32
    } else if len >= 2 {
        let pair = |at: usize| u64::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
        pair(0) | pair(len - 2) << 16
    } else {
        bytes.first().map_or(0, |&b| u64::from(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings of every length up to three words with one byte of every value in each place.
    fn with_every_byte() -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        for len in 1..=24 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    all.push(text);
                }
            }
        }
        all
    }

    #[test]
    fn find_finds_the_first_byte_as_a_byte_loop_does() {
        for text in with_every_byte() {
            for byte in [b'?', 0, 0x80, 0xff, b'a'] {
                assert_eq!(
                    find(&text, byte),
                    text.iter().position(|&b| b == byte),
                    "{text:?} {byte}"
                );
            }
        }
        assert_eq!(find(b"/api/bench?x=1&y=2?", b'?'), Some(10));
    }

    #[test]
    fn all_bytes_agrees_with_its_byte_test() {
        let digit_word = |x: u64| {
            x & HIGHS == 0 && lanes_at_least(x, b'0') & !lanes_at_least(x, b'9' + 1) == HIGHS
        };
        for text in with_every_byte() {
            assert_eq!(
                all_bytes(&text, digit_word, |b| b.is_ascii_digit() || b == b'a', b'a'),
                text.iter().all(|&b| b.is_ascii_digit() || b == b'a'),
                "{text:?}"
            );
        }
    }

    /// Every pair of short strings over a small alphabet, including every length up to three words
    /// and strings differing only in their first, middle or last byte.
    fn samples() -> Vec<Vec<u8>> {
        let mut samples = vec![Vec::new()];
        for len in 1..=25 {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 3) as u8).collect();
            let mut last = base.clone();
            *last.last_mut().unwrap() = b'z';
            let mut first = base.clone();
            first[0] = b'z';
            let mut middle = base.clone();
            middle[len / 2] = b'y';
            samples.extend([base, last, first, middle]);
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
