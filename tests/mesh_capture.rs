//! Transparent sidecar capture across two network namespaces ("pods" joined by a veth pair):
//! a client in pod A calls the service's address in pod B as if there were no mesh; the rules
//! from `switchyard iptables --apply` send the connection through pod A's sidecar (outbound,
//! original destination), which speaks mTLS to pod B's sidecar (inbound, client certificate
//! required), which hands it to the service. Needs root (namespaces, iptables); skipped with a
//! message otherwise.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::proxy::scratch_dir;
use crate::support::tls::{Issued, Pki};
use crate::support::unprivileged::{reachable_by_everyone, share, shared_scratch_dir};
use crate::support::{Killed, prometheus_value, run_ok};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// The sidecars run as this user, which the capture rules leave alone (Istio uses 1337 too).
const PROXY_UID: &str = "1337";
const POD_A_IP: &str = "10.77.0.1";
const POD_B_IP: &str = "10.77.0.2";

/// Why this test cannot run here, if it cannot.
fn unsupported() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: network namespaces and iptables need root".into());
    }
    for tool in ["ip", "iptables-restore", "setpriv", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn run(args: &[&str]) {
    run_ok(Command::new(args[0]).args(&args[1..]));
}

/// Two namespaces joined by a veth pair; deleted (with everything in them) on drop.
struct Pods {
    a: String,
    b: String,
}

impl Pods {
    fn create() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "{}{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let pods = Self {
            a: format!("sy{id}a"),
            b: format!("sy{id}b"),
        };
        run(&["ip", "netns", "add", &pods.a]);
        run(&["ip", "netns", "add", &pods.b]);
        let (veth_a, veth_b) = (format!("sy{id}va"), format!("sy{id}vb"));
        run(&[
            "ip", "link", "add", &veth_a, "type", "veth", "peer", "name", &veth_b,
        ]);
        for (ns, veth, ip) in [(&pods.a, &veth_a, POD_A_IP), (&pods.b, &veth_b, POD_B_IP)] {
            run(&["ip", "link", "set", veth, "netns", ns]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                veth,
            ]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "link", "set", veth, "up"]);
        }
        pods
    }

    /// Runs a command inside namespace `ns` and returns its stdout.
    fn exec(ns: &str, args: &[&str]) -> Result<String, String> {
        let output = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Starts a long-running command inside `ns`, optionally as the proxy's user.
    fn spawn(ns: &str, as_proxy: bool, args: &[&str], log: &Path) -> Killed {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]);
        if as_proxy {
            command.args([
                "setpriv",
                &format!("--reuid={PROXY_UID}"),
                &format!("--regid={PROXY_UID}"),
                "--clear-groups",
            ]);
        }
        let log = std::fs::File::create(log).expect("log file");
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        Killed(child)
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Two pods with capture rules, a service in pod B and both sidecars started: pod A's outbound
/// capture listener is what `outbound` returns (TOML for one `[[listener]]` plus anything else
/// sidecar A needs; it is given the shared directory to put files the sidecar reads), pod B's
/// inbound listener is TCP with mTLS required. The sidecars run as their own user, which may not
/// reach the clone (a 0700 home directory), so they get copies of everything they read in a
/// directory every user can reach.
struct Mesh {
    pods: Pods,
    dir: std::path::PathBuf,
    _processes: Vec<Killed>,
}

