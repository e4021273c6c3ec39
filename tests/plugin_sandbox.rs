//! Misbehaving and broken plugins: deadlines, memory caps, traps, failure policy, load errors.

use std::time::Duration;

use http::StatusCode;

use crate::support::config::{cluster, listener};
use crate::support::proxy::{plugin_path, refused, scratch_dir};
use crate::support::{Proxy, Upstream, get};

fn config(upstream: &Upstream, plugin_config: &str, on_error: &str) -> String {
    let plugin = format!(
        "[[plugin]]\nname = \"bad\"\npath = \"{}\"\non_error = \"{on_error}\"\n\
         limits = {{ time = \"20ms\", memory = \"8MiB\" }}\nconfig = {{ {plugin_config} }}\n",
        plugin_path("testkit").display()
    );
    listener("public", "app", &["bad"])
        + &listener("clean", "app", &[])
        + &cluster("app", &[upstream.addr], "")
        + &plugin
}

async fn assert_policy(misbehave: &str) {
    let app = Upstream::echo("app").await;

    let closed = Proxy::start(&config(
        &app,
        &format!("misbehave = \"{misbehave}\""),
        "fail_closed",
    ));
    let reply = get(closed.listener("public"), "/").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("x-switchyard-error"), Some("plugin bad"));
    assert!(
        reply.text().contains("plugin \"bad\" failed"),
        "{}",
        reply.text()
    );
    // The proxy keeps serving: other listeners, and the same one again.
    assert_eq!(
        get(closed.listener("clean"), "/").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(closed.listener("public"), "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let open = Proxy::start(&config(
        &app,
        &format!("misbehave = \"{misbehave}\""),
        "fail_open",
    ));
    let reply = get(open.listener("public"), "/").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "fail_open skips the plugin: {}",
        reply.text()
    );
    assert_eq!(reply.echo_name(), "app");
}

#[tokio::test]
async fn a_hook_that_answers_an_err_is_handled_by_the_failure_policy() {
    assert_policy("fail").await;
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&config(&app, r#"misbehave = "fail""#, "fail_closed"));
    get(proxy.listener("public"), "/").await;
    let logged = proxy
        .wait_for_log("hook failed: ", Duration::from_secs(5))
        .await;
    assert!(
        logged && proxy.logs().contains("not a header name"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_cpu_deadline() {
    assert_policy("spin").await;
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_cap() {
    assert_policy("allocate").await;
}

#[tokio::test]
async fn a_trap_fails_one_request_and_the_next_one_works() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&config(
        &app,
        r#"misbehave = "trap-every-other""#,
        "fail_closed",
    ));

    let statuses: Vec<StatusCode> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(get(proxy.listener("public"), "/").await.status);
        }
        out
    };

    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let failed = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!((ok, failed), (2, 2), "{statuses:?}");
    let metrics = crate::support::proxy::admin_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains(r#"switchyard_plugin_hook_errors_total{plugin="bad",kind="trap"} 2"#),
        "{metrics}"
    );
    // The log says why, in one line with the panic's message and place, once a second at most.
    let logged = proxy
        .wait_for_log("testkit traps on odd calls", Duration::from_secs(5))
        .await;
    let logs = proxy.logs();
    assert!(logged, "{logs}");
    assert!(
        logs.contains("panicked at tests/plugins/testkit/src/lib.rs:")
            && !logs.contains("wasm backtrace"),
        "{logs}"
    );
    assert_eq!(logs.matches("plugin failed").count(), 1, "{logs}");
    // ... and the admin API keeps the last one.
    let plugins = crate::support::proxy::admin_get(proxy.admin, "/plugins");
    let plugins: serde_json::Value = serde_json::from_str(&plugins).unwrap();
    let last = &plugins[0]["last_failure"];
    assert_eq!(last["hook"], "on_request", "{plugins}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("testkit traps on odd calls")),
        "{plugins}"
    );
    // ... which `switchyard ctl plugins` shows under its table.
    let ctl = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["ctl", "--admin", &proxy.admin.to_string(), "plugins"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&ctl.stdout);
    assert!(
        table.contains("last failure of bad:")
            && table.contains("in on_request: trapped: panicked at"),
        "{table}"
    );
}

#[tokio::test]
async fn a_spinning_plugin_does_not_stall_other_requests() {
    // While fail_closed requests burn their 20 ms deadline, clean requests keep flowing.
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&config(&app, r#"misbehave = "spin""#, "fail_closed"));
    let bad = proxy.listener("public");
    let spinners: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { get(bad, "/").await.status }))
        .collect();

    let started = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(
            get(proxy.listener("clean"), "/").await.status,
            StatusCode::OK
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for s in spinners {
        assert_eq!(s.await.expect("task"), StatusCode::SERVICE_UNAVAILABLE);
    }
}

/// The context switches of the proxy's epoch ticker thread so far.
fn ticker_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the proxy's threads");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        // The kernel keeps 15 bytes of a thread name: "switchyard-epoc".
        if comm.trim() == &"switchyard-epoch"[..15] {
            let status = std::fs::read_to_string(task.path().join("status")).expect("status");
            return status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse().ok())
                .expect("voluntary_ctxt_switches");
        }
    }
    panic!("the proxy has no epoch ticker thread");
}

#[tokio::test]
async fn an_idle_proxy_stops_ticking_and_a_hook_that_spins_after_the_pause_is_still_stopped() {
    let app = Upstream::echo("app").await;
    let proxy = Proxy::start(&config(&app, r#"misbehave = "spin""#, "fail_closed"));

    // Ticking, the thread wakes every millisecond; parked, not at all.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let before = ticker_switches(proxy.pid());
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ticker_switches(proxy.pid()) == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the epoch ticker of an idle proxy never stopped"
        );
    }

    // The first hook wakes it, and its CPU deadline still fires.
    let reply = tokio::time::timeout(Duration::from_secs(10), get(proxy.listener("public"), "/"))
        .await
        .expect("a spinning hook after the ticker parked was never stopped");
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("x-switchyard-error"), Some("plugin bad"));
}

