//! A controlled proxy's own file: `[control]`, and the sections that stay local.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use crate::config::{ConfigErrors, Diagnostics, parse_duration};
use crate::config::{deserialize, file_error, top_level_span};
use crate::mesh::api;

/// Sections of a controlled proxy's own file that are not `[control]` and stay local.
const LOCAL_SECTIONS: [&str; 4] = ["admin", "runtime", "access_log", "tracing"];

/// How often a controlled proxy reports its traffic when `[control] stats_interval` is absent.
const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(10);

/// `[control]`, checked.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub(super) url: Uri,
    pub(super) ca: PathBuf,
    pub(super) workload: String,
    pub(super) namespace: String,
    pub(super) token: Token,
    pub(super) state_dir: PathBuf,
    pub(super) poll_timeout: Duration,
    /// How often the proxy's traffic is reported for the mesh view.
    pub(super) stats_interval: Duration,
    /// The local sections, paths made absolute.
    pub(super) local: toml::Table,
}

#[derive(Debug, Clone)]
pub(super) enum Token {
    Inline(String),
    /// Read at every use: a projected service-account token is rotated in place.
    File(PathBuf),
}

#[derive(Deserialize)]
struct RawLocal {
    control: RawControl,
    #[serde(flatten)]
    rest: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    pub(super) url: String,
    pub(super) ca: PathBuf,
    pub(super) workload: String,
    pub(super) namespace: Option<String>,
    pub(super) token: Option<String>,
    token_file: Option<PathBuf>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) poll_timeout: Option<String>,
    pub(super) stats_interval: Option<String>,
}

/// Whether the config file at `path` is a controlled proxy's (has `[control]`).
pub fn is_controlled(source: &str) -> bool {
    source
        .parse::<toml::Table>()
        .is_ok_and(|t| t.contains_key("control"))
}

/// Reads and checks a controlled proxy's own file.
pub fn load(path: &Path) -> Result<AgentSettings, ConfigErrors> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| file_error(path, format!("cannot read config file: {e}")))?;
    let raw: RawLocal = deserialize(path, &source)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut d = Diagnostics::new(path, &source);
    let control_span = top_level_span(&source, "control");
    for key in raw.rest.keys() {
        if !LOCAL_SECTIONS.contains(&key.as_str()) {
            d.error(
                top_level_span(&source, key),
                key.clone(),
                format!(
                    "with [control], `{key}` comes from the control plane; a controlled proxy's \
                     file may add only {}",
                    LOCAL_SECTIONS.map(|s| format!("[{s}]")).join(", ")
                ),
            );
        }
    }
    let url: Option<Uri> = match raw.control.url.parse::<Uri>() {
        Ok(url) if url.scheme_str() == Some("https") && url.host().is_some() => Some(url),
        _ => {
            d.error(
                control_span.clone(),
                "control.url",
                format!(
                    "{:?} is not an https:// URL (the control plane speaks only HTTPS)",
                    raw.control.url
                ),
            );
            None
        }
    };
    let token = match (raw.control.token, raw.control.token_file) {
        (Some(t), None) => Token::Inline(t),
        (None, Some(f)) => Token::File(base.join(f)),
        _ => {
            d.error(
                control_span.clone(),
                "control.token",
                "give exactly one of `token` and `token_file` (the workload's bootstrap token)",
            );
            Token::Inline(String::new())
        }
    };
    let poll_timeout = match raw.control.poll_timeout.as_deref().map(parse_duration) {
        None => Duration::from_secs(30),
        Some(Some(t)) if t >= Duration::from_secs(1) && t.as_secs() <= api::MAX_WAIT_SECS => t,
        Some(_) => {
            d.error(
                control_span,
                "control.poll_timeout",
                format!(
                    "expected a duration from 1s to {}s, like \"30s\"",
                    api::MAX_WAIT_SECS
                ),
            );
            Duration::from_secs(30)
        }
    };
    let stats_interval = match raw.control.stats_interval.as_deref().map(parse_duration) {
        None => DEFAULT_STATS_INTERVAL,
        Some(Some(t)) if (1..=60).contains(&t.as_secs()) && t.subsec_nanos() == 0 => t,
        Some(_) => {
            d.error(
                top_level_span(&source, "control"),
                "control.stats_interval",
                "expected whole seconds from 1s to 60s, like \"10s\"",
            );
            DEFAULT_STATS_INTERVAL
        }
    };
    let namespace = raw.control.namespace.unwrap_or_else(|| "default".into());
    let state_dir = raw.control.state_dir.map_or_else(
        || std::env::temp_dir().join(format!("switchyard-{namespace}-{}", raw.control.workload)),
        |dir| base.join(dir),
    );
    let mut local = raw.rest;
    absolutize(&mut local, base);
    let settings = url.map(|url| AgentSettings {
        url,
        ca: base.join(raw.control.ca),
        workload: raw.control.workload,
        namespace,
        token,
        state_dir,
        poll_timeout,
        stats_interval,
        local,
    });
    d.into_result(settings)?
        .ok_or_else(|| file_error(path, "control.url: expected an https:// URL"))
}

/// Relative paths in the local sections are relative to the proxy's own file, which the
/// effective config (in the state directory) is not next to.
fn absolutize(local: &mut toml::Table, base: &Path) {
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    for (section, key) in [("access_log", "path"), ("runtime", "plugin_cache")] {
        if let Some(toml::Value::String(p)) = local.get_mut(section).and_then(|s| s.get_mut(key))
            && Path::new(p.as_str()).is_relative()
        {
            *p = base.join(&*p).display().to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<AgentSettings, ConfigErrors> {
        let dir = std::env::temp_dir().join(format!("switchyard-agent-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.toml");
        std::fs::write(&path, text).unwrap();
        let result = load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    const CONTROL: &str = "[control]\nurl = \"https://control:15012\"\nca = \"ca.pem\"\nworkload = \"web\"\ntoken = \"0123456789abcdef\"\n";

    #[test]
    fn local_sections_stay_and_their_relative_paths_are_anchored() {
        let settings = load_text(&format!(
            "[access_log]\npath = \"logs/access.log\"\n\n{CONTROL}"
        ))
        .unwrap();
        let path = settings.local["access_log"]["path"].as_str().unwrap();
        assert!(Path::new(path).is_absolute(), "{path}");
        assert_eq!(settings.namespace, "default");
        assert_eq!(settings.poll_timeout, Duration::from_secs(30));
    }

    #[test]
    fn listeners_beside_control_are_refused_at_their_line() {
        let errors = load_text(&format!(
            "{CONTROL}\n[[listener]]\nname = \"x\"\nlisten = \"127.0.0.1:1\"\n"
        ))
        .unwrap_err();
        assert_eq!(errors.0[0].line, 7, "{errors}");
        assert!(
            errors.0[0].message.contains("comes from the control plane"),
            "{errors}"
        );
    }

    #[test]
    fn the_control_plane_is_reached_over_https_only() {
        let errors = load_text(&CONTROL.replace("https://", "http://")).unwrap_err();
        assert!(errors.to_string().contains("control.url"), "{errors}");
    }
}