impl Mesh {
    async fn start(outbound: impl FnOnce(&Path) -> String) -> Self {
        let dir = shared_scratch_dir();
        let bin = share(Path::new(BIN), &dir.join("switchyard"));
        let bin = bin.to_str().expect("UTF-8 path");
        let pki = Pki::new();
        let share_issued = |name: &str, issued: Issued| Issued {
            cert: share(&issued.cert, &dir.join(name).join("cert.pem")),
            key: share(&issued.key, &dir.join(name).join("key.pem")),
        };
        let server = share_issued(
            "svc",
            pki.issue(
                "svc",
                Some("spiffe://mesh.local/ns/default/sa/svc"),
                &["svc.default.mesh"],
            ),
        );
        let client = share_issued(
            "app",
            pki.issue("app", Some("spiffe://mesh.local/ns/default/sa/app"), &[]),
        );
        let ca = share(&pki.ca(), &dir.join("ca.pem"));
        let outbound = outbound(&dir);
        // The sidecars write their compiled-plugin cache.
        std::fs::create_dir_all(dir.join("cache")).expect("cache dir");
        run(&["chmod", "a+rwx", &dir.join("cache").display().to_string()]);

        let sidecar_a = dir.join("a.toml");
        std::fs::write(
            &sidecar_a,
            format!(
                "[admin]\nlisten = \"127.0.0.1:9901\"\n\n[runtime]\nplugin_cache = \"{}\"\n\n{outbound}\n\n[[cluster]]\nname = \"svc\"\nendpoints = [\"{POD_B_IP}:80\"]\nservice_addresses = [\"{POD_B_IP}:80\"]\n[cluster.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_name = \"svc.default.mesh\"\nspiffe_id = \"spiffe://mesh.local/ns/default/sa/svc\"\n",
                dir.join("cache").display(),
                ca.display(),
                client.cert.display(),
                client.key.display()
            ),
        )
        .expect("write config");
        let sidecar_b = dir.join("b.toml");
        std::fs::write(
            &sidecar_b,
            format!(
                "[admin]\nlisten = \"127.0.0.1:9901\"\n\n[[listener]]\nname = \"inbound\"\nlisten = \"0.0.0.0:15006\"\nprotocol = \"tcp\"\ndefault_cluster = \"local\"\n[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nrequire_client_cert = true\n\n[[cluster]]\nname = \"local\"\nendpoints = [\"127.0.0.1:8080\"]\n",
                server.cert.display(),
                server.key.display(),
                ca.display()
            ),
        )
        .expect("write config");

        run(&["chmod", "-R", "a+rX", &dir.display().to_string()]);

        let pods = Pods::create();
        for ns in [&pods.a, &pods.b] {
            Pods::exec(
                ns,
                &[
                    bin,
                    "iptables",
                    "--inbound-port",
                    "15006",
                    "--outbound-port",
                    "15001",
                    "--exclude-uid",
                    PROXY_UID,
                    "--exclude-inbound-ports",
                    "9901",
                    "--apply",
                ],
            )
            .unwrap_or_else(|e| panic!("switchyard iptables --apply in {ns}: {e}"));
        }
        let rules = Pods::exec(&pods.a, &["iptables", "-t", "nat", "-S"]).expect("list rules");
        assert!(
            rules.contains("-A SWITCHYARD_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
            "{rules}"
        );

        let processes = vec![
            Pods::spawn(
                &pods.b,
                false,
                &[bin, "echo", "--listen", "127.0.0.1:8080", "--name", "svc"],
                &dir.join("service.log"),
            ),
            Pods::spawn(
                &pods.b,
                true,
                &[bin, "run", "--config", &sidecar_b.display().to_string()],
                &dir.join("b.log"),
            ),
            Pods::spawn(
                &pods.a,
                true,
                &[bin, "run", "--config", &sidecar_a.display().to_string()],
                &dir.join("a.log"),
            ),
        ];
        let mesh = Self {
            pods,
            dir,
            _processes: processes,
        };
        let admin_ready = |ns: &str| {
            Pods::exec(
                ns,
                &["curl", "-sf", "-m", "2", "http://127.0.0.1:9901/status"],
            )
            .is_ok()
        };
        let ready = crate::support::eventually(Duration::from_secs(20), async || {
            admin_ready(&mesh.pods.a) && admin_ready(&mesh.pods.b)
        })
        .await;
        assert!(ready, "sidecars did not start\n{}", mesh.logs());
        mesh
    }

    fn logs(&self) -> String {
        format!(
            "sidecar a:\n{}\nsidecar b:\n{}",
            std::fs::read_to_string(self.dir.join("a.log")).unwrap_or_default(),
            std::fs::read_to_string(self.dir.join("b.log")).unwrap_or_default()
        )
    }

    fn metrics(ns: &str) -> String {
        Pods::exec(ns, &["curl", "-sf", "http://127.0.0.1:9901/metrics"]).unwrap_or_default()
    }

    /// The inbound sidecar saw `n` connections, all over TLS.
    async fn assert_inbound_mtls_connections(&self, n: f64) {
        let counted = crate::support::eventually(Duration::from_secs(5), async || {
            prometheus_value(
                &Self::metrics(&self.pods.b),
                r#"switchyard_tcp_connections_total{listener="inbound",cluster="local"}"#,
            ) == Some(n)
        })
        .await;
        assert!(counted, "b:\n{}", Self::metrics(&self.pods.b));
        assert_eq!(
            prometheus_value(
                &Self::metrics(&self.pods.b),
                r#"switchyard_tls_handshakes_total{listener="inbound",result="ok"}"#
            ),
            Some(n),
            "the hop between the sidecars was TLS"
        );
    }
}

#[tokio::test]
async fn a_captured_call_crosses_two_sidecars_over_mtls() {
    if let Some(reason) = unsupported() {
        eprintln!("SKIPPED a_captured_call_crosses_two_sidecars_over_mtls: {reason}");
        return;
    }
    let mesh = Mesh::start(|_| {
        "[[listener]]\nname = \"outbound\"\nlisten = \"0.0.0.0:15001\"\nprotocol = \"tcp\"\noriginal_destination = true".into()
    })
    .await;

    // The client knows nothing of the mesh: plain HTTP to the service's address.
    let url = format!("http://{POD_B_IP}:80/orders");
    let reply = Pods::exec(&mesh.pods.a, &["curl", "-sf", "-m", "5", &url])
        .unwrap_or_else(|e| panic!("curl through the mesh: {e}\n{}", mesh.logs()));
    let echoed: serde_json::Value = serde_json::from_str(&reply).expect("echo JSON");
    assert_eq!(echoed["name"], "svc", "{reply}");
    assert_eq!(echoed["path"], "/orders", "{reply}");
    // The service saw the connection come from its own sidecar, not from pod A.
    assert!(
        echoed["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{reply}"
    );

    let counted = crate::support::eventually(Duration::from_secs(5), async || {
        prometheus_value(
            &Mesh::metrics(&mesh.pods.a),
            r#"switchyard_tcp_connections_total{listener="outbound",cluster="svc"}"#,
        ) == Some(1.0)
    })
    .await;
    assert!(counted, "a:\n{}", Mesh::metrics(&mesh.pods.a));
    mesh.assert_inbound_mtls_connections(1.0).await;
}

#[tokio::test]
async fn captured_http_runs_the_plugins_and_other_bytes_stay_tcp() {
    if let Some(reason) = unsupported() {
        eprintln!("SKIPPED captured_http_runs_the_plugins_and_other_bytes_stay_tcp: {reason}");
        return;
    }
    // An HTTP capture listener: HTTP to a known service gets the plugin chain.
    let mesh = Mesh::start(|dir| {
        let hello = share(
            &crate::support::proxy::plugin_path("hello"),
            &dir.join("hello.wasm"),
        );
        format!(
            "[[listener]]\nname = \"outbound\"\nlisten = \"0.0.0.0:15001\"\noriginal_destination = true\nplugins = [\"hello\"]\n\n[[plugin]]\nname = \"hello\"\npath = \"{}\"",
            hello.display()
        )
    })
    .await;

    let url = format!("http://{POD_B_IP}:80/orders");
    let reply = Pods::exec(&mesh.pods.a, &["curl", "-si", "-m", "5", &url])
        .unwrap_or_else(|e| panic!("curl through the mesh: {e}\n{}", mesh.logs()));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-hello: hello"), "the plugin ran: {reply}");
    assert!(reply.contains("x-echo-name: svc"), "{reply}");
    let metrics = Mesh::metrics(&mesh.pods.a);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_requests_total{")
                && l.contains("listener=\"outbound\"")
                && l.contains("cluster=\"svc\"")),
        "counted as an HTTP request to svc:\n{metrics}"
    );

    // Bytes that are not HTTP go to the same service as TCP (still over mTLS); the service,
    // an HTTP server, answers them with its 400.
    let raw = Pods::exec(
        &mesh.pods.a,
        &[
            "bash",
            "-c",
            &format!(
                "exec 3<>/dev/tcp/{POD_B_IP}/80; printf 'ping\\r\\n\\r\\n' >&3; timeout 5 cat <&3"
            ),
        ],
    )
    .unwrap_or_default();
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}\n{}", mesh.logs());
    let counted = crate::support::eventually(Duration::from_secs(5), async || {
        prometheus_value(
            &Mesh::metrics(&mesh.pods.a),
            r#"switchyard_tcp_connections_total{listener="outbound",cluster="svc"}"#,
        ) == Some(1.0)
    })
    .await;
    assert!(counted, "a:\n{}", Mesh::metrics(&mesh.pods.a));
    mesh.assert_inbound_mtls_connections(2.0).await;
}

