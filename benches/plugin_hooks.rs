//! Each shipped plugin's hooks for one request, as a Wasm component in the real runtime against
//! the very same plugin code compiled natively and run on the SDK's in-memory test host: what the
//! sandbox costs per plugin. Also the full mission chain (auth with an RS256 JWT, routing,
//! canary, fault at 0%, retries) both ways.
//!
//! Per request: `on-request`, `on-upstream-response` (a 200) and `on-response`, as the proxy
//! calls them. Run with `cargo xtask build-plugins && cargo bench -p switchyard --bench
//! plugin_hooks`.

use std::path::{Path, PathBuf};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use switchyard::plugin::{AttemptOutcome, Chain, Plugins, RequestState};
use switchyard_sdk::testing::TestHost;
use switchyard_sdk::{Outcome, Plugin};

#[path = "request.rs"]
mod request;

/// One plugin as the bench configures it: its name, .wasm file and config (as TOML, which the
/// proxy reads, and as the JSON the native plugin gets).
struct Case {
    name: &'static str,
    file: &'static str,
    config: toml::Table,
}

fn testdata(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/auth/testdata")
        .join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn table(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("bench plugin config: {e}\n{text}"))
}

fn cases() -> Vec<Case> {
    let public_pem = read(&testdata("rsa-public.pem"));
    vec![
        Case {
            name: "noop",
            file: "noop",
            config: toml::Table::new(),
        },
        Case {
            name: "hello",
            file: "hello",
            config: toml::Table::new(),
        },
        Case {
            name: "auth",
            file: "auth",
            config: table(&format!(
                "default = \"deny\"\n[[jwt]]\nname = \"bench\"\nissuer = \"https://auth.bench\"\naudiences = [\"bench\"]\nkeys = [ {{ kid = \"bench\", alg = \"RS256\", pem = \"\"\"\n{public_pem}\"\"\" }} ]\n[[rules]]\nname = \"api\"\nmatch = {{ path_prefix = \"/\" }}\nrequire = \"jwt\"\n"
            )),
        },
        Case {
            name: "routing",
            file: "routing",
            config: table(
                "[[routes]]\nname = \"api\"\nmatch = { path_prefix = \"/\" }\ncluster = \"origin-v1\"\n",
            ),
        },
        Case {
            name: "canary",
            file: "canary",
            config: table(
                "[[rules]]\nhosts = [\"*\"]\nbackends = [ { cluster = \"origin-v1\", weight = 90 }, { cluster = \"origin-v2\", weight = 10 } ]\n",
            ),
        },
        Case {
            name: "fault",
            file: "fault-injection",
            config: table(
                "[[rules]]\nmatch = { path_prefix = \"/\" }\nabort = { status = 503, percent = 0.0 }\n",
            ),
        },
        Case {
            name: "retries",
            file: "retries",
            config: table(
                "[[routes]]\nname = \"api\"\ncondition = { path_prefix = \"/\" }\nretries = { attempts = 2, retry_on = [\"5xx\", \"connect-failure\"] }\ntimeout = \"5s\"\n",
            ),
        },
    ]
}

/// A bearer token the auth case accepts, signed with the test key.
fn token() -> String {
    let private_pem = read(&testdata("rsa-private.pem"));
    let claims = json!({
        "iss": "https://auth.bench",
        "aud": "bench",
        "sub": "user-42",
        "exp": 4_102_444_800u64,
    });
    auth::mint::rs256(&private_pem, Some("bench"), &claims)
}

