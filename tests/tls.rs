//! TLS and mTLS through the real proxy with certificates made by `switchyard certs`: ALPN, SNI,
//! client certificates, SPIFFE identities to plugins and to upstreams, rotation, the two-sidecar
//! example, and real clients (curl, openssl s_client).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::support::config::cluster;
use crate::support::proxy::{admin_get, example_config, refused};
use crate::support::tls::{Issued, Pki, tls_get, tls_get_path};
use crate::support::{Proxy, Upstream, eventually, get};

/// A TLS listener "public" in front of `app`, with `tls` as its `[listener.tls]` body.
fn tls_listener(app: &Upstream, tls: &str) -> String {
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"app\"\n[listener.tls]\n{tls}\n\n{}",
        cluster("app", &[app.addr], "")
    )
}

fn cert_key(issued: &Issued) -> String {
    format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        issued.cert.display(),
        issued.key.display()
    )
}

#[tokio::test]
async fn https_speaks_h2_and_http1_by_alpn() {
    let pki = Pki::new();
    let server = pki.issue("server", None, &["localhost"]);
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&tls_listener(&app, &cert_key(&server)));

    let h2 = tls_get(
        proxy.addr(),
        "localhost",
        &pki.ca(),
        None,
        &["h2", "http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some("h2"));
    assert_eq!(h2.reply.version, http::Version::HTTP_2);
    assert_eq!(h2.reply.echo_name(), "app");
    assert_eq!(h2.reply.json()["headers"]["x-forwarded-proto"], "https");

    let h1 = tls_get(proxy.addr(), "localhost", &pki.ca(), None, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(h1.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(h1.reply.version, http::Version::HTTP_11);
    assert_eq!(h1.reply.status, StatusCode::OK);
}

#[tokio::test]
async fn sni_picks_the_certificate() {
    let pki = Pki::new();
    let default = pki.issue("default", None, &["localhost"]);
    let api = pki.issue("api", None, &["api.test"]);
    let shop = pki.issue("shop", None, &["www.shop.test"]);
    let app = Upstream::echo("app").await;
    let tls = format!(
        "{}\n[[listener.tls.sni]]\nserver_names = [\"api.test\"]\n{}\n[[listener.tls.sni]]\nserver_names = [\"*.shop.test\"]\n{}",
        cert_key(&default),
        cert_key(&api),
        cert_key(&shop)
    );
    let proxy = Proxy::start(&tls_listener(&app, &tls));

    for (sni, expected) in [
        ("api.test", "api.test"),
        ("www.shop.test", "www.shop.test"),
        ("localhost", "localhost"),
    ] {
        let got = tls_get(proxy.addr(), sni, &pki.ca(), None, &["http/1.1"])
            .await
            .unwrap();
        assert_eq!(got.server_dns_names, [expected], "SNI {sni}");
    }
}

#[tokio::test]
async fn mtls_refuses_missing_foreign_and_expired_client_certs() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = pki.issue("server", None, &["localhost"]);
    let good = pki.issue(
        "client",
        Some("spiffe://cluster.local/ns/default/sa/client"),
        &[],
    );
    let foreign = other.issue(
        "client",
        Some("spiffe://cluster.local/ns/default/sa/client"),
        &[],
    );
    let expired = pki.issue_expired("expired");
    let app = Upstream::echo("app").await;
    let tls = format!(
        "{}client_ca = \"{}\"\nrequire_client_cert = true\n",
        cert_key(&server),
        pki.ca().display()
    );
    let proxy = Proxy::start(&tls_listener(&app, &tls));
    let ca = pki.ca();

    let ok = tls_get(proxy.addr(), "localhost", &ca, Some(&good), &["h2"]).await;
    assert_eq!(ok.unwrap().reply.status, StatusCode::OK);
    for (what, client) in [
        ("no client cert", None),
        ("another CA", Some(&foreign)),
        ("expired", Some(&expired)),
    ] {
        let refused = tls_get(proxy.addr(), "localhost", &ca, client, &["h2"]).await;
        assert!(refused.is_err(), "{what} was let in");
    }
    let logged = proxy
        .wait_for_log("TLS handshake failed", Duration::from_secs(5))
        .await;
    assert!(logged, "{}", proxy.logs());
    let metrics = admin_get(proxy.admin, "/metrics");
    for reason in ["no_client_cert", "unknown_ca", "expired_cert"] {
        let counted = eventually(Duration::from_secs(5), async || {
            admin_get(proxy.admin, "/metrics").contains(&format!("reason=\"{reason}\""))
        })
        .await;
        assert!(counted, "no {reason} in\n{metrics}");
    }
}

#[tokio::test]
async fn the_spiffe_id_reaches_the_auth_plugin_over_real_mtls() {
    let pki = Pki::new();
    pki.issue("orders", None, &["localhost"]);
    let frontend = pki.issue(
        "frontend",
        Some("spiffe://cluster.local/ns/default/sa/frontend"),
        &[],
    );
    let batch = pki.issue(
        "batch",
        Some("spiffe://cluster.local/ns/default/sa/batch"),
        &[],
    );
    let orders = Upstream::echo("orders").await;
    let config = example_config(
        "auth-mtls.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:8443", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", orders.addr.to_string()),
            ("\"certs/", format!("\"{}/", pki.dir.display())),
        ],
    );
    let proxy = Proxy::start(&config);
    let ca = pki.ca();
    let status =
        async |client: Option<&Issued>, path: &str| tls_path(proxy.addr(), &ca, client, path).await;
    assert_eq!(status(None, "/healthz").await, 200);
    assert_eq!(
        status(Some(&frontend), "/orders/1").await,
        200,
        "frontend is allowed"
    );
    assert_eq!(status(Some(&batch), "/orders/1").await, 403, "batch is not");
    assert_eq!(
        status(None, "/orders/1").await,
        403,
        "no identity, no entry"
    );
}

/// The status of a GET for `path` over TLS (curl, so the test also covers a real client).
async fn tls_path(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    client: Option<&Issued>,
    path: &str,
) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", addr.port()));
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    cmd.arg(format!("https://localhost:{}{path}", addr.port()));
    let out = tokio::task::spawn_blocking(move || {
        cmd.output()
            .expect("curl is installed (.ci/run installs it)")
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn upstream_mtls_checks_the_spiffe_id() {
    let pki = Pki::new();
    let backend = pki.issue(
        "backend",
        Some("spiffe://cluster.local/ns/default/sa/backend"),
        &["localhost"],
    );
    let proxy_id = pki.issue(
        "proxy",
        Some("spiffe://cluster.local/ns/default/sa/gateway"),
        &[],
    );
    let app = Upstream::echo("app").await;
    // The "backend" is a second proxy terminating mTLS in front of the app.
    let backend_proxy = Proxy::start(&tls_listener(
        &app,
        &format!(
            "{}client_ca = \"{}\"\nforward_client_cert = \"x-client\"\n",
            cert_key(&backend),
            pki.ca().display()
        ),
    ));
    let front = |spiffe_id: &str| {
        format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"backend\"\n\n[[cluster]]\nname = \"backend\"\nendpoints = [\"{}\"]\n[cluster.tls]\nca = \"{}\"\n{}spiffe_id = \"{spiffe_id}\"\n",
            backend_proxy.addr(),
            pki.ca().display(),
            cert_key(&proxy_id),
        )
    };

    let matching = Proxy::start(&front("spiffe://cluster.local/ns/default/sa/backend"));
    let reply = get(matching.addr(), "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json()["headers"]["x-client"],
        "URI=spiffe://cluster.local/ns/default/sa/gateway;Subject=\"CN=spiffe://cluster.local/ns/default/sa/gateway\"",
        "the backend saw the proxy's identity"
    );

    let mismatched = Proxy::start(&front("spiffe://cluster.local/ns/default/sa/payments"));
    let reply = get(mismatched.addr(), "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let logged = mismatched
        .wait_for_log("has SPIFFE ID spiffe://cluster.local/ns/default/sa/backend, expected spiffe://cluster.local/ns/default/sa/payments", Duration::from_secs(5))
        .await;
    assert!(logged, "{}", mismatched.logs());
}

#[tokio::test]
async fn certificate_rotation_under_load_fails_no_request() {
    let pki = Pki::new();
    let first = pki.issue("first", None, &["localhost", "first.test"]);
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&tls_listener(&app, &cert_key(&first)));
    let addr = proxy.addr();
    let ca = pki.ca();

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, failed, sent, ca) = (
            Arc::clone(&stop),
            Arc::clone(&failed),
            Arc::clone(&sent),
            ca.clone(),
        );
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A new connection each time, so every request is a new handshake.
                match tls_get(addr, "localhost", &ca, None, &["h2"]).await {
                    Ok(r) if r.reply.status == StatusCode::OK => {}
                    other => {
                        eprintln!("failed: {:?}", other.map(|r| r.reply.status));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    // Rotate: a new certificate and key written over the old files (key first, as cert-manager
    // may; a half-updated pair is refused and the old pair keeps serving until both are new).
    let second = pki.issue("second", None, &["localhost", "second.test"]);
    std::fs::copy(&second.key, &first.key).unwrap();
    std::fs::copy(&second.cert, &first.cert).unwrap();
    let rotated = eventually(Duration::from_secs(5), async || {
        tls_get(addr, "localhost", &ca, None, &["h2"])
            .await
            .is_ok_and(|r| r.server_dns_names.contains(&"second.test".to_owned()))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert!(
        rotated,
        "new handshakes never got the new certificate; log:\n{}",
        proxy.logs()
    );
    let (failed, sent) = (failed.load(Ordering::Relaxed), sent.load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during rotation"
    );
    assert!(sent > 10, "only {sent} requests");
}

#[tokio::test]
async fn a_bad_certificate_is_refused_at_start_naming_the_file() {
    let pki = Pki::new();
    let server = pki.issue("server", None, &["localhost"]);
    let other = pki.issue("other", None, &["localhost"]);
    let expired = pki.issue_expired("expired");
    let app = Upstream::echo("app").await;

    let mismatched = format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        server.cert.display(),
        other.key.display()
    );
    let out = refused(&tls_listener(&app, &mismatched));
    assert!(
        out.contains(&other.key.display().to_string()) && out.contains("does not belong"),
        "{out}"
    );

    let out = refused(&tls_listener(&app, &cert_key(&expired)));
    assert!(
        out.contains(&expired.cert.display().to_string()) && out.contains("expired"),
        "{out}"
    );
}

#[tokio::test]
async fn two_sidecars_talk_mtls_end_to_end() {
    let pki = Pki::new();
    pki.issue("a", Some("spiffe://cluster.local/ns/default/sa/a"), &[]);
    pki.issue(
        "b",
        Some("spiffe://cluster.local/ns/default/sa/b"),
        &["localhost"],
    );
    let app_b = Upstream::echo("app-b").await;
    let port_b = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = example_config(
        "mtls-sidecars.toml",
        &[
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:15001", "127.0.0.1:0".into()),
            ("127.0.0.1:15443", port_b.to_string()),
            ("127.0.0.1:9002", app_b.addr.to_string()),
            ("\"certs/", format!("\"{}/", pki.dir.display())),
        ],
    );
    let proxy = Proxy::start(&config);

    let reply = get(proxy.listener("a-outbound"), "/hello").await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.echo_name(), "app-b");
    let xfcc = reply.json()["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        xfcc.starts_with("URI=spiffe://cluster.local/ns/default/sa/a"),
        "{xfcc}"
    );
}

#[tokio::test]
async fn openssl_s_client_sees_tls13_and_no_weak_protocols() {
    let pki = Pki::new();
    let server = pki.issue("server", None, &["localhost"]);
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&tls_listener(&app, &cert_key(&server)));
    let connect = format!("127.0.0.1:{}", proxy.addr().port());
    let s_client = |extra: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(pki.ca())
        .args(extra)
        .stdin(Stdio::null());
        let out = cmd
            .output()
            .expect("openssl is installed (.ci/run installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };

    let modern = s_client(&["-alpn", "h2"]);
    assert!(
        modern.contains("TLSv1.3") && modern.contains("Verify return code: 0 (ok)"),
        "{modern}"
    );
    assert!(modern.contains("ALPN protocol: h2"), "{modern}");
    let tls12 = s_client(&["-tls1_2"]);
    assert!(tls12.contains("TLSv1.2"), "TLS 1.2 is offered: {tls12}");
    for old in ["-tls1", "-tls1_1"] {
        let out = s_client(&[old]);
        assert!(
            out.contains("Cipher is (NONE)") || out.contains("no peer certificate available"),
            "{old} was accepted: {out}"
        );
    }
}

#[tokio::test]
async fn rsa_and_ed25519_certificates_serve_too() {
    let pki = Pki::new();
    let rsa_pem = include_str!("../plugins/auth/testdata/rsa-private.pem");
    let rsa = rcgen::KeyPair::from_pem_and_sign_algo(rsa_pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    for (name, key) in [("rsa", rsa), ("ed25519", ed25519)] {
        let issued = pki.issue_with_key(name, key);
        let app = Upstream::echo("app").await;
        let proxy = Proxy::start(&tls_listener(&app, &cert_key(&issued)));
        let got = tls_get(proxy.addr(), "localhost", &pki.ca(), None, &["h2"]).await;
        assert_eq!(
            got.map(|r| r.reply.status).ok(),
            Some(StatusCode::OK),
            "{name}"
        );
    }
}

/// config/examples/gateway-tls.toml as shipped: SNI picks each host's certificate and the routing
/// plugin sends each host to its service.
#[tokio::test]
async fn the_tls_gateway_example_routes_each_host_with_its_certificate() {
    let pki = Pki::new();
    let default = pki.issue("default", None, &["example.com"]);
    let shop = pki.issue("shop", None, &["shop.example.com"]);
    let wildcard = pki.issue("wildcard", None, &["*.example.com"]);
    let web = Upstream::echo("web").await;
    let shop_app = Upstream::echo("shop").await;
    let api = Upstream::echo("api").await;
    let path = |issued: &Issued, file: &str| {
        if file == "cert" {
            issued.cert.display().to_string()
        } else {
            issued.key.display().to_string()
        }
    };
    let config = example_config(
        "gateway-tls.toml",
        &[
            ("0.0.0.0:8443", "127.0.0.1:0".into()),
            ("127.0.0.1:9901", "127.0.0.1:0".into()),
            ("127.0.0.1:9001", web.addr.to_string()),
            ("127.0.0.1:9002", shop_app.addr.to_string()),
            ("127.0.0.1:9003", api.addr.to_string()),
            ("pki/default/cert.pem", path(&default, "cert")),
            ("pki/default/key.pem", path(&default, "key")),
            ("pki/shop/cert.pem", path(&shop, "cert")),
            ("pki/shop/key.pem", path(&shop, "key")),
            ("pki/wildcard/cert.pem", path(&wildcard, "cert")),
            ("pki/wildcard/key.pem", path(&wildcard, "key")),
        ],
    );
    let proxy = Proxy::start(&config);

    for (host, path, certificate, service) in [
        ("shop.example.com", "/", "shop.example.com", "shop"),
        ("api.example.com", "/v1/users", "*.example.com", "api"),
        ("api.example.com", "/", "*.example.com", "web"),
        ("www.example.com", "/", "*.example.com", "web"),
        ("example.com", "/", "example.com", "web"),
    ] {
        for alpn in ["http/1.1", "h2"] {
            let got = tls_get_path(proxy.addr(), host, path, &pki.ca(), None, &[alpn])
                .await
                .unwrap_or_else(|e| panic!("{host}{path} over {alpn}: {e}"));
            assert_eq!(got.server_dns_names, [certificate], "{host} over {alpn}");
            assert_eq!(got.reply.status, StatusCode::OK, "{host}{path}");
            assert_eq!(got.reply.echo_name(), service, "{host}{path} over {alpn}");
        }
    }
}
