//! API keys, stored in the config only as SHA-256 hashes so the config file leaks no secret.
//! Make one with `printf %s "$KEY" | sha256sum`.
//!
//! A presented key is hashed once per instance: keys that matched are remembered (only good
//! ones, so the table is bounded by the configured keys and a client cannot fill it), and the
//! digest is compared as bytes, not as hex text.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};

use rustc_hash::FxHasher;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use switchyard_sdk::text;

type Fx = BuildHasherDefault<FxHasher>;

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
}

/// Presented keys that matched, kept per instance; past this many the table starts over (only
/// variants of the configured keys get in, so this is never reached in practice).
const MAX_REMEMBERED: usize = 1024;

/// The configured keys as digests, and the presented keys already matched.
pub struct KeyTable {
    /// Each key's SHA-256 and its index in the config.
    digests: Vec<[u8; 32]>,
    /// Matched keys by the hash of their bytes, each with its index; compared whole on a hit (a
    /// key that collides with a remembered one is hashed and then replaces it).
    remembered: RefCell<HashMap<u64, (Box<str>, usize), Fx>>,
}

impl KeyTable {
    /// Built from validated keys (64 hex digits each).
    pub fn new(keys: &ApiKeys) -> Self {
        Self {
            digests: keys.keys.iter().map(|k| digest_of_hex(&k.sha256)).collect(),
            remembered: RefCell::default(),
        }
    }

    /// The index (in the config) of the key `presented` is, if any.
    pub fn lookup(&self, presented: &str) -> Option<usize> {
        // HTTP's optional whitespace is ASCII; `trim` would test every end for Unicode spaces.
        let presented = presented.trim_ascii();
        let hash = Fx::default().hash_one(presented);
        if let Some((key, index)) = self.remembered.borrow().get(&hash)
            && text::same(key.as_bytes(), presented.as_bytes())
        {
            return Some(*index);
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let index = self.digests.iter().position(|d| *d == digest)?;
        let mut remembered = self.remembered.borrow_mut();
        if remembered.len() >= MAX_REMEMBERED {
            remembered.clear();
        }
        remembered.insert(hash, (presented.into(), index));
        Some(index)
    }
}

/// 64 hex digits as 32 bytes (checked by [`ApiKeys::validate`]; anything else is zeros, which no
/// key hashes to in practice).
fn digest_of_hex(hex: &str) -> [u8; 32] {
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let text = std::str::from_utf8(pair).unwrap_or("00");
        *byte = u8::from_str_radix(text, 16).unwrap_or(0);
    }
    digest
}
