//! TOML snippets for test configs, so each test states only what is special about it.

use std::fmt::Display;

/// A `[[listener]]` on 127.0.0.1:0 sending to `default_cluster` through `plugins`.
pub fn listener(name: &str, default_cluster: &str, plugins: &[&str]) -> String {
    let plugins: Vec<String> = plugins.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"{default_cluster}\"\nplugins = [{}]\n\n",
        plugins.join(", ")
    )
}

/// A `[[cluster]]` whose endpoints are these addresses, plus any `extra` keys.
pub fn cluster(name: &str, endpoints: &[impl Display], extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    cluster_raw(name, &endpoints.join(", "), extra)
}

/// A `[[cluster]]` whose `endpoints` array holds this TOML as written (for weights and such).
pub fn cluster_raw(name: &str, endpoints_toml: &str, extra: &str) -> String {
    format!("[[cluster]]\nname = \"{name}\"\nendpoints = [{endpoints_toml}]\n{extra}\n\n")
}

/// The common case: listener "public" sending everything to cluster "app" at `endpoint`.
pub fn proxy_to(endpoint: impl Display, cluster_extra: &str) -> String {
    listener("public", "app", &[]) + &cluster("app", &[endpoint], cluster_extra)
}
