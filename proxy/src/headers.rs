//! What a correct HTTP proxy does to headers: drop hop-by-hop headers, say who forwarded the
//! request (`x-forwarded-for`, `x-forwarded-proto`, `via`), keep `Host`, and carry a request id.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri, Version};
use switchyard_http1::NameLengths;
use switchyard_http1::client::PassedFields;

/// The request id header; generated when the client sent none.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the
/// non-standard ones clients still send. `Trailer` is not one: it announces the message's
/// trailer fields end to end (RFC 9110 §6.6.2), and an HTTP/1.1 hop sends only the trailer
/// fields it names.
fn fixed_hop_by_hop() -> [&'static HeaderName; 6] {
    // In this order: [`CONNECTION_AT`] and [`TE_AT`] index it.
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// The lengths of the names in [`fixed_hop_by_hop`] (the engine's list, which the response
/// fields it passes are sorted by too): most fields are told apart from all six by their name's
/// length alone.
const FIXED_HOP_BY_HOP_LENGTHS: NameLengths =
    NameLengths::of(&switchyard_http1::fields::HOP_BY_HOP);

/// Where `Connection` and `TE` are in [`fixed_hop_by_hop`].
const CONNECTION_AT: usize = 0;
const TE_AT: usize = 3;

/// The trailer fields every gRPC response ends with.
static GRPC_TRAILERS: HeaderValue =
    HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin");

/// What a request asks of the connection it came on, beyond the message.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionAsks {
    /// To switch protocols ([`is_upgrade_request`]).
    pub upgrade: bool,
    /// Trailers, which its client accepts ([`accepts_trailers`]).
    pub trailers: bool,
}

/// What `req` asks of its connection. One pass over the names rules most requests out: `Upgrade`
/// and `TE` are looked up only when a field has the length of one of them.
pub fn connection_asks<B>(req: &Request<B>) -> ConnectionAsks {
    const UPGRADE: NameLengths = NameLengths::of(&["upgrade"]);
    const TE: NameLengths = NameLengths::of(&["te"]);
    let names = NameLengths::of_fields(req.headers());
    ConnectionAsks {
        upgrade: names.may_meet(UPGRADE) && is_upgrade_request(req),
        trailers: names.may_meet(TE) && accepts_trailers(req),
    }
}

/// Whether the request is HTTP/1.1 and its client accepts trailers (`TE: trailers`).
pub fn accepts_trailers<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11 && switchyard_http1::fields::accepts_trailers(req.headers())
}

/// Announces a gRPC response's trailers to an HTTP/1.1 client that accepts them: an HTTP/1.1
/// hop sends only the trailer fields a `Trailer` header names, and HTTP/2 servers rarely send
/// one. Other responses (gRPC-Web's too: its trailers travel in the body) keep the upstream's
/// own `Trailer`, if any.
pub fn announce_grpc_trailers(headers: &mut HeaderMap) {
    if crate::grpc::is_grpc(headers) && !headers.contains_key(header::TRAILER) {
        headers.insert(header::TRAILER, GRPC_TRAILERS.clone());
    }
}

/// Whether the request asks to switch protocols (e.g. WebSocket): `Connection: upgrade` plus an
/// `Upgrade` header, on HTTP/1.1.
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && switchyard_http1::fields::has_token(req.headers(), "upgrade")
}

