//! The changes a hook makes, gathered and sent to the host in one call (the WIT's `batch`
//! interface) instead of one host call each: a request header set, a header for the client's
//! response, the request context, a counter. Only changes that cannot fail once checked here
//! are gathered; the wasm host sends them before any call that could see them and when the hook
//! returns.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::sync::atomic::{AtomicU32, Ordering};

use crate::host::metrics::Kind;
use crate::text;

/// What a metric made once holds as its number before its first update numbers it.
pub(crate) const NOT_NUMBERED: u32 = u32::MAX;

const SET_REQUEST_HEADER: u8 = 1;
const ADD_REQUEST_HEADER: u8 = 2;
const REMOVE_REQUEST_HEADER: u8 = 3;
const ADD_CLIENT_RESPONSE_HEADER: u8 = 4;
const SET_CONTEXT: u8 = 5;
const METRIC: u8 = 6;
const NUMBER_METRIC: u8 = 7;
const NUMBERED_METRIC: u8 = 8;

/// How many metrics made once ([`crate::metrics::Counter`] and its kin) an instance numbers;
/// the host keeps as many handles by number. Past this, they are sent by their encoding.
pub(crate) const MAX_NUMBERED_METRICS: u32 = 256;

/// The encoded changes of the hook running now; the buffer is kept between hooks.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    bytes: Vec<u8>,
    /// Whether a request hook is running, the only time changes are gathered.
    pub(crate) open: bool,
    /// The metrics made once that this instance numbered so far (numbers `0..numbered`).
    numbered: u32,
}

impl Batch {
    /// An empty batch, closed; `const` so that the thread-local holding it needs no lazy
    /// initialization check on each hook.
    pub(crate) const fn new() -> Self {
        Self {
            bytes: Vec::new(),
            open: false,
            numbered: 0,
        }
    }

    /// A request header set (`add` false) or added; `None` if it must go to the host at once:
    /// `host` (which also changes the URI's authority and can fail) or a name or value the host
    /// would refuse (its error is the one the plugin gets).
    pub(crate) fn request_header(&mut self, add: bool, name: &str, value: &str) -> Option<()> {
        if name.eq_ignore_ascii_case("host") || !valid_header(name, value) {
            return None;
        }
        self.bytes.push(if add {
            ADD_REQUEST_HEADER
        } else {
            SET_REQUEST_HEADER
        });
        self.string(name.as_bytes());
        self.string(value.as_bytes());
        Some(())
    }

    pub(crate) fn remove_request_header(&mut self, name: &str) {
        self.bytes.push(REMOVE_REQUEST_HEADER);
        self.string(name.as_bytes());
    }

    /// A header for the client's response; `None` if the host would refuse it.
    pub(crate) fn client_response_header(&mut self, name: &str, value: &str) -> Option<()> {
        if !valid_header(name, value) {
            return None;
        }
        self.bytes.push(ADD_CLIENT_RESPONSE_HEADER);
        self.string(name.as_bytes());
        self.string(value.as_bytes());
        Some(())
    }

    pub(crate) fn set_context(&mut self, key: &str, value: &[u8]) {
        self.bytes.push(SET_CONTEXT);
        self.string(key.as_bytes());
        self.string(value);
    }

