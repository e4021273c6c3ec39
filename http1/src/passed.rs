//! A response head's end-to-end fields kept as the upstream wrote them, for a proxy that forwards
//! them unchanged. Building a header map from a head (a hash and an entry per field) and encoding
//! it again toward the client was most of what a response head cost; when nothing reads the
//! fields in between, the client side asks for them passed ([`ResponseFields::Passed`]), and the
//! server side writes the kept lines as they are, before the fields of the head's own map (which
//! then holds only what the proxy added). The fields ride on the response body, which goes from
//! one side to the other with its head.
//!
//! Left out as the head is parsed: the hop-by-hop fields (`connection`, `keep-alive`,
//! `proxy-connection`, `transfer-encoding`, `upgrade`) and `content-length`, whose framing the
//! engine writes itself. Heads out of the ordinary — a `connection` naming other fields,
//! `content-length` beside `transfer-encoding`, a `te` field, an interim or protocol-switching
//! status — get a map as before.

use std::cell::RefCell;
use std::ops::Range;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::fields::FramingFields;

/// How a response's fields reach the caller of [`crate::client::Connection::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFields {
    /// In the head's header map.
    Map,
    /// Kept as bytes in a [`PassedFields`] that the response body carries (the head's map empty,
    /// with room for what the caller adds), unless the head is out of the ordinary; for a caller
    /// that will not read them and hands the response to this crate's server, whose body then
    /// gives them back through [`crate::server::PassesFields`].
    Passed,
}

/// Where a field's name and value are in its head.
type FieldAt = (Range<u32>, Range<u32>);

thread_local! {
    /// Kept heads finished with, for the next heads this thread parses (as `spare` keeps header
    /// maps): in steady state a passed head allocates nothing. The boxes are what is kept.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Kept>>> = const { RefCell::new(Vec::new()) };
}

/// How many a thread keeps, and the most fields a kept one has room for.
const KEPT: usize = 8;
const MOST_FIELDS: usize = 64;

/// The end-to-end fields of an upstream's response head, as it wrote them. The size of a
/// pointer: the response body carries it through every layer of a proxy, and each move of the
/// body copies it.
#[derive(Clone, Debug)]
pub struct PassedFields(Option<Box<Kept>>);

#[derive(Clone, Debug, Default)]
struct Kept {
    /// The head's bytes (shared with the connection's read buffer, not copied).
    head: Bytes,
    /// Where each kept field's name and value are in `head`.
    fields: Vec<FieldAt>,
    /// The length the upstream's `content-length` declared: a response to HEAD, or a 304, says
    /// it to the client too.
    content_length: Option<u64>,
    /// A `date` field is among the kept ones (the server adds one otherwise).
    has_date: bool,
}

impl Kept {
    /// The bytes at `at` (always inside the head: the parser's slices of it; empty otherwise,
    /// rather than a panic).
    fn bytes(&self, at: &Range<u32>) -> &[u8] {
        self.head.get(to_usize(at)).unwrap_or_default()
    }
}

impl PassedFields {
    /// No fields: the response's were not passed. (A response body holds this rather than an
    /// `Option`, which would take another word.)
    pub(crate) const fn none() -> Self {
        Self(None)
    }

    pub(crate) fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// Whether a kept field is named `name` (compared without case).
    pub fn contains(&self, name: &str) -> bool {
        self.0.as_deref().is_some_and(|kept| {
            kept.fields
                .iter()
                .any(|(at, _)| kept.bytes(at).eq_ignore_ascii_case(name.as_bytes()))
        })
    }

    /// The kept fields in `map`, after what it holds: for a caller that must read them after
    /// all.
    pub fn append_to(&self, map: &mut HeaderMap) {
        let Some(kept) = self.0.as_deref() else {
            return;
        };
        map.reserve(kept.fields.len());
        for (name_at, value_at) in &kept.fields {
            // Both were checked by the parser; a name or value `http` refuses is left out.
            let name = HeaderName::from_bytes(kept.bytes(name_at));
            let value = HeaderValue::from_maybe_shared(kept.head.slice_ref(kept.bytes(value_at)));
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
    }

    /// Writes each kept field's line (name, colon and spaces, value: as received) into `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let Some(kept) = self.0.as_deref() else {
            return;
        };
        for (name_at, value_at) in &kept.fields {
            out.extend_from_slice(kept.bytes(&(name_at.start..value_at.end)));
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The length the upstream's `content-length` declared.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.0.as_deref().and_then(|kept| kept.content_length)
    }

