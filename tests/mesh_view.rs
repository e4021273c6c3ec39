//! The mesh view: a control plane and three controlled proxies, a → b → c, with b's fault plugin
//! failing 10% of the calls from a. What the proxies report reaches `ctl stat`, `ctl edges`,
//! `ctl top` and the mesh dashboard, drawn in headless Chromium (a screenshot is kept as
//! target/mesh-view/mesh-view.png), and each proxy's own dashboard charts its recent traffic.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::browser::Session;
use crate::support::control::{ControlPlane, MeshDir};
use crate::support::proxy::plugin_path;
use crate::support::{Proxy, Upstream, eventually, get};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Requests sent from the test client to a.
const REQUESTS: usize = 600;

/// `switchyard ctl --control ADDR ARGS...`: stdout, or a panic with stderr.
fn ctl(control: &ControlPlane, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["ctl", "--control", &control.admin.to_string()])
        .args(args)
        .output()
        .expect("run switchyard ctl");
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ctl_json(control: &ControlPlane, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(control, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn row<'a>(rows: &'a Value, key: &str, value: &str) -> &'a Value {
    rows.as_array()
        .into_iter()
        .flatten()
        .find(|r| r[key] == value)
        .unwrap_or_else(|| panic!("no row with {key} = {value} in {rows}"))
}

