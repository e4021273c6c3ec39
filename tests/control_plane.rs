//! `switchyard control` and the proxies it runs: identities issued over a bootstrap token and
//! renewed without a failed request, mesh mTLS with SPIFFE IDs that plugins see, a mesh.toml
//! change reaching every proxy within 2 s, serving on when the control plane is gone, and a
//! tampered bundle or plugin refused.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::control::{
    ADMIN_TOKEN, ControlPlane, MeshDir, controlled_proxy, mesh_toml, replace_file,
};
use crate::support::proxy::{plugin_path, scratch_dir};
use crate::support::tls::{Pki, tls_get};
use crate::support::{Proxy, Upstream, eventually, get};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The canary plugin splitting every host between clusters v1 and v2.
fn canary(plugin: &Path, v1: u32, v2: u32) -> String {
    format!(
        "[[plugin]]\nname = \"canary\"\npath = \"{}\"\n[plugin.config]\n[[plugin.config.rules]]\nhosts = [\"*\"]\nbackends = [{{ cluster = \"v1\", weight = {v1} }}, {{ cluster = \"v2\", weight = {v2} }}]\n",
        plugin.display()
    )
}

/// A workload whose `public` listener splits with the canary plugin.
fn split_workload(v1: &Upstream, v2: &Upstream) -> String {
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\nplugins = [\"canary\"]\n\n[[cluster]]\nname = \"v1\"\nendpoints = [\"{}\"]\n\n[[cluster]]\nname = \"v2\"\nendpoints = [\"{}\"]\n",
        v1.addr, v2.addr
    )
}

