//! Raw TOML structs -> a [`Config`] whose names resolve and whose values are in range.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::path::{EscapedSlashes, PathNormalization};
// Sizes in config (plugin memory, request bodies) take the range of a plugin's memory cap.

use super::error::{ConfigErrors, Diagnostics};
use super::raw::{RawConfig, RawListener, RawPlugin};
use super::{
    AdminConfig, Config, DEFAULT_ADMIN_LISTEN, DEFAULT_HISTORY_RESOLUTION, ListenerConfig,
    ListenerProtocol, OnError, PluginConfig, RouteConfig, RuntimeConfig,
};

mod cluster;
mod values;

pub(in crate::config) use values::{duration, int_in_range, optional_duration};
use values::{duration_at_least, memory_size, one_of, socket_addr};

const LISTENER_PROTOCOLS: &[(&str, ListenerProtocol)] = &[
    ("http", ListenerProtocol::Http),
    ("tcp", ListenerProtocol::Tcp),
];

const ESCAPED_SLASHES: &[(&str, EscapedSlashes)] = &[
    ("keep", EscapedSlashes::Keep),
    ("reject", EscapedSlashes::Reject),
    ("decode", EscapedSlashes::Decode),
];

const ON_ERROR: &[(&str, OnError)] = &[
    ("fail_closed", OnError::FailClosed),
    ("fail_open", OnError::FailOpen),
];

pub fn validate(
    path: &Path,
    raw: RawConfig,
    mut d: Diagnostics<'_>,
) -> Result<Config, ConfigErrors> {
    let admin = admin(&raw, &mut d);
    let runtime = runtime(&raw, &mut d);

    let cluster_names = unique_names(
        "cluster",
        raw.cluster.iter().map(|c| &c.get_ref().name),
        &mut d,
    );
    let plugin_names = unique_names(
        "plugin",
        raw.plugin.iter().map(|p| &p.get_ref().name),
        &mut d,
    );
    unique_names(
        "listener",
        raw.listener.iter().map(|l| &l.get_ref().name),
        &mut d,
    );

    let base = path.parent().unwrap_or(Path::new(""));
    let clusters = raw
        .cluster
        .iter()
        .enumerate()
        .map(|(i, c)| cluster::cluster(i, c.get_ref(), base, &mut d))
        .collect();
    let plugins = raw
        .plugin
        .iter()
        .enumerate()
        .map(|(i, p)| plugin(i, p.get_ref(), base, &mut d))
        .collect();
    let listeners: Vec<ListenerConfig> = raw
        .listener
        .iter()
        .enumerate()
        .map(|(i, l)| listener(i, l.get_ref(), &cluster_names, &plugin_names, base, &mut d))
        .collect();

    unique_listen_addresses(&raw, admin.listen, &mut d);
    let access_log = raw
        .access_log
        .as_ref()
        .map(|a| super::telemetry::access_log(a.get_ref(), base, &mut d));
    let tracing = raw
        .tracing
        .as_ref()
        .map(|t| super::telemetry::tracing(t.get_ref(), &mut d));

    d.into_result(Config {
        source: path.to_path_buf(),
        admin,
        runtime,
        listeners,
        clusters,
        plugins,
        access_log,
        tracing,
    })
}

