use std::time::Duration;

use switchyard_sdk::testing::TestHost;
use switchyard_sdk::{Action, PeerIdentity};

use super::*;

fn limit(json: &str) -> RateLimit {
    switchyard_sdk::load::<RateLimit>(json).unwrap()
}

fn status(action: Action) -> u16 {
    match action {
        Action::Continue => 200,
        Action::Respond(r) => r.status,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_burst_beyond_the_bucket_gets_429_then_the_bucket_refills() {
    let plugin = limit(
        r#"{ "rules": [ { "name": "per-user", "key": "header:x-user", "burst": 5, "rate": 1, "per": "1s" } ] }"#,
    );
    let mut host = TestHost::get("/").header("x-user", "alice");

    let statuses: Vec<u16> = (0..7).map(|_| status(host.on_request(&plugin))).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);

    let Action::Respond(r) = host.on_request(&plugin) else {
        panic!("not limited")
    };
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("retry-after"), Some("1"));
    assert_eq!(header("ratelimit-limit"), Some("5"));
    assert_eq!(header("ratelimit-remaining"), Some("0"));

    host.advance(Duration::from_millis(1_000));
    assert_eq!(
        status(host.on_request(&plugin)),
        200,
        "one token back after 1s"
    );
    assert_eq!(status(host.on_request(&plugin)), 429);
    host.advance(Duration::from_secs(10));
    let statuses: Vec<u16> = (0..6).map(|_| status(host.on_request(&plugin))).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429],
        "refilled to the burst, no more"
    );
    assert_eq!(
        host.counter_total("decisions", &[("rule", "per-user"), ("result", "limited")]),
        5
    );
}

#[test]
fn keys_have_their_own_buckets() {
    let plugin = limit(
        r#"{ "rules": [ { "name": "u", "key": "header:x-user", "burst": 1, "rate": 1, "per": "1m" } ] }"#,
    );
    let mut host = TestHost::get("/").header("x-user", "alice");
    assert_eq!(status(host.on_request(&plugin)), 200);
    assert_eq!(status(host.on_request(&plugin)), 429);
    host.request_headers = vec![("x-user".into(), "bob".into())];
    assert_eq!(status(host.on_request(&plugin)), 200);
    host.request_headers.clear();
    for _ in 0..5 {
        assert_eq!(status(host.on_request(&plugin)), 200, "no key, no limit");
    }
}

#[test]
fn identity_and_peer_ip_keys() {
    let plugin = limit(
        r#"{ "rules": [ { "name": "id", "key": "identity", "burst": 1, "rate": 1, "per": "1m" } ] }"#,
    );
    let mut host = TestHost::get("/");
    host.peer_identity = Some(PeerIdentity {
        spiffe_id: Some("spiffe://cluster.local/ns/default/sa/a".into()),
        ..Default::default()
    });
    assert_eq!(status(host.on_request(&plugin)), 200);
    assert_eq!(status(host.on_request(&plugin)), 429);

    let plugin = limit(
        r#"{ "rules": [ { "name": "ip", "key": "peer_ip", "burst": 2, "rate": 1, "per": "1m" } ] }"#,
    );
    let mut host = TestHost::get("/");
    let statuses: Vec<u16> = (0..3).map(|_| status(host.on_request(&plugin))).collect();
    assert_eq!(statuses, [200, 200, 429]);
    host.peer_address = "10.0.0.2:5000".into();
    assert_eq!(status(host.on_request(&plugin)), 200);
}

#[test]
fn only_matched_requests_count() {
    let plugin = limit(
        r#"{ "rules": [ { "name": "api", "match": { "path_prefix": "/api/" }, "burst": 1, "rate": 1, "per": "1m" } ] }"#,
    );
    let mut api = TestHost::get("/api/x");
    assert_eq!(status(api.on_request(&plugin)), 200);
    assert_eq!(status(api.on_request(&plugin)), 429);
    let mut other = TestHost::get("/static/x");
    for _ in 0..5 {
        assert_eq!(status(other.on_request(&plugin)), 200);
    }
}

#[test]
fn bad_config_names_the_field() {
    let load = |json: &str| switchyard_sdk::load::<RateLimit>(json).err().unwrap();
    let err = load(r#"{ "rules": [ { "name": "a", "key": "cookie", "burst": 1, "rate": 1 } ] }"#);
    assert!(err.contains("rules[0].key"), "{err}");
    let err = load(r#"{ "rules": [ { "name": "a", "burst": 0, "rate": 1 } ] }"#);
    assert!(err.contains("rules[0].burst"), "{err}");
    let err = load(r#"{ "rules": [ { "name": "a", "burst": 1, "rate": 1, "per": "often" } ] }"#);
    assert!(err.contains("rules[0].per"), "{err}");
}