    /// A metric update; `None` with more labels than the encoding counts (255).
    pub(crate) fn metric(
        &mut self,
        kind: Kind,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Option<()> {
        u8::try_from(labels.len()).ok()?;
        self.bytes.push(METRIC);
        put_metric_identity(&mut self.bytes, kind, name, labels)?;
        self.bytes
            .extend_from_slice(&raw_value(kind, value).to_le_bytes());
        Some(())
    }

    /// A metric update whose kind, name and labels [`put_metric_identity`] encoded before (once,
    /// for a metric made when the plugin starts): one copy instead of an encoding per update.
    pub(crate) fn encoded_metric(&mut self, identity: &[u8], kind: Kind, value: f64) {
        self.bytes.reserve(1 + identity.len() + 8);
        self.bytes.push(METRIC);
        self.bytes.extend_from_slice(identity);
        self.bytes
            .extend_from_slice(&raw_value(kind, value).to_le_bytes());
    }

    /// An update of a metric made once, by its number in this instance: the first update
    /// carries its encoding and numbers it (`number` holds [`NOT_NUMBERED`] until then), later
    /// ones only the number — nine bytes the host finds its handle by, with no copy or hash.
    pub(crate) fn numbered_metric(
        &mut self,
        number: &AtomicU32,
        identity: &[u8],
        kind: Kind,
        value: f64,
    ) {
        let raw = raw_value(kind, value).to_le_bytes();
        let known = number.load(Ordering::Relaxed);
        if known != NOT_NUMBERED {
            self.bytes.push(NUMBERED_METRIC);
            self.bytes.extend_from_slice(&known.to_le_bytes());
            self.bytes.extend_from_slice(&raw);
            return;
        }
        if self.numbered >= MAX_NUMBERED_METRICS {
            return self.encoded_metric(identity, kind, value);
        }
        let new = self.numbered;
        self.numbered += 1;
        number.store(new, Ordering::Relaxed);
        self.bytes.reserve(1 + 4 + identity.len() + 8);
        self.bytes.push(NUMBER_METRIC);
        self.bytes.extend_from_slice(&new.to_le_bytes());
        self.bytes.extend_from_slice(identity);
        self.bytes.extend_from_slice(&raw);
    }

    /// The changes gathered so far, if any; the caller sends them and then calls `clear`.
    pub(crate) fn pending(&self) -> Option<&[u8]> {
        (!self.bytes.is_empty()).then_some(&self.bytes[..])
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
    }

    fn string(&mut self, s: &[u8]) {
        put_string(&mut self.bytes, s);
    }
}

/// Appends a metric's kind, name and labels as a batch's metric change carries them (after its
/// tag, before its value); the host keeps its handles by these bytes. `None`, with nothing
/// appended, for more labels than the encoding counts (255).
pub(crate) fn put_metric_identity(
    bytes: &mut Vec<u8>,
    kind: Kind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<()> {
    let count = u8::try_from(labels.len()).ok()?;
    bytes.push(match kind {
        Kind::Counter => 0,
        Kind::Gauge => 1,
        Kind::Histogram => 2,
    });
    put_string(bytes, name.as_bytes());
    bytes.push(count);
    for (key, value) in labels {
        put_string(bytes, key.as_bytes());
        put_string(bytes, value.as_bytes());
    }
    Some(())
}

/// A metric's value as the batch carries it: a counter's whole increment, or the `f64`'s bits.
fn raw_value(kind: Kind, value: f64) -> u64 {
    match kind {
        // Counters take whole numbers (`metrics::counter` passes a u64).
        Kind::Counter => value as u64,
        Kind::Gauge | Kind::Histogram => value.to_bits(),
    }
}

/// A string as the batch carries it: its length (four bytes, little-endian), then its bytes.
fn put_string(bytes: &mut Vec<u8>, s: &[u8]) {
    // Strings from a plugin are far below 4 GiB (a wasm32 memory is at most that).
    bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
    bytes.extend_from_slice(s);
}

/// Whether the host takes this header as it is: a name of token characters (upper case is
/// lowered) and a value of visible characters, spaces and tabs — the `http` crate's rules. By
/// table: in Wasm, looking a byte up in a list of punctuation is a `memchr` call.
pub(crate) fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.len() < (1 << 16)
        && text::all_bytes(name.as_bytes(), common_token_word, token, b'a')
        && text::all_bytes(value.as_bytes(), plain_value_word, value_byte, b'a')
}

fn token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

fn value_byte(b: u8) -> bool {
    (b >= 0x20 && b != 0x7f) || b == b'\t'
}

/// Whether eight name bytes are all letters, digits or `-`, as nearly every header name's are
/// (other token characters are checked byte by byte).
fn common_token_word(x: u64) -> bool {
    use text::{HIGHS, ONES, lanes_at_least, zero_lanes};
    if x & HIGHS != 0 {
        return false;
    }
    let between = |lo: u8, hi: u8| lanes_at_least(x, lo) & !lanes_at_least(x, hi + 1);
    let dash = zero_lanes(x ^ (ONES * u64::from(b'-')));
    between(b'a', b'z') | between(b'A', b'Z') | between(b'0', b'9') | dash == HIGHS
}

/// Whether eight value bytes are all visible or spaces, with no control byte (a tab is checked
/// byte by byte).
fn plain_value_word(x: u64) -> bool {
    use text::{HIGHS, ONES, zero_lanes};
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
    below_space == 0 && zero_lanes(x ^ (ONES * 0x7f)) == 0
}

/// Which bytes are token characters (RFC 9110's `tchar`).
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_encoded_as_the_host_reads_them() {
        let mut batch = Batch::default();
        assert_eq!(batch.pending(), None);
        batch.request_header(false, "x-a", "1").unwrap();
        batch.remove_request_header("x-b");
        batch
            .metric(Kind::Counter, "hits", &[("route", "api")], 3.0)
            .unwrap();
        let mut expected = vec![1, 3, 0, 0, 0, b'x', b'-', b'a', 1, 0, 0, 0, b'1'];
        expected.extend_from_slice(&[3, 3, 0, 0, 0, b'x', b'-', b'b']);
        expected.extend_from_slice(&[6, 0, 4, 0, 0, 0, b'h', b'i', b't', b's', 1]);
        expected.extend_from_slice(&[5, 0, 0, 0, b'r', b'o', b'u', b't', b'e']);
        expected.extend_from_slice(&[3, 0, 0, 0, b'a', b'p', b'i']);
        expected.extend_from_slice(&3u64.to_le_bytes());
        assert_eq!(batch.pending(), Some(&expected[..]));
        batch.clear();
        assert_eq!(batch.pending(), None);
    }

