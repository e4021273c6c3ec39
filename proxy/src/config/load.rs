//! Reading a config file: TOML syntax and types (serde), then unknown keys, then validation, with
//! every error reported at once.

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, ConfigErrors, Diagnostics};
use super::raw::RawConfig;
use super::{Config, validate};

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        file_error(
            path,
            format!(
                "cannot read config file: {}",
                crate::file_access::describe(&e)
            ),
        )
    })?;
    load_str(path, &source)
}

/// Validates config text as if read from `path` (which names it in errors and anchors plugin paths).
pub fn load_str(path: &Path, source: &str) -> Result<Config, ConfigErrors> {
    let mut diagnostics = Diagnostics::new(path, source);
    // An empty file is never meant: it is what a reload sees between an editor's truncate and its
    // write, and applying it would drop every listener.
    if source.trim().is_empty() {
        diagnostics.error(
            0..0,
            String::new(),
            "the config file is empty; expected at least one [[listener]]",
        );
        return Err(diagnostics.into_errors());
    }

    let Some(raw) = read_toml::<RawConfig>(source, &mut diagnostics, super::fields::keys_of) else {
        return Err(diagnostics.into_errors());
    };
    validate::validate(path, raw, diagnostics)
}

/// Reads TOML `source` into a `T`, every problem recorded in `diagnostics` with its line and
/// key: a syntax or type error (and then `None`), or keys `T` does not have — named with the
/// keys `expected` lists for their table — after which `T` is still returned, so validation can
/// report its own errors beside them. The one TOML loader: the proxy's config and the mesh's
/// files ([`deserialize`]) both read through it.
pub(crate) fn read_toml<T: DeserializeOwned>(
    source: &str,
    diagnostics: &mut Diagnostics<'_>,
    expected: fn(&[&str]) -> &'static [&'static str],
) -> Option<T> {
    let mut unknown_keys: Vec<Vec<Segment>> = Vec::new();
    let value = match parse(source, &mut unknown_keys) {
        Ok(value) => value,
        Err(error) => {
            let span = error.inner().span().unwrap_or(0..0);
            let key = display_path(&error_segments(error.path()));
            diagnostics.error(span, key, error.inner().message().to_owned());
            return None;
        }
    };
    if !unknown_keys.is_empty() {
        // The document parsed once already, so this cannot fail; if it somehow did we still report
        // the keys, just without a line number.
        let tree = DeTable::parse(source).ok();
        for segments in unknown_keys {
            let span = tree
                .as_ref()
                .and_then(|t| key_span(t.get_ref(), &segments))
                .unwrap_or(0..0);
            let (parent, name) = split_last(&segments);
            diagnostics.error(
                span,
                display_path(&segments),
                format!("unknown key `{name}`{}", expected_keys(&parent, expected)),
            );
        }
    }
    Some(value)
}

/// A whole TOML file other than the proxy's config (`mesh.toml`, a proxy's `[control]`
/// settings) as a `T`, or every error with its file, line and key.
pub fn deserialize<T: DeserializeOwned>(path: &Path, source: &str) -> Result<T, ConfigErrors> {
    let mut diagnostics = Diagnostics::new(path, source);
    match read_toml(source, &mut diagnostics, |_| &[]) {
        Some(value) => diagnostics.into_result(value),
        None => Err(diagnostics.into_errors()),
    }
}

/// Where top-level key `key` is written in `source`, for an error about it.
pub fn top_level_span(source: &str, key: &str) -> std::ops::Range<usize> {
    DeTable::parse(source)
        .ok()
        .and_then(|t| {
            t.get_ref()
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key)
                .map(|(k, _)| k.span())
        })
        .unwrap_or(0..0)
}

/// One error about a whole file (it cannot be read, say).
pub fn file_error(path: &Path, message: impl Into<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: message.into(),
    }])
}

fn parse<T: DeserializeOwned>(
    source: &str,
    unknown_keys: &mut Vec<Vec<Segment>>,
) -> Result<T, serde_path_to_error::Error<toml::de::Error>> {
    let de = toml::Deserializer::parse(source).map_err(|e| {
        let track = serde_path_to_error::Track::new();
        serde_path_to_error::Error::new(track.path(), e)
    })?;
    let mut record_unknown = |path: serde_ignored::Path<'_>| unknown_keys.push(segments(&path));
    let de = serde_ignored::Deserializer::new(de, &mut record_unknown);
    serde_path_to_error::deserialize(de)
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = path;
    loop {
        match at {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                out.push(Segment::Index(*index));
                at = parent;
            }
            serde_ignored::Path::Map { parent, key } => {
                // toml::Spanned deserializes through a private wrapper table; skip its keys.
                if !key.starts_with("$__") {
                    out.push(Segment::Key(key.clone()));
                }
                at = parent;
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => at = parent,
        }
    }
    out.reverse();
    out
}