fn admin(raw: &RawConfig, d: &mut Diagnostics<'_>) -> AdminConfig {
    let default: SocketAddr = DEFAULT_ADMIN_LISTEN
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9901)));
    let listen = raw
        .admin
        .as_ref()
        .and_then(|a| a.get_ref().listen.as_ref())
        .map_or(default, |l| socket_addr(l, "admin.listen", d));
    let token = raw
        .admin
        .as_ref()
        .and_then(|a| a.get_ref().token.as_ref())
        .map(|t| t.get_ref().clone());
    if let Some(token) = raw.admin.as_ref().and_then(|a| a.get_ref().token.as_ref())
        && token.get_ref().trim().len() < 16
    {
        d.error(
            token.span(),
            "admin.token",
            "the token is too short: use at least 16 characters",
        );
    }
    let history_resolution = match raw
        .admin
        .as_ref()
        .and_then(|a| a.get_ref().history_resolution.as_ref())
    {
        None => DEFAULT_HISTORY_RESOLUTION,
        Some(raw) => {
            let resolution = duration(raw, "admin.history_resolution", d);
            let whole_seconds = resolution.subsec_nanos() == 0;
            if resolution != Duration::ZERO
                && (!whole_seconds || !(1..=60).contains(&resolution.as_secs()))
            {
                d.error(
                    raw.span(),
                    "admin.history_resolution",
                    "expected whole seconds from 1s to 60s, like \"10s\"",
                );
            }
            resolution
        }
    };
    AdminConfig {
        listen,
        token,
        history_resolution,
    }
}

fn runtime(raw: &RawConfig, d: &mut Diagnostics<'_>) -> RuntimeConfig {
    let runtime = raw.runtime.as_ref().map(|r| r.get_ref());
    let worker_threads = runtime
        .and_then(|r| r.worker_threads.as_ref())
        .and_then(|n| int_in_range(n, 1, 1024, "runtime.worker_threads", d));
    let drain_timeout = runtime
        .and_then(|r| r.drain_timeout.as_ref())
        .map_or(Duration::from_secs(10), |t| {
            duration(t, "runtime.drain_timeout", d)
        });
    let plugin_cache = runtime
        .and_then(|r| r.plugin_cache.as_ref())
        .map_or_else(default_plugin_cache, |p| {
            std::path::PathBuf::from(p.get_ref())
        });
    RuntimeConfig {
        worker_threads,
        drain_timeout,
        plugin_cache,
    }
}

/// `$XDG_CACHE_HOME/switchyard/plugins`, else `~/.cache/switchyard/plugins`, else the temp dir.
fn default_plugin_cache() -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("switchyard").join("plugins")
}

fn listener(
    i: usize,
    raw: &RawListener,
    clusters: &HashMap<&str, usize>,
    plugins: &HashMap<&str, usize>,
    base: &Path,
    d: &mut Diagnostics<'_>,
) -> ListenerConfig {
    let key = |k: &str| format!("listener[{i}].{k}");
    let listen = socket_addr(&raw.listen, &key("listen"), d);
    let default_cluster = raw
        .default_cluster
        .as_ref()
        .and_then(|c| resolve(c, clusters, "cluster", &key("default_cluster"), d));
    let plugin_indices = raw
        .plugins
        .iter()
        .enumerate()
        .filter_map(|(j, p)| resolve(p, plugins, "plugin", &key(&format!("plugins[{j}]")), d))
        .collect();
    let protocol = raw
        .protocol
        .as_ref()
        .and_then(|p| one_of(p, LISTENER_PROTOCOLS, &key("protocol"), d))
        .unwrap_or(ListenerProtocol::Http);
    let original_destination = raw.original_destination.as_ref();
    if protocol == ListenerProtocol::Tcp {
        if let Some(first) = raw.plugins.first() {
            d.error(
                first.span(),
                key("plugins"),
                "plugins run on HTTP requests; a tcp listener cannot have any",
            );
        }
        let captures = original_destination.is_some_and(|f| *f.get_ref());
        if raw.default_cluster.is_none() && !captures {
            d.error(
                raw.name.span(),
                key("default_cluster"),
                "a tcp listener needs default_cluster (or original_destination = true)",
            );
        }
    }
    ListenerConfig {
        name: raw.name.get_ref().clone(),
        listen,
        default_cluster,
        default_cluster_name: raw.default_cluster.as_ref().map(|c| c.get_ref().clone()),
        plugins: plugin_indices,
        plugin_names: raw.plugins.iter().map(|p| p.get_ref().clone()).collect(),
        request_header_timeout: optional_duration(
            &raw.request_header_timeout,
            Duration::from_secs(10),
            &key("request_header_timeout"),
            d,
        ),
        max_request_head: raw
            .max_request_head
            .as_ref()
            .and_then(|n| int_in_range(n, 8 * 1024, 1024 * 1024, &key("max_request_head"), d))
            .unwrap_or(64 * 1024),
        max_request_headers: raw
            .max_request_headers
            .as_ref()
            .and_then(|n| int_in_range(n, 8, 1000, &key("max_request_headers"), d))
            .unwrap_or(100),
        max_uri_length: raw
            .max_uri_length
            .as_ref()
            .and_then(|n| int_in_range(n, 256, 1024 * 1024, &key("max_uri_length"), d))
            .unwrap_or(8 * 1024),
        max_request_body: raw
            .max_request_body
            .as_ref()
            .map(|m| memory_size(m, &key("max_request_body"), d) as u64),
        tls: raw
            .tls
            .as_ref()
            .and_then(|t| super::tls::listener_tls(t, &key("tls"), base, d)),
        protocol,
        original_destination: original_destination.is_some_and(|f| *f.get_ref()),
        tcp_idle_timeout: optional_duration(
            &raw.tcp_idle_timeout,
            Duration::from_secs(3600),
            &key("tcp_idle_timeout"),
            d,
        ),
        path_normalization: PathNormalization {
            enabled: raw.normalize_path.as_ref().is_none_or(|b| *b.get_ref()),
            merge_slashes: raw.merge_slashes.as_ref().is_some_and(|b| *b.get_ref()),
            escaped_slashes: raw
                .escaped_slashes
                .as_ref()
                .and_then(|e| one_of(e, ESCAPED_SLASHES, &key("escaped_slashes"), d))
                .unwrap_or_default(),
        },
        grpc_web: raw.grpc_web.as_ref().is_some_and(|b| *b.get_ref()),
        routes: routes(raw, plugins, &key("route"), d),
    }
}

