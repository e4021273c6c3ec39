//! Swapping config and plugins at run time without failing a request: file rewrites, a
//! Kubernetes-style `..data` flip, SIGHUP, the admin API and `switchyard ctl`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::client::H2Client;
use crate::support::proxy::{admin_get, admin_send, plugin_cache, plugin_path, scratch_dir};
use crate::support::{Proxy, Upstream, eventually, get};

const TOKEN: &str = "reload-test-token-0123";
const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A config with a canary split (`v1_weight` : 100 - `v1_weight`) and a plugin "swappable"
/// loaded from `swappable` (hello.wasm or noop.wasm, to see swaps by the `x-hello` header).
fn config(v1: &Upstream, v2: &Upstream, v1_weight: u32, swappable: &Path, extra: &str) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[runtime]
plugin_cache = "{cache}"

[[listener]]
name = "public"
listen = "127.0.0.1:0"
default_cluster = "v1"
plugins = ["canary", "swappable"]

[[cluster]]
name = "v1"
endpoints = ["{v1}"]

[[cluster]]
name = "v2"
endpoints = ["{v2}"]

[[plugin]]
name = "canary"
path = "{canary}"
[[plugin.config.rules]]
hosts = ["*"]
backends = [ {{ cluster = "v1", weight = {v1_weight} }}, {{ cluster = "v2", weight = {v2_weight} }} ]

[[plugin]]
name = "swappable"
path = "{swappable}"
{extra}
"#,
        cache = plugin_cache().display(),
        v1 = v1.addr,
        v2 = v2.addr,
        canary = plugin_path("canary").display(),
        swappable = swappable.display(),
        v2_weight = 100 - v1_weight,
    )
}

/// Replaces `path` the way careful tools do: write a sibling, then rename over.
fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// A private copy of a built plugin, so a test can change the file.
fn plugin_copy(dir: &Path, name: &str) -> PathBuf {
    let copy = dir.join(format!("{name}.wasm"));
    std::fs::copy(plugin_path(name), &copy).expect("copy plugin");
    copy
}

