use serde_json::json;
use switchyard_sdk::testing::TestHost;
use switchyard_sdk::{Action, LocalResponse, PeerIdentity};

use super::*;
use crate::mint;

const RSA_PRIVATE: &str = include_str!("../testdata/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../testdata/rsa-public.pem");
const OTHER_RSA_PRIVATE: &str = include_str!("../testdata/other-rsa-private.pem");
const EC_PRIVATE: &str = include_str!("../testdata/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../testdata/ec-public.pem");
const SECRET: &str = "a-test-secret-that-is-32-bytes-long!";

/// The TestHost's wall clock, in seconds.
const NOW: u64 = 1_700_000_000;

fn config() -> String {
    json!({
        "jwt": [ {
            "name": "corp",
            "issuer": "https://auth.example.com",
            "audiences": ["myservice"],
            "keys": [
                { "kid": "rsa1", "alg": "RS256", "pem": RSA_PUBLIC },
                { "kid": "ec1", "alg": "ES256", "pem": EC_PUBLIC },
                { "kid": "hs1", "alg": "HS256", "secret": SECRET },
            ],
            "forward_claims": { "sub": "x-user-id" },
        } ],
        "api_keys": {
            "keys": [ { "name": "acme", "sha256": "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8" } ],
            "forward_as": "x-api-client",
        },
        "rules": [
            { "name": "public", "match": { "path_prefix": "/public/" } },
            { "name": "admin", "match": { "path_prefix": "/admin/" }, "require": "jwt", "claims": { "role": "admin" } },
            { "name": "internal", "match": { "path_prefix": "/internal/" },
              "spiffe_ids": ["spiffe://cluster.local/ns/default/sa/frontend", "spiffe://cluster.local/ns/ops/*"] },
            { "name": "partners", "match": { "path_prefix": "/partners/" }, "require": "api_key" },
            { "name": "api", "match": { "path_prefix": "/api/" }, "require": "jwt" },
        ],
    })
    .to_string()
}

fn auth() -> Auth {
    switchyard_sdk::load::<Auth>(&config()).unwrap()
}

fn claims() -> serde_json::Value {
    json!({ "iss": "https://auth.example.com", "aud": "myservice", "sub": "alice", "exp": NOW + 600 })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The status the plugin answers with (200 when it lets the request through).
fn run(host: &mut TestHost) -> (u16, Option<LocalResponse>) {
    match host.on_request(&auth()) {
        Action::Continue => (200, None),
        Action::Respond(r) => (r.status, Some(r)),
        other => panic!("{other:?}"),
    }
}

fn header<'r>(r: &'r LocalResponse, name: &str) -> Option<&'r str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn valid_tokens_of_every_algorithm_pass_and_forward_the_subject() {
    for token in [
        mint::rs256(RSA_PRIVATE, Some("rsa1"), &claims()),
        mint::es256(EC_PRIVATE, Some("ec1"), &claims()),
        mint::hs256(SECRET.as_bytes(), Some("hs1"), &claims()),
        mint::rs256(RSA_PRIVATE, None, &claims()),
    ] {
        let mut host = TestHost::get("/api/x")
            .header("authorization", &bearer(&token))
            .header("x-user-id", "mallory");
        assert_eq!(run(&mut host).0, 200, "{token}");
        assert_eq!(
            host.request_header("x-user-id"),
            Some("alice"),
            "the client's copy is replaced"
        );
        assert_eq!(
            host.request_header("authorization"),
            None,
            "the token is not forwarded"
        );
    }
}

