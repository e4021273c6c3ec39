//! What a plugin chain costs per request: the request and response hooks of 0, 1 and 5 no-op
//! plugins, of the hello plugin, and of a no-op plugin that imports `http.call` (async path), on
//! real components in the real runtime.
//!
//! Run with `cargo xtask build-plugins && cargo bench -p switchyard --bench plugin_chain`.

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::plugin::{Chain, Plugins};

#[path = "request.rs"]
mod request;

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

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let headers = request::headers("Bearer abc.def.ghi");
    let mut group = c.benchmark_group("per request (on_request + on_response)");
    for (name, chain) in chains(&runtime) {
        group.bench_function(name, |b| {
            b.iter_batched(
                || request::request_state(&headers),
                |state| {
                    runtime.block_on(async {
                        let (mut state, _) = chain.on_request(state).await;
                        state.response = Some(request::response_head());
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