/// `[[listener.route]]`s: unique names; `skip` names plugins of the listener's chain, `add`
/// names plugins that exist and are not in it already.
fn routes(
    raw: &RawListener,
    plugins: &HashMap<&str, usize>,
    at: &str,
    d: &mut Diagnostics<'_>,
) -> Vec<RouteConfig> {
    let in_chain = |name: &str| raw.plugins.iter().any(|p| p.get_ref() == name);
    let mut routes: Vec<RouteConfig> = Vec::new();
    for (r, route) in raw.route.iter().enumerate() {
        let route = route.get_ref();
        let key = |k: &str| format!("{at}[{r}].{k}");
        let name = route.name.get_ref();
        if routes.iter().any(|seen| seen.name == *name) {
            d.error(
                route.name.span(),
                key("name"),
                format!("two routes of this listener are named {name:?}"),
            );
        }
        for (j, skipped) in route.skip.iter().enumerate() {
            if !in_chain(skipped.get_ref()) {
                d.error(
                    skipped.span(),
                    key(&format!("skip[{j}]")),
                    format!(
                        "{:?} is not in this listener's plugins; skip names plugins of its chain",
                        skipped.get_ref()
                    ),
                );
            }
        }
        for (j, added) in route.add.iter().enumerate() {
            let added_key = key(&format!("add[{j}]"));
            if resolve(added, plugins, "plugin", &added_key, d).is_some()
                && in_chain(added.get_ref())
            {
                d.error(
                    added.span(),
                    added_key,
                    format!(
                        "{:?} is in this listener's plugins already; add names plugins it does not run",
                        added.get_ref()
                    ),
                );
            }
        }
        routes.push(RouteConfig {
            name: name.clone(),
            skip: route.skip.iter().map(|s| s.get_ref().clone()).collect(),
            add: route.add.iter().map(|s| s.get_ref().clone()).collect(),
        });
    }
    routes
}