#[test]
fn expired_wrong_audience_bad_signature_and_missing_tokens_get_401() {
    let mut expired = claims();
    expired["exp"] = json!(NOW - 120);
    let mut wrong_aud = claims();
    wrong_aud["aud"] = json!(["other-service"]);
    let mut not_yet = claims();
    not_yet["nbf"] = json!(NOW + 600);
    let cases = [
        (mint::rs256(RSA_PRIVATE, Some("rsa1"), &expired), "expired"),
        (
            mint::rs256(RSA_PRIVATE, Some("rsa1"), &wrong_aud),
            "wrong audience",
        ),
        (
            mint::rs256(RSA_PRIVATE, Some("rsa1"), &not_yet),
            "not valid yet",
        ),
        (
            mint::rs256(OTHER_RSA_PRIVATE, Some("rsa1"), &claims()),
            "bad signature",
        ),
        (
            mint::hs256(
                b"another-secret-that-is-32-bytes-long",
                Some("hs1"),
                &claims(),
            ),
            "bad signature",
        ),
        ("not.a.jwt".to_owned(), "not base64url"),
    ];
    for (token, reason) in cases {
        let mut host = TestHost::get("/api/x").header("authorization", &bearer(&token));
        let (status, response) = run(&mut host);
        assert_eq!(status, 401, "{reason}");
        let challenge = header(response.as_ref().unwrap(), "www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"switchyard\", error=\"invalid_token\""),
            "{challenge}"
        );
        assert!(
            challenge.contains(reason),
            "{challenge} should say {reason}"
        );
    }
    let (status, response) = run(&mut TestHost::get("/api/x"));
    assert_eq!(status, 401);
    assert_eq!(
        header(response.as_ref().unwrap(), "www-authenticate"),
        Some("Bearer realm=\"switchyard\"")
    );
}

#[test]
fn leeway_forgives_small_clock_skew() {
    let mut just_expired = claims();
    just_expired["exp"] = json!(NOW - 10);
    let token = mint::rs256(RSA_PRIVATE, Some("rsa1"), &just_expired);
    let mut host = TestHost::get("/api/x").header("authorization", &bearer(&token));
    assert_eq!(run(&mut host).0, 200, "30s leeway by default");
}

#[test]
fn an_algorithm_the_key_is_not_for_is_refused() {
    // HS256 signed with the RSA public key's text: the classic algorithm-confusion attack.
    let forged = mint::hs256(RSA_PUBLIC.as_bytes(), Some("rsa1"), &claims());
    let mut host = TestHost::get("/api/x").header("authorization", &bearer(&forged));
    assert_eq!(run(&mut host).0, 401);
}

#[test]
fn claims_rules_give_403() {
    let token = mint::rs256(RSA_PRIVATE, Some("rsa1"), &claims());
    let mut host = TestHost::get("/admin/x").header("authorization", &bearer(&token));
    assert_eq!(run(&mut host).0, 403);
    let mut admin = claims();
    admin["role"] = json!(["viewer", "admin"]);
    let token = mint::rs256(RSA_PRIVATE, Some("rsa1"), &admin);
    let mut host = TestHost::get("/admin/x").header("authorization", &bearer(&token));
    assert_eq!(run(&mut host).0, 200);
}

#[test]
fn spiffe_allow_list() {
    let with_identity = |id: &str| {
        let mut host = TestHost::get("/internal/x");
        host.peer_identity = Some(PeerIdentity {
            spiffe_id: Some(id.into()),
            ..Default::default()
        });
        host
    };
    assert_eq!(
        run(&mut with_identity(
            "spiffe://cluster.local/ns/default/sa/frontend"
        ))
        .0,
        200
    );
    assert_eq!(
        run(&mut with_identity(
            "spiffe://cluster.local/ns/ops/sa/debugger"
        ))
        .0,
        200
    );
    assert_eq!(
        run(&mut with_identity(
            "spiffe://cluster.local/ns/default/sa/batch"
        ))
        .0,
        403
    );
    assert_eq!(
        run(&mut TestHost::get("/internal/x")).0,
        403,
        "no mTLS identity"
    );
}

