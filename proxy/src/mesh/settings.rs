//! `mesh.toml`, the control plane's desired state:
//!
//! ```toml
//! [control]
//! listen = "0.0.0.0:15012"          # the HTTPS API proxies call (mTLS with the mesh CA)
//! admin = "127.0.0.1:15011"         # status, reload and weight changes (`switchyard ctl`)
//! ca = "ca/ca.pem"                  # the mesh CA, which signs every workload's identity
//! ca_key = "ca/ca-key.pem"
//! trust_domain = "cluster.local"    # identities are spiffe://<trust_domain>/ns/<ns>/sa/<name>
//! cert_lifetime = "24h"             # how long a workload certificate lives; agents renew at 2/3
//! admin_token = "..."               # for changes over the admin API (or SWITCHYARD_ADMIN_TOKEN)
//! kubernetes_discovery = false      # resolve clusters' kubernetes_service here, for every proxy
//! kubernetes_tokens = false         # also accept service-account tokens (TokenReview)
//! plugin_cache = "/var/cache/switchyard"  # where plugins are compiled to be checked
//!
//! [[plugin]]                        # the mesh's plugins, as in a proxy config
//! name = "canary"
//! path = "plugins/canary.wasm"
//! [plugin.config]
//! ...
//!
//! [[workload]]
//! name = "frontend"                 # its service account
//! namespace = "default"
//! token_file = "tokens/frontend"    # the bootstrap token its proxies present for a certificate
//! config = "workloads/frontend.toml" # its listeners and clusters (a proxy config without the
//!                                    # plugins, [admin] and [runtime])
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigErrors, Diagnostics, parse_duration};
use crate::config::{deserialize, file_error};

/// Where the control plane's admin API listens when `[control] admin` is absent: loopback only.
pub const DEFAULT_CONTROL_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15011);

/// The most slots a mesh-view window may have (`stats_window / stats_resolution`).
const MAX_STATS_SLOTS: u32 = 1000;

/// Listeners of this name get mesh mTLS when the workload does not say otherwise.
pub const DEFAULT_MESH_LISTENER: &str = "inbound";

/// A checked `mesh.toml`.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    pub source: PathBuf,
    pub control: ControlSettings,
    /// The `[[plugin]]` tables, `path` made absolute; checked by rendering them into every
    /// workload's config.
    pub plugins: Vec<toml::Table>,
    pub workloads: Vec<WorkloadSpec>,
}

/// `[control]`.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub trust_domain: String,
    pub cert_lifetime: Duration,
    /// Names in the API's serving certificate (what agents' `url` may use as host).
    pub server_names: Vec<String>,
    /// Bearer token for changes over the admin API (or `SWITCHYARD_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// Resolve workload clusters' `kubernetes_service` here (one EndpointSlice watch per Service
    /// for the whole mesh) and send proxies the endpoints, instead of every proxy watching.
    pub kubernetes_discovery: bool,
    /// Accept a Kubernetes service-account token (checked with a TokenReview) for the workload
    /// of that service account, besides bootstrap tokens.
    pub kubernetes_tokens: bool,
    /// Where the plugins the control plane checks are compiled to (default: as for a proxy).
    pub plugin_cache: Option<PathBuf>,
    /// The mesh view's slot length (whole seconds) and how much of the past it keeps.
    pub stats_resolution: Duration,
    pub stats_window: Duration,
}

/// `[[workload]]`: one service account and the config its proxies run.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub name: String,
    pub namespace: String,
    pub token: String,
    /// Absolute.
    pub config: PathBuf,
    /// Listeners served with mesh mTLS (client certificates required, from the mesh CA).
    pub mesh_listeners: Vec<String>,
    /// Whether `mesh_listeners` was written (each name must then be a listener of the
    /// workload's config: a typo would leave a listener without mesh mTLS).
    pub mesh_listeners_explicit: bool,
    /// The files this workload was read from (its config, its token file), for the watcher.
    pub inputs: Vec<PathBuf>,
}

impl WorkloadSpec {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `spiffe://<trust_domain>/ns/<namespace>/sa/<name>`, as Istio and Linkerd spell it.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.name
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    control: RawControl,
    #[serde(default)]
    plugin: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    workload: Vec<Spanned<RawWorkload>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    ca: PathBuf,
    ca_key: PathBuf,
    trust_domain: Option<Spanned<String>>,
    cert_lifetime: Option<Spanned<String>>,
    server_names: Option<Vec<String>>,
    admin_token: Option<String>,
    kubernetes_discovery: Option<bool>,
    kubernetes_tokens: Option<bool>,
    plugin_cache: Option<PathBuf>,
    stats_resolution: Option<Spanned<String>>,
    stats_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: Spanned<String>,
    namespace: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    config: PathBuf,
    mesh_listeners: Option<Vec<String>>,
}