/// The key path of a serde error, without toml's private span-wrapper keys.
fn error_segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
            serde_path_to_error::Segment::Map { key } if !key.starts_with("$__") => {
                Some(Segment::Key(key.clone()))
            }
            _ => None,
        })
        .collect()
}

fn display_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn split_last(segments: &[Segment]) -> (Vec<Segment>, String) {
    match segments.split_last() {
        Some((Segment::Key(k), parent)) => (parent.to_vec(), k.clone()),
        Some((Segment::Index(i), parent)) => (parent.to_vec(), i.to_string()),
        None => (Vec::new(), String::new()),
    }
}

/// The keys allowed where an unknown one was found, so the message says what was expected.
fn expected_keys(parent: &[Segment], keys_of: fn(&[&str]) -> &'static [&'static str]) -> String {
    let table: Vec<&str> = parent
        .iter()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect();
    let keys = keys_of(&table);
    if keys.is_empty() {
        String::new()
    } else {
        format!(", expected one of: {}", keys.join(", "))
    }
}

/// Finds the span of the key at `segments` in the parsed document.
fn key_span(table: &DeTable<'_>, segments: &[Segment]) -> Option<std::ops::Range<usize>> {
    let (first, rest) = segments.split_first()?;
    let Segment::Key(name) = first else {
        return None;
    };
    let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
    if rest.is_empty() {
        return Some(key.span());
    }
    value_span(value.get_ref(), rest).or(Some(key.span()))
}

fn value_span(value: &DeValue<'_>, segments: &[Segment]) -> Option<std::ops::Range<usize>> {
    match (value, segments.first()?) {
        (DeValue::Table(t), Segment::Key(_)) => key_span(t, segments),
        (DeValue::Array(a), Segment::Index(i)) => {
            let item = a.get(*i)?;
            if segments.len() == 1 {
                Some(item.span())
            } else {
                value_span(item.get_ref(), &segments[1..]).or(Some(item.span()))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_refused() {
        for empty in ["", "  \n\n"] {
            let errors = load_str(Path::new("sw.toml"), empty).unwrap_err();
            assert!(
                errors.to_string().contains("the config file is empty"),
                "{errors}"
            );
        }
    }

    const VALID: &str = r#"
[admin]
listen = "127.0.0.1:9901"
token = "a-token-of-sixteen-plus"

[[listener]]
name = "public"
listen = "127.0.0.1:8080"
default_cluster = "app"
plugins = ["p"]
[listener.tls]
cert = "c.pem"
key = "k.pem"
client_ca = "ca.pem"

[[cluster]]
name = "app"
endpoints = ["127.0.0.1:9001", { address = "app.internal:80", weight = 3 }]
lb = "ring_hash"
[cluster.health_check]
interval = "1s"
expected_statuses = [200, 204]
[cluster.outlier]
consecutive_5xx = 3
[cluster.circuit_breaker]
max_requests = 10

[[plugin]]
name = "p"
path = "p.wasm"
limits = { time = "5ms", memory = "16MiB" }
[plugin.config]
a = [1, 2, { b = "c" }]
"#;

    /// The fuzz targets' invariant on stable: mangled configs give errors, never a panic, and
    /// every error names the file and a line in it.
    #[test]
    fn random_input_never_panics() {
        let path = Path::new("fuzz.toml");
        assert!(
            load_str(path, VALID).is_ok(),
            "{:?}",
            load_str(path, VALID).err()
        );
        let mut rng = fastrand::Rng::with_seed(7);
        let bytes = VALID.as_bytes();
        for _ in 0..3_000 {
            let mut mangled = bytes.to_vec();
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(..mangled.len());
                match rng.u8(..4) {
                    0 => mangled[i] = rng.u8(..),
                    1 => {
                        mangled.remove(i);
                    }
                    2 => mangled.insert(i, b"[]{}=\"',.#\n\\0123456789"[rng.usize(..22)]),
                    _ => mangled.truncate(i),
                }
                if mangled.is_empty() {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&mangled);
            let lines = text.lines().count().max(1);
            if let Err(errors) = load_str(path, &text) {
                assert!(!errors.0.is_empty(), "an empty error list for:\n{text}");
                for e in &errors.0 {
                    assert!(
                        e.file == path && (1..=lines + 1).contains(&e.line),
                        "{e} (line {} of {lines}) for:\n{text}",
                        e.line
                    );
                }
            }
        }
    }
}
