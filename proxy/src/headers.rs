//! What a correct HTTP proxy does to headers: drop hop-by-hop headers, keep `Host`, and carry a
//! request id (who forwarded the request is said in `forwarding`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri, Version};
use switchyard_http1::NameLengths;
use switchyard_http1::client::PassedFields;

/// The request id header; generated when the client sent none.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
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
    // Most messages carry none of them (or only `connection`): a pass over the names by length
    // (the map's key iterator is the cheaper one) rules most out; then one pass over the fields,
    // which hashes nothing, finds which are there, and only those are looked up and removed.
    if !headers
        .keys()
        .any(|name| FIXED_HOP_BY_HOP_LENGTHS.may_hold(name))
    {
        return;
    }
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
}