/// Removes hop-by-hop headers, including any the `Connection` header names. With `upgrade`, the
/// `Connection: upgrade` and `Upgrade` pair is kept so the protocol switch reaches the other side.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them (or only `connection`): one pass over the names, which
    // hashes nothing, finds which are there, and only those are looked up and removed.
    let fixed = fixed_hop_by_hop();
    let mut present = fixed.map(|_| false);
    // Whether `Connection` names a header of its own (not only `close`, `keep-alive` and the
    // like): read in the same pass, so the common `connection: keep-alive` costs no lookup.
    let mut names_others = false;
    for (name, value) in headers.iter() {
        if !FIXED_HOP_BY_HOP_LENGTHS.may_hold(name) {
            continue;
        }
        if let Some(i) = fixed.iter().position(|hop| *hop == name) {
            present[i] = true;
            if i == CONNECTION_AT && !names_others {
                names_others = switchyard_http1::fields::names_other_fields(value.as_bytes());
            }
        }
    }
    if !present.contains(&true) {
        return;
    }
    let upgrade_protocol = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let named: Vec<HeaderName> = if !names_others {
        Vec::new()
    } else {
        headers
            .get_all(header::CONNECTION)
            .iter()
            // Token by token: a value with other bytes than ASCII still names its headers.
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|token| std::str::from_utf8(token.trim_ascii()).ok())
            .filter(|token| {
                !switchyard_http1::fields::is_connection_only(token.as_bytes())
                    && headers.contains_key(*token)
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect()
    };
    for name in &named {
        headers.remove(name);
    }
    // `te: trailers` is end-to-end for gRPC; any other TE value is hop-by-hop.
    let te_trailers = present[TE_AT]
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for (name, _) in fixed.iter().zip(present).filter(|(_, present)| *present) {
        headers.remove(*name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade_protocol {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

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
/// client used, and appends this proxy to `via`.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: &ClientAddress,
    scheme: &str,
    version: Version,
) {
    // Each edit finds its field once (an entry), where a lookup then an insert hash twice.
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
    static HTTPS: HeaderValue = HeaderValue::from_static("https");
    static HTTP: HeaderValue = HeaderValue::from_static("http");
    let proto = match scheme {
        "https" => Some(HTTPS.clone()),
        "http" => Some(HTTP.clone()),
        other => HeaderValue::from_str(other).ok(),
    };
    if let Some(v) = proto {
        headers.insert(&X_FORWARDED_PROTO, v);
    }
    append_via(headers, version);
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
fn via_hop(version: Version) -> &'static HeaderValue {
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
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
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
    let mut text = [b'-'; 36];
    // Byte by byte, two digits each (one lookup), into the five groups (8-4-4-4-12 digits).
    let mut at = 0;
    for (i, byte) in bits.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1; // the dash already there
        }
        text[at..at + 2].copy_from_slice(&crate::hex::digits(byte));
        at += 2;
    }
    // Owned by the `Bytes` itself: one allocation, and the copies for the response and the
    // request state are reference counts (a value copied from a slice allocates again when cloned).
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or(HeaderValue::from_static("invalid"))
}

/// The authority the client asked for: the URI's (HTTP/2, absolute-form) or the `Host` header.
pub fn authority<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Rewrites the request target for the upstream protocol, keeping the client's authority: HTTP/1.1
/// gets origin-form plus `Host`, HTTP/2 gets an absolute URI (`:authority`) and no `Host`.
pub fn set_upstream_target<B>(req: &mut Request<B>, http2: bool) -> Result<(), http::Error> {
    // The common HTTP/1.1 case: origin-form with a Host header already; nothing to rebuild.
    if !http2
        && req.uri().scheme().is_none()
        && req.uri().authority().is_none()
        && req.headers().contains_key(header::HOST)
    {
        *req.version_mut() = Version::HTTP_11;
        return Ok(());
    }
    let authority = authority(req).map(str::to_owned);
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if http2 {
        let mut uri = Uri::builder().scheme("http").path_and_query(path);
        if let Some(authority) = &authority {
            uri = uri.authority(authority.as_str());
        }
        *req.uri_mut() = uri.build()?;
        req.headers_mut().remove(header::HOST);
        *req.version_mut() = Version::HTTP_2;
    } else {
        *req.uri_mut() = Uri::builder().path_and_query(path).build()?;
        if let Some(authority) = authority
            && !req.headers().contains_key(header::HOST)
        {
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_str(&authority)?);
        }
        *req.version_mut() = Version::HTTP_11;
    }
    Ok(())
}

/// A fresh request with a copy of `head` and `body` (the original head stays readable).
pub fn copy_request<B>(head: &http::request::Parts, body: B) -> Request<B> {
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    req
}

/// Moves an upstream's `passed` fields (`ResponseFields::Passed`, taken from the body that
/// carried them) into the head's map, for code that reads or changes them.
pub fn unpass(headers: &mut HeaderMap, passed: Option<PassedFields>) {
    if let Some(passed) = passed {
        // The map holds what the proxy added since: the upstream's fields go first, as they came.
        let added = std::mem::take(headers);
        passed.append_to(headers);
        headers.extend(added);
    }
}

/// A copy of a response head (the parts have no `Clone`: their extensions may not be).
pub fn copy_response_head(head: &http::response::Parts) -> http::response::Parts {
    let mut response = http::Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers.clone();
    response.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_by_hop_names_are_the_engines() {
        let names: Vec<&str> = fixed_hop_by_hop().iter().map(|n| n.as_str()).collect();
        assert_eq!(names, switchyard_http1::fields::HOP_BY_HOP);
    }

    #[test]
    fn connection_asks_reads_upgrade_and_trailers_whatever_else_is_there() {
        let asks = |fields: &[(&str, &str)]| {
            let mut req = Request::builder().uri("/");
            for (name, value) in fields {
                req = req.header(*name, *value);
            }
            connection_asks(&req.body(()).unwrap())
        };
        let plain = asks(&[("host", "a")]);
        assert!(!plain.upgrade && !plain.trailers);
        let both = asks(&[
            ("host", "a"),
            ("referer", "b"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
        ]);
        assert!(both.upgrade && both.trailers);
        // A field of the same length is not taken for one.
        let lookalikes = asks(&[("referer", "websocket"), ("connection", "upgrade")]);
        assert!(!lookalikes.upgrade);
    }

    #[test]
    fn the_length_filter_holds_the_fixed_names() {
        let names: Vec<&str> = fixed_hop_by_hop().iter().map(|n| n.as_str()).collect();
        assert_eq!(NameLengths::of(&names), FIXED_HOP_BY_HOP_LENGTHS);
    }

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
    fn hop_by_hop_headers_go_including_those_named_by_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret , close"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-keep"]);
    }

    #[test]
    fn a_connection_value_with_non_ascii_bytes_still_names_its_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-secret, caf\xe9").unwrap(),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn te_trailers_and_upgrades_survive() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
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