#[test]
fn api_keys_are_checked_by_hash() {
    // sha256("password") is in the config.
    let mut host = TestHost::get("/partners/x").header("x-api-key", "password");
    assert_eq!(run(&mut host).0, 200);
    assert_eq!(host.request_header("x-api-client"), Some("acme"));
    assert_eq!(
        host.request_header("x-api-key"),
        None,
        "the key is not forwarded"
    );
    let mut host = TestHost::get("/partners/x").header("x-api-key", "guess");
    assert_eq!(run(&mut host).0, 401);
    assert_eq!(run(&mut TestHost::get("/partners/x")).0, 401);
}

#[test]
fn public_paths_pass_and_unmatched_paths_are_denied_by_default() {
    assert_eq!(run(&mut TestHost::get("/public/x")).0, 200);
    assert_eq!(run(&mut TestHost::get("/elsewhere")).0, 403);
    // A bad token is refused even where none is needed.
    let mut host = TestHost::get("/public/x").header("authorization", "Bearer x.y.z");
    assert_eq!(run(&mut host).0, 401);
}

#[test]
fn jwks_is_fetched_once_and_cached() {
    let config = json!({
        "jwt": [ { "name": "idp", "jwks": { "cluster": "idp", "path": "/jwks.json", "ttl": "60s" } } ],
        "rules": [ { "require": "jwt" } ],
    })
    .to_string();
    let plugin = switchyard_sdk::load::<Auth>(&config).unwrap();
    let jwks = mint::rsa_jwks(RSA_PRIVATE, "k1");
    let mut host = TestHost::get("/").on_http_call(move |cluster, request| {
        assert_eq!((cluster, request.path.as_str()), ("idp", "/jwks.json"));
        Ok(switchyard_sdk::http::HttpResponse {
            status: 200,
            headers: vec![],
            body: jwks.clone().into_bytes(),
        })
    });
    let token = mint::rs256(
        RSA_PRIVATE,
        Some("k1"),
        &json!({ "sub": "a", "exp": NOW + 600 }),
    );
    for _ in 0..5 {
        host.request_headers = vec![("authorization".into(), bearer(&token))];
        assert_eq!(host.on_request(&plugin), Action::Continue);
    }
    assert_eq!(host.calls.len(), 1, "fetched once");
    host.advance(std::time::Duration::from_secs(61));
    host.request_headers = vec![("authorization".into(), bearer(&token))];
    assert_eq!(host.on_request(&plugin), Action::Continue);
    assert_eq!(host.calls.len(), 2, "fetched again after the TTL");
}

#[test]
fn bad_config_names_the_field() {
    let load = |config: serde_json::Value| {
        switchyard_sdk::load::<Auth>(&config.to_string())
            .err()
            .unwrap()
    };
    let err =
        load(json!({ "jwt": [ { "name": "a", "keys": [ { "alg": "RS256", "pem": "nope" } ] } ] }));
    assert!(err.contains("jwt[0].keys[0]: pem"), "{err}");
    let err = load(
        json!({ "jwt": [ { "name": "a", "keys": [ { "alg": "HS256", "secret": "short" } ] } ] }),
    );
    assert!(err.contains("jwt[0].keys[0]: secret"), "{err}");
    let err = load(
        json!({ "jwt": [ { "name": "a", "keys": [ { "alg": "none", "secret": SECRET } ] } ] }),
    );
    assert!(err.contains("jwt[0].keys[0].alg"), "{err}");
    let err = load(json!({ "api_keys": { "keys": [ { "name": "a", "sha256": "abc" } ] } }));
    assert!(err.contains("api_keys.keys[0].sha256"), "{err}");
    let err = load(json!({ "rules": [ { "spiffe_ids": ["frontend"] } ] }));
    assert!(err.contains("rules[0].spiffe_ids[0]"), "{err}");
    let err = load(json!({ "rules": [ { "require": "jwt" } ] }));
    assert!(err.contains("rules[0]"), "{err}");
}

