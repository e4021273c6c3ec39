//! Saying who forwarded a request: its id (`x-request-id`, made when the client sent none),
//! `x-forwarded-for`, `x-forwarded-proto` and `via`.
//!
//! Most clients send none of these fields, so the proxy's own are kept beside the request's header
//! map ([`AddedFields`], in `added`) rather than inserted in it — four insertions, each hashing
//! its name and some growing the map, were ~1k of the ~23k instructions a request cost without
//! plugins. The HTTP/1.1 engine writes them after the map's fields; whatever reads the map whole or
//! changes it (a plugin's header list or edit, a proxy-wasm filter, HTTP/2 toward the upstream)
//! has them put in it first ([`AddedFields::move_into`]), and a read by name looks beside the map
//! too.

mod added;

use std::net::IpAddr;

use http::Version;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

pub use crate::headers::X_REQUEST_ID;
pub use added::{AddedFields, MayHold};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// A client's address as `x-forwarded-for` names it, written once per connection: a request
/// that brings no `x-forwarded-for` of its own gets a shared copy.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    ip: IpAddr,
    alone: Option<HeaderValue>,
}

impl ClientAddress {
    pub fn of(ip: IpAddr) -> Self {
        Self {
            ip,
            alone: forwarded_for(None, ip),
        }
    }
}

/// Appends the client's address to `x-forwarded-for`, sets `x-forwarded-proto` to the scheme the
/// client used, and appends this proxy to `via`, all in the map.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: &ClientAddress,
    scheme: &str,
    version: Version,
) {
    let mut added = AddedFields::default();
    added.forward(headers, MayHold::ALL, client, scheme, version);
}

impl AddedFields {
    /// The request's id: the client's `x-request-id` when usable, else a new one — set in the
    /// map over an unusable value, kept beside it when the client sent none.
    pub fn request_id(&mut self, headers: &mut HeaderMap, may_hold: MayHold) -> HeaderValue {
        if !may_hold.request_id {
            self.request_id = true;
            return new_request_id();
        }
        ensure_request_id(headers)
    }

    /// Appends the client's address to `x-forwarded-for`, sets `x-forwarded-proto` to the
    /// scheme the client used, and appends this proxy to `via`: in the map where the client
    /// sent such a field, beside it where it did not.
    pub fn forward(
        &mut self,
        headers: &mut HeaderMap,
        may_hold: MayHold,
        client: &ClientAddress,
        scheme: &str,
        version: Version,
    ) {
        if may_hold.forwarded_for {
            // Each edit finds its field once (an entry), where a lookup then an insert hash
            // twice.
            match headers.entry(&X_FORWARDED_FOR) {
                Entry::Occupied(mut field) => {
                    if let Some(v) = forwarded_for(Some(field.get()), client.ip) {
                        field.insert(v);
                    }
                }
                Entry::Vacant(field) => {
                    if let Some(v) = client.alone.clone() {
                        field.insert(v);
                    }
                }
            }
        } else {
            self.forwarded_for = client.alone.clone();
        }
        static HTTPS: HeaderValue = HeaderValue::from_static("https");
        static HTTP: HeaderValue = HeaderValue::from_static("http");
        let proto = match scheme {
            "https" => Some(&HTTPS),
            "http" => Some(&HTTP),
            _ => None,
        };
        match proto {
            Some(proto) if !may_hold.forwarded_proto => self.forwarded_proto = Some(proto),
            Some(proto) => {
                headers.insert(&X_FORWARDED_PROTO, proto.clone());
            }
            None => {
                if let Ok(proto) = HeaderValue::from_str(scheme) {
                    headers.insert(&X_FORWARDED_PROTO, proto);
                }
            }
        }
        if may_hold.via {
            append_via(headers, version);
        } else {
            self.via = Some(via_hop(version));
        }
    }
}

