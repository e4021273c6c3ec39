//! The request both plugin benches run through the runtime: a GET with eight typical headers,
//! and the response head the upstream "sent".

use std::sync::Arc;

use http::header::HeaderValue;
use switchyard::plugin::{ListenerScope, RequestState};
use switchyard::upstream::Clusters;

/// The request target.
pub const PATH: &str = "/api/v1/users?limit=10";

/// Eight typical request headers, with this `authorization` value.
pub fn headers(authorization: &str) -> Vec<(&'static str, String)> {
    vec![
        ("host", "myservice.default.svc.cluster.local".into()),
        ("user-agent", "bench/1.0".into()),
        ("accept", "application/json".into()),
        ("accept-encoding", "gzip".into()),
        (
            "x-request-id",
            "4bf92f35-77b3-4da6-a3ce-929d0e0e4736".into(),
        ),
        ("x-forwarded-for", "10.0.0.1".into()),
        ("x-user-id", "user-42".into()),
        ("authorization", authorization.to_owned()),
    ]
}

/// A request to [`PATH`] with `headers`, as the proxy hands it to the plugin chain.
pub fn request_state(headers: &[(&'static str, String)]) -> Box<RequestState> {
    let mut req = http::Request::get(PATH);
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let head = req
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|e| panic!("{e}"));
    Box::new(RequestState {
        head,
        added: Default::default(),
        response: None,
        scope: Arc::new(ListenerScope {
            listener: "bench".into(),
            clusters: Arc::new(Clusters::default()),
        }),
        peer: "127.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}")),
        request_id: HeaderValue::from_static("4bf92f35-77b3-4da6-a3ce-929d0e0e4736"),
        attempt: 1,
        destination: None,
        tls: None,
        timeout: None,
        per_try_timeout: None,
        context: Default::default(),
        bad_destination: None,
        plugins_reached: usize::MAX,
        routed_chain: None,
        exchange: switchyard::telemetry::Exchange::new(http::Method::GET, http::Version::HTTP_11),
        response_headers_to_add: Vec::new(),
        filter_contexts: Vec::new(),
        response_fields: switchyard::upstream::ResponseFields::Map,
        response_added: Default::default(),
    })
}

/// A 200 with a small JSON body's headers.
pub fn response_head() -> http::response::Parts {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", "42")
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|e| panic!("{e}"))
}
