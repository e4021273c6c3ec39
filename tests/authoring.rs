//! The path a new plugin author takes, with the real tools: `switchyard plugin new`, the native
//! `cargo test` it comes with, `switchyard plugin build`, `switchyard validate`, traffic through
//! the proxy on the example config it writes, then an edit, a rebuild and `ctl swap` under load
//! with no failed request.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::proxy::{plugin_cache, scratch_dir};
use crate::support::{Proxy, Upstream, eventually, get_with};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Where the new crate builds: inside the workspace's target, kept between runs.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/authoring")
}

fn switchyard(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run switchyard")
}

fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `switchyard plugin build` in `dir`: the .wasm it printed.
fn build(dir: &Path) -> PathBuf {
    let printed = succeeded("plugin build", &switchyard(&["plugin", "build"], dir));
    let wasm = PathBuf::from(printed.trim().lines().last().expect("a path"));
    assert!(
        wasm.exists(),
        "{} was printed but not built",
        wasm.display()
    );
    wasm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_goes_from_plugin_new_to_a_swap_under_load() {
    let scratch = scratch_dir();
    let dir = scratch.join("team-gate");
    succeeded(
        "plugin new",
        &switchyard(&["plugin", "new", "team-gate"], &scratch),
    );
    // The versions this workspace already resolved, so the build needs nothing new fetched.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .expect("copy Cargo.lock");

    // Its native tests pass as written.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tested = Command::new(&cargo)
        .arg("test")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run cargo test");
    let said = succeeded("cargo test in the new crate", &tested);
    assert!(said.contains("3 passed"), "{said}");

    // Built, copied where the proxy loads it from, and validated on the example config.
    let built = build(&dir);
    let deployed = dir.join("deployed.wasm");
    std::fs::copy(&built, &deployed).unwrap();
    let app = Upstream::echo("app").await;
    let example = std::fs::read_to_string(dir.join("switchyard.toml")).unwrap();
    let token = example.parse::<toml::Table>().unwrap()["admin"]["token"]
        .as_str()
        .expect("the example config has an admin token")
        .to_owned();
    let config = example
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9001", &app.addr.to_string())
        .replace(
            "target/wasm32-unknown-unknown/plugin/team_gate.wasm",
            &deployed.display().to_string(),
        );
    let config = format!(
        "[runtime]\nplugin_cache = \"{}\"\n\n{config}",
        plugin_cache().display()
    );
    let config_path = dir.join("test.toml");
    std::fs::write(&config_path, config).unwrap();
    let config_arg = config_path.display().to_string();
    succeeded("validate", &switchyard(&["validate", &config_arg], &dir));

    // Traffic through the proxy.
    let proxy = Proxy::start_at(config_path);
    let public = proxy.listener("public");
    assert_eq!(get_with(public, "/", &[]).await.status, 400);
    let greeted = get_with(public, "/", &[("x-team", "payments")]).await;
    assert_eq!(greeted.status, 200);
    assert_eq!(greeted.header("x-greeting"), Some("hello, payments"));

    // An edit, rebuilt, swapped in under load: no request fails.
    let lib = dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited = source.replace("\"{}, {team}\"", "\"{}, team {team}\"");
    assert_ne!(source, edited, "the template changed; update this edit");
    std::fs::write(&lib, edited).unwrap();
    let rebuilt = build(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if get_with(public, "/", &[("x-team", "payments")])
                    .await
                    .status
                    != 200
                {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let admin = proxy.admin.to_string();
    let rebuilt_arg = rebuilt.display().to_string();
    let swap = [
        "ctl",
        "--admin",
        &admin,
        "--token",
        &token,
        "swap",
        "team-gate",
        &rebuilt_arg,
    ];
    let swapped = succeeded("ctl swap", &switchyard(&swap, &dir));
    assert!(swapped.contains("swapped team-gate"), "{swapped}");
    let live = eventually(Duration::from_secs(5), async || {
        get_with(public, "/", &[("x-team", "payments")])
            .await
            .header("x-greeting")
            == Some("hello, team payments")
    })
    .await;
    assert!(live, "the swapped plugin is not serving");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the swap"
    );
    assert!(sent > 0);
}
