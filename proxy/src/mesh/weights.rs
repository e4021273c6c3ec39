//! Canary weights: the ones `mesh.toml` gives a plugin's backends, and the ones set at run time
//! (`switchyard ctl weights`) that shadow them until the control plane restarts.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::settings::MeshSettings;

/// Weights set at run time (`switchyard ctl weights`): plugin → cluster → weight. They win
/// over `mesh.toml` until the control plane restarts.
pub type WeightOverrides = BTreeMap<String, BTreeMap<String, u32>>;

/// Sets `weight` on every `config.rules[].backends[]` entry whose `cluster` is in `weights` (the
/// canary plugin's shape); returns how many it set.
pub(super) fn set_weights(plugin: &mut Table, weights: &BTreeMap<String, u32>) -> usize {
    let mut set = 0;
    let rules = plugin
        .get_mut("config")
        .and_then(|c| c.get_mut("rules"))
        .and_then(Value::as_array_mut);
    for rule in rules.into_iter().flatten() {
        let backends = rule.get_mut("backends").and_then(Value::as_array_mut);
        for backend in backends.into_iter().flatten() {
            let Some(backend) = backend.as_table_mut() else {
                continue;
            };
            let cluster = backend.get("cluster").and_then(Value::as_str);
            if let Some(weight) = cluster.and_then(|c| weights.get(c)) {
                backend.insert("weight".into(), Value::Integer(i64::from(*weight)));
                set += 1;
            }
        }
    }
    set
}

/// The weights `mesh.toml` gives plugin `name`'s backends, as `(cluster, weight)` in order (empty
/// when there is no such plugin): what weights set at run time shadow.
pub fn file_weights(mesh: &MeshSettings, name: &str) -> Vec<(String, u32)> {
    let plugin = mesh
        .plugins
        .iter()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(name));
    let rules = plugin
        .and_then(|p| p.get("config"))
        .and_then(|c| c.get("rules"))
        .and_then(Value::as_array);
    rules
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get("backends").and_then(Value::as_array))
        .flatten()
        .filter_map(|backend| {
            let cluster = backend.get("cluster")?.as_str()?;
            let weight = backend
                .get("weight")
                .and_then(Value::as_integer)
                .unwrap_or(0);
            Some((cluster.to_owned(), u32::try_from(weight).unwrap_or(0)))
        })
        .collect()
}