/// Reads and checks `mesh.toml`.
pub fn load(path: &Path) -> Result<MeshSettings, ConfigErrors> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| file_error(path, format!("cannot read the mesh file: {e}")))?;
    let raw: RawMesh = deserialize(path, &source)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut d = Diagnostics::new(path, &source);

    let cert_lifetime = match &raw.control.cert_lifetime {
        None => Duration::from_secs(24 * 3600),
        Some(text) => match parse_duration(text.get_ref()) {
            Some(d) if d >= Duration::from_secs(1) => d,
            _ => {
                d.error(
                    text.span(),
                    "control.cert_lifetime",
                    "expected a duration of at least 1s, like \"24h\"",
                );
                Duration::from_secs(24 * 3600)
            }
        },
    };
    let trust_domain = match &raw.control.trust_domain {
        None => "cluster.local".to_owned(),
        Some(td) => {
            let valid = !td.get_ref().is_empty()
                && td
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
            if !valid {
                d.error(
                    td.span(),
                    "control.trust_domain",
                    "expected a trust domain like \"cluster.local\" (letters, digits, - . _)",
                );
            }
            td.get_ref().to_ascii_lowercase()
        }
    };
    let stats_resolution = match &raw.control.stats_resolution {
        None => Duration::from_secs(10),
        Some(text) => match parse_duration(text.get_ref()) {
            Some(t) if (1..=300).contains(&t.as_secs()) && t.subsec_nanos() == 0 => t,
            _ => {
                d.error(
                    text.span(),
                    "control.stats_resolution",
                    "expected whole seconds from 1s to 300s, like \"10s\"",
                );
                Duration::from_secs(10)
            }
        },
    };
    let stats_window = match &raw.control.stats_window {
        None => Duration::from_secs(15 * 60),
        Some(text) => match parse_duration(text.get_ref()) {
            Some(t) if t >= stats_resolution && t <= stats_resolution * MAX_STATS_SLOTS => t,
            _ => {
                d.error(
                    text.span(),
                    "control.stats_window",
                    format!(
                        "expected a duration from stats_resolution to {MAX_STATS_SLOTS} times it, like \"15m\""
                    ),
                );
                Duration::from_secs(15 * 60)
            }
        },
    };
    let listen = raw.control.listen;
    let server_names = raw.control.server_names.unwrap_or_else(|| {
        let mut names = vec!["switchyard-control".to_owned(), "localhost".to_owned()];
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        names
    });
    let control = ControlSettings {
        listen,
        admin: raw.control.admin.unwrap_or(DEFAULT_CONTROL_ADMIN),
        ca: base.join(raw.control.ca),
        ca_key: base.join(raw.control.ca_key),
        trust_domain,
        cert_lifetime,
        server_names,
        admin_token: raw.control.admin_token,
        kubernetes_discovery: raw.control.kubernetes_discovery.unwrap_or(false),
        kubernetes_tokens: raw.control.kubernetes_tokens.unwrap_or(false),
        plugin_cache: raw.control.plugin_cache.map(|p| base.join(p)),
        stats_resolution,
        stats_window,
    };

    let mut plugins = Vec::new();
    for (i, table) in raw.plugin.iter().enumerate() {
        let span = table.span();
        let mut table = table.get_ref().clone();
        let name = table
            .get("name")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        match (name, table.get("path").and_then(|v| v.as_str())) {
            (Some(name), Some(file)) => {
                if plugins
                    .iter()
                    .any(|p: &toml::Table| p.get("name").and_then(|v| v.as_str()) == Some(&name))
                {
                    d.error(
                        span,
                        format!("plugin[{i}].name"),
                        format!("two plugins are named {name:?}"),
                    );
                }
                let file = base.join(file).display().to_string();
                table.insert("path".into(), toml::Value::String(file));
                plugins.push(table);
            }
            _ => d.error(
                span,
                format!("plugin[{i}]"),
                "a plugin needs `name` and `path` (the .wasm file)",
            ),
        }
    }

    let mut workloads: Vec<WorkloadSpec> = Vec::new();
    for (i, w) in raw.workload.into_iter().enumerate() {
        let span = w.span();
        let w = w.into_inner();
        let namespace = w.namespace.unwrap_or_else(|| "default".to_owned());
        let name = w.name.get_ref().clone();
        let label_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !label_ok(&name) || !label_ok(&namespace) {
            d.error(
                w.name.span(),
                format!("workload[{i}].name"),
                "names and namespaces are Kubernetes labels: lowercase letters, digits and -",
            );
        }
        if workloads
            .iter()
            .any(|o| o.name == name && o.namespace == namespace)
        {
            d.error(
                w.name.span(),
                format!("workload[{i}].name"),
                format!("workload {namespace}/{name} is declared twice"),
            );
        }
        let mut inputs = vec![base.join(&w.config)];
        let token = match (w.token, w.token_file) {
            (Some(token), None) => token,
            (None, Some(file)) => {
                let file = base.join(file);
                inputs.push(file.clone());
                match std::fs::read_to_string(&file) {
                    Ok(token) => token.trim().to_owned(),
                    Err(e) => {
                        d.error(
                            span.clone(),
                            format!("workload[{i}].token_file"),
                            format!("cannot read {}: {e}", file.display()),
                        );
                        String::new()
                    }
                }
            }
            // Its proxies present their service-account token instead.
            (None, None) if control.kubernetes_tokens => String::new(),
            _ => {
                d.error(
                    span.clone(),
                    format!("workload[{i}].token"),
                    "give exactly one of `token` and `token_file`: the bootstrap token its \
                     proxies present to get a certificate (or set [control] kubernetes_tokens)",
                );
                String::new()
            }
        };
        if !token.is_empty() && token.len() < 16 {
            d.error(
                span.clone(),
                format!("workload[{i}].token"),
                "a bootstrap token must be at least 16 characters (it stands for the workload)",
            );
        }
        if !token.is_empty() && workloads.iter().any(|o| o.token == token) {
            d.error(
                span,
                format!("workload[{i}].token"),
                "two workloads share this token; each needs its own",
            );
        }
        workloads.push(WorkloadSpec {
            name,
            namespace,
            token,
            config: base.join(w.config),
            mesh_listeners_explicit: w.mesh_listeners.is_some(),
            mesh_listeners: w
                .mesh_listeners
                .unwrap_or_else(|| vec![DEFAULT_MESH_LISTENER.to_owned()]),
            inputs,
        });
    }

    d.into_result(MeshSettings {
        source: path.to_path_buf(),
        control,
        plugins,
        workloads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<MeshSettings, ConfigErrors> {
        let dir = std::env::temp_dir().join(format!("switchyard-mesh-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mesh.toml");
        std::fs::write(&path, text).unwrap();
        let result = load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    const CONTROL: &str =
        "[control]\nlisten = \"127.0.0.1:15012\"\nca = \"ca.pem\"\nca_key = \"ca-key.pem\"\n";

    #[test]
    fn defaults_fill_what_is_not_said() {
        let mesh = load_text(&format!(
            "{CONTROL}\n[[workload]]\nname = \"web\"\ntoken = \"0123456789abcdef\"\nconfig = \"web.toml\"\n"
        ))
        .unwrap();
        assert_eq!(mesh.control.trust_domain, "cluster.local");
        assert_eq!(mesh.control.cert_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(mesh.control.admin, DEFAULT_CONTROL_ADMIN);
        assert_eq!(mesh.control.stats_resolution, Duration::from_secs(10));
        assert_eq!(mesh.control.stats_window, Duration::from_secs(900));
        let web = &mesh.workloads[0];
        assert_eq!(web.id(), "default/web");
        assert_eq!(
            web.spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/default/sa/web"
        );
        assert_eq!(web.mesh_listeners, ["inbound"]);
        assert!(web.config.is_absolute() || web.config.ends_with("web.toml"));
    }

    #[test]
    fn mistakes_name_the_line_and_the_key() {
        let errors = load_text(&format!("{CONTROL}cert_lifetme = \"1h\"\n")).unwrap_err();
        let e = &errors.0[0];
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("cert_lifetme"), "{e}");

        let errors = load_text(&format!(
            "{CONTROL}\n[[workload]]\nname = \"web\"\nconfig = \"web.toml\"\n\n[[workload]]\nname = \"Web!\"\ntoken = \"short\"\nconfig = \"x.toml\"\n"
        ))
        .unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("workload[0].token: give exactly one of"),
            "{text}"
        );
        assert!(
            text.contains(":11:") && text.contains("Kubernetes labels"),
            "{text}"
        );
        assert!(text.contains("at least 16 characters"), "{text}");
    }

    #[test]
    fn the_mesh_view_window_is_checked_against_its_resolution() {
        let mesh = load_text(&format!(
            "{CONTROL}stats_resolution = \"2s\"\nstats_window = \"30m\"\n"
        ))
        .unwrap();
        assert_eq!(mesh.control.stats_window, Duration::from_secs(1800));
        let errors = load_text(&format!(
            "{CONTROL}stats_resolution = \"500ms\"\nstats_window = \"5h\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains(":5:") && errors.contains("control.stats_resolution"),
            "{errors}"
        );
        assert!(
            errors.contains(":6:") && errors.contains("control.stats_window"),
            "{errors}"
        );
    }
}