/// The sidecars' files come out of a clone only its owner can enter (a 0700 home directory or
/// `mktemp -d`) into a directory the sidecars' user can read.
#[test]
fn sidecar_files_are_copied_out_of_a_private_clone() {
    let clone = scratch_dir().join("private-clone");
    std::fs::create_dir_all(clone.join("target/plugins")).expect("create clone");
    run(&["chmod", "0700", &clone.display().to_string()]);
    let plugin = clone.join("target/plugins/hello.wasm");
    std::fs::write(&plugin, b"\0asm plugin bytes").expect("write plugin");
    assert!(!reachable_by_everyone(&plugin), "the clone is private");

    let shared = shared_scratch_dir();
    let copy = share(&plugin, &shared.join("hello.wasm"));
    assert!(reachable_by_everyone(&copy), "{}", copy.display());
    assert_eq!(
        std::fs::read(&copy).expect("read copy"),
        b"\0asm plugin bytes"
    );

    // Where the test can switch users, the sidecars' user really reads the copy, not the original.
    if unsupported().is_none() {
        let read_as_proxy = |path: &Path| {
            Command::new("setpriv")
                .args([
                    &format!("--reuid={PROXY_UID}"),
                    &format!("--regid={PROXY_UID}"),
                    "--clear-groups",
                    "cat",
                ])
                .arg(path)
                .output()
                .expect("run setpriv")
                .status
                .success()
        };
        assert!(
            !read_as_proxy(&plugin),
            "uid {PROXY_UID} cannot read the clone"
        );
        assert!(read_as_proxy(&copy), "uid {PROXY_UID} reads the copy");
    }
}
