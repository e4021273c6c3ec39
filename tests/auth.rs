//! The auth plugin through the real proxy: the shipped JWT and mTLS examples, and a JWKS fetched
//! from a real upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::support::config::{cluster, listener};
use crate::support::proxy::{example_config, plugin_path};
use crate::support::{Proxy, Upstream, get, get_with};

const RSA_PRIVATE: &str = include_str!("../plugins/auth/testdata/rsa-private.pem");
const OTHER_RSA_PRIVATE: &str = include_str!("../plugins/auth/testdata/other-rsa-private.pem");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> serde_json::Value {
    json!({ "iss": "https://auth.example.com", "aud": "myservice", "sub": "alice", "exp": now() + 600 })
}

async fn jwt_proxy() -> (Proxy, Upstream) {
    let app = Upstream::echo("app").await;
    let config = example_config(
        "auth-jwt.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8080", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", app.addr.to_string()),
        ],
    );
    (Proxy::start(&config), app)
}

#[tokio::test]
async fn a_valid_token_passes_and_the_upstream_learns_the_subject() {
    let (proxy, _app) = jwt_proxy().await;
    let token = auth::mint::rs256(RSA_PRIVATE, Some("demo"), &claims());

    let reply = get_with(
        proxy.addr(),
        "/api/orders",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user-id", "mallory"),
        ],
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["headers"]["x-user-id"], "alice", "{seen}");
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
}

#[tokio::test]
async fn expired_wrong_audience_bad_signature_and_missing_tokens_get_401() {
    let (proxy, _app) = jwt_proxy().await;
    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    let mut wrong_audience = claims();
    wrong_audience["aud"] = json!("someone-else");
    let cases = [
        (
            auth::mint::rs256(RSA_PRIVATE, Some("demo"), &expired),
            "expired",
        ),
        (
            auth::mint::rs256(RSA_PRIVATE, Some("demo"), &wrong_audience),
            "wrong audience",
        ),
        (
            auth::mint::rs256(OTHER_RSA_PRIVATE, Some("demo"), &claims()),
            "bad signature",
        ),
    ];
    for (token, reason) in cases {
        let reply = get_with(
            proxy.addr(),
            "/api/orders",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reason}");
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\"") && challenge.contains(reason),
            "{challenge}"
        );
        assert_eq!(reply.header("x-echo-name"), None, "never reached the app");
    }

    let reply = get(proxy.addr(), "/api/orders").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"switchyard\"")
    );

    let reply = get(proxy.addr(), "/public/logo.png").await;
    assert_eq!(reply.status, StatusCode::OK, "public paths need no token");
    let reply = get(proxy.addr(), "/elsewhere").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "default deny");
}

#[tokio::test]
async fn admin_needs_the_role_claim() {
    let (proxy, _app) = jwt_proxy().await;
    let alice = auth::mint::rs256(RSA_PRIVATE, Some("demo"), &claims());
    let mut root_claims = claims();
    root_claims["role"] = json!("admin");
    let root = auth::mint::rs256(RSA_PRIVATE, Some("demo"), &root_claims);

    let reply = get_with(
        proxy.addr(),
        "/admin/users",
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = get_with(
        proxy.addr(),
        "/admin/users",
        &[("authorization", &format!("Bearer {root}"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn the_jwks_is_fetched_once_from_its_cluster_and_cached() {
    let app = Upstream::echo("app").await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fetches);
    let jwks = auth::mint::rsa_jwks(RSA_PRIVATE, "rotating-1");
    let idp = Upstream::serve(move |req| {
        counter.fetch_add(1, Ordering::SeqCst);
        let body = if req.uri().path() == "/.well-known/jwks.json" {
            jwks.clone()
        } else {
            String::new()
        };
        async move { Response::new(Full::new(Bytes::from(body))) }
    })
    .await;
    let config = [
        listener("public", "app", &["auth"]),
        cluster("app", &[app.addr], ""),
        cluster("idp", &[idp.addr], ""),
        format!(
            r#"[[plugin]]
name = "auth"
path = "{}"
[plugin.config]
rules = [ {{ require = "jwt" }} ]
[[plugin.config.jwt]]
name = "idp"
issuer = "https://auth.example.com"
jwks = {{ cluster = "idp", ttl = "5m" }}
"#,
            plugin_path("auth").display()
        ),
    ]
    .join("\n");
    let proxy = Proxy::start(&config);
    let token = auth::mint::rs256(RSA_PRIVATE, Some("rotating-1"), &claims());

    for _ in 0..20 {
        let reply = get_with(
            proxy.addr(),
            "/",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "one fetch for 20 requests"
    );

    let forged = auth::mint::rs256(OTHER_RSA_PRIVATE, Some("rotating-1"), &claims());
    let reply = get_with(
        proxy.addr(),
        "/",
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}