/// Which backend answered and whether the hello plugin ran.
async fn observe(client: &H2Client) -> (String, bool) {
    let reply = client.get_with("/", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    (reply.echo_name(), reply.header("x-hello").is_some())
}

async fn within_a_second(client: &H2Client, what: &str, wanted: impl Fn(&(String, bool)) -> bool) {
    let started = Instant::now();
    let seen = eventually(Duration::from_secs(1), async || {
        wanted(&observe(client).await)
    })
    .await;
    assert!(
        seen,
        "{what} was not visible within 1 s ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn swaps_under_load_fail_no_request() {
    let v1 = Upstream::echo("v1").await;
    let v2 = Upstream::echo("v2").await;
    let dir = scratch_dir();
    let hello = plugin_copy(&dir, "hello");
    let hello_bytes = std::fs::read(&hello).unwrap();
    let noop_bytes = std::fs::read(plugin_path("noop")).unwrap();
    let proxy = Proxy::start(&config(&v1, &v2, 100, &hello, ""));
    let config_path = proxy.config_path.clone();

    // 8 clients, each on its own connection, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = H2Client::connect(proxy.addr()).await;
        let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        clients.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.try_get_with("/", &[]).await {
                    Ok(reply) if reply.status == StatusCode::OK => {}
                    Ok(reply) => {
                        eprintln!("failed: {} {}", reply.status, reply.text());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    let probe = H2Client::connect(proxy.addr()).await;

    for i in 0..20 {
        // The canary flips between all-v1 and all-v2 by rewriting the config file.
        let v1_weight = if i % 2 == 0 { 0 } else { 100 };
        let expected = if v1_weight == 0 { "v2" } else { "v1" };
        replace_file(
            &config_path,
            config(&v1, &v2, v1_weight, &hello, "").as_bytes(),
        );
        within_a_second(&probe, &format!("config rewrite {i}"), |(name, _)| {
            name == expected
        })
        .await;

        // The swappable plugin flips between hello and noop through the admin API.
        let (bytes, hello_on) = if i % 2 == 0 {
            (&noop_bytes, false)
        } else {
            (&hello_bytes, true)
        };
        let admin = proxy.admin;
        let body = bytes.clone();
        let (status, answer) = tokio::task::spawn_blocking(move || {
            admin_send(admin, "PUT", "/plugins/swappable", Some(TOKEN), &body)
        })
        .await
        .unwrap();
        assert_eq!(status, 200, "swap {i}: {answer}");
        within_a_second(&probe, &format!("plugin swap {i}"), |(_, hello)| {
            *hello == hello_on
        })
        .await;
    }

    // SIGHUP reloads the (unchanged) file; the last swap stays in place.
    let version_before = status_json(&proxy)["config_version"].as_u64().unwrap();
    let status = proxy.reload_by_hangup().await;
    assert!(
        status["last_reload"]["trigger"] == "SIGHUP"
            && status["config_version"].as_u64() > Some(version_before),
        "SIGHUP did not reload: {status}"
    );
    assert_eq!(observe(&probe).await, ("v1".to_owned(), true));

    let remaining = Duration::from_secs(10).saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await; // keep the load on for the full 10 s the issue asks for
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}

    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during swaps");
    assert!(sent > 1_000, "only {sent} requests were sent");
    let metrics = admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains(r#"switchyard_config_reload_total{result="ok"}"#),
        "{metrics}"
    );
}

fn status_json(proxy: &Proxy) -> serde_json::Value {
    serde_json::from_str(&admin_get(proxy.admin, "/status")).expect("status is JSON")
}

#[tokio::test]
async fn a_kubernetes_configmap_update_is_picked_up() {
    let v1 = Upstream::echo("v1").await;
    let v2 = Upstream::echo("v2").await;
    let dir = scratch_dir();
    let hello = plugin_copy(&dir, "hello");
    // The layout the kubelet makes: dir/switchyard.toml -> ..data/switchyard.toml,
    // ..data -> ..<timestamp>/.
    let first = dir.join("..2026_11_23_10_00_00.000000001");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(
        first.join("switchyard.toml"),
        config(&v1, &v2, 100, &hello, ""),
    )
    .unwrap();
    std::os::unix::fs::symlink(first.file_name().unwrap(), dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/switchyard.toml", dir.join("switchyard.toml")).unwrap();
    let proxy = Proxy::start_at(dir.join("switchyard.toml"));
    let client = H2Client::connect(proxy.addr()).await;
    assert_eq!(observe(&client).await.0, "v1");

    // The update: a new timestamped directory, a new ..data link, renamed over the old one.
    let second = dir.join("..2026_11_23_10_05_00.000000002");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(
        second.join("switchyard.toml"),
        config(&v1, &v2, 0, &hello, ""),
    )
    .unwrap();
    std::os::unix::fs::symlink(second.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    let switched = eventually(Duration::from_secs(5), async || {
        observe(&client).await.0 == "v2"
    })
    .await;
    assert!(
        switched,
        "the ..data flip was not picked up; log:\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn bad_config_and_bad_plugins_are_refused_while_the_old_state_serves() {
    let v1 = Upstream::echo("v1").await;
    let v2 = Upstream::echo("v2").await;
    let dir = scratch_dir();
    let hello = plugin_copy(&dir, "hello");
    let good = config(&v1, &v2, 100, &hello, "");
    let proxy = Proxy::start(&good);
    let config_path = proxy.config_path.clone();
    let client = H2Client::connect(proxy.addr()).await;
    let reload = |admin| admin_send(admin, "POST", "/reload", Some(TOKEN), b"");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "invalid TOML",
            "[[listener]\nname = ".to_owned(),
            "switchyard.toml:1:",
        ),
        (
            "a dangling cluster",
            good.replace(
                r#"default_cluster = "v1""#,
                r#"default_cluster = "nowhere""#,
            ),
            "nowhere",
        ),
        (
            "a sha256 mismatch",
            config(
                &v1,
                &v2,
                100,
                &hello,
                &format!(r#"sha256 = "{}""#, "0".repeat(64)),
            ),
            "sha256",
        ),
    ];
    for (what, bad, expected) in cases {
        // Written with a plain write: the file watcher may well try it first; it must refuse too.
        std::fs::write(&config_path, bad).unwrap();
        let (status, answer) = reload(proxy.admin);
        assert_eq!(status, 422, "{what}: {answer}");
        assert!(answer.contains(expected), "{what}: {answer}");
        assert_eq!(
            observe(&client).await,
            ("v1".to_owned(), true),
            "{what}: old state serves"
        );
        let status = status_json(&proxy);
        assert_eq!(status["last_reload"]["result"], "error", "{what}: {status}");
    }

    // A corrupt plugin file on disk, with a good config.
    std::fs::write(&config_path, &good).unwrap();
    std::fs::write(&hello, b"\0asm garbage that is not a module").unwrap();
    let (status, answer) = reload(proxy.admin);
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.contains("swappable") && answer.contains("hello.wasm"),
        "{answer}"
    );
    // And a corrupt binary through the admin API.
    let (status, answer) = admin_send(
        proxy.admin,
        "PUT",
        "/plugins/swappable",
        Some(TOKEN),
        b"not wasm",
    );
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("not a WebAssembly"), "{answer}");
    assert_eq!(
        observe(&client).await,
        ("v1".to_owned(), true),
        "old state serves"
    );

    let metrics = admin_get(proxy.admin, "/metrics");
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"switchyard_config_reload_total{result="error"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(errors >= 5, "{metrics}");
}

#[tokio::test]
async fn a_bad_edit_is_refused_once_and_undoing_it_clears_the_refusal() {
    let v1 = Upstream::echo("v1").await;
    let v2 = Upstream::echo("v2").await;
    let dir = scratch_dir();
    let hello = plugin_copy(&dir, "hello");
    let good = config(&v1, &v2, 100, &hello, "");
    let proxy = Proxy::start(&good);
    let config_path = proxy.config_path.clone();
    let bad = good.replace(
        r#"default_cluster = "v1""#,
        r#"default_cluster = "nowhere""#,
    );

    // As `sed -i` edits: a new file renamed over the config.
    let tmp = config_path.with_extension("sed");
    std::fs::write(&tmp, &bad).unwrap();
    std::fs::rename(&tmp, &config_path).unwrap();
    let refused = eventually(Duration::from_secs(5), async || {
        status_json(&proxy)["last_reload"]["result"] == "error"
    })
    .await;
    assert!(refused, "{}", status_json(&proxy));
    // The same bytes written again are no new change to try.
    std::fs::write(&config_path, &bad).unwrap();

    // Undone: the status says so without a manual reload.
    std::fs::write(&config_path, &good).unwrap();
    let cleared = eventually(Duration::from_secs(5), async || {
        status_json(&proxy)["last_reload"]["result"] == "ok"
    })
    .await;
    let status = status_json(&proxy);
    assert!(cleared, "{status}");
    assert_eq!(
        status["last_reload"]["trigger"], "file (restored)",
        "{status}"
    );
    assert_eq!(
        status["config_version"], 1,
        "nothing was reloaded: {status}"
    );
    let metrics = admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains(r#"switchyard_config_reload_total{result="error"} 1"#),
        "one edit, one refusal:\n{metrics}"
    );
    assert_eq!(
        proxy.logs().matches("reload refused").count(),
        1,
        "{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn a_slow_request_started_before_a_swap_finishes_on_the_old_state() {
    let (slow, mut arrived) = Upstream::announcing(Duration::from_secs(2)).await;
    let v2 = Upstream::echo("v2").await;
    let dir = scratch_dir();
    let hello = plugin_copy(&dir, "hello");
    let proxy = Proxy::start(&config(&slow, &v2, 100, &hello, ""));

    let addr = proxy.addr();
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    arrived
        .recv()
        .await
        .expect("the request reached the slow upstream");

    // The new config drops the slow cluster altogether.
    let new = config(&v2, &v2, 100, &plugin_path("noop"), "");
    std::fs::write(&proxy.config_path, new).unwrap();
    let (status, answer) = admin_send(proxy.admin, "POST", "/reload", Some(TOKEN), b"");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        get(addr, "/").await.echo_name(),
        "v2",
        "new requests use the new config"
    );

    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "finished\n");
}

#[tokio::test]
async fn changes_need_the_admin_token_and_ctl_drives_the_api() {
    let v1 = Upstream::echo("v1").await;
    let v2 = Upstream::echo("v2").await;
    let dir = scratch_dir();
    let hello = plugin_copy(&dir, "hello");
    let proxy = Proxy::start(&config(&v1, &v2, 100, &hello, ""));

    assert_eq!(admin_send(proxy.admin, "POST", "/reload", None, b"").0, 401);
    assert_eq!(
        admin_send(
            proxy.admin,
            "POST",
            "/reload",
            Some("wrong-token-0123456"),
            b""
        )
        .0,
        401
    );
    let config = admin_get(proxy.admin, "/config");
    assert!(
        !config.contains(TOKEN) && config.contains("<redacted>"),
        "{config}"
    );

    let ctl = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("ctl")
            .args(["--admin", &proxy.admin.to_string(), "--token", TOKEN])
            .args(args)
            .output()
            .expect("run switchyard ctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let client = H2Client::connect(proxy.addr()).await;
    for _ in 0..5 {
        observe(&client).await;
    }

    let (ok, table, err) = ctl(&["plugins"]);
    assert!(ok, "{err}");
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("CALLS") && header.contains("P99"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("swappable")), "{table}");

    let noop = plugin_path("noop");
    let (ok, out, err) = ctl(&["swap", "swappable", noop.to_str().unwrap()]);
    assert!(
        ok && out.starts_with("swapped swappable to sha256"),
        "{out}{err}"
    );
    assert!(!observe(&client).await.1, "noop has no x-hello");

    let (ok, out, err) = ctl(&["reload"]);
    assert!(
        ok && out.starts_with("reloaded; config version"),
        "{out}{err}"
    );
    let (ok, out, err) = ctl(&["status", "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(status["last_reload"]["result"], "ok");

    let (ok, _, err) = ctl(&["swap", "nosuch", noop.to_str().unwrap()]);
    assert!(!ok && err.contains("no plugin is named"), "{err}");
}

#[tokio::test]
async fn listeners_come_and_go_and_pooled_connections_survive_a_cluster_change() {
    let v1 = Upstream::echo("v1").await;
    let v2 = Upstream::echo("v2").await;
    let dir = scratch_dir();
    let hello = plugin_copy(&dir, "hello");
    let base = config(&v1, &v2, 100, &hello, "");
    let proxy = Proxy::start(&base);
    let reload = |proxy: &Proxy, config: &str| {
        std::fs::write(&proxy.config_path, config).unwrap();
        let (status, answer) = admin_send(proxy.admin, "POST", "/reload", Some(TOKEN), b"");
        assert_eq!(status, 200, "{answer}");
    };
    let peer =
        |reply: crate::support::client::Reply| reply.json()["peer"].as_str().unwrap().to_owned();
    let first_peer = peer(get(proxy.addr(), "/").await);

    // A second listener on a port of its own, and the cluster's balancer changed.
    let spare = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let with_internal_listener = base.replace(
        "[[cluster]]\nname = \"v1\"\nendpoints",
        &format!(
            "[[listener]]\nname = \"internal\"\nlisten = \"{spare}\"\ndefault_cluster = \"v2\"\n\n[[cluster]]\nname = \"v1\"\nlb = \"least_request\"\nendpoints"
        ),
    );
    assert_ne!(with_internal_listener, base);
    reload(&proxy, &with_internal_listener);
    let reply = get(spare, "/").await;
    assert_eq!(reply.echo_name(), "v2", "the new listener serves");
    assert_eq!(
        peer(get(proxy.addr(), "/").await),
        first_peer,
        "the pooled connection to the endpoint that stayed was kept"
    );

    // And gone again.
    reload(&proxy, &base);
    let closed = eventually(Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(spare).await.is_err()
    })
    .await;
    assert!(closed, "the removed listener still accepts");
    assert_eq!(get(proxy.addr(), "/").await.echo_name(), "v1");
}

#[tokio::test]
async fn files_named_by_a_reload_through_the_api_are_watched_from_then_on() {
    let v1 = Upstream::echo("v1").await;
    let v2 = Upstream::echo("v2").await;
    let first_dir = scratch_dir();
    let proxy = Proxy::start(&config(
        &v1,
        &v2,
        100,
        &plugin_copy(&first_dir, "hello"),
        "",
    ));
    let client = H2Client::connect(proxy.addr()).await;
    assert!(observe(&client).await.1, "hello runs");

    // The config moves the plugin to a directory nobody watched yet; applied through the API.
    let second_dir = scratch_dir();
    let moved = plugin_copy(&second_dir, "hello");
    std::fs::write(&proxy.config_path, config(&v1, &v2, 100, &moved, "")).unwrap();
    let (status, answer) = admin_send(proxy.admin, "POST", "/reload", Some(TOKEN), b"");
    assert_eq!(status, 200, "{answer}");

    // Replacing the file there is now picked up by the watcher alone.
    replace_file(&moved, &std::fs::read(plugin_path("noop")).unwrap());
    let swapped = eventually(Duration::from_secs(5), async || !observe(&client).await.1).await;
    assert!(
        swapped,
        "the new directory is not watched; log:\n{}",
        proxy.logs()
    );
}
