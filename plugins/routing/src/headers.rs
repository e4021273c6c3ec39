//! Header changes a route makes: `set` replaces, `add` appends, `remove` deletes, in the order
//! remove, set, add (so a route can replace a header the client sent).

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_sdk::{HostError, Request, Response, log};

/// `request_headers = { set = { "x-a" = "1" }, add = { "x-b" = "2" }, remove = ["x-c"] }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderChanges {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn validate(&self, at: &str) -> Result<(), String> {
        let names = self.set.keys().chain(self.add.keys()).chain(&self.remove);
        for name in names {
            switchyard_sdk::config::check_header_name(name).map_err(|e| format!("{at}: {e}"))?;
        }
        for value in self.set.values().chain(self.add.values()) {
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(format!("{at}: the value {value:?} holds a line break"));
            }
        }
        Ok(())
    }

    pub fn apply_to_request(&self, req: &mut Request) {
        for name in &self.remove {
            req.remove_header(name);
        }
        for (name, value) in &self.set {
            report(req.set_header(name, value));
        }
        for (name, value) in &self.add {
            report(req.add_header(name, value));
        }
    }

    pub fn apply_to_response(&self, resp: &mut Response) {
        for name in &self.remove {
            resp.remove_header(name);
        }
        for (name, value) in &self.set {
            report(resp.set_header(name, value));
        }
        for (name, value) in &self.add {
            report(resp.add_header(name, value));
        }
    }
}

fn report(result: Result<(), HostError>) {
    if let Err(e) = result {
        log::warn(&format!("routing: header change refused: {e}"));
    }
}