fn plugin(i: usize, raw: &RawPlugin, base: &Path, d: &mut Diagnostics<'_>) -> PluginConfig {
    let key = |k: &str| format!("plugin[{i}].{k}");
    let sha256 = raw.sha256.as_ref().and_then(|s| {
        let hex = s.get_ref().to_ascii_lowercase();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(hex)
        } else {
            d.error(
                s.span(),
                key("sha256"),
                "expected 64 hexadecimal digits (a sha256 digest)",
            );
            None
        }
    });
    if raw.path.get_ref().is_empty() {
        d.error(
            raw.path.span(),
            key("path"),
            "expected the path of a .wasm file",
        );
    }
    let limits = raw.limits.as_ref();
    let time_limit =
        limits
            .and_then(|l| l.time.as_ref())
            .map_or(crate::sandbox::DEFAULT_TIME, |t| {
                duration_at_least(
                    t,
                    &key("limits.time"),
                    crate::sandbox::MIN_TIME,
                    "the interval at which a hook's CPU deadline is checked",
                    d,
                )
            });
    let memory_limit = limits
        .and_then(|l| l.memory.as_ref())
        .map_or(crate::sandbox::DEFAULT_MEMORY, |m| {
            memory_size(m, &key("limits.memory"), d)
        });
    PluginConfig {
        name: raw.name.get_ref().clone(),
        path: base.join(raw.path.get_ref()),
        sha256,
        time_limit,
        memory_limit,
        on_error: raw
            .on_error
            .as_ref()
            .and_then(|o| one_of(o, ON_ERROR, &key("on_error"), d))
            .unwrap_or(OnError::FailClosed),
        config: raw
            .config
            .clone()
            .unwrap_or(serde_json::Value::Object(Default::default())),
    }
}

/// Checks names are non-empty and unique; returns name -> index.
fn unique_names<'a>(
    kind: &str,
    names: impl Iterator<Item = &'a Spanned<String>>,
    d: &mut Diagnostics<'_>,
) -> HashMap<&'a str, usize> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        let key = format!("{kind}[{i}].name");
        if name.get_ref().trim().is_empty() {
            d.error(name.span(), key, "expected a non-empty name");
        } else if let Some(first) = seen.get(name.get_ref().as_str()) {
            d.error(
                name.span(),
                key,
                format!(
                    "duplicate {kind} name {:?} (already used by {kind}[{first}]); names must be unique",
                    name.get_ref()
                ),
            );
        } else {
            seen.insert(name.get_ref(), i);
        }
    }
    seen
}

fn unique_listen_addresses(raw: &RawConfig, admin: SocketAddr, d: &mut Diagnostics<'_>) {
    let mut seen: HashMap<SocketAddr, String> = HashMap::new();
    if admin.port() != 0 {
        seen.insert(admin, "admin.listen".into());
    }
    for (i, l) in raw.listener.iter().enumerate() {
        let l = l.get_ref();
        let Ok(addr) = l.listen.get_ref().parse::<SocketAddr>() else {
            continue; // already reported as a bad address
        };
        if addr.port() == 0 {
            continue; // each :0 gets its own port from the OS
        }
        let key = format!("listener[{i}].listen");
        if let Some(first) = seen.get(&addr) {
            d.error(
                l.listen.span(),
                key,
                format!("{addr} is already used by {first}; every listener needs its own address"),
            );
        } else {
            seen.insert(addr, key);
        }
    }
}

fn resolve(
    name: &Spanned<String>,
    known: &HashMap<&str, usize>,
    kind: &str,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Option<usize> {
    if let Some(&i) = known.get(name.get_ref().as_str()) {
        return Some(i);
    }
    let mut names: Vec<&str> = known.keys().copied().collect();
    names.sort_unstable();
    let expected = if names.is_empty() {
        format!("no [[{kind}]] is defined")
    } else {
        format!("expected one of: {}", names.join(", "))
    };
    d.error(
        name.span(),
        key,
        format!("{kind} {:?} is not defined; {expected}", name.get_ref()),
    );
    None
}