async fn answered_by(proxy: &Proxy, name: &str) -> bool {
    get(proxy.listener("public"), "/").await.echo_name() == name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_get_identities_speak_mtls_and_renew_without_a_failed_request() {
    let mesh = MeshDir::new();
    let app = Upstream::echo("app").await;
    let authz = format!(
        "[[plugin]]\nname = \"authz\"\npath = \"{}\"\n[plugin.config]\ndefault = \"deny\"\n[[plugin.config.rules]]\nname = \"frontend\"\nmatch = {{ path_prefix = \"/\" }}\nspiffe_ids = [\"spiffe://cluster.local/ns/default/sa/frontend\"]\n",
        plugin_path("auth").display()
    );
    let lifetime = "cert_lifetime = \"10s\"";
    mesh.write_workload(
        "backend",
        &format!(
            "[[listener]]\nname = \"inbound\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"app\"\nplugins = [\"authz\"]\n\n[[cluster]]\nname = \"app\"\nendpoints = [\"{}\"]\n",
            app.addr
        ),
    );
    mesh.write_mesh(lifetime, &authz, &["backend"]);
    let control = ControlPlane::start(&mesh.mesh());
    let backend = controlled_proxy(
        control.api,
        &mesh.pki.ca(),
        "backend",
        &mesh.dir.join("state-backend"),
        1,
    );
    let started = Instant::now();
    let inbound = backend.listener("inbound");

    // The frontend joins the mesh once the backend's address is known.
    mesh.write_workload(
        "frontend",
        &format!(
            "[[listener]]\nname = \"outbound\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"backend\"\n\n[[cluster]]\nname = \"backend\"\nendpoints = [\"{inbound}\"]\n"
        ),
    );
    mesh.write_mesh(lifetime, &authz, &["backend", "frontend"]);
    let joined = eventually(Duration::from_secs(10), async || {
        control.status()["workloads"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    assert!(joined, "frontend never joined:\n{}", control.logs());
    let frontend = controlled_proxy(
        control.api,
        &mesh.pki.ca(),
        "frontend",
        &mesh.dir.join("state-frontend"),
        1,
    );
    let outbound = frontend.listener("outbound");

    // Frontend → backend is mTLS with the identities the control plane issued: the backend's
    // auth plugin sees the frontend's SPIFFE ID and lets it in, and says who called.
    let reply = get(outbound, "/orders/1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let xfcc = reply.json()["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/frontend"),
        "{xfcc}"
    );
    // The backend's mesh listener takes no one without a mesh certificate, and its plugin no
    // mesh identity but the frontend's.
    let anonymous = tls_get(inbound, "backend.default.svc", &mesh.pki.ca(), None, &[]).await;
    assert!(anonymous.is_err(), "a caller without a certificate got in");
    let intruder = mesh.pki.issue(
        "intruder",
        Some("spiffe://cluster.local/ns/default/sa/intruder"),
        &[],
    );
    let intruder = tls_get(
        inbound,
        "backend.default.svc",
        &mesh.pki.ca(),
        Some(&intruder),
        &[],
    )
    .await
    .expect("a mesh certificate is accepted by TLS");
    assert_eq!(
        intruder.reply.status, 403,
        "the plugin refuses other identities"
    );

    // Certificates live 10 s; both proxies renew twice (at 2/3 of the life) while requests
    // flow, and none fails — also after the first certificates expired.
    let renewed = |p: &Proxy| p.logs().matches("identity renewed").count();
    let (mut ok, mut failed) = (0, Vec::new());
    while renewed(&backend) < 2 || renewed(&frontend) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "no second renewal within 45 s; backend:\n{}\nfrontend:\n{}",
            backend.logs(),
            frontend.logs()
        );
        let reply = get(outbound, "/").await;
        if reply.status == 200 {
            ok += 1;
        } else {
            failed.push(format!("{}: {}", reply.status, reply.text()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..20 {
        let reply = get(outbound, "/").await;
        assert_eq!(reply.status, 200, "after renewal: {}", reply.text());
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(
        started.elapsed() > Duration::from_secs(10),
        "the backend's first certificate has expired by now"
    );
    assert!(ok > 50, "only {ok} requests were sent across the renewals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_reach_every_proxy_within_2s_and_survive_the_control_plane() {
    let mesh = MeshDir::new();
    let (v1, v2) = (Upstream::echo("v1").await, Upstream::echo("v2").await);
    let canary_wasm = plugin_path("canary");
    for w in ["a", "b"] {
        mesh.write_workload(w, &split_workload(&v1, &v2));
    }
    mesh.write_mesh("", &canary(&canary_wasm, 100, 0), &["a", "b"]);
    let control = ControlPlane::start(&mesh.mesh());
    let a = mesh.proxy(control.api, "a");
    let b = mesh.proxy(control.api, "b");
    assert!(answered_by(&a, "v1").await && answered_by(&b, "v1").await);

    // Steady load on both proxies for as long as the control plane is changing them.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for addr in [a.listener("public"), b.listener("public")] {
        let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if get(addr, "/").await.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Edit mesh.toml: v2 takes all traffic, on both proxies, within 2 s.
    let edited = Instant::now();
    mesh.write_mesh("", &canary(&canary_wasm, 0, 100), &["a", "b"]);
    let switched = eventually(Duration::from_secs(2), async || {
        answered_by(&a, "v2").await && answered_by(&b, "v2").await
    })
    .await;
    assert!(
        switched,
        "not both on v2 within 2 s of the edit; control plane:\n{}",
        control.logs()
    );
    eprintln!(
        "mesh.toml edit reached both proxies in {:?}",
        edited.elapsed()
    );
    let reported = eventually(Duration::from_secs(5), async || control.in_sync(2)).await;
    assert!(
        reported,
        "proxies did not report the new bundle: {}",
        control.status()
    );
    let metrics = crate::support::proxy::admin_get(control.admin, "/metrics");
    assert!(
        metrics.contains("switchyard_control_proxies{in_sync=\"true\"} 2"),
        "{metrics}"
    );
    // The bundle it started with, and the edit.
    let metrics = crate::support::proxy::admin_get(a.admin, "/metrics");
    assert!(
        metrics.contains("switchyard_control_bundles_total{result=\"applied\"} 2")
            && metrics.contains("switchyard_identity_expiry_timestamp_seconds"),
        "{metrics}"
    );

    // `switchyard ctl --control` changes the split mesh-wide.
    let ctl = ctl_control(&control, &["weights", "canary", "v1=100", "v2=0"]);
    assert!(
        ctl.status.success(),
        "ctl weights: {}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    let back = eventually(Duration::from_secs(2), async || {
        answered_by(&a, "v1").await && answered_by(&b, "v1").await
    })
    .await;
    assert!(back, "ctl weights did not reach both proxies within 2 s");
    let refused = ctl_control(&control, &["weights", "canary", "v9=1"]);
    assert!(
        !refused.status.success(),
        "a weight for an unknown cluster was accepted"
    );
    // A split the canary plugin itself rejects (nothing left to send to) is refused by the
    // control plane, which loads the plugins before any proxy sees them.
    let rejected = ctl_control(&control, &["weights", "canary", "v1=0"]);
    let said = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        !rejected.status.success() && said.contains("canary") && said.contains("add up to 0"),
        "{said}"
    );
    mesh.write_mesh("", &canary(&canary_wasm, 0, 0), &["a", "b"]);
    let refused_edit = eventually(Duration::from_secs(5), async || {
        control.status()["reload"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("add up to 0"))
    })
    .await;
    assert!(refused_edit, "{}", control.status());
    assert!(answered_by(&a, "v1").await && answered_by(&b, "v1").await);

    // The control plane goes away: both keep serving the last bundle.
    let api = control.api;
    control.kill();
    for _ in 0..20 {
        assert!(answered_by(&a, "v1").await && answered_by(&b, "v1").await);
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    assert!(sent > 20, "only {sent} requests were sent");
    assert!(
        a.wait_for_log("control plane unreachable", Duration::from_secs(10))
            .await
    );

    // A proxy that restarts while the control plane is away starts from its last good bundle,
    // with the local sections of its file as they are now (an access log added).
    drop(a);
    let access_log = mesh.dir.join("a-access.log");
    let a = crate::support::control::controlled_proxy_with(
        api,
        &mesh.pki.ca(),
        "a",
        &mesh.dir.join("state-a"),
        1,
        &format!("[access_log]\npath = \"{}\"", access_log.display()),
    );
    assert!(answered_by(&a, "v1").await);
    assert!(a.logs().contains("starting from the last good bundle"));
    let logged = eventually(Duration::from_secs(5), async || {
        std::fs::read_to_string(&access_log).is_ok_and(|l| l.contains("\"status\":200"))
    })
    .await;
    assert!(logged, "the restarted proxy's own [access_log] applies");
}

/// `switchyard ctl --control ADDR --token T ARGS...` against `control`'s admin API.
fn ctl_control(control: &ControlPlane, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args([
            "ctl",
            "--control",
            &control.admin.to_string(),
            "--token",
            ADMIN_TOKEN,
        ])
        .args(args)
        .output()
        .expect("run switchyard ctl")
}

/// `switchyard ctl --admin ADDR ARGS...` against a proxy's admin API, with stdout.
fn ctl_proxy(proxy: &Proxy, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["ctl", "--admin", &proxy.admin.to_string()])
        .args(args)
        .output()
        .expect("run switchyard ctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `control` section of a proxy's `/status`.
fn control_link(proxy: &Proxy) -> serde_json::Value {
    let status = crate::support::proxy::admin_get(proxy.admin, "/status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    status["control"].clone()
}

/// Workload `name`'s entry in the control plane's `/status`.
fn workload_status(control: &ControlPlane, name: &str) -> serde_json::Value {
    let status = control.status();
    status["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["workload"] == format!("default/{name}"))
        .cloned()
        .unwrap_or_else(|| panic!("no workload {name} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_show_their_identity_held_weights_clear_and_a_restarted_control_plane_lists_every_proxy()
 {
    let mesh = MeshDir::new();
    let (v1, v2) = (Upstream::echo("v1").await, Upstream::echo("v2").await);
    let canary_wasm = plugin_path("canary");
    for w in ["a", "b"] {
        mesh.write_workload(w, &split_workload(&v1, &v2));
    }
    mesh.write_mesh("", &canary(&canary_wasm, 0, 100), &["a", "b"]);
    let control = ControlPlane::start(&mesh.mesh());
    // Counters exist, at zero, before their first event.
    let metrics = crate::support::proxy::admin_get(control.admin, "/metrics");
    assert!(
        metrics.contains("switchyard_control_identities_issued_total 0"),
        "{metrics}"
    );
    let a = mesh.proxy(control.api, "a");
    let b = mesh.proxy(control.api, "b");
    assert!(answered_by(&a, "v2").await && answered_by(&b, "v2").await);
    let listed = eventually(Duration::from_secs(5), async || control.in_sync(2)).await;
    assert!(listed, "{}", control.status());
    let metrics = crate::support::proxy::admin_get(a.admin, "/metrics");
    for counter in [
        "switchyard_control_bundles_total{result=\"applied\"} 1",
        "switchyard_control_bundles_total{result=\"refused\"} 0",
        "switchyard_control_poll_errors_total 0",
    ] {
        assert!(metrics.contains(counter), "no {counter} in:\n{metrics}");
    }

    // The proxy's own status: its control plane, bundle and identity.
    let link = control_link(&a);
    let expected = workload_status(&control, "a");
    assert_eq!(link["connection"], "connected", "{link}");
    assert_eq!(link["workload"], "default/a", "{link}");
    assert_eq!(
        link["identity"]["spiffe_id"], expected["spiffe_id"],
        "{link}"
    );
    assert!(
        link["identity"]["expires_in_secs"].as_u64() > Some(0),
        "{link}"
    );
    assert_eq!(link["bundle"]["etag"], expected["etag"], "{link}");
    assert_eq!(
        link["mesh_generation"],
        control.status()["reload"]["generation"],
        "{link}"
    );
    let table = ctl_proxy(&a, &["status"]);
    let spiffe_id = expected["spiffe_id"].as_str().expect("a SPIFFE ID");
    assert!(
        table.contains(spiffe_id) && table.contains("connected"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ctl_proxy(&a, &["status", "--json"])).expect("--json is JSON");
    assert_eq!(json["control"]["identity"]["spiffe_id"], spiffe_id);

    // Weights set with ctl are held over mesh.toml's, shown, and cleared.
    let set = ctl_control(&control, &["weights", "canary", "v1=100", "v2=0"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let moved = eventually(Duration::from_secs(2), async || {
        answered_by(&a, "v1").await && answered_by(&b, "v1").await
    })
    .await;
    assert!(moved, "ctl weights did not reach both proxies");
    let held = control.status()["held_weights"].clone();
    assert_eq!(held[0]["plugin"], "canary", "{held}");
    assert_eq!(held[0]["held"]["v1"], 100, "{held}");
    assert_eq!(held[0]["mesh_toml"]["v1"], 0, "{held}");
    let shown = ctl_control(&control, &["status"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("weights held")
            && shown.contains("v1=100 v2=0")
            && shown.contains("v1=0 v2=100"),
        "{shown}"
    );
    // An edit of the same weights in mesh.toml is shadowed, and says so.
    mesh.write_mesh("", &canary(&canary_wasm, 0, 50), &["a", "b"]);
    let logged = eventually(Duration::from_secs(5), async || {
        control
            .logs()
            .contains("mesh.toml changes weights that were set over the admin API")
    })
    .await;
    assert!(logged, "{}", control.logs());
    assert!(answered_by(&a, "v1").await && answered_by(&b, "v1").await);
    let cleared = ctl_control(&control, &["weights", "--clear", "canary"]);
    let said = String::from_utf8_lossy(&cleared.stdout);
    assert!(
        cleared.status.success() && said.contains("cleared"),
        "{said}"
    );
    let back = eventually(Duration::from_secs(2), async || {
        answered_by(&a, "v2").await && answered_by(&b, "v2").await
    })
    .await;
    assert!(
        back,
        "clearing the held weights did not bring back mesh.toml's"
    );
    assert_eq!(control.status()["held_weights"], serde_json::json!([]));

    // The control plane restarts on the same address, with the mesh unchanged: every proxy is
    // listed, in sync, within seconds (each reports when it reconnects).
    let api = control.api;
    control.kill();
    let noticed = eventually(Duration::from_secs(10), async || {
        control_link(&a)["connection"] == "unreachable"
    })
    .await;
    assert!(noticed, "{}", control_link(&a));
    let mesh_text = std::fs::read_to_string(mesh.mesh()).unwrap();
    let pinned = mesh_text.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{api}\""),
        1,
    );
    crate::support::control::replace_file(&mesh.mesh(), &pinned);
    let control = ControlPlane::start(&mesh.mesh());
    assert_eq!(control.api, api);
    let restarted = Instant::now();
    let listed = eventually(Duration::from_secs(8), async || control.in_sync(2)).await;
    assert!(listed, "{}", control.status());
    eprintln!(
        "both proxies listed in sync {:?} after the control plane restarted",
        restarted.elapsed()
    );
    for w in ["a", "b"] {
        let proxies = workload_status(&control, w)["proxies"].clone();
        assert!(proxies[0]["seen_age_secs"].as_u64() < Some(5), "{proxies}");
    }
    let reconnected = eventually(Duration::from_secs(5), async || {
        control_link(&a)["connection"] == "connected"
    })
    .await;
    assert!(reconnected, "{}", control_link(&a));
}

/// What the man in the middle does to the control plane's answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tamper {
    Nothing,
    /// Rewrites the bundle's config (sending every request to v1), keeping its sha256.
    BundleConfig,
    /// Flips a byte of every plugin binary.
    PluginBinary,
}

/// A TLS man in the middle between a proxy and the control plane, with certificates from the
/// mesh CA (as an attacker holding a leaked workload certificate would have): it relays every
/// request and tampers with the answers as told.
struct Mitm {
    addr: std::net::SocketAddr,
    tamper: Arc<std::sync::Mutex<Tamper>>,
}

impl Mitm {
    async fn start(pki: &Pki, control: std::net::SocketAddr, impersonates: &str) -> Self {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let load = |issued: &crate::support::tls::Issued| {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&issued.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            (certs, PrivateKeyDer::from_pem_file(&issued.key).unwrap())
        };
        let (chain, key) = load(&pki.issue("mitm", None, &["127.0.0.1"]));
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.ca()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let (chain, key) = load(&pki.issue("impostor", Some(impersonates), &[]));
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .unwrap(),
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tamper = Arc::new(std::sync::Mutex::new(Tamper::Nothing));
        let mode = Arc::clone(&tamper);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, client, mode) =
                    (acceptor.clone(), Arc::clone(&client), Arc::clone(&mode));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let relay = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (client, mode) = (Arc::clone(&client), Arc::clone(&mode));
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await?.to_bytes();
                                let tcp = tokio::net::TcpStream::connect(control).await.unwrap();
                                let name =
                                    rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                                let tls = tokio_rustls::TlsConnector::from(client)
                                    .connect(name, tcp)
                                    .await
                                    .unwrap();
                                let (mut sender, conn) =
                                    hyper::client::conn::http1::handshake(TokioIo::new(tls))
                                        .await?;
                                tokio::spawn(conn);
                                let path = parts.uri.path().to_owned();
                                let upstream = http::Request::from_parts(parts, Full::new(body));
                                let (parts, body) =
                                    sender.send_request(upstream).await?.into_parts();
                                let mut body = body.collect().await?.to_bytes().to_vec();
                                let tamper = *mode.lock().unwrap();
                                if parts.status == 200 {
                                    if tamper == Tamper::BundleConfig && path == "/v1/bundle" {
                                        let mut bundle: serde_json::Value =
                                            serde_json::from_slice(&body).unwrap();
                                        let config = bundle["config"]
                                            .as_str()
                                            .unwrap()
                                            .replace("\"v2\"", "\"v1\"");
                                        bundle["config"] = config.into();
                                        body = serde_json::to_vec(&bundle).unwrap();
                                    }
                                    if tamper == Tamper::PluginBinary
                                        && path.starts_with("/v1/plugins/")
                                    {
                                        let last = body.len() - 1;
                                        body[last] ^= 0xff;
                                    }
                                }
                                let mut parts = parts;
                                parts.headers.remove(http::header::CONTENT_LENGTH);
                                Ok::<_, hyper::Error>(http::Response::from_parts(
                                    parts,
                                    Full::new(bytes::Bytes::from(body)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), relay)
                        .await;
                });
            }
        });
        Self { addr, tamper }
    }

    fn set(&self, tamper: Tamper) {
        *self.tamper.lock().unwrap() = tamper;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_bundle_or_plugin_is_refused_and_the_last_good_one_keeps_serving() {
    let mesh = MeshDir::new();
    let (v1, v2) = (Upstream::echo("v1").await, Upstream::echo("v2").await);
    // A copy of the canary plugin, so the test can publish a new build of it.
    let canary_wasm = mesh.dir.join("canary.wasm");
    std::fs::copy(plugin_path("canary"), &canary_wasm).unwrap();
    mesh.write_workload("a", &split_workload(&v1, &v2));
    mesh.write_mesh("", &canary(&canary_wasm, 100, 0), &["a"]);
    let control = ControlPlane::start(&mesh.mesh());
    let mitm = Mitm::start(
        &mesh.pki,
        control.api,
        "spiffe://cluster.local/ns/default/sa/a",
    )
    .await;
    let a = mesh.proxy(mitm.addr, "a");
    assert!(answered_by(&a, "v1").await);
    let version = |p: &Proxy| crate::support::proxy::admin_get(p.admin, "/status");

    // A new bundle (all to v2) arrives rewritten (all to v1) with the genuine sha256: refused,
    // reported, and the proxy runs what it ran.
    mitm.set(Tamper::BundleConfig);
    let before = version(&a);
    mesh.write_mesh("", &canary(&canary_wasm, 0, 100), &["a"]);
    assert!(
        a.wait_for_log("does not match its sha256", Duration::from_secs(5))
            .await,
        "{}",
        a.logs()
    );
    let reported = eventually(Duration::from_secs(5), async || {
        let status = control.status();
        let proxy = &status["workloads"][0]["proxies"][0];
        proxy["in_sync"] == false
            && proxy["result"]
                .as_str()
                .is_some_and(|r| r.contains("sha256"))
    })
    .await;
    assert!(
        reported,
        "the refusal was not reported: {}",
        control.status()
    );
    assert!(answered_by(&a, "v1").await);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&before).unwrap()["config_version"],
        serde_json::from_str::<serde_json::Value>(&version(&a)).unwrap()["config_version"],
        "the tampered bundle was applied"
    );

    // A new build of the plugin arrives with a byte flipped: refused the same way.
    mitm.set(Tamper::PluginBinary);
    let mut build = std::fs::read(&canary_wasm).unwrap();
    build.extend_from_slice(&[0, 5, 4, b'n', b'e', b'x', b't']); // a custom section: a new build
    std::fs::write(&canary_wasm, &build).unwrap();
    assert!(
        a.wait_for_log("the binary received has sha256", Duration::from_secs(5))
            .await,
        "{}",
        a.logs()
    );
    assert!(answered_by(&a, "v1").await);

    // Once the man in the middle is gone, the refused bundle is tried again (every poll
    // timeout, 2 s here) and goes through: all traffic to v2, as mesh.toml says.
    mitm.set(Tamper::Nothing);
    let applied = eventually(Duration::from_secs(10), async || control.in_sync(1)).await;
    assert!(applied, "{}", control.status());
    for _ in 0..20 {
        assert!(answered_by(&a, "v2").await, "after the good bundle");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_discovers_endpoints_for_proxies_without_api_access() {
    use crate::support::kube_api::{KubeApi, event, service, service_list, slice, slice_list};
    let mesh = MeshDir::new();
    let (v1, v2) = (Upstream::echo("v1").await, Upstream::echo("v2").await);
    let api = KubeApi::start().await;
    api.set_list(slice_list(
        "100",
        &[slice(
            "orders-a",
            "99",
            v1.addr.port(),
            &[("127.0.0.1", true)],
        )],
    ));
    api.set_services(service_list(
        "100",
        &[service("orders", "97", "10.96.0.10", 80, v1.addr.port())],
    ));
    mesh.write_workload(
        "web",
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"orders\"\n\n[[cluster]]\nname = \"orders\"\nkubernetes_service = \"orders.default:http\"\n",
    );
    mesh.write_mesh("kubernetes_discovery = true", "", &["web"]);
    let control =
        ControlPlane::start_with_env(&mesh.mesh(), &[("KUBECONFIG", api.kubeconfig.as_os_str())]);
    // The proxy has no KUBECONFIG: its endpoints come in its bundle.
    let web = mesh.proxy(control.api, "web");
    assert!(answered_by(&web, "v1").await);
    let effective = std::fs::read_to_string(mesh.dir.join("state-web/config.toml")).unwrap();
    assert!(
        effective.contains("discovered_from = \"orders.default:http\""),
        "{effective}"
    );
    // The Service's cluster IP, for outbound capture to recognize connections to it.
    assert!(
        effective.contains("service_addresses = [\"10.96.0.10:80\"]"),
        "{effective}"
    );

    // The pods move: the control plane's watch sees it and the proxy follows within 2 s.
    api.send(event(
        "MODIFIED",
        slice("orders-a", "101", v2.addr.port(), &[("127.0.0.1", true)]),
    ));
    let moved = eventually(Duration::from_secs(2), async || {
        answered_by(&web, "v2").await
    })
    .await;
    assert!(moved, "control plane:\n{}", control.logs());
    assert_eq!(
        api.watches_opened(),
        1,
        "one watch for the mesh: {:?}",
        api.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_can_authenticate_with_its_kubernetes_service_account_token() {
    use crate::support::kube_api::KubeApi;
    let mesh = MeshDir::new();
    let v1 = Upstream::echo("v1").await;
    let api = KubeApi::start().await;
    api.allow_token("projected-token-of-web", "default", "web");
    api.allow_token("projected-token-of-batch", "default", "batch");
    mesh.write_workload(
        "web",
        &format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"v1\"\n\n[[cluster]]\nname = \"v1\"\nendpoints = [\"{}\"]\n",
            v1.addr
        ),
    );
    // `web` has no bootstrap token: its proxies present their service-account token.
    let text = mesh_toml(&mesh.ca_dir(), "kubernetes_tokens = true", "", &[])
        + "\n[[workload]]\nname = \"web\"\nconfig = \"workloads/web.toml\"\n";
    replace_file(&mesh.mesh(), &text);
    let control =
        ControlPlane::start_with_env(&mesh.mesh(), &[("KUBECONFIG", api.kubeconfig.as_os_str())]);
    let proxy_config = |token: &str| {
        let dir = scratch_dir();
        let path = dir.join("proxy.toml");
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).unwrap();
        std::fs::write(
            &path,
            format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\n\n[control]\nurl = \"https://127.0.0.1:{}\"\nca = \"{}\"\nworkload = \"web\"\ntoken_file = \"{}\"\nstate_dir = \"{}\"\n",
                control.api.port(),
                mesh.pki.ca().display(),
                token_file.display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
        path
    };
    let web = Proxy::start_expecting(proxy_config("projected-token-of-web"), 1);
    assert!(get(web.listener("public"), "/").await.echo_name() == "v1");
    assert!(
        control
            .logs()
            .contains("identity issued spiffe_id=spiffe://cluster.local/ns/default/sa/web")
    );
    assert!(
        api.requests().iter().any(|r| r.contains("tokenreviews")),
        "{:?}",
        api.requests()
    );

    // A valid token of another service account gets no certificate for web, nor for itself
    // (batch is no workload of this mesh): the proxy keeps asking and never serves.
    let mut batch = Command::new(BIN)
        .args(["run", "--config"])
        .arg(proxy_config("projected-token-of-batch"))
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let refused = eventually(Duration::from_secs(10), async || {
        control.logs().matches("identity refused").count() >= 2
    })
    .await;
    let _ = batch.kill();
    let _ = batch.wait();
    assert!(refused, "{}", control.logs());
    assert!(!control.logs().contains("sa/batch"), "{}", control.logs());
}