fn one_plugin(path: &str, extra: &str) -> String {
    listener("public", "app", &["p"])
        + &cluster("app", &["127.0.0.1:9"], "")
        + &format!("[[plugin]]\nname = \"p\"\npath = \"{path}\"\n{extra}\n")
}

/// Why the proxy refuses to start with the hello plugin configured with `extra`.
fn hello_refused(extra: &str) -> String {
    refused(&one_plugin(
        &plugin_path("hello").display().to_string(),
        extra,
    ))
}

#[test]
fn a_file_that_is_not_wasm_is_refused_naming_the_plugin_and_file() {
    let file = scratch_dir().join("not-a-plugin.wasm");
    std::fs::write(&file, b"#!/bin/sh\necho hi\n").expect("write");

    let stderr = refused(&one_plugin(&file.display().to_string(), ""));

    assert!(stderr.contains("plugin \"p\""), "{stderr}");
    assert!(stderr.contains("not-a-plugin.wasm"), "{stderr}");
    assert!(
        stderr.contains("is not a WebAssembly component or module"),
        "{stderr}"
    );
}

#[test]
fn a_cpu_limit_shorter_than_the_deadline_check_is_refused_naming_the_key() {
    let stderr = hello_refused("limits = { time = \"0ms\" }");
    assert!(
        stderr.contains("plugin[0].limits.time")
            && stderr.contains("\"0ms\" is shorter than 1ms")
            && stderr.contains("expected at least 1ms"),
        "{stderr}"
    );
}

#[test]
fn a_core_module_without_the_plugin_world_is_refused() {
    let file = scratch_dir().join("bare.wasm");
    // The smallest valid core module: magic and version, nothing else.
    std::fs::write(&file, b"\0asm\x01\0\0\0").expect("write");

    let stderr = refused(&one_plugin(&file.display().to_string(), ""));

    assert!(
        stderr.contains("does not fit the switchyard:plugin@0.1.0 `filter` world"),
        "{stderr}"
    );
    assert!(stderr.contains("bare.wasm"), "{stderr}");
}

#[test]
fn a_sha256_mismatch_is_refused() {
    let stderr = hello_refused(&format!("sha256 = \"{}\"", "0".repeat(64)));

    assert!(stderr.contains("but the config pins 0000"), "{stderr}");
    assert!(stderr.contains("plugin \"p\""), "{stderr}");
}

#[test]
fn bad_plugin_config_is_refused_naming_the_field() {
    let stderr = hello_refused("[plugin.config]\ngreeting = 42\n");

    assert!(
        stderr.contains("plugin \"p\" refused its config"),
        "{stderr}"
    );
    assert!(
        stderr.contains("plugin[0].config.greeting: invalid type: integer `42`"),
        "{stderr}"
    );
}

/// A config file `name` in the scratch directory: one listener to `app` whose only plugin tags
/// requests (`x-chain: tag`).
fn tagging_config(name: &str, app: &Upstream, tag: &str) -> std::path::PathBuf {
    let path = scratch_dir().join(name);
    let plugin = format!(
        "[[plugin]]\nname = \"tag\"\npath = \"{}\"\nconfig = {{ tag = \"{tag}\" }}\n",
        plugin_path("testkit").display()
    );
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\nplugin_cache = \"{}\"\n{}{}{plugin}",
        crate::support::proxy::plugin_cache().display(),
        listener("public", "app", &["tag"]),
        cluster("app", &[app.addr], "")
    );
    std::fs::write(&path, &text).unwrap();
    path
}

#[tokio::test]
async fn the_instance_pool_is_sized_by_an_environment_variable() {
    // Each slot reserves address space for a plugin's largest memory; a smaller pool is what
    // lets the proxy run where that space is limited (`ulimit -v`, valgrind).
    let app = Upstream::echo("app").await;
    let path = tagging_config("slots.toml", &app, "small-pool");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(&path)
        .env("SWITCHYARD_PLUGIN_SLOTS", "lots")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(r#"SWITCHYARD_PLUGIN_SLOTS="lots": expected a whole number of instance slots from 4 to 4096"#),
        "{stderr}"
    );

    let slots = std::ffi::OsStr::new("16");
    let proxy = Proxy::start_with_env(path, 1, &[("SWITCHYARD_PLUGIN_SLOTS", slots)]);
    let reply = get(proxy.listener("public"), "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-chain"], "small-pool");
    assert!(!proxy.logs().contains(BOUNDS_CHECKED), "{}", proxy.logs());
}

/// What the proxy logs when plugins' memories cannot have 4 GiB of address space each.
const BOUNDS_CHECKED: &str = "plugins' code checks bounds instead";

#[tokio::test]
async fn where_address_space_is_short_plugins_run_with_bounds_checks() {
    // The default pool reserves ~2 TiB (4 GiB for each of 512 memories, so plugins' code needs
    // no bounds checks); under a 200 GiB limit the proxy reserves 256 MiB for each instead.
    let app = Upstream::echo("app").await;
    let path = tagging_config("short.toml", &app, "checked");

    let proxy = Proxy::start_in_address_space(path, 1, 200);
    assert!(proxy.logs().contains(BOUNDS_CHECKED), "{}", proxy.logs());
    let reply = get(proxy.listener("public"), "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-chain"], "checked");
}
