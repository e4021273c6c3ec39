use std::time::Duration;

use switchyard_sdk::testing::TestHost;
use switchyard_sdk::{Action, Outcome, UpstreamError};

use super::*;

/// The canonical Linkerd-style config from the README.
const LINKERD: &str = r#"{
    "routes": [ {
        "name": "/v1",
        "condition": { "method": "GET", "path_regex": "^/v1(/.*)?$" },
        "retries": { "attempts": 3, "per_try_timeout": "2s", "retry_on": ["5xx", "connect-failure", "reset"] },
        "timeout": "5s"
    } ],
    "budget": { "retry_ratio": 0.2, "min_retries_per_second": 10, "ttl": "10s" }
}"#;

fn retries(json: &str) -> Retries {
    switchyard_sdk::load::<Retries>(json).unwrap()
}

/// Runs on_request, then reports `outcome` for every try until the plugin stops retrying;
/// returns how many tries were made.
fn tries(plugin: &Retries, host: &mut TestHost, outcome: Outcome) -> u32 {
    assert_eq!(host.on_request(plugin), Action::Continue);
    host.attempt = 1;
    loop {
        match host.on_upstream_response(plugin, outcome) {
            Action::Retry { .. } => host.attempt += 1,
            Action::Continue => return host.attempt,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn sets_the_route_timeouts_and_the_attempt_header() {
    let plugin = retries(LINKERD);
    let mut host = TestHost::get("/v1/users");
    host.on_request(&plugin);
    assert_eq!(host.timeout, Some(Duration::from_secs(5)));
    assert_eq!(host.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(host.request_header(ATTEMPT_HEADER), Some("1"));

    let retry = host.on_upstream_response(&plugin, Outcome::Response(503));
    assert!(matches!(retry, Action::Retry { .. }));
    assert_eq!(host.request_header(ATTEMPT_HEADER), Some("2"));
}

#[test]
fn attempts_counts_retries_after_the_first_try() {
    let plugin = retries(LINKERD);
    let mut host = TestHost::get("/v1");
    assert_eq!(tries(&plugin, &mut host, Outcome::Response(503)), 4);
    assert_eq!(host.counter_total("retries", &[("route", "/v1")]), 3);
}

#[test]
fn retries_only_what_retry_on_names() {
    let plugin = retries(LINKERD);
    for (outcome, expected) in [
        (Outcome::Response(200), 1),
        (Outcome::Response(404), 1),
        (Outcome::Response(500), 4),
        (Outcome::Error(UpstreamError::ConnectFailure), 4),
        (Outcome::Error(UpstreamError::Reset), 4),
        (Outcome::Error(UpstreamError::PerTryTimeout), 4),
    ] {
        let mut host = TestHost::get("/v1");
        assert_eq!(tries(&plugin, &mut host, outcome), expected, "{outcome:?}");
    }
    let gateway = retries(
        r#"{ "routes": [ { "name": "all", "retries": { "attempts": 1, "retry_on": ["gateway-error"] } } ] }"#,
    );
    assert_eq!(
        tries(&gateway, &mut TestHost::get("/"), Outcome::Response(500)),
        1
    );
    assert_eq!(
        tries(&gateway, &mut TestHost::get("/"), Outcome::Response(503)),
        2
    );
    let codes = retries(
        r#"{ "routes": [ { "name": "all", "retries": { "attempts": 2, "retry_on": ["retriable-status-codes"], "retriable_status_codes": [409] } } ] }"#,
    );
    assert_eq!(
        tries(&codes, &mut TestHost::get("/"), Outcome::Response(409)),
        3
    );
    assert_eq!(
        tries(&codes, &mut TestHost::get("/"), Outcome::Response(503)),
        1
    );
}

#[test]
fn unmatched_requests_and_post_are_not_retried() {
    let plugin = retries(LINKERD);
    let mut host = TestHost::get("/v2");
    assert_eq!(tries(&plugin, &mut host, Outcome::Response(503)), 1);
    assert_eq!(host.timeout, None);

    let any_method =
        retries(r#"{ "routes": [ { "name": "all", "retries": { "attempts": 2 } } ] }"#);
    let mut post = TestHost::request("POST", "/");
    assert_eq!(tries(&any_method, &mut post, Outcome::Response(503)), 1);
    let allowed = retries(
        r#"{ "routes": [ { "name": "all", "retries": { "attempts": 2, "retry_non_idempotent": true } } ] }"#,
    );
    let mut post = TestHost::request("POST", "/");
    assert_eq!(tries(&allowed, &mut post, Outcome::Response(503)), 3);
}

#[test]
fn backoff_grows_and_stays_under_the_cap() {
    let backoff = Backoff {
        base: DurationText(Duration::from_millis(10)),
        max: DurationText(Duration::from_millis(50)),
    };
    let mut host = TestHost::get("/");
    host.run(|| {
        for _ in 0..200 {
            assert!(backoff.before_retry(1) <= Duration::from_millis(10));
            assert!(backoff.before_retry(2) <= Duration::from_millis(20));
            assert!(backoff.before_retry(9) <= Duration::from_millis(50));
        }
        let longest = (0..200).map(|_| backoff.before_retry(9)).max().unwrap();
        assert!(
            longest > Duration::from_millis(25),
            "jitter spans the range: {longest:?}"
        );
    });
}

#[test]
fn the_budget_stops_retries_when_everything_fails() {
    let plugin = retries(
        r#"{ "routes": [ { "name": "all", "retries": { "attempts": 3 } } ],
             "budget": { "retry_ratio": 0.2, "min_retries_per_second": 1, "ttl": "10s" } }"#,
    );
    // One host keeps the shared store, as the proxy does across requests.
    let mut host = TestHost::get("/");
    let mut total_tries = 0;
    for _ in 0..100 {
        host.context.clear();
        total_tries += tries(&plugin, &mut host, Outcome::Response(503));
    }
    // 100 originals; retries capped at 1/s * 10 s + 20% of 100 = 30.
    assert!((100..=131).contains(&total_tries), "{total_tries} tries");
    assert!(host.counter_total("budget_exhausted", &[("route", "all")]) > 0);

    // The window moves on and the budget comes back.
    host.advance(Duration::from_secs(11));
    host.context.clear();
    assert_eq!(tries(&plugin, &mut host, Outcome::Response(503)), 4);
}

#[test]
fn bad_config_names_the_field() {
    let err = switchyard_sdk::load::<Retries>(
        r#"{ "routes": [ { "name": "a", "retries": { "attempts": 3, "retry_on": ["5xx", "sometimes"] } } ] }"#,
    )
    .err()
    .unwrap();
    assert!(err.contains("routes[0].retries.retry_on[1]"), "{err}");
    let err = switchyard_sdk::load::<Retries>(
        r#"{ "routes": [ { "name": "a", "timeout": "5 parsecs" } ] }"#,
    )
    .err()
    .unwrap();
    assert!(err.contains("routes[0].timeout"), "{err}");
    let err = switchyard_sdk::load::<Retries>(
        r#"{ "routes": [ { "name": "a", "condition": { "path_regex": "([" } } ] }"#,
    )
    .err()
    .unwrap();
    assert!(err.contains("routes[0].condition.path_regex"), "{err}");
    let err = switchyard_sdk::load::<Retries>(r#"{ "routes": [], "budget": { "ttl": "0s" } }"#)
        .err()
        .unwrap();
    assert!(err.contains("budget.ttl"), "{err}");
}

#[test]
fn grpc_statuses_of_trailers_only_responses_are_retried_by_name() {
    let plugin = retries(
        r#"{ "routes": [ { "name": "grpc", "retries": { "attempts": 2, "retry_on": ["unavailable", "resource-exhausted", "5xx"] } } ] }"#,
    );
    for (status, expected) in [("14", 3), ("8", 3), ("0", 1), ("13", 1), ("bad", 1)] {
        let mut host = TestHost::request("POST", "/pkg.Service/Call")
            .header("content-type", "application/grpc")
            .response(200)
            .response_header("content-type", "application/grpc")
            .response_header("grpc-status", status);
        assert_eq!(
            tries(&plugin, &mut host, Outcome::Response(200)),
            expected,
            "grpc-status {status}"
        );
    }
    // gRPC calls are POSTs, retried by class; "5xx" still covers a real HTTP 503.
    let mut host = TestHost::request("POST", "/pkg.Service/Call")
        .header("content-type", "application/grpc")
        .response(503);
    assert_eq!(tries(&plugin, &mut host, Outcome::Response(503)), 3);
    // A 200 without a gRPC status is not retried; a plain POST is not retried without
    // retry_non_idempotent.
    let mut host = TestHost::request("POST", "/pkg.Service/Call")
        .header("content-type", "application/grpc")
        .response(200);
    assert_eq!(tries(&plugin, &mut host, Outcome::Response(200)), 1);
    let mut host = TestHost::request("POST", "/form").response(503);
    assert_eq!(tries(&plugin, &mut host, Outcome::Response(503)), 1);
}

#[test]
fn only_attempts_it_could_retry_are_shown_to_it() {
    let declared = |json: &str| {
        let mut host = TestHost::get("/v1/users");
        host.load::<Retries>(json).unwrap();
        host.upstream_failures_only
    };
    assert_eq!(declared(LINKERD), Some((500, false)));
    let codes = r#"{ "routes": [
        { "name": "a", "retries": { "attempts": 2, "retry_on": ["gateway-error"] } },
        { "name": "b", "retries": { "attempts": 2, "retry_on": ["retriable-status-codes", "unavailable"],
                                    "retriable_status_codes": [429, 409] } } ] }"#;
    assert_eq!(declared(codes), Some((409, true)));
    let no_status =
        r#"{ "routes": [ { "name": "a", "retries": { "attempts": 2, "retry_on": ["reset"] } } ] }"#;
    assert_eq!(declared(no_status), Some((u16::MAX, false)));

    // What it still sees is retried as before; a success goes by without a call.
    let mut host = TestHost::get("/v1/users");
    let plugin: Retries = host.load(LINKERD).unwrap();
    assert_eq!(tries(&plugin, &mut host, Outcome::Response(503)), 4);
    assert_eq!(tries(&plugin, &mut host, Outcome::Response(200)), 1);
    assert_eq!(
        tries(&plugin, &mut host, Outcome::Error(UpstreamError::Reset)),
        4
    );
}