    #[test]
    fn a_metric_encoded_once_is_sent_as_one_encoded_per_update() {
        let labels = [("route", "api"), ("code", "2xx")];
        for (kind, value) in [
            (Kind::Counter, 3.0),
            (Kind::Gauge, -1.5),
            (Kind::Histogram, 0.25),
        ] {
            let mut each_time = Batch::default();
            each_time.metric(kind, "hits", &labels, value).unwrap();
            let mut identity = Vec::new();
            put_metric_identity(&mut identity, kind, "hits", &labels).unwrap();
            let mut once = Batch::default();
            once.encoded_metric(&identity, kind, value);
            assert_eq!(once.pending(), each_time.pending(), "{kind:?}");
        }
        let many: Vec<(&str, &str)> = vec![("k", "v"); 256];
        let mut identity = Vec::new();
        assert_eq!(
            put_metric_identity(&mut identity, Kind::Counter, "x", &many),
            None
        );
        assert!(identity.is_empty());
        assert_eq!(
            Batch::default().metric(Kind::Counter, "x", &many, 1.0),
            None
        );
    }

    #[test]
    fn a_metric_made_once_is_numbered_by_its_first_update() {
        let mut identity = Vec::new();
        put_metric_identity(&mut identity, Kind::Counter, "hits", &[("route", "api")]).unwrap();
        let (first, second) = (AtomicU32::new(NOT_NUMBERED), AtomicU32::new(NOT_NUMBERED));
        let mut batch = Batch::default();
        batch.numbered_metric(&first, &identity, Kind::Counter, 2.0);
        batch.numbered_metric(&first, &identity, Kind::Counter, 3.0);
        batch.numbered_metric(&second, &identity, Kind::Gauge, 0.5);
        let mut expected = vec![NUMBER_METRIC, 0, 0, 0, 0];
        expected.extend_from_slice(&identity);
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&[NUMBERED_METRIC, 0, 0, 0, 0]);
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(&[NUMBER_METRIC, 1, 0, 0, 0]);
        expected.extend_from_slice(&identity);
        expected.extend_from_slice(&0.5f64.to_bits().to_le_bytes());
        assert_eq!(batch.pending(), Some(&expected[..]));
        assert_eq!(first.load(Ordering::Relaxed), 0);
        assert_eq!(second.load(Ordering::Relaxed), 1);

        // Past the cap, a new metric goes by its encoding and stays unnumbered.
        batch.clear();
        batch.numbered = MAX_NUMBERED_METRICS;
        let late = AtomicU32::new(NOT_NUMBERED);
        batch.numbered_metric(&late, &identity, Kind::Counter, 1.0);
        let mut by_encoding = Batch::default();
        by_encoding.encoded_metric(&identity, Kind::Counter, 1.0);
        assert_eq!(batch.pending(), by_encoding.pending());
        assert_eq!(late.load(Ordering::Relaxed), NOT_NUMBERED);
    }

    #[test]
    fn what_the_host_could_refuse_is_not_gathered() {
        let mut batch = Batch::default();
        assert_eq!(batch.request_header(false, "Host", "example.com"), None);
        assert_eq!(batch.request_header(true, "bad name", "v"), None);
        assert_eq!(batch.request_header(false, "x-ok", "line\nbreak"), None);
        assert_eq!(batch.client_response_header("", "v"), None);
        assert_eq!(batch.pending(), None);
        assert!(valid_header("X-Upper_Case", "tab\tand visible ~ é"));
        // Every byte as a name, against the `http` crate's own rules.
        for b in 0..=255u8 {
            let name = [b];
            let Ok(name) = std::str::from_utf8(&name) else {
                continue;
            };
            assert_eq!(
                valid_header(name, "v"),
                http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "{b}"
            );
        }
    }

    #[test]
    fn names_and_values_are_checked_as_byte_by_byte_rules_would() {
        for len in 1..=24 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = b"x-served-by-the-gateway!".to_vec();
                    bytes.truncate(len);
                    bytes[at] = b;
                    let Ok(text) = std::str::from_utf8(&bytes) else {
                        continue;
                    };
                    let token = text.bytes().all(|b| TOKEN[usize::from(b)]);
                    assert_eq!(valid_header(text, "v"), token, "name {text:?}");
                    let visible = text.bytes().all(value_byte);
                    assert_eq!(valid_header("x", text), visible, "value {text:?}");
                }
            }
        }
        // Bytes past ASCII (UTF-8) are allowed in values, not in names.
        assert!(valid_header("x", "café au lait, déjà vu"));
        assert!(!valid_header("café", "v"));
    }
}
