//! Reading the mesh's own TOML files (`mesh.toml`, a proxy's `[control]`) with errors that name
//! the file, line and key, as the proxy config's do.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::de::DeTable;

use crate::config::{ConfigError, ConfigErrors, Diagnostics};

/// `source` (read from `path`) as a `T`, or the error with its line and key.
pub fn deserialize<T: DeserializeOwned>(path: &Path, source: &str) -> Result<T, ConfigErrors> {
    let mut diagnostics = Diagnostics::new(path, source);
    let result = toml::Deserializer::parse(source)
        .map_err(|e| {
            (
                e.span().unwrap_or(0..0),
                String::new(),
                e.message().to_owned(),
            )
        })
        .and_then(|de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                let key = e
                    .path()
                    .iter()
                    .filter(|s| !s.to_string().starts_with("$__"))
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(".");
                let span = e.inner().span().unwrap_or(0..0);
                (span, key, e.inner().message().to_owned())
            })
        });
    match result {
        Ok(value) => Ok(value),
        Err((span, key, message)) => {
            diagnostics.error(span, key, message);
            Err(diagnostics.into_errors())
        }
    }
}

/// Where top-level key `key` is written in `source`, for an error about it.
pub fn top_level_span(source: &str, key: &str) -> Range<usize> {
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
