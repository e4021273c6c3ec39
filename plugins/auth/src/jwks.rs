//! Signing keys per provider: inline keys, plus a JWKS fetched through a cluster with
//! `http-call`. The fetched document is kept in the plugin's shared store with the configured TTL,
//! so all instances fetch it once per TTL; each instance keeps the parsed keys until the stored
//! document changes. A failed fetch is remembered for a few seconds so an identity provider
//! outage does not turn into a fetch per request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use switchyard_sdk::http::{self, HttpRequest};
use switchyard_sdk::{log, shared};

use crate::config::JwtProvider;
use crate::jwt::{Key, parse_jwks};

/// How long a failed JWKS fetch stops further attempts.
const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// Provider index -> (shared-store version of the JWKS, inline + fetched keys).
type Fetched = HashMap<usize, (u64, Rc<Vec<Key>>)>;

/// This instance's view of every provider's keys.
pub struct KeyCache {
    inline: Vec<Rc<Vec<Key>>>,
    fetched: RefCell<Fetched>,
}

impl KeyCache {
    pub fn new(inline: Vec<Vec<Key>>) -> Self {
        Self {
            inline: inline.into_iter().map(Rc::new).collect(),
            fetched: RefCell::new(HashMap::new()),
        }
    }

    /// The keys provider `index` verifies with now.
    pub fn keys(&self, index: usize, provider: &JwtProvider) -> Result<Rc<Vec<Key>>, String> {
        let inline = self.inline.get(index).cloned().unwrap_or_default();
        let Some(source) = &provider.jwks else {
            return Ok(inline);
        };
        let store_key = format!("jwks/{}", provider.name);
        let entry = match shared::kv_get(&store_key) {
            Some(entry) => entry,
            None => {
                let failed_key = format!("jwks-failed/{}", provider.name);
                if shared::kv_get(&failed_key).is_some() {
                    return Err(format!(
                        "the signing keys of {:?} are unavailable",
                        provider.name
                    ));
                }
                match fetch(source) {
                    Ok(document) => {
                        let version = shared::kv_set(&store_key, &document, Some(source.ttl.0));
                        shared::Entry {
                            value: document,
                            version,
                        }
                    }
                    Err(e) => {
                        log::warn(&format!(
                            "auth: cannot fetch the JWKS of {:?}: {e}",
                            provider.name
                        ));
                        shared::kv_set(&failed_key, b"1", Some(FAILURE_BACKOFF));
                        return Err(format!(
                            "the signing keys of {:?} are unavailable",
                            provider.name
                        ));
                    }
                }
            }
        };
        if let Some((version, keys)) = self.fetched.borrow().get(&index)
            && *version == entry.version
        {
            return Ok(Rc::clone(keys));
        }
        let mut keys: Vec<Key> = inline.as_ref().clone();
        match parse_jwks(&entry.value) {
            Ok(fetched) => keys.extend(fetched),
            Err(e) => log::warn(&format!(
                "auth: the JWKS of {:?} is unusable: {e}",
                provider.name
            )),
        }
        let keys = Rc::new(keys);
        self.fetched
            .borrow_mut()
            .insert(index, (entry.version, Rc::clone(&keys)));
        Ok(keys)
    }
}

fn fetch(source: &crate::config::JwksSource) -> Result<Vec<u8>, String> {
    let mut request = HttpRequest::get(source.path.clone()).header("accept", "application/json");
    if let Some(host) = &source.host {
        request = request.header("host", host.clone());
    }
    let response = http::call(&source.cluster, &request).map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Err(format!("{} answered {}", source.cluster, response.status));
    }
    parse_jwks(&response.body)?;
    Ok(response.body)
}
