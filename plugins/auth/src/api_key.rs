//! API keys, stored in the config only as SHA-256 hashes so the config file leaks no secret.
//! Make one with `printf %s "$KEY" | sha256sum`.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `[plugin.config.api_keys]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// Where clients put the key.
    #[serde(default = "default_header")]
    pub header: String,
    pub keys: Vec<ApiKey>,
    /// A header that tells the upstream which key (by name) was used.
    #[serde(default)]
    pub forward_as: Option<String>,
    /// Keep the key header for the upstream (removed by default).
    #[serde(default)]
    pub forward_key: bool,
}

fn default_header() -> String {
    "x-api-key".into()
}

/// `{ name = "acme", sha256 = "9f86d0..." }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
}

impl ApiKeys {
    pub fn validate(&self) -> Result<(), String> {
        switchyard_sdk::config::check_header_name(&self.header)
            .map_err(|e| format!("header: {e}"))?;
        if let Some(header) = &self.forward_as {
            switchyard_sdk::config::check_header_name(header)
                .map_err(|e| format!("forward_as: {e}"))?;
        }
        for (i, key) in self.keys.iter().enumerate() {
            let hex = key.sha256.as_str();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "keys[{i}].sha256: expected 64 hex digits (the SHA-256 of the key)"
                ));
            }
        }
        Ok(())
    }

    /// The name of the key `presented` hashes to.
    pub fn lookup(&self, presented: &str) -> Option<&str> {
        let digest = hex(&Sha256::digest(presented.trim().as_bytes()));
        self.keys
            .iter()
            .find(|k| k.sha256.eq_ignore_ascii_case(&digest))
            .map(|k| k.name.as_str())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
