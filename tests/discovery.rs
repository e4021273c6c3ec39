//! Kubernetes service discovery: a cluster with `kubernetes_service` follows the Service's
//! EndpointSlices through a real watch — readiness changes, slices added and deleted, and a
//! `410 Gone` that makes the watcher list again from scratch.

use std::time::Duration;

use crate::support::kube_api::{KubeApi, event, gone, slice, slice_list};
use crate::support::proxy::scratch_dir;
use crate::support::{Proxy, Upstream, eventually, get, tally};

/// Which upstreams answered 30 requests.
async fn answers(proxy: &Proxy) -> std::collections::BTreeMap<String, usize> {
    let mut names = Vec::new();
    for _ in 0..30 {
        let reply = get(proxy.addr(), "/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        names.push(reply.echo_name());
    }
    tally(names.iter().map(String::as_str))
}

async fn only(proxy: &Proxy, name: &str) -> bool {
    answers(proxy).await.keys().eq([name])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_follows_endpointslices_through_a_watch_restart() {
    let (v1, v2, v3) = (
        Upstream::echo("v1").await,
        Upstream::echo("v2").await,
        Upstream::echo("v3").await,
    );
    let api = KubeApi::start().await;
    // Two slices, as the controller splits a Service's pods; v2's pod is not ready yet.
    api.set_list(slice_list(
        "100",
        &[
            slice("orders-a", "98", v1.addr.port(), &[("127.0.0.1", true)]),
            slice("orders-b", "99", v2.addr.port(), &[("127.0.0.1", false)]),
        ],
    ));
    let config = scratch_dir().join("switchyard.toml");
    std::fs::write(
        &config,
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"orders\"\n\n[[cluster]]\nname = \"orders\"\nkubernetes_service = \"orders.default:http\"\n",
    )
    .unwrap();
    let proxy = Proxy::start_with_env(config, 1, &[("KUBECONFIG", api.kubeconfig.as_os_str())]);

    // Only ready endpoints get traffic, from the first request on.
    assert!(only(&proxy, "v1").await, "{:?}", answers(&proxy).await);
    assert!(
        eventually(Duration::from_secs(5), async || api.watches_opened() == 1).await,
        "no watch: {:?}",
        api.requests()
    );
    let watch = api
        .requests()
        .into_iter()
        .find(|r| r.contains("watch="))
        .unwrap();
    assert!(
        watch.contains("resourceVersion=100")
            && watch.contains("labelSelector=kubernetes.io%2Fservice-name%3Dorders"),
        "the watch starts where the list ended, for this Service only: {watch}"
    );

    // v2's pod becomes ready.
    api.send(event(
        "MODIFIED",
        slice("orders-b", "101", v2.addr.port(), &[("127.0.0.1", true)]),
    ));
    let both = eventually(Duration::from_secs(5), async || {
        answers(&proxy).await.len() == 2
    })
    .await;
    assert!(both, "v2 never joined: {:?}", answers(&proxy).await);

    // The API server compacted past the watch's version: the watcher lists again, and the new
    // list (only v3 now) replaces everything, including slices it never saw deleted.
    api.set_list(slice_list(
        "200",
        &[slice(
            "orders-c",
            "190",
            v3.addr.port(),
            &[("127.0.0.1", true)],
        )],
    ));
    api.send(gone("101"));
    let relisted = eventually(Duration::from_secs(10), async || only(&proxy, "v3").await).await;
    assert!(relisted, "no relist after 410: {:?}", api.requests());
    assert_eq!(api.lists(), 2, "{:?}", api.requests());
    assert!(
        eventually(Duration::from_secs(5), async || api.watches_opened() == 2).await,
        "{:?}",
        api.requests()
    );
    assert!(
        api.requests()
            .last()
            .unwrap()
            .contains("resourceVersion=200"),
        "the new watch starts at the new list: {:?}",
        api.requests()
    );

    // Slices come and go on the new watch.
    api.send(event(
        "ADDED",
        slice("orders-a", "201", v1.addr.port(), &[("127.0.0.1", true)]),
    ));
    api.send(event(
        "DELETED",
        slice("orders-c", "202", v3.addr.port(), &[("127.0.0.1", true)]),
    ));
    let moved = eventually(Duration::from_secs(5), async || only(&proxy, "v1").await).await;
    assert!(moved, "{:?}", answers(&proxy).await);
}

#[test]
fn a_cluster_needs_endpoints_or_a_kubernetes_service_and_not_both() {
    let both = crate::support::proxy::refused(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"c\"\n\n[[cluster]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\nkubernetes_service = \"orders.default:80\"\n",
    );
    assert!(
        both.contains("give `endpoints` or `kubernetes_service`, not both"),
        "{both}"
    );
    let bad = crate::support::proxy::refused(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"c\"\n\n[[cluster]]\nname = \"c\"\nkubernetes_service = \"Orders\"\n",
    );
    assert!(
        bad.contains("cluster[0].kubernetes_service") && bad.contains(":13:"),
        "{bad}"
    );
}
