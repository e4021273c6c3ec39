//! Any bytes as a request head, read by the HTTP/1.1 engine as a client's request is: parsed
//! or refused with a status, never a panic, never more consumed than given. What parses is put
//! through the proxy's head checks and rewrites (hop-by-hop stripping, forwarding headers,
//! request id, upstream target), which must never panic either.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let mut read = BytesMut::from(input);
    let max_headers = 8 + usize::from(flags & 0x3f);
    let head = match switchyard_http1::server::parse_head(&mut read, 8 * 1024, max_headers) {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(refusal) => {
            assert!(refusal.status.is_client_error() || refusal.status.is_server_error());
            return;
        }
    };
    assert!(read.len() < input.len());
    let mut req = http::Request::from_parts(head.parts, ());
    let upgrade = switchyard::headers::is_upgrade_request(&req);
    let version = req.version();
    switchyard::headers::strip_hop_by_hop(req.headers_mut(), upgrade);
    switchyard::headers::add_forwarding(
        req.headers_mut(),
        std::net::IpAddr::from([127, 0, 0, 1]),
        "http",
        version,
    );
    switchyard::headers::ensure_request_id(req.headers_mut());
    let _ = switchyard::headers::set_upstream_target(&mut req, flags & 0x40 != 0);
});
