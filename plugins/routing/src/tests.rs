use switchyard_sdk::Action;
use switchyard_sdk::testing::TestHost;

use super::*;

const ROUTES: &str = r#"{ "routes": [
    { "name": "health", "match": { "path": "/healthz" },
      "direct_response": { "status": 200, "body": "ok\n", "headers": { "content-type": "text/plain" } } },
    { "name": "old-docs", "match": { "path_prefix": "/docs/old/" },
      "redirect": { "path_prefix": "/docs/", "status": 308 } },
    { "name": "secure", "match": { "hosts": ["login.example.com"] },
      "redirect": { "scheme": "https" } },
    { "name": "api-v2", "match": { "hosts": ["*.example.com"], "path_prefix": "/v2/", "method": "GET" },
      "cluster": "api-v2", "rewrite": { "path_prefix": "/", "host": "api.internal" },
      "request_headers": { "set": { "x-route": "api-v2" }, "remove": ["x-debug"] },
      "response_headers": { "add": { "x-served-by": "v2" }, "remove": ["server"] } },
    { "name": "beta", "match": { "headers": { "x-beta": { "regex": "^(1|true)$" } }, "query": { "tier": "gold" } },
      "cluster": "beta" }
] }"#;

fn routing(json: &str) -> Routing {
    switchyard_sdk::load::<Routing>(json).unwrap()
}

#[test]
fn routes_rewrites_and_changes_headers() {
    let plugin = routing(ROUTES);
    let mut host = TestHost::get("/v2/users?id=7")
        .authority("api.example.com:8080")
        .header("x-debug", "1");

    assert_eq!(host.on_request(&plugin), Action::Continue);

    assert_eq!(host.destination.as_deref(), Some("api-v2"));
    assert_eq!(host.path, "/users?id=7");
    assert_eq!(host.authority.as_deref(), Some("api.internal"));
    assert_eq!(host.request_header("x-route"), Some("api-v2"));
    assert_eq!(host.request_header("x-debug"), None);
    assert_eq!(host.counter_total("requests", &[("route", "api-v2")]), 1);
    assert_eq!(
        host.context
            .get(switchyard_sdk::ROUTE_CONTEXT_KEY)
            .map(Vec::as_slice),
        Some(&b"api-v2"[..]),
        "the route is named for the proxy's metrics"
    );

    let mut host = host.response_header("server", "origin");
    host.on_response(&plugin);
    assert_eq!(host.response_header_value("x-served-by"), Some("v2"));
    assert_eq!(host.response_header_value("server"), None);
}

#[test]
fn first_match_wins_and_the_rest_fall_through() {
    let plugin = routing(ROUTES);
    // POST does not match api-v2 (GET only) and nothing else matches: default cluster.
    let mut host = TestHost::request("POST", "/v2/users").authority("api.example.com");
    assert_eq!(host.on_request(&plugin), Action::Continue);
    assert_eq!(host.destination, None);
    assert_eq!(host.path, "/v2/users");

    let mut host = TestHost::get("/x?tier=gold").header("x-beta", "true");
    host.on_request(&plugin);
    assert_eq!(host.destination.as_deref(), Some("beta"));
    let mut host = TestHost::get("/x?tier=silver").header("x-beta", "true");
    host.on_request(&plugin);
    assert_eq!(host.destination, None);
}

#[test]
fn direct_responses_and_redirects() {
    let plugin = routing(ROUTES);
    let mut host = TestHost::get("/healthz");
    let Action::Respond(r) = host.on_request(&plugin) else {
        panic!("no direct response")
    };
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok\n".as_slice()));

    let mut host = TestHost::get("/docs/old/guide.html?v=1").authority("docs.example.org:8443");
    let Action::Respond(r) = host.on_request(&plugin) else {
        panic!("no redirect")
    };
    assert_eq!(r.status, 308);
    assert!(
        r.headers.contains(&(
            "location".into(),
            "http://docs.example.org:8443/docs/guide.html?v=1".into()
        )),
        "{r:?}"
    );

    let mut host = TestHost::get("/account").authority("login.example.com:80");
    let Action::Respond(r) = host.on_request(&plugin) else {
        panic!("no redirect")
    };
    assert_eq!(r.status, 301);
    assert!(
        r.headers.contains(&(
            "location".into(),
            "https://login.example.com/account".into()
        )),
        "{r:?}"
    );
}

#[test]
fn not_found_answers_404_when_asked() {
    let plugin = routing(
        r#"{ "routes": [ { "name": "a", "match": { "path": "/a" }, "cluster": "a" } ], "not_found": true }"#,
    );
    let Action::Respond(r) = TestHost::get("/b").on_request(&plugin) else {
        panic!("no 404")
    };
    assert_eq!(r.status, 404);
}

#[test]
fn prefix_replacement() {
    let m = |prefix: &str| RequestMatch {
        path_prefix: Some(prefix.into()),
        ..Default::default()
    };
    assert_eq!(replace_prefix("/v2/users?x", &m("/v2/"), "/"), "/users?x");
    assert_eq!(replace_prefix("/v2/users", &m("/v2"), "/api"), "/api/users");
    assert_eq!(replace_prefix("/v2", &m("/v2"), "/"), "/");
    assert_eq!(replace_prefix("/old/a", &m("/old/"), "/new/"), "/new/a");
}

#[test]
fn bad_config_names_the_field() {
    let load = |json: &str| switchyard_sdk::load::<Routing>(json).err().unwrap();
    let err = load(r#"{ "routes": [ { "name": "a", "match": { "path_regex": "(" } } ] }"#);
    assert!(err.contains("routes[0].match.path_regex"), "{err}");
    let err =
        load(r#"{ "routes": [ { "name": "a", "cluster": "x", "redirect": { "status": 301 } } ] }"#);
    assert!(err.contains("routes[0]"), "{err}");
    let err = load(r#"{ "routes": [ { "name": "a", "redirect": { "status": 200 } } ] }"#);
    assert!(err.contains("routes[0].redirect.status"), "{err}");
    let err = load(
        r#"{ "routes": [ { "name": "a", "cluster": "x", "rewrite": { "path_prefix": "/" } } ] }"#,
    );
    assert!(err.contains("routes[0].rewrite.path_prefix"), "{err}");
    let err = load(
        r#"{ "routes": [ { "name": "a", "cluster": "x", "request_headers": { "set": { "bad name": "1" } } } ] }"#,
    );
    assert!(err.contains("routes[0].request_headers"), "{err}");
    let err = load(r#"{ "routes": [ { "name": "a", "clusterr": "x" } ] }"#);
    assert!(err.contains("unknown field `clusterr`"), "{err}");
}