/// Starts the mesh: each workload joins once the one it calls is listening.
async fn three_workloads(mesh: &MeshDir, app: &Upstream) -> (ControlPlane, [Proxy; 3]) {
    let fault = format!(
        "[[plugin]]\nname = \"fault\"\npath = \"{}\"\n[[plugin.config.rules]]\nmatch = {{ path_prefix = \"/\" }}\nabort = {{ status = 503, percent = 10.0 }}\n",
        plugin_path("fault-injection").display()
    ) + &format!(
        "\n[[plugin]]\nname = \"canary\"\npath = \"{}\"\n[plugin.config]\n[[plugin.config.rules]]\nhosts = [\"*\"]\nbackends = [{{ cluster = \"b\", weight = 100 }}]\n",
        plugin_path("canary").display()
    );
    let control_extra = "stats_resolution = \"1s\"\nstats_window = \"2m\"";
    mesh.write_workload(
        "c",
        &format!(
            "[[listener]]\nname = \"inbound\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"app\"\n\n[[cluster]]\nname = \"app\"\nendpoints = [\"{}\"]\n",
            app.addr
        ),
    );
    mesh.write_mesh(control_extra, &fault, &["c"]);
    let control = ControlPlane::start(&mesh.mesh());
    let c = mesh.proxy(control.api, "c");

    let joined = async |control: &ControlPlane, n: usize| {
        let ok = eventually(Duration::from_secs(10), async || {
            control.status()["workloads"].as_array().map(Vec::len) == Some(n)
        })
        .await;
        assert!(ok, "the mesh never had {n} workloads:\n{}", control.logs());
    };
    mesh.write_workload(
        "b",
        &format!(
            "[[listener]]\nname = \"inbound\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"c\"\nplugins = [\"fault\"]\n\n[[cluster]]\nname = \"c\"\nendpoints = [\"{}\"]\n",
            c.listener("inbound")
        ),
    );
    mesh.write_mesh(control_extra, &fault, &["c", "b"]);
    joined(&control, 2).await;
    let b = mesh.proxy(control.api, "b");

    mesh.write_workload(
        "a",
        &format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"b\"\nplugins = [\"canary\"]\n\n[[cluster]]\nname = \"b\"\nendpoints = [\"{}\"]\n",
            b.listener("inbound")
        ),
    );
    mesh.write_mesh(control_extra, &fault, &["c", "b", "a"]);
    joined(&control, 3).await;
    let a = mesh.proxy(control.api, "a");
    (control, [a, b, c])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_edges_top_and_the_mesh_dashboard_show_three_workloads_and_the_failing_edge() {
    let mesh = MeshDir::new();
    let app = Upstream::echo("app").await;
    let (control, [a, _b, _c]) = three_workloads(&mesh, &app).await;

    // Traffic over a few seconds, so the charts have more than one slot.
    let public = a.listener("public");
    let mut ok = 0usize;
    for i in 0..REQUESTS {
        let path = ["/api/orders", "/api/users", "/health"][i % 3];
        let reply = get(public, path).await;
        match reply.status.as_u16() {
            200 => ok += 1,
            503 => {}
            other => panic!("unexpected {other}: {}", reply.text()),
        }
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    let failed = REQUESTS - ok;
    assert!(
        (25..=100).contains(&failed),
        "about 10% of {REQUESTS} should fail, {failed} did"
    );

    // Every request is reported within a few report intervals.
    let mut stat = Value::Null;
    let reported = eventually(Duration::from_secs(20), async || {
        stat = ctl_json(&control, &["stat", "--window", "2m"]);
        let requests =
            |w: &str| row(&stat["workloads"], "workload", w)["stats"]["requests"].clone();
        requests("default/a") == REQUESTS
            && requests("default/b") == REQUESTS
            && requests("default/c") == ok
    })
    .await;
    assert!(reported, "the reports never added up: {stat}");
    let workloads = stat["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 3, "{stat}");
    let success =
        |w: &str| row(&stat["workloads"], "workload", w)["stats"]["success_rate"].as_f64();
    let expected = ok as f64 / REQUESTS as f64;
    assert!(
        (success("default/a").unwrap() - expected).abs() < 1e-9,
        "{stat}"
    );
    assert!(
        (success("default/b").unwrap() - expected).abs() < 1e-9,
        "{stat}"
    );
    assert_eq!(success("default/c"), Some(1.0), "{stat}");
    let mtls = |w: &str| row(&stat["workloads"], "workload", w)["stats"]["mtls_share"].as_f64();
    assert_eq!(
        mtls("default/a"),
        Some(0.0),
        "the test client has no mesh identity"
    );
    assert_eq!(mtls("default/b"), Some(1.0), "a calls b over mesh mTLS");
    assert_eq!(mtls("default/c"), Some(1.0));
    let a_row = row(&stat["workloads"], "workload", "default/a");
    assert_eq!(a_row["proxies"], 1);
    assert!(
        a_row["stats"]["p99_ms"].as_f64().is_some_and(|p| p > 0.0),
        "{a_row}"
    );

    // Two edges between workloads, with both identities; the one into b fails 10%.
    let edges = ctl_json(&control, &["edges", "--window", "2m"]);
    let meshed: Vec<&Value> = edges["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["destination"].is_null())
        .collect();
    assert_eq!(meshed.len(), 2, "{edges}");
    let a_b = row(&edges["edges"], "source", "default/a");
    assert_eq!(a_b["destination"], "default/b");
    assert_eq!(
        a_b["destination_spiffe_id"],
        "spiffe://cluster.local/ns/default/sa/b"
    );
    assert_eq!(
        a_b["source_spiffe_id"],
        "spiffe://cluster.local/ns/default/sa/a"
    );
    assert_eq!(a_b["mtls"], true);
    assert_eq!(a_b["stats"]["requests"], REQUESTS);
    assert!(
        (a_b["stats"]["success_rate"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{a_b}"
    );
    let b_c = meshed
        .iter()
        .find(|e| e["source"] == "default/b")
        .expect("b → c");
    assert_eq!(b_c["destination"], "default/c");
    assert_eq!(b_c["stats"]["requests"], ok, "aborted calls never left b");
    assert_eq!(b_c["stats"]["success_rate"], 1.0);
    // c's calls to its app are outside the mesh: listed with no destination workload.
    let c_app = row(&edges["edges"], "source", "default/c");
    assert!(
        c_app["destination"].is_null() && c_app["cluster"] == "app",
        "{c_app}"
    );

    // The tables people read.
    let table = ctl(&control, &["stat", "--window", "2m"]);
    assert!(table.starts_with("WORKLOAD"), "{table}");
    for w in ["default/a", "default/b", "default/c"] {
        assert!(table.contains(w), "{table}");
    }
    assert!(
        table.contains(&format!("{:.2}%", expected * 100.0)),
        "{table}"
    );
    let table = ctl(&control, &["edges", "--window", "2m"]);
    assert_eq!(
        table.lines().filter(|l| l.starts_with("default/")).count(),
        2,
        "{table}"
    );
    assert!(
        table.contains("spiffe://cluster.local/ns/default/sa/b"),
        "{table}"
    );
    assert!(
        table.contains("1 more to clusters outside the mesh"),
        "{table}"
    );

    // The busiest paths: each of a's three got a third of the requests.
    let top = ctl_json(&control, &["top", "--window", "2m"]);
    let orders = top["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["workload"] == "default/a" && p["path"] == "/api/orders")
        .unwrap_or_else(|| panic!("{top}"));
    assert_eq!(orders["stats"]["requests"], REQUESTS / 3);
    assert_eq!(orders["method"], "GET");
    assert!(ctl(&control, &["top", "--window", "2m"]).contains("/api/users"));

    // The canary split a's plugin runs: its configured weight beside what went where.
    let view: Value =
        serde_json::from_str(&crate::support::proxy::admin_get(control.admin, "/mesh"))
            .expect("/mesh is JSON");
    let split = &view["splits"][0];
    assert_eq!(split["plugin"], "canary", "{view}");
    assert_eq!(split["backends"][0]["cluster"], "b");
    assert_eq!(split["backends"][0]["configured_share"], 1.0);
    assert_eq!(split["backends"][0]["live_share"], 1.0);
    assert_eq!(split["backends"][0]["requests"], REQUESTS, "{split}");
    assert!(
        view["out_of_sync"].as_array().is_some_and(Vec::is_empty),
        "{view}"
    );

    // The mesh dashboard: the graph has the two edges and marks the failing one; every
    // workload's charts have points.
    let session = Session::start().await;
    let browser = &session.browser;
    browser
        .go(&format!("http://{}/mesh/dashboard", control.admin))
        .await;
    let mut drawn = Value::Null;
    let shown = eventually(Duration::from_secs(30), async || {
        drawn = browser
            .run(
                "const edges = [...document.querySelectorAll('#graph .edge')]; \
                 const panels = [...document.querySelectorAll('#workloads .workload')]; \
                 const points = el => (el.getAttribute('points') || '').trim().split(/\\s+/).length; \
                 return { edges: edges.map(e => ({ from: e.dataset.source, to: e.dataset.destination, \
                   failing: e.classList.contains('failing'), mtls: !!e.querySelector('.lock'), \
                   label: e.textContent })), \
                   nodes: document.querySelectorAll('#graph .node').length, \
                   panels: panels.map(p => ({ workload: p.dataset.workload, \
                     rps: Math.max(0, ...[...p.querySelectorAll('polyline.rps')].map(points)), \
                     success: p.querySelectorAll('.success').length, \
                     latency: p.querySelectorAll('polyline.p99, circle.p99').length })), \
                   status: document.getElementById('status').textContent };",
            )
            .await;
        drawn["edges"].as_array().is_some_and(|e| e.len() == 2)
            && drawn["panels"].as_array().is_some_and(|p| p.len() == 3)
    })
    .await;
    assert!(shown, "the mesh dashboard never drew the graph: {drawn}");
    assert_eq!(drawn["nodes"], 3, "{drawn}");
    let failing: Vec<&Value> = drawn["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["failing"] == true)
        .collect();
    assert_eq!(failing.len(), 1, "{drawn}");
    assert_eq!(failing[0]["from"], "default/a");
    assert_eq!(failing[0]["to"], "default/b");
    assert!(
        drawn["edges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["mtls"] == true),
        "a lock on mTLS edges: {drawn}"
    );
    assert!(
        failing[0]["label"].as_str().unwrap().contains("rps"),
        "{drawn}"
    );
    for panel in drawn["panels"].as_array().unwrap() {
        assert!(panel["rps"].as_u64().unwrap() > 1, "{panel}");
        assert!(panel["success"].as_u64().unwrap() > 0, "{panel}");
        assert!(panel["latency"].as_u64().unwrap() > 0, "{panel}");
    }
    let screenshot = session.keep_screenshot("mesh-view", "mesh-view.png").await;
    eprintln!("mesh view screenshot: {}", screenshot.display());

    // a's own dashboard charts what it served over its recent window.
    browser.go(&format!("http://{}/dashboard", a.admin)).await;
    let charted = eventually(Duration::from_secs(20), async || {
        let lines = browser
            .run("return document.querySelectorAll('#history polyline.rps').length")
            .await;
        lines.as_u64().is_some_and(|n| n > 0)
    })
    .await;
    assert!(charted, "the proxy's dashboard drew no history");
    session
        .keep_screenshot("mesh-view", "proxy-dashboard.png")
        .await;
    let errors = session.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
