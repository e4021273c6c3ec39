//! The smallest useful plugin: names itself in a response header and counts requests (as the
//! `switchyard_plugin_requests{plugin="hello"}` metric).
//!
//! ```toml
//! [[plugin]]
//! name = "hello"
//! path = "../target/plugins/hello.wasm"
//! [plugin.config]
//! greeting = "hello from switchyard"   # optional
//! ```

use serde::Deserialize;
use switchyard_sdk::{Action, Plugin, Request, Response, metrics};

/// `[plugin.config]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The value of the `x-hello` response header.
    #[serde(default = "default_greeting")]
    pub greeting: String,
}

fn default_greeting() -> String {
    "hello".to_owned()
}

/// Adds `x-hello` to every response and counts requests in a metric.
pub struct Hello {
    greeting: String,
}

impl Plugin for Hello {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.greeting.trim().is_empty() {
            return Err("greeting must not be empty".into());
        }
        Ok(Self {
            greeting: config.greeting,
        })
    }

    fn on_response(&self, _req: &mut Request, resp: &mut Response) -> Action {
        metrics::counter("requests", &[], 1);
        let _ = resp.set_header("x-hello", &self.greeting);
        Action::Continue
    }
}

switchyard_sdk::export_plugin!(Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::TestHost;

    #[test]
    fn adds_its_header_and_counts() {
        let hello = switchyard_sdk::load::<Hello>(r#"{ "greeting": "hi there" }"#).unwrap();
        let mut host = TestHost::get("/").response(200);

        assert_eq!(host.on_response(&hello), Action::Continue);
        assert_eq!(host.on_response(&hello), Action::Continue);

        assert_eq!(host.response_header_value("x-hello"), Some("hi there"));
        assert_eq!(host.counter_total("requests", &[]), 2);
    }

    #[test]
    fn leaves_requests_alone() {
        let hello = switchyard_sdk::load::<Hello>("{}").unwrap();
        let mut host = TestHost::get("/").header("x-a", "1");

        assert_eq!(host.on_request(&hello), Action::Continue);
        assert_eq!(
            host.request_headers,
            vec![("x-a".to_owned(), "1".to_owned())]
        );
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = switchyard_sdk::load::<Hello>(r#"{ "greeting": 5 }"#)
            .err()
            .unwrap();
        assert!(err.contains("`greeting`"), "{err}");
        let err = switchyard_sdk::load::<Hello>(r#"{ "greting": "x" }"#)
            .err()
            .unwrap();
        assert!(err.contains("unknown field `greting`"), "{err}");
    }
}