/// `previous, client` (or `client` alone), written on the stack and copied once into the value:
/// one allocation per request, where a `String` turned into `Bytes` costs two.
fn forwarded_for(previous: Option<&HeaderValue>, client: IpAddr) -> Option<HeaderValue> {
    use std::io::Write as _;
    let previous = previous
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|v| !v.is_empty());
    // An address's text is at most 39 bytes.
    let mut address = [0u8; 64];
    let written = match client {
        // Digits by hand: the formatting machinery costs more than the rest of this function.
        IpAddr::V4(v4) => write_ipv4(v4, &mut address),
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut address[..]);
            write!(cursor, "{client}").ok()?;
            usize::try_from(cursor.position()).ok()?
        }
    };
    let address = &address[..written];
    match previous {
        None => HeaderValue::from_bytes(address).ok(),
        Some(previous) => HeaderValue::from_bytes(&[previous, b", ", address].concat()).ok(),
    }
}

/// Writes `address` in dotted-decimal form at the start of `out`; returns the length (at most 15).
fn write_ipv4(address: std::net::Ipv4Addr, out: &mut [u8; 64]) -> usize {
    let mut at = 0;
    for (i, octet) in address.octets().into_iter().enumerate() {
        if i > 0 {
            out[at] = b'.';
            at += 1;
        }
        if octet >= 100 {
            out[at] = b'0' + octet / 100;
            at += 1;
        }
        if octet >= 10 {
            out[at] = b'0' + octet / 10 % 10;
            at += 1;
        }
        out[at] = b'0' + octet % 10;
        at += 1;
    }
    at
}

/// This proxy's `via` entry for `version` (RFC 9110 7.6.3), made once: a value made from a
/// `&'static str` at run time checks its bytes every time.
pub fn via_hop(version: Version) -> &'static HeaderValue {
    static HTTP_09: HeaderValue = HeaderValue::from_static("0.9 switchyard");
    static HTTP_10: HeaderValue = HeaderValue::from_static("1.0 switchyard");
    static HTTP_11: HeaderValue = HeaderValue::from_static("1.1 switchyard");
    static HTTP_2: HeaderValue = HeaderValue::from_static("2 switchyard");
    static HTTP_3: HeaderValue = HeaderValue::from_static("3 switchyard");
    match version {
        Version::HTTP_09 => &HTTP_09,
        Version::HTTP_10 => &HTTP_10,
        Version::HTTP_2 => &HTTP_2,
        Version::HTTP_3 => &HTTP_3,
        _ => &HTTP_11,
    }
}

/// Appends `<version> switchyard` to `via` (RFC 9110 7.6.3).
pub fn append_via(headers: &mut HeaderMap, version: Version) {
    let hop = via_hop(version);
    match headers.entry(header::VIA) {
        Entry::Occupied(mut field) => {
            let Ok(previous) = field.get().to_str() else {
                // Not text: replaced, as a value that cannot be extended.
                field.insert(hop.clone());
                return;
            };
            let joined = [previous.as_bytes(), b", ", hop.as_bytes()].concat();
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
                field.insert(v);
            }
        }
        Entry::Vacant(field) => {
            field.insert(hop.clone());
        }
    }
}

/// Returns the request's id, generating and inserting one when absent or unusable.
fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    match headers.entry(&X_REQUEST_ID) {
        Entry::Occupied(field) if !field.get().is_empty() && field.get().len() <= 128 => {
            field.get().clone()
        }
        Entry::Occupied(mut field) => {
            let id = new_request_id();
            field.insert(id.clone());
            id
        }
        Entry::Vacant(field) => field.insert(new_request_id()).clone(),
    }
}

