//! What tests/proxy-wasm/add-header does, written on our SDK: `x-proxy-wasm: <value>` and
//! `x-seen-path: <path>` on every request, a request counter, `x-filtered-by: add-header` on
//! every response. The benchmark runs both to compare the two ways into Wasm.

use serde::Deserialize;
use switchyard_sdk::{Action, Plugin, Request, Response, metrics};

/// `[plugin.config]`
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(default = "default_value")]
    pub value: String,
}

fn default_value() -> String {
    "set".to_owned()
}

pub struct AddHeader {
    value: String,
}

impl Plugin for AddHeader {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Self {
            value: config.value,
        })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        let _ = req.add_header("x-proxy-wasm", &self.value);
        let path = req.path();
        let _ = req.add_header("x-seen-path", &path);
        metrics::counter("add_header_requests", &[], 1);
        Action::Continue
    }

    fn on_response(&self, _req: &mut Request, resp: &mut Response) -> Action {
        let _ = resp.set_header("x-filtered-by", "add-header");
        Action::Continue
    }
}

switchyard_sdk::export_plugin!(AddHeader);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::TestHost;

    #[test]
    fn adds_the_same_headers_as_the_filter() {
        let plugin = switchyard_sdk::load::<AddHeader>(r#"{ "value": "v" }"#).unwrap();
        let mut host = TestHost::get("/a").response(200);
        assert_eq!(host.on_request(&plugin), Action::Continue);
        assert_eq!(host.on_response(&plugin), Action::Continue);
        let has = |name: &str, value: &str| {
            host.request_headers
                .iter()
                .any(|(n, v)| n == name && v == value)
        };
        assert!(
            has("x-proxy-wasm", "v") && has("x-seen-path", "/a"),
            "{:?}",
            host.request_headers
        );
        assert_eq!(
            host.response_header_value("x-filtered-by"),
            Some("add-header")
        );
        assert_eq!(host.counter_total("add_header_requests", &[]), 1);
    }
}