    /// Whether a `date` field is among the kept ones.
    pub(crate) fn has_date(&self) -> bool {
        self.0.as_deref().is_some_and(|kept| kept.has_date)
    }
}

impl Drop for PassedFields {
    fn drop(&mut self) {
        let Some(mut kept) = self.0.take() else {
            return;
        };
        if kept.fields.capacity() > MOST_FIELDS {
            return;
        }
        let mut fields = std::mem::take(&mut kept.fields);
        fields.clear();
        *kept = Kept {
            fields,
            ..Kept::default()
        };
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < KEPT {
                spare.push(kept);
            }
        });
    }
}

fn to_usize(at: &Range<u32>) -> Range<usize> {
    at.start as usize..at.end as usize
}

/// What a field is to a passed head, by its name's bytes (compared without case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    ContentLength,
    TransferEncoding,
    Connection,
    Te,
    /// `keep-alive`, `proxy-connection`, `upgrade`: dropped whatever they say.
    HopByHop,
    Date,
    EndToEnd,
}

impl Role {
    pub(crate) fn of(name: &[u8]) -> Self {
        // By length first: most names have a length none of these has.
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            2 if is("te") => Self::Te,
            4 if is("date") => Self::Date,
            7 if is("upgrade") => Self::HopByHop,
            10 if is("connection") => Self::Connection,
            10 if is("keep-alive") => Self::HopByHop,
            14 if is("content-length") => Self::ContentLength,
            16 if is("proxy-connection") => Self::HopByHop,
            17 if is("transfer-encoding") => Self::TransferEncoding,
            _ => Self::EndToEnd,
        }
    }
}

/// Gathers a head's kept fields as the parser's view of it is read, field by field.
pub(crate) struct PassedBuilder {
    kept: Box<Kept>,
    /// The last `transfer-encoding` value, for whether the body is chunked.
    last_transfer_encoding: Option<Range<u32>>,
    /// Something only a map can carry: the head takes the map path.
    unusual: bool,
}

impl PassedBuilder {
    pub(crate) fn new(fields: usize) -> Self {
        let mut kept = SPARE.with_borrow_mut(Vec::pop).unwrap_or_default();
        kept.fields.reserve(fields);
        Self {
            kept,
            last_transfer_encoding: None,
            unusual: false,
        }
    }

    /// Notes one field: `name` and `value` are slices of the head, which starts at `start`.
    pub(crate) fn field(
        &mut self,
        framing: &mut FramingFields,
        start: *const u8,
        name: &[u8],
        value: &[u8],
    ) {
        let name_at = crate::pending::range_of(name, start);
        // An empty value's slice may point anywhere: it is taken as just after the colon.
        let value_at = if value.is_empty() {
            name_at.end + 1..name_at.end + 1
        } else {
            crate::pending::range_of(value, start)
        };
        let (Ok(name_at), Ok(value_at)) = (narrow(name_at), narrow(value_at)) else {
            self.unusual = true;
            return;
        };
        if value_at.start <= name_at.end {
            self.unusual = true;
            return;
        }
        match Role::of(name) {
            Role::ContentLength => framing.note(&http::header::CONTENT_LENGTH, value),
            Role::TransferEncoding => {
                framing.note(&http::header::TRANSFER_ENCODING, value);
                self.last_transfer_encoding = Some(value_at);
            }
            Role::Connection => {
                framing.note(&http::header::CONNECTION, value);
                self.unusual |= crate::fields::names_other_fields(value);
            }
            // Meaningless in a response; the proxy's rule for requests (`te: trailers` kept,
            // read from the first field) is left to the map path.
            Role::Te => self.unusual = true,
            Role::HopByHop => {}
            Role::Date => {
                self.kept.has_date = true;
                self.kept.fields.push((name_at, value_at));
            }
            Role::EndToEnd => self.kept.fields.push((name_at, value_at)),
        }
    }