/// A random 128-bit id in UUID v4 text form.
fn new_request_id() -> HeaderValue {
    let mut bits = fastrand::u128(..);
    bits = (bits & !(0xf << 76)) | (0x4 << 76); // version 4
    bits = (bits & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant
    // Eight digits a word, into the five groups (8-4-4-4-12 digits).
    let word = |i: u32| crate::hex::word_digits((bits >> (96 - 32 * i)) as u32);
    let (a, b, c, d) = (word(0), word(1), word(2), word(3));
    let mut text = [b'-'; 36];
    text[..8].copy_from_slice(&a);
    text[9..13].copy_from_slice(&b[..4]);
    text[14..18].copy_from_slice(&b[4..]);
    text[19..23].copy_from_slice(&c[..4]);
    text[24..28].copy_from_slice(&c[4..]);
    text[28..].copy_from_slice(&d);
    // Owned by the `Bytes` itself: one allocation, and the copies for the response and the
    // request state are reference counts (a value copied from a slice allocates again when cloned).
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or(HeaderValue::from_static("invalid"))
}

/// The fields this proxy adds to a response whose upstream fields are passed as they came:
/// `via`, and the request id when the upstream sent none. Written by the HTTP/1.1 engine after
/// the passed fields rather than put in the head's map.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResponseAdded {
    pub via: Option<&'static HeaderValue>,
    pub request_id: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4_text() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 36);
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "version 4: {text}");
        assert!(
            matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
            "RFC 4122 variant: {text}"
        );
        assert!(text.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_request_id_is_its_random_bits_in_hex() {
        fastrand::seed(7);
        let id = new_request_id();
        fastrand::seed(7);
        let mut bits = fastrand::u128(..);
        bits = (bits & !(0xf << 76)) | (0x4 << 76);
        bits = (bits & !(0x3 << 62)) | (0x2 << 62);
        let hex = format!("{bits:032x}");
        let expected = [
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..],
        ]
        .join("-");
        assert_eq!(id.to_str().unwrap(), expected);
    }

    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "1.20.3.199",
            "127.0.0.1",
        ] {
            let address: std::net::Ipv4Addr = text.parse().unwrap();
            let mut out = [0u8; 64];
            let len = write_ipv4(address, &mut out);
            assert_eq!(std::str::from_utf8(&out[..len]).unwrap(), text);
        }
    }

    #[test]
    fn forwarding_appends() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        add_forwarding(
            &mut h,
            &ClientAddress::of("10.0.0.1".parse().unwrap()),
            "http",
            Version::HTTP_11,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[header::VIA], "1.1 switchyard");

        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("  "));
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        add_forwarding(
            &mut h,
            &ClientAddress::of(longest.parse().unwrap()),
            "https",
            Version::HTTP_2,
        );
        assert_eq!(h[&X_FORWARDED_FOR], longest);
        add_forwarding(
            &mut h,
            &ClientAddress::of("::ffff:10.0.0.1".parse().unwrap()),
            "https",
            Version::HTTP_2,
        );
        assert_eq!(h[&X_FORWARDED_FOR], format!("{longest}, ::ffff:10.0.0.1"));
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut h = HeaderMap::new();
        let made = ensure_request_id(&mut h);
        assert_eq!(made.len(), 36);
        assert_eq!(&made.as_bytes()[14..15], b"4");
        assert_eq!(ensure_request_id(&mut h), made);
    }

    #[test]
    fn forwarding_fields_extend_what_came_and_replace_what_is_unusable() {
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        let mut h = HeaderMap::new();
        add_forwarding(
            &mut h,
            &ClientAddress::of(client),
            "https",
            Version::HTTP_11,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[header::VIA], "1.1 switchyard");

        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static(" 192.0.2.1 "));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.2"));
        h.insert(header::VIA, HeaderValue::from_static("1.0 edge"));
        add_forwarding(&mut h, &ClientAddress::of(client), "http", Version::HTTP_10);
        let all = |name| h.get_all(name).iter().cloned().collect::<Vec<_>>();
        // The first field is extended and the others dropped, as before one value.
        assert_eq!(all(&X_FORWARDED_FOR), ["192.0.2.1, 10.1.2.3"]);
        assert_eq!(all(&header::VIA), ["1.0 edge, 1.0 switchyard"]);

        let mut h = HeaderMap::new();
        h.insert(header::VIA, HeaderValue::from_bytes(b"caf\xe9").unwrap());
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static(""));
        add_forwarding(&mut h, &ClientAddress::of(client), "http", Version::HTTP_2);
        assert_eq!(h[header::VIA], "2 switchyard");
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");

        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static(""));
        let made = ensure_request_id(&mut h);
        assert_eq!(made.len(), 36);
        assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(ensure_request_id(&mut h), "abc");
    }
}
