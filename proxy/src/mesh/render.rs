//! From `mesh.toml` to one [`Bundle`] per workload: the workload's listeners and clusters, the
//! mesh's plugins pinned by sha256, and mesh mTLS filled in — listeners other workloads call
//! require the mesh identity, and clusters named after a workload verify its SPIFFE ID.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use toml::{Table, Value};

use super::api::{Bundle, PluginRef, sha256_hex};
use super::settings::{MeshSettings, WorkloadSpec};
use super::weights::{WeightOverrides, set_weights};
use crate::config::ServiceRef;
use crate::config::{ConfigErrors, Diagnostics};
use crate::config::{file_error, top_level_span};

/// Where an agent keeps its identity, relative to its state directory (and so to the config it
/// writes there): the certificate chain and its key in one file, so a renewal is one rename.
pub const IDENTITY_FILE: &str = "identity/identity.pem";
/// The mesh CA, next to the identity.
pub const MESH_CA_FILE: &str = "identity/ca.pem";

/// What the control plane discovered, by Service (see `[control] kubernetes_discovery`).
#[derive(Debug, Clone, Default)]
pub struct DiscoveredEndpoints {
    /// The ready pod addresses.
    pub endpoints: BTreeMap<ServiceRef, Vec<SocketAddr>>,
    /// The cluster IPs clients dial.
    pub service_addresses: BTreeMap<ServiceRef, Vec<SocketAddr>>,
}

/// The mesh's plugin binaries, read once per build.
pub struct MeshPlugins {
    plugins: Vec<MeshPlugin>,
}

struct MeshPlugin {
    name: String,
    table: Table,
    sha256: String,
    bytes: Bytes,
}

impl MeshPlugins {
    /// Reads every plugin file `mesh` names; a missing file or a broken sha256 pin is an error
    /// naming `mesh.toml`.
    pub fn read(mesh: &MeshSettings) -> Result<Self, ConfigErrors> {
        let mut plugins = Vec::new();
        for table in &mesh.plugins {
            let name = table["name"].as_str().unwrap_or_default().to_owned();
            let path = Path::new(table["path"].as_str().unwrap_or_default());
            let bytes = std::fs::read(path).map_err(|e| {
                file_error(
                    &mesh.source,
                    format!("plugin {name:?}: cannot read {}: {e}", path.display()),
                )
            })?;
            let sha256 = sha256_hex(&bytes);
            if let Some(pin) = table.get("sha256").and_then(Value::as_str)
                && !pin.eq_ignore_ascii_case(&sha256)
            {
                return Err(file_error(
                    &mesh.source,
                    format!(
                        "plugin {name:?}: {} has sha256 {sha256}, but the pin says {pin}",
                        path.display()
                    ),
                ));
            }
            plugins.push(MeshPlugin {
                name,
                table: table.clone(),
                sha256,
                bytes: Bytes::from(bytes),
            });
        }
        Ok(Self { plugins })
    }

    /// Every binary by sha256, to serve at `/v1/plugins/<sha256>`.
    pub fn binaries(&self) -> HashMap<String, Bytes> {
        self.plugins
            .iter()
            .map(|p| (p.sha256.clone(), p.bytes.clone()))
            .collect()
    }