    /// Whether the head must take the map path after all.
    pub(crate) fn unusual(&self) -> bool {
        self.unusual
    }

    /// The kept fields, over `head` (the bytes the ranges are in), and whether the last
    /// transfer coding is `chunked`.
    pub(crate) fn finish(mut self, head: Bytes, framing: &FramingFields) -> (PassedFields, bool) {
        let chunked = self
            .last_transfer_encoding
            .and_then(|at| head.get(to_usize(&at)))
            .is_some_and(|coding| crate::fields::chunked_last(std::iter::once(coding)));
        self.kept.head = head;
        self.kept.content_length = framing.content_length();
        (PassedFields(Some(self.kept)), chunked)
    }
}

fn narrow(at: Range<usize>) -> Result<Range<u32>, std::num::TryFromIntError> {
    Ok(u32::try_from(at.start)?..u32::try_from(at.end)?)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use http::header;

    use super::*;
    use crate::client::parse_head;
    use crate::fields::HOP_BY_HOP;

    /// The map a head gets on the map path, less what a proxy drops before forwarding it
    /// (hop-by-hop fields, and `content-length`, which the engine writes).
    fn forwarded(mut map: HeaderMap) -> HeaderMap {
        for name in HOP_BY_HOP {
            map.remove(name);
        }
        map.remove(header::CONTENT_LENGTH);
        map
    }

    /// Parses `input` both ways: when both succeed they agree on the status, the framing, the
    /// connection's reuse and (passed fields read back) every forwarded field; whether a head is
    /// refused does not depend on the way. Returns whether the fields were passed.
    fn both_ways(input: &[u8], head_request: bool) -> Option<bool> {
        let mut by_map = BytesMut::from(input);
        let mut by_passing = BytesMut::from(input);
        let map = parse_head(&mut by_map, head_request, ResponseFields::Map);
        let passing = parse_head(&mut by_passing, head_request, ResponseFields::Passed);
        let case = String::from_utf8_lossy(input);
        let (map, passing) = match (map, passing) {
            (Ok(Some(map)), Ok(Some(passing))) => (map, passing),
            (Ok(None), Ok(None)) | (Err(_), Err(_)) => return None,
            (map, passing) => panic!("{case:?}: {map:?} against {passing:?}"),
        };
        assert_eq!(by_map.len(), by_passing.len(), "{case:?}");
        assert!(map.passed.is_none(), "{case:?}");
        let (map_head, mut head) = (map.head, passing.head);
        assert_eq!(map_head.status, head.status, "{case:?}");
        let (map_framing, framing) = (map.framing, passing.framing);
        assert_eq!(
            format!("{map_framing:?}"),
            format!("{framing:?}"),
            "{case:?}"
        );
        assert_eq!(map.keep_alive, passing.keep_alive, "{case:?}");
        let Some(passed) = passing.passed else {
            assert_eq!(map_head.headers, head.headers, "{case:?}");
            return Some(false);
        };
        assert!(head.headers.is_empty(), "{case:?}");
        passed.append_to(&mut head.headers);
        assert_eq!(
            forwarded(map_head.headers.clone()),
            head.headers,
            "{case:?}"
        );
        let mut noted = FramingFields::default();
        for value in map_head.headers.get_all(header::CONTENT_LENGTH) {
            noted.note(&header::CONTENT_LENGTH, value.as_bytes());
        }
        assert_eq!(passed.content_length(), noted.content_length(), "{case:?}");
        assert_eq!(
            passed.has_date(),
            map_head.headers.contains_key(header::DATE),
            "{case:?}"
        );
        Some(true)
    }

    #[test]
    fn ordinary_heads_are_passed_and_read_back_as_the_map() {
        let cases: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 06 Dec 2026 18:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nx-a:\r\nx-b:  spaced \t\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nUpgrade: h2c\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"a\"\r\n\r\n",
            b"HTTP/1.1 200 OK\nx-bare-lf: yes\ncontent-length: 1\n\nx",
            b"HTTP/1.1 200 OK\r\nx-obs: caf\xe9\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncontent-length: 3, 3\r\n\r\nabc",
        ];
        for case in cases {
            assert_eq!(
                both_ways(case, false),
                Some(true),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        assert_eq!(both_ways(cases[0], true), Some(true));
    }

    #[test]
    fn unusual_heads_take_the_map_path() {
        let cases: &[&[u8]] = &[
            // `connection` naming a field of its own.
            b"HTTP/1.1 200 OK\r\nconnection: x-private\r\nx-private: 1\r\ncontent-length: 0\r\n\r\n",
            // Both framings.
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            // `te`, which only requests carry.
            b"HTTP/1.1 200 OK\r\nte: trailers\r\ncontent-length: 0\r\n\r\n",
            // A protocol switch.
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(
                both_ways(case, false),
                Some(false),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn a_passed_head_is_written_as_it_came() {
        let mut read = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nServer:nginx\r\nX-Empty:\r\nconnection: close\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let parsed = parse_head(&mut read, false, ResponseFields::Passed)
            .unwrap()
            .unwrap();
        let passed = parsed.passed.unwrap();
        let mut out = Vec::new();
        passed.write(&mut out);
        assert_eq!(out, b"Server:nginx\r\nX-Empty:\r\n");
        assert!(passed.contains("server") && passed.contains("X-EMPTY"));
        assert!(!passed.contains("connection") && !passed.contains("content-length"));
    }

    #[test]
    fn every_hop_by_hop_name_has_its_role() {
        for name in HOP_BY_HOP {
            assert_ne!(Role::of(name.as_bytes()), Role::EndToEnd, "{name}");
            assert_ne!(
                Role::of(name.to_uppercase().as_bytes()),
                Role::EndToEnd,
                "{name}"
            );
        }
        assert_eq!(Role::of(b"x-upgrade"), Role::EndToEnd);
        assert_eq!(
            Role::of(b"trailer"),
            Role::EndToEnd,
            "announces trailers end to end"
        );
    }

    #[test]
    fn a_finished_list_of_fields_is_kept_for_the_next_head() {
        let head = &b"HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"[..];
        let parse = || {
            parse_head(&mut BytesMut::from(head), false, ResponseFields::Passed)
                .unwrap()
                .unwrap()
                .passed
                .unwrap()
        };
        SPARE.with_borrow_mut(Vec::clear);
        drop(parse());
        assert_eq!(SPARE.with_borrow(Vec::len), 1);
        let again = parse();
        assert_eq!(SPARE.with_borrow(Vec::len), 0, "taken for the second head");
        assert_eq!(
            std::mem::size_of::<PassedFields>(),
            std::mem::size_of::<usize>()
        );
        assert!(again.contains("x-a"));
    }

    /// Random heads from pieces that matter to framing and hop-by-hop fields: the two ways agree
    /// on every one both parse.
    #[test]
    fn random_heads_agree_both_ways() {
        const PIECES: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 204 No Content\r\n",
            b"HTTP/1.1 304 x\r\n",
            b"content-length: 3\r\n",
            b"Content-Length: 3, 3\r\n",
            b"content-length: x\r\n",
            b"transfer-encoding: chunked\r\n",
            b"Transfer-Encoding: gzip\r\n",
            b"connection: close\r\n",
            b"Connection: keep-alive, Upgrade\r\n",
            b"connection: x-a\r\n",
            b"keep-alive: 5\r\n",
            b"te: trailers\r\n",
            b"TE: gzip\r\n",
            b"upgrade: websocket\r\n",
            b"date: today\r\n",
            b"x-a: 1\r\n",
            b"x-b:\r\n",
            b"x-c: caf\xe9\r\n",
            b"\r\n",
        ];
        let mut rng = fastrand::Rng::with_seed(0x009a_55ed);
        let mut passed = 0;
        for _ in 0..20_000 {
            let mut input = PIECES[rng.usize(..3)].to_vec();
            for _ in 0..rng.usize(..8) {
                input.extend_from_slice(PIECES[rng.usize(3..PIECES.len() - 1)]);
            }
            input.extend_from_slice(b"\r\nabc");
            if both_ways(&input, rng.bool()) == Some(true) {
                passed += 1;
            }
        }
        // Most of them are ordinary enough to pass.
        assert!(passed > 5_000, "{passed}");
    }
}
