//! Plain TCP proxying (`protocol = "tcp"`): bytes both ways through a cluster's load balancer,
//! an mTLS hop between two proxies (the sidecar-to-sidecar pattern), metrics, and config errors.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::prometheus_value;
use crate::support::proxy::{Proxy, admin_get, refused};
use crate::support::tls::Pki;

/// A TCP service that greets each connection with its name, then echoes every byte.
struct TcpEcho {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TcpEcho {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if stream
                        .write_all(format!("{name}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects through `addr`, reads the greeting, echoes `payload`, and returns the greeting.
async fn round_trip(addr: SocketAddr, payload: &[u8]) -> String {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut greeting = Vec::new();
    loop {
        let byte = tokio::time::timeout(Duration::from_secs(5), stream.read_u8())
            .await
            .expect("greeting in time")
            .expect("greeting");
        if byte == b'\n' {
            break;
        }
        greeting.push(byte);
    }
    stream.write_all(payload).await.expect("write");
    let mut echoed = vec![0; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(echoed, payload, "the bytes came back unchanged");
    stream.shutdown().await.expect("shutdown");
    String::from_utf8(greeting).expect("utf-8 greeting")
}

/// Waits (up to 5 s) for the proxy to close `stream`: end of stream or a reset, no data.
async fn assert_closed_soon(stream: &mut TcpStream) {
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

fn tcp_listener(name: &str, cluster: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ndefault_cluster = \"{cluster}\"\n{extra}\n"
    )
}

#[tokio::test]
async fn tcp_connections_are_balanced_and_counted() {
    let a = TcpEcho::start("a").await;
    let b = TcpEcho::start("b").await;
    let proxy = Proxy::start(&format!(
        "{}[[cluster]]\nname = \"db\"\nendpoints = [\"{}\", \"{}\"]\n",
        tcp_listener("db", "db", ""),
        a.addr,
        b.addr
    ));

    let payload = vec![7u8; 64 * 1024];
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(round_trip(proxy.addr(), &payload).await);
    }
    seen.sort();
    assert_eq!(
        seen,
        ["a", "a", "b", "b"],
        "round robin over both endpoints"
    );

    // Durations are recorded once each side has closed: poll until all four are in.
    let admin = proxy.admin;
    let mut metrics = String::new();
    let counted = crate::support::eventually(Duration::from_secs(5), async || {
        metrics = admin_get(admin, "/metrics");
        prometheus_value(
            &metrics,
            r#"switchyard_tcp_connection_duration_seconds_count{listener="db",cluster="db"}"#,
        ) == Some(4.0)
    })
    .await;
    assert!(counted, "{metrics}");
    assert_eq!(
        prometheus_value(
            &metrics,
            r#"switchyard_tcp_connections_total{listener="db",cluster="db"}"#
        ),
        Some(4.0)
    );
    assert_eq!(
        prometheus_value(
            &metrics,
            r#"switchyard_tcp_bytes_total{listener="db",cluster="db",direction="upstream"}"#
        ),
        Some(4.0 * 64.0 * 1024.0)
    );
    // Downstream: the payload back plus each greeting ("a\n" / "b\n").
    assert_eq!(
        prometheus_value(
            &metrics,
            r#"switchyard_tcp_bytes_total{listener="db",cluster="db",direction="downstream"}"#
        ),
        Some(4.0 * (64.0 * 1024.0 + 2.0))
    );
}

#[tokio::test]
async fn a_refused_upstream_closes_the_connection_and_counts_a_connect_error() {
    let closed = crate::support::free_port();
    let proxy = Proxy::start(&format!(
        "{}[[cluster]]\nname = \"gone\"\nendpoints = [\"127.0.0.1:{closed}\"]\n",
        tcp_listener("gone", "gone", ""),
    ));
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_closed_soon(&mut stream).await;
    let admin = proxy.admin;
    let counted = crate::support::eventually(Duration::from_secs(5), async || {
        prometheus_value(
            &admin_get(admin, "/metrics"),
            r#"switchyard_errors_total{listener="gone",cluster="gone",kind="connect"}"#,
        ) == Some(1.0)
    })
    .await;
    assert!(counted, "{}", admin_get(admin, "/metrics"));
}

/// The sidecar pattern on loopback: the client's proxy takes plain TCP and speaks mTLS to the
/// server's proxy, which checks the client certificate and hands plain TCP to the service.
#[tokio::test]
async fn plain_tcp_is_upgraded_to_mtls_between_two_proxies() {
    let pki = Pki::new();
    let server_id = pki.issue(
        "server",
        Some("spiffe://cluster.local/ns/default/sa/db"),
        &["localhost"],
    );
    let client_id = pki.issue(
        "client",
        Some("spiffe://cluster.local/ns/default/sa/app"),
        &[],
    );
    let service = TcpEcho::start("db").await;
    let inbound = Proxy::start(&format!(
        "{}[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nrequire_client_cert = true\n\n[[cluster]]\nname = \"local\"\nendpoints = [\"{}\"]\n",
        tcp_listener("inbound", "local", ""),
        server_id.cert.display(),
        server_id.key.display(),
        pki.ca().display(),
        service.addr,
    ));
    let outbound = |cert: &str| {
        Proxy::start(&format!(
            "{}[[cluster]]\nname = \"db\"\nendpoints = [\"{}\"]\n[cluster.tls]\nca = \"{}\"\nserver_name = \"localhost\"\nspiffe_id = \"spiffe://cluster.local/ns/default/sa/db\"\n{cert}\n",
            tcp_listener("outbound", "db", ""),
            inbound.addr(),
            pki.ca().display(),
        ))
    };
    let with_cert = outbound(&format!(
        "cert = \"{}\"\nkey = \"{}\"",
        client_id.cert.display(),
        client_id.key.display()
    ));

    assert_eq!(round_trip(with_cert.addr(), b"SELECT 1;").await, "db");

    // The inbound proxy shook hands (it requires a verified client certificate).
    let metrics = admin_get(inbound.admin, "/metrics");
    assert_eq!(
        prometheus_value(
            &metrics,
            r#"switchyard_tls_handshakes_total{listener="inbound",result="ok"}"#
        ),
        Some(1.0),
        "{metrics}"
    );

    // Without a client certificate the inbound proxy refuses the handshake: nothing reaches
    // the service and the client's connection is closed.
    let without_cert = outbound("");
    let mut stream = TcpStream::connect(without_cert.addr())
        .await
        .expect("connect");
    assert_closed_soon(&mut stream).await;
    let admin = inbound.admin;
    let refused_handshake = crate::support::eventually(Duration::from_secs(5), async || {
        prometheus_value(
            &admin_get(admin, "/metrics"),
            r#"switchyard_tls_handshakes_total{listener="inbound",result="error"}"#,
        ) == Some(1.0)
    })
    .await;
    assert!(refused_handshake, "{}", admin_get(admin, "/metrics"));
}

#[tokio::test]
async fn idle_connections_are_closed_and_bytes_count_while_open() {
    let service = TcpEcho::start("db").await;
    let proxy = Proxy::start(&format!(
        "{}[[cluster]]\nname = \"db\"\nendpoints = [\"{}\"]\n",
        tcp_listener("db", "db", "tcp_idle_timeout = \"400ms\""),
        service.addr,
    ));
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut greeting = [0u8; 3];
    stream.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"db\n");

    // Busy for three times the idle timeout: the connection stays.
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_millis(1200) {
        stream.write_all(b"ping").await.expect("write while busy");
        let mut echoed = [0u8; 4];
        stream
            .read_exact(&mut echoed)
            .await
            .expect("echo while busy");
        sent += 4;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Counted while the connection is still open.
    let admin = proxy.admin;
    let series = r#"switchyard_tcp_bytes_total{listener="db",cluster="db",direction="upstream"}"#;
    let counted = crate::support::eventually(Duration::from_secs(5), async || {
        prometheus_value(&admin_get(admin, "/metrics"), series) == Some(sent as f64)
    })
    .await;
    assert!(counted, "{}", admin_get(admin, "/metrics"));

    // Then quiet: the proxy closes it.
    assert_closed_soon(&mut stream).await;
}

// Multi-threaded: the echo service must keep running while the test blocks waiting for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_open_tcp_connections_finish_within_the_drain_timeout() {
    let service = TcpEcho::start("db").await;
    let mut proxy = Proxy::start(&format!(
        "[runtime]\ndrain_timeout = \"30s\"\nplugin_cache = \"{}\"\n\n{}[[cluster]]\nname = \"db\"\nendpoints = [\"{}\"]\n",
        crate::support::proxy::plugin_cache().display(),
        tcp_listener("db", "db", ""),
        service.addr,
    ));
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut greeting = [0u8; 3];
    stream.read_exact(&mut greeting).await.expect("greeting");

    // SIGTERM: no new connections, but the open one keeps working.
    proxy.terminate();
    assert!(
        proxy
            .wait_for_log("draining in-flight requests", Duration::from_secs(5))
            .await
    );
    let refused = crate::support::eventually(Duration::from_secs(5), async || {
        TcpStream::connect(proxy.addr()).await.is_err()
    })
    .await;
    assert!(refused, "still accepting after SIGTERM");
    for _ in 0..5 {
        stream
            .write_all(b"ping")
            .await
            .expect("write while draining");
        let mut echoed = [0u8; 4];
        stream
            .read_exact(&mut echoed)
            .await
            .expect("echo while draining");
        assert_eq!(&echoed, b"ping");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy.wait_exit(Duration::from_millis(300)).is_none(),
        "the proxy exited with a TCP connection open"
    );

    // The client closes: the proxy is done draining long before the 30 s deadline.
    drop(stream);
    let exited = proxy.wait_exit(Duration::from_secs(5));
    assert!(
        exited.is_some_and(|s| s.success()),
        "{exited:?}\n{}",
        proxy.logs()
    );
    assert!(proxy.logs().contains("drained; every connection closed"));
}

#[test]
fn tcp_listener_mistakes_are_refused_with_the_key() {
    let with_plugins = refused(
        "[[listener]]\nname = \"db\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ndefault_cluster = \"db\"\nplugins = [\"hello\"]\n\n[[cluster]]\nname = \"db\"\nendpoints = [\"127.0.0.1:5432\"]\n\n[[plugin]]\nname = \"hello\"\npath = \"hello.wasm\"\n",
    );
    assert!(
        with_plugins.contains("listener[0].plugins")
            && with_plugins.contains("a tcp listener cannot have any"),
        "{with_plugins}"
    );
    let no_destination =
        refused("[[listener]]\nname = \"db\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n");
    assert!(
        no_destination.contains("listener[0].default_cluster")
            && no_destination.contains("original_destination"),
        "{no_destination}"
    );
    let bad_protocol = refused(
        "[[listener]]\nname = \"db\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\ndefault_cluster = \"db\"\n\n[[cluster]]\nname = \"db\"\nendpoints = [\"127.0.0.1:5432\"]\n",
    );
    assert!(
        bad_protocol.contains("listener[0].protocol") && bad_protocol.contains("tcp"),
        "{bad_protocol}"
    );
}
