//! The deployment files under deploy/ stay in step with the CLI: every YAML document parses, and
//! every command line they give the switchyard image (container args, probe commands, the
//! Dockerfile's CMD) is accepted by the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

fn strings(list: &Yaml) -> Option<Vec<String>> {
    list.as_vec()?
        .iter()
        .map(|item| match item {
            Yaml::String(s) => Some(s.clone()),
            Yaml::Integer(i) => Some(i.to_string()),
            _ => None,
        })
        .collect()
}

/// Every switchyard command line in a YAML tree: the `args` of containers running the switchyard
/// image, and `command`s (probes) that start with `switchyard`.
fn command_lines(node: &Yaml, found: &mut Vec<Vec<String>>) {
    match node {
        Yaml::Hash(map) => {
            let image = map
                .get(&Yaml::String("image".into()))
                .and_then(Yaml::as_str);
            if image.is_some_and(|i| i.starts_with("switchyard"))
                && let Some(args) = map.get(&Yaml::String("args".into())).and_then(strings)
            {
                found.push(args);
            }
            if let Some(command) = map.get(&Yaml::String("command".into())).and_then(strings)
                && command.first().is_some_and(|c| c.ends_with("switchyard"))
            {
                found.push(command[1..].to_vec());
            }
            for value in map.values() {
                command_lines(value, found);
            }
        }
        Yaml::Array(items) => items.iter().for_each(|item| command_lines(item, found)),
        _ => {}
    }
}

/// The Dockerfile's default command (`CMD ["run", ...]`).
fn dockerfile_cmd() -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("deploy/Dockerfile");
    let line = text
        .lines()
        .find(|l| l.starts_with("CMD "))
        .expect("the Dockerfile has a CMD");
    serde_json::from_str(line.trim_start_matches("CMD ")).expect("CMD in exec (JSON) form")
}

/// Checks one command line against the binary: its subcommand exists, every `--flag` it uses
/// is one that subcommand documents, and `iptables` lines (without --apply) actually run.
fn check_against_cli(args: &[String], origin: &str) {
    let subcommand: Vec<&str> = args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    assert!(
        !subcommand.is_empty(),
        "{origin}: no subcommand in {args:?}"
    );
    let help = Command::new(BIN)
        .args(&subcommand)
        .arg("--help")
        .output()
        .expect("run switchyard");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success(),
        "{origin}: `switchyard {}` is not a command: {}",
        subcommand.join(" "),
        String::from_utf8_lossy(&help.stderr)
    );
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let flag = flag.split('=').next().unwrap_or(flag);
        assert!(
            text.contains(flag),
            "{origin}: `switchyard {}` has no {flag}:\n{text}",
            subcommand.join(" ")
        );
    }
    if subcommand == ["iptables"] {
        let dry_run: Vec<&String> = args.iter().filter(|a| *a != "--apply").collect();
        let out = Command::new(BIN).args(dry_run).output().expect("run");
        assert!(
            out.status.success(),
            "{origin}: {args:?} refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("SWITCHYARD_REDIRECT"));
    }
}

#[test]
fn every_manifest_parses_and_its_command_lines_match_the_cli() {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    assert!(
        files.len() >= 2,
        "expected the sidecar and gateway manifests: {files:?}"
    );
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read manifest");
        let docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
        for doc in &docs {
            let mut lines = Vec::new();
            command_lines(doc, &mut lines);
            for args in lines {
                check_against_cli(&args, &file.display().to_string());
                checked += 1;
            }
        }
    }
    check_against_cli(&dockerfile_cmd(), "deploy/Dockerfile");
    // The sidecar patch (init container, proxy, probe) and the gateway (proxy).
    assert!(checked >= 4, "only {checked} command lines found");
}

#[test]
fn the_checks_catch_a_flag_the_cli_does_not_have() {
    let result = std::panic::catch_unwind(|| {
        check_against_cli(
            &["iptables".into(), "--inbound-prt".into(), "15006".into()],
            "test",
        )
    });
    assert!(result.is_err(), "a misspelled flag passed the check");
}

/// The control plane manifest's mesh.toml and workload config (its ConfigMap) are a mesh the
/// real control plane accepts, with the paths the pod mounts pointed at test files and the
/// Kubernetes API played by a local one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_manifest_holds_a_mesh_the_control_plane_serves() {
    let api = crate::support::kube_api::KubeApi::start().await;
    let text = std::fs::read_to_string(deploy_dir().join("k8s/control-plane.yaml"))
        .expect("deploy/k8s/control-plane.yaml");
    let docs = YamlLoader::load_from_str(&text).expect("valid YAML");
    let data = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .map(|d| &d["data"])
        .expect("a ConfigMap");
    let pki = crate::support::tls::Pki::new();
    let dir = crate::support::proxy::scratch_dir();
    let plugins = crate::support::proxy::plugin_path("canary");
    let plugins = plugins.parent().expect("plugins dir");
    for (name, content) in data.as_hash().expect("data is a map") {
        let name = name.as_str().expect("key");
        let content = content
            .as_str()
            .expect("text")
            .replace("0.0.0.0:15012", "127.0.0.1:0")
            .replace("127.0.0.1:15011", "127.0.0.1:0")
            .replace(
                "/etc/switchyard-ca",
                &pki.dir.join("ca").display().to_string(),
            )
            .replace(
                "/var/cache/switchyard",
                &crate::support::proxy::plugin_cache().display().to_string(),
            )
            .replace(
                "/usr/local/lib/switchyard/plugins",
                &plugins.display().to_string(),
            );
        std::fs::write(dir.join(name), content).unwrap();
    }
    let control = crate::support::control::ControlPlane::start_with_env(
        &dir.join("mesh.toml"),
        &[("KUBECONFIG", api.kubeconfig.as_os_str())],
    );
    // Each Service was listed before the first bundles were rendered.
    for service in ["orders-v1", "orders-v2"] {
        let selector = format!("service-name%3D{service}&");
        assert!(
            api.requests().iter().any(|r| r.contains(&selector)),
            "{service} is not watched: {:?}",
            api.requests()
        );
    }
    let status = control.status();
    assert_eq!(
        status["workloads"][0]["workload"], "default/orders",
        "{status}"
    );
    assert!(status["workloads"][0]["etag"].is_string(), "{status}");
}
