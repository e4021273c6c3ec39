//! Any bytes as a request head: what parses is put through the proxy's head checks and
//! rewrites (hop-by-hop stripping, forwarding headers, request id, upstream target), which
//! must never panic and must leave a head that can be sent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return;
    };
    let mut builder = http::Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"));
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let Ok(mut req) = builder.body(()) else {
        return;
    };
    let upgrade = switchyard::headers::is_upgrade_request(&req);
    switchyard::headers::strip_hop_by_hop(req.headers_mut(), upgrade);
    switchyard::headers::add_forwarding(
        req.headers_mut(),
        std::net::IpAddr::from([127, 0, 0, 1]),
        "http",
        http::Version::HTTP_11,
    );
    switchyard::headers::ensure_request_id(req.headers_mut());
    let _ = switchyard::headers::set_upstream_target(&mut req, data.len() % 2 == 0);
});