#[test]
fn a_remembered_signature_still_has_its_claims_checked_every_time() {
    let plugin = auth();
    let token = mint::rs256(RSA_PRIVATE, Some("rsa1"), &claims());
    let request = || TestHost::get("/api/orders").header("authorization", &bearer(&token));
    assert_eq!(request().on_request(&plugin), Action::Continue);
    let now = request().now;
    assert_eq!(
        plugin.verified.get(&token, now).map(|v| v.provider),
        Some(0),
        "remembered"
    );
    assert_eq!(
        request().on_request(&plugin),
        Action::Continue,
        "verified from the cache"
    );
    // Well past `exp` (NOW + 600, plus leeway), a remembered signature does not keep the token
    // alive.
    let mut host = request();
    host.advance(std::time::Duration::from_secs(3600));
    match host.on_request(&plugin) {
        Action::Respond(r) => assert_eq!(r.status, 401),
        other => panic!("an expired token passed: {other:?}"),
    }
    // A token with the same claims but a forged signature is not a cache hit.
    let forged = mint::rs256(OTHER_RSA_PRIVATE, Some("rsa1"), &claims());
    let mut host = TestHost::get("/api/orders").header("authorization", &bearer(&forged));
    assert!(matches!(host.on_request(&plugin), Action::Respond(r) if r.status == 401));
}

#[test]
fn claim_facts_read_once_are_checked_against_the_clock_in_order() {
    use crate::jwt::{ClaimFacts, Expectations};
    let expect = Expectations {
        issuer: Some("https://issuer".into()),
        audiences: vec!["api".into()],
        leeway: std::time::Duration::from_secs(5),
        require_exp: true,
    };
    let read = |claims: serde_json::Value| {
        ClaimFacts::read(claims.as_object().expect("an object"), &expect)
    };
    let reason = |facts: ClaimFacts, now: u64| facts.check(&expect, now).err().map(|e| e.0);

    let good = read(json!({ "exp": 100, "nbf": 50, "iss": "https://issuer", "aud": ["x", "api"] }));
    assert_eq!(reason(good, 60), None);
    assert_eq!(reason(good, 104), None, "within the leeway");
    assert_eq!(reason(good, 106).as_deref(), Some("the token has expired"));
    assert_eq!(
        reason(good, 40).as_deref(),
        Some("the token is not valid yet")
    );
    // Time first, then issuer, then audience, as the errors were always named.
    let wrong = read(json!({ "exp": 100, "iss": "other", "aud": "nope" }));
    assert_eq!(reason(wrong, 200).as_deref(), Some("the token has expired"));
    assert_eq!(reason(wrong, 60).as_deref(), Some("wrong issuer"));
    let audience = read(json!({ "exp": 100, "iss": "https://issuer", "aud": "nope" }));
    assert_eq!(reason(audience, 60).as_deref(), Some("wrong audience"));
    let untyped = read(json!({ "exp": "soon", "iss": "https://issuer", "aud": "api" }));
    assert_eq!(reason(untyped, 60).as_deref(), Some("exp is not a number"));
    let no_exp = read(json!({ "iss": "https://issuer", "aud": "api" }));
    assert_eq!(reason(no_exp, 60).as_deref(), Some("the token has no exp"));
}

#[test]
fn says_it_never_calls_out_unless_it_fetches_jwks() {
    let mut host = TestHost::get("/");
    host.load::<Auth>(&config()).unwrap();
    assert!(
        host.never_calls_out,
        "inline keys and API keys need no callout"
    );
    let remote = json!({
        "jwt": [ { "name": "idp", "jwks": { "cluster": "idp" } } ],
        "rules": [ { "require": "jwt" } ],
    })
    .to_string();
    let mut host = TestHost::get("/");
    host.load::<Auth>(&remote).unwrap();
    assert!(
        !host.never_calls_out,
        "remote JWKS are fetched with http.call"
    );
}
