//! What a plugin chain costs per request: the request and response hooks of 0, 1 and 5 no-op
//! plugins, of the hello plugin, and of a no-op plugin that imports `http.call` (async path), on
//! real components in the real runtime.
//!
//! Run with `cargo xtask build-plugins && cargo bench -p switchyard --bench plugin_chain`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::HeaderValue;
use switchyard::plugin::{Chain, Plugins, RequestState};
use switchyard::upstream::Clusters;

fn plugin(name: &str, file: &str, config: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{file}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-plugins`",
        path.display()
    );
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\nconfig = {{ {config} }}\n",
        path.display()
    )
}

fn chains(runtime: &tokio::runtime::Runtime) -> Vec<(&'static str, Arc<Chain>)> {
    let mut toml = String::from(
        "[runtime]\nplugin_cache = \"../target/bench-plugin-cache\"\n[[cluster]]\nname = \"app\"\nendpoints = [\"127.0.0.1:9\"]\n",
    );
    for i in 0..5 {
        toml.push_str(&plugin(&format!("noop{i}"), "noop", ""));
    }
    toml.push_str(&plugin("hello", "hello", ""));
    toml.push_str(&plugin("testkit", "testkit", ""));
    let config = switchyard::config::load_str(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bench.toml")
            .as_path(),
        &toml,
    )
    .unwrap_or_else(|e| panic!("bench config: {e}"));
    let plugins = runtime.block_on(async {
        Plugins::load(&config)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let names = |n: usize| (0..n).map(|i| format!("noop{i}")).collect::<Vec<_>>();
    vec![
        ("no plugins", Arc::new(plugins.chain(&[]))),
        ("1 no-op plugin", Arc::new(plugins.chain(&names(1)))),
        ("5 no-op plugins", Arc::new(plugins.chain(&names(5)))),
        (
            "hello plugin",
            Arc::new(plugins.chain(&["hello".to_owned()])),
        ),
    ]
}

/// A typical request: 8 headers.
fn request() -> Box<RequestState> {
    let mut req = http::Request::get("/api/v1/users?limit=10");
    for (name, value) in [
        ("host", "myservice.default.svc.cluster.local"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip"),
        ("x-request-id", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-user-id", "user-42"),
        ("authorization", "Bearer abc.def.ghi"),
    ] {
        req = req.header(name, value);
    }
    let head = req
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|e| panic!("{e}"));
    Box::new(RequestState {
        head,
        response: None,
        listener: "bench".into(),
        peer: "127.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}")),
        request_id: HeaderValue::from_static("4bf92f35-77b3-4da6-a3ce-929d0e0e4736"),
        attempt: 1,
        destination: None,
        clusters: Arc::new(Clusters::default()),
        tls: None,
        timeout: None,
        per_try_timeout: None,
        context: HashMap::new(),
        bad_destination: None,
        plugins_reached: usize::MAX,
        exchange: switchyard::telemetry::Exchange::new(http::Method::GET, http::Version::HTTP_11),
    })
}

fn response_head() -> http::response::Parts {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", "42")
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("per request (on_request + on_response)");
    for (name, chain) in chains(&runtime) {
        group.bench_function(name, |b| {
            b.iter_batched(
                request,
                |state| {
                    runtime.block_on(async {
                        let (mut state, _) = chain.on_request(state).await;
                        state.response = Some(response_head());
                        chain.on_response(state).await
                    })
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