fn wasm_plugins(runtime: &tokio::runtime::Runtime, cases: &[Case]) -> Plugins {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let mut config = toml::Table::new();
    config.insert(
        "runtime".into(),
        toml::Value::Table(table("plugin_cache = \"../target/bench-plugin-cache\"\n")),
    );
    config.insert(
        "cluster".into(),
        toml::Value::Array(
            ["origin-v1", "origin-v2"]
                .iter()
                .map(|name| {
                    toml::Value::Table(table(&format!(
                        "name = \"{name}\"\nendpoints = [\"127.0.0.1:9\"]\n"
                    )))
                })
                .collect(),
        ),
    );
    let plugins = cases
        .iter()
        .map(|case| {
            let path = dir.join(format!("{}.wasm", case.file));
            assert!(
                path.exists(),
                "{} is missing: run `cargo xtask build-plugins`",
                path.display()
            );
            let mut plugin = toml::Table::new();
            plugin.insert("name".into(), case.name.into());
            plugin.insert("path".into(), path.display().to_string().into());
            plugin.insert("config".into(), toml::Value::Table(case.config.clone()));
            toml::Value::Table(plugin)
        })
        .collect();
    config.insert("plugin".into(), toml::Value::Array(plugins));
    let text = toml::to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let config = switchyard::config::load_str(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bench.toml")
            .as_path(),
        &text,
    )
    .unwrap_or_else(|e| panic!("bench config: {e}"));
    runtime.block_on(async {
        Plugins::load(&config)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// One request through a Wasm chain: request, attempt outcome, response.
async fn wasm_request(chain: &Chain, state: Box<RequestState>) -> Box<RequestState> {
    let (state, _) = chain.on_request(state).await;
    let (mut state, _) = chain
        .on_upstream_response(state, AttemptOutcome::Response(200))
        .await;
    state.response = Some(request::response_head());
    chain.on_response(state).await.0
}

fn test_host(headers: &[(&'static str, String)]) -> TestHost {
    let mut host = TestHost::get(request::PATH).authority("myservice.default.svc.cluster.local");
    for (name, value) in headers {
        host = host.header(name, value);
    }
    host
}

/// The same plugin code, natively: hooks on the SDK's in-memory host.
trait NativeHooks {
    fn request(&self, host: &mut TestHost);
}

impl<P: Plugin> NativeHooks for P {
    fn request(&self, host: &mut TestHost) {
        host.on_request(self);
        host.on_upstream_response(self, Outcome::Response(200));
        *host = std::mem::take(host).response(200);
        host.on_response(self);
    }
}

fn native_plugin(case: &Case) -> Box<dyn NativeHooks> {
    let json = serde_json::to_string(&case.config).unwrap_or_else(|e| panic!("{e}"));
    fn load<P: Plugin + 'static>(json: &str) -> Box<dyn NativeHooks> {
        Box::new(switchyard_sdk::load::<P>(json).unwrap_or_else(|e| panic!("{e}")))
    }
    match case.name {
        "noop" => load::<noop::Noop>(&json),
        "hello" => load::<hello::Hello>(&json),
        "auth" => load::<auth::Auth>(&json),
        "routing" => load::<routing::Routing>(&json),
        "canary" => load::<canary::Canary>(&json),
        "fault" => load::<fault_injection::FaultInjection>(&json),
        "retries" => load::<retries::Retries>(&json),
        other => panic!("no native build of {other}"),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let cases = cases();
    let token = token();
    let headers = request::headers(&format!("Bearer {token}"));
    let plugins = wasm_plugins(&runtime, &cases);

    let mut group = c.benchmark_group("plugin hooks per request (wasm vs native)");
    let mut chain_of = |label: &str, names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let chain = plugins.chain(&names);
        group.bench_function(format!("{label} / wasm"), |b| {
            b.iter_batched(
                || request::request_state(&headers),
                |state| runtime.block_on(wasm_request(&chain, state)),
                BatchSize::SmallInput,
            );
        });
        let native: Vec<Box<dyn NativeHooks>> = names
            .iter()
            .map(|n| {
                native_plugin(
                    cases
                        .iter()
                        .find(|c| c.name == n)
                        .unwrap_or_else(|| panic!("{n}")),
                )
            })
            .collect();
        group.bench_function(format!("{label} / native"), |b| {
            b.iter_batched(
                || test_host(&headers),
                |mut host| {
                    for plugin in &native {
                        plugin.request(&mut host);
                    }
                    host
                },
                BatchSize::SmallInput,
            );
        });
    };
    for name in ["noop", "hello", "canary", "retries", "auth"] {
        chain_of(name, &[name]);
    }
    chain_of(
        "mission chain",
        &["auth", "routing", "canary", "fault", "retries"],
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