    /// Whether plugin `name` exists and has a backend for every cluster in `weights`.
    pub fn check_weights(&self, name: &str, weights: &BTreeMap<String, u32>) -> Result<(), String> {
        let plugin = self
            .plugins
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("the mesh has no plugin named {name:?}"))?;
        let mut table = plugin.table.clone();
        for cluster in weights.keys() {
            let one = BTreeMap::from([(cluster.clone(), 0)]);
            if set_weights(&mut table, &one) == 0 {
                return Err(format!(
                    "plugin {name:?} splits no traffic to a cluster named {cluster:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Renders workload `w`'s bundle, checking the result as a proxy would; errors name the
/// workload's config file and line. Also returns the config as checked, with the plugins as
/// local files, for loading them.
pub fn render(
    mesh: &MeshSettings,
    plugins: &MeshPlugins,
    weights: &WeightOverrides,
    discovered: &DiscoveredEndpoints,
    w: &WorkloadSpec,
) -> Result<(Bundle, crate::config::Config), ConfigErrors> {
    let source = std::fs::read_to_string(&w.config).map_err(|e| {
        file_error(
            &w.config,
            format!("cannot read workload {}'s config: {e}", w.id()),
        )
    })?;
    let mut table: Table = source.parse().map_err(|e: toml::de::Error| {
        let mut d = Diagnostics::new(&w.config, &source);
        d.error(e.span().unwrap_or(0..0), "", e.message());
        d.into_errors()
    })?;
    let mut d = Diagnostics::new(&w.config, &source);
    for key in ["plugin", "admin", "runtime", "access_log", "tracing"] {
        if table.contains_key(key) {
            d.error(
                top_level_span(&source, key),
                key,
                format!(
                    "a workload config has listeners and clusters only; `{key}` belongs in {}",
                    if key == "plugin" {
                        "mesh.toml, for the whole mesh"
                    } else {
                        "each proxy's own config, next to [control]"
                    }
                ),
            );
        }
    }
    d.into_result(())?;

    // Checked as written, with the plugins as local files: errors keep the workload's lines.
    let local: Vec<Value> = plugins
        .plugins
        .iter()
        .map(|p| Value::Table(with_weights(p, weights)))
        .collect();
    // (An empty array would render as a key of the file's last table, so none is appended.)
    let check = if local.is_empty() {
        source.clone()
    } else {
        let plugins = Table::from_iter([("plugin".to_owned(), Value::Array(local))]);
        format!(
            "{source}\n\n{}",
            toml::to_string(&plugins).unwrap_or_default()
        )
    };
    let checked = crate::config::load_str(&w.config, &check)?;
    check_mesh_listeners(mesh, w, &checked)?;

    let bundled: Vec<Value> = plugins
        .plugins
        .iter()
        .map(|p| {
            let mut t = with_weights(p, weights);
            t.insert(
                "path".into(),
                Value::String(format!("plugins/{}.wasm", p.sha256)),
            );
            t.insert("sha256".into(), Value::String(p.sha256.clone()));
            Value::Table(t)
        })
        .collect();
    table.insert("plugin".into(), Value::Array(bundled));
    add_mesh_tls(&mut table, mesh, w);
    if mesh.control.kubernetes_discovery {
        fill_in_discovered(&mut table, discovered);
    }
    let config = toml::to_string(&table)
        .map_err(|e| file_error(&w.config, format!("cannot render the bundle: {e}")))?;
    // What the agent will load; mesh TLS filled in must not break it.
    crate::config::load_str(Path::new(&format!("bundle for {}", w.id())), &config)?;

    let config_sha256 = sha256_hex(config.as_bytes());
    let plugins: Vec<PluginRef> = plugins
        .plugins
        .iter()
        .map(|p| PluginRef {
            name: p.name.clone(),
            sha256: p.sha256.clone(),
        })
        .collect();
    let bundle = Bundle {
        workload: w.id(),
        // The config pins every plugin's sha256, so its hash covers the binaries too.
        etag: config_sha256[..16].to_owned(),
        config,
        config_sha256,
        plugins,
    };
    Ok((bundle, checked))
}

fn with_weights(plugin: &MeshPlugin, weights: &WeightOverrides) -> Table {
    let mut table = plugin.table.clone();
    if let Some(w) = weights.get(&plugin.name) {
        set_weights(&mut table, w);
    }
    table
}

/// The Services `kubernetes_service` clusters of every workload name, for the control plane to
/// watch (a workload config that does not read or parse is reported by [`render`]).
pub fn referenced_services(mesh: &MeshSettings) -> Vec<ServiceRef> {
    let mut services = Vec::new();
    for w in &mesh.workloads {
        let table = std::fs::read_to_string(&w.config)
            .ok()
            .and_then(|text| text.parse::<Table>().ok());
        let clusters = table
            .as_ref()
            .and_then(|t| t.get("cluster"))
            .and_then(Value::as_array);
        for cluster in clusters.into_iter().flatten() {
            let service = cluster
                .get("kubernetes_service")
                .and_then(Value::as_str)
                .and_then(ServiceRef::parse);
            if let Some(service) = service
                && !services.contains(&service)
            {
                services.push(service);
            }
        }
    }
    services
}

/// Replaces each cluster's `kubernetes_service` by the endpoints discovered for it, so the
/// proxy needs no access to the Kubernetes API, and fills in the Service's addresses (unless the
/// cluster lists its own) so outbound capture recognizes connections to it.
fn fill_in_discovered(table: &mut Table, discovered: &DiscoveredEndpoints) {
    let clusters = table.get_mut("cluster").and_then(Value::as_array_mut);
    for cluster in clusters.into_iter().flatten() {
        let Some(cluster) = cluster.as_table_mut() else {
            continue;
        };
        let service = cluster
            .get("kubernetes_service")
            .and_then(Value::as_str)
            .and_then(ServiceRef::parse);
        let Some(service) = service else {
            continue;
        };
        let addresses = |map: &BTreeMap<ServiceRef, Vec<SocketAddr>>| -> Vec<Value> {
            map.get(&service)
                .into_iter()
                .flatten()
                .map(|a| Value::String(a.to_string()))
                .collect()
        };
        let endpoints = addresses(&discovered.endpoints);
        if !cluster.contains_key("service_addresses") {
            cluster.insert(
                "service_addresses".into(),
                Value::Array(addresses(&discovered.service_addresses)),
            );
        }
        cluster.remove("kubernetes_service");
        cluster.insert("endpoints".into(), Value::Array(endpoints));
        cluster.insert("discovered_from".into(), Value::String(service.to_string()));
    }
}

/// A `mesh_listeners` written in mesh.toml names listeners of the workload: a name that is none
/// would leave the listener it meant without mesh mTLS.
fn check_mesh_listeners(
    mesh: &MeshSettings,
    w: &WorkloadSpec,
    checked: &crate::config::Config,
) -> Result<(), ConfigErrors> {
    use crate::config::locate::{Step, error_at};
    if !w.mesh_listeners_explicit {
        return Ok(());
    }
    let index = mesh
        .workloads
        .iter()
        .position(|o| o.name == w.name && o.namespace == w.namespace)
        .unwrap_or(0);
    let names: Vec<&str> = checked.listeners.iter().map(|l| l.name.as_str()).collect();
    let errors: Vec<_> = w
        .mesh_listeners
        .iter()
        .enumerate()
        .filter(|(_, name)| !names.contains(&name.as_str()))
        .map(|(j, name)| {
            let at = [
                Step::Key("workload".into()),
                Step::Index(index),
                Step::Key("mesh_listeners".into()),
                Step::Index(j),
            ];
            error_at(
                &mesh.source,
                &at,
                format!("workload[{index}].mesh_listeners[{j}]"),
                format!(
                    "{name:?} is no listener of {} (its listeners: {}); it would be served without mesh mTLS",
                    w.config.display(),
                    names.join(", ")
                ),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Mesh mTLS by default: the workload's mesh listeners (without their own `tls`) require a
/// client certificate from the mesh CA and forward the caller's identity; its clusters named
/// after another workload (without their own `tls`) present this workload's identity and accept
/// only that workload's SPIFFE ID.
fn add_mesh_tls(table: &mut Table, mesh: &MeshSettings, w: &WorkloadSpec) {
    let listeners = table.get_mut("listener").and_then(Value::as_array_mut);
    for listener in listeners.into_iter().flatten() {
        let Some(listener) = listener.as_table_mut() else {
            continue;
        };
        let name = listener.get("name").and_then(Value::as_str);
        if name.is_some_and(|n| w.mesh_listeners.iter().any(|m| m == n))
            && !listener.contains_key("tls")
        {
            listener.insert(
                "tls".into(),
                Value::Table(Table::from_iter([
                    ("cert".to_owned(), IDENTITY_FILE.into()),
                    ("key".to_owned(), IDENTITY_FILE.into()),
                    ("client_ca".to_owned(), MESH_CA_FILE.into()),
                    ("require_client_cert".to_owned(), true.into()),
                    (
                        "forward_client_cert".to_owned(),
                        "x-forwarded-client-cert".into(),
                    ),
                ])),
            );
        }
    }
    let clusters = table.get_mut("cluster").and_then(Value::as_array_mut);
    for cluster in clusters.into_iter().flatten() {
        let Some(cluster) = cluster.as_table_mut() else {
            continue;
        };
        let name = cluster.get("name").and_then(Value::as_str).unwrap_or("");
        let peer = mesh
            .workloads
            .iter()
            .find(|o| o.name == name && o.namespace == w.namespace)
            .or_else(|| mesh.workloads.iter().find(|o| o.id() == name));
        if let Some(peer) = peer
            && !cluster.contains_key("tls")
        {
            cluster.insert(
                "tls".into(),
                Value::Table(Table::from_iter([
                    ("ca".to_owned(), MESH_CA_FILE.into()),
                    ("cert".to_owned(), IDENTITY_FILE.into()),
                    ("key".to_owned(), IDENTITY_FILE.into()),
                    (
                        "spiffe_id".to_owned(),
                        peer.spiffe_id(&mesh.control.trust_domain).into(),
                    ),
                ])),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::settings::ControlSettings;

    fn workload(name: &str, config: &Path) -> WorkloadSpec {
        WorkloadSpec {
            name: name.into(),
            namespace: "default".into(),
            token: format!("{name}-token-0123456789"),
            config: config.to_path_buf(),
            mesh_listeners: vec!["inbound".into()],
            mesh_listeners_explicit: false,
            inputs: Vec::new(),
        }
    }

    fn mesh(dir: &Path, plugins: Vec<Table>) -> MeshSettings {
        MeshSettings {
            source: dir.join("mesh.toml"),
            control: ControlSettings {
                listen: "127.0.0.1:15012".parse().unwrap(),
                admin: "127.0.0.1:15011".parse().unwrap(),
                ca: dir.join("ca.pem"),
                ca_key: dir.join("ca-key.pem"),
                trust_domain: "mesh.test".into(),
                cert_lifetime: std::time::Duration::from_secs(60),
                server_names: Vec::new(),
                admin_token: None,
                kubernetes_discovery: false,
                kubernetes_tokens: false,
                plugin_cache: None,
                stats_resolution: std::time::Duration::from_secs(10),
                stats_window: std::time::Duration::from_secs(900),
            },
            plugins,
            workloads: vec![
                workload("web", &dir.join("web.toml")),
                workload("api", &dir.join("api.toml")),
            ],
        }
    }

    fn scratch() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-render-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn mesh_listeners_and_clusters_to_workloads_get_mesh_mtls() {
        let dir = scratch();
        std::fs::write(
            dir.join("web.toml"),
            "[[listener]]\nname = \"inbound\"\nlisten = \"127.0.0.1:8443\"\ndefault_cluster = \"local\"\n\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\ndefault_cluster = \"api\"\n\n[[cluster]]\nname = \"local\"\nendpoints = [\"127.0.0.1:9000\"]\n\n[[cluster]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9443\"]\n",
        )
        .unwrap();
        let mesh = mesh(&dir, Vec::new());
        let plugins = MeshPlugins::read(&mesh).unwrap();
        let (bundle, _) = render(
            &mesh,
            &plugins,
            &WeightOverrides::new(),
            &DiscoveredEndpoints::default(),
            &mesh.workloads[0],
        )
        .unwrap();
        let config: Table = bundle.config.parse().unwrap();
        let listeners = config["listener"].as_array().unwrap();
        assert_eq!(
            listeners[0]["tls"]["client_ca"].as_str(),
            Some(MESH_CA_FILE)
        );
        assert_eq!(
            listeners[0]["tls"]["require_client_cert"].as_bool(),
            Some(true)
        );
        assert!(listeners[1].get("tls").is_none(), "public stays plain");
        let clusters = config["cluster"].as_array().unwrap();
        assert!(
            clusters[0].get("tls").is_none(),
            "a cluster that is no workload stays plain"
        );
        assert_eq!(
            clusters[1]["tls"]["spiffe_id"].as_str(),
            Some("spiffe://mesh.test/ns/default/sa/api")
        );
        assert_eq!(bundle.config_sha256, sha256_hex(bundle.config.as_bytes()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_explicit_mesh_listener_that_is_no_listener_is_refused_at_its_line() {
        let dir = scratch();
        std::fs::write(
            dir.join("web.toml"),
            "[[listener]]\nname = \"inbound\"\nlisten = \"127.0.0.1:8443\"\ndefault_cluster = \"local\"\n\n[[cluster]]\nname = \"local\"\nendpoints = [\"127.0.0.1:9000\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("mesh.toml"),
            "[control]\n\n[[workload]]\nname = \"web\"\nmesh_listeners = [\"inbound\", \"inbund\"]\n",
        )
        .unwrap();
        let mut mesh = mesh(&dir, Vec::new());
        mesh.workloads[0].mesh_listeners = vec!["inbound".into(), "inbund".into()];
        mesh.workloads[0].mesh_listeners_explicit = true;
        let plugins = MeshPlugins::read(&mesh).unwrap();
        let render_web = |mesh: &MeshSettings| {
            render(
                mesh,
                &plugins,
                &WeightOverrides::new(),
                &DiscoveredEndpoints::default(),
                &mesh.workloads[0],
            )
        };
        let errors = render_web(&mesh).unwrap_err().to_string();
        assert!(
            errors.contains("mesh.toml:5:")
                && errors.contains("workload[0].mesh_listeners[1]")
                && errors.contains("\"inbund\" is no listener"),
            "{errors}"
        );
        // The default (not written) is no error for a workload without that listener.
        mesh.workloads[0].mesh_listeners = vec!["nothing".into()];
        mesh.workloads[0].mesh_listeners_explicit = false;
        assert!(render_web(&mesh).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_workload_config_with_plugins_is_refused_at_its_line() {
        let dir = scratch();
        std::fs::write(
            dir.join("web.toml"),
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\n[[plugin]]\nname = \"x\"\npath = \"x.wasm\"\n",
        )
        .unwrap();
        let mesh = mesh(&dir, Vec::new());
        let plugins = MeshPlugins::read(&mesh).unwrap();
        let errors = render(
            &mesh,
            &plugins,
            &WeightOverrides::new(),
            &DiscoveredEndpoints::default(),
            &mesh.workloads[0],
        )
        .unwrap_err();
        assert_eq!(errors.0[0].line, 5, "{errors}");
        assert!(
            errors.0[0].message.contains("belongs in mesh.toml"),
            "{errors}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn weights_are_set_on_the_backends_they_name() {
        let mut plugin: Table = "name = \"canary\"\n[config]\n[[config.rules]]\nhosts = [\"*\"]\nbackends = [{ cluster = \"v1\", weight = 90 }, { cluster = \"v2\", weight = 10 }]\n"
            .parse()
            .unwrap();
        let set = set_weights(&mut plugin, &BTreeMap::from([("v2".to_owned(), 50)]));
        assert_eq!(set, 1);
        let backends = plugin["config"]["rules"][0]["backends"].as_array().unwrap();
        assert_eq!(backends[0]["weight"].as_integer(), Some(90));
        assert_eq!(backends[1]["weight"].as_integer(), Some(50));
        assert_eq!(
            set_weights(&mut plugin, &BTreeMap::from([("v9".to_owned(), 1)])),
            0
        );
    }
}
