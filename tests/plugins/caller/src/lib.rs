//! A test plugin that calls out to clusters: from `on_request` (`callout`) and from its ticks
//! (`tick_callout`). Kept apart from testkit: a plugin that imports `http.call` runs its hooks on a
//! fiber, as a component, while testkit's well- and badly-behaved hooks are meant to run on the
//! core entry every plugin that never calls out uses.

use std::time::Duration;

use serde::Deserialize;
use switchyard_sdk::http::{self, HttpRequest};
use switchyard_sdk::{Action, Plugin, Request, shared};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Call `GET /callout` on this cluster in on_request; its status goes in `x-callout-status`.
    #[serde(default)]
    pub callout: Option<String>,
    /// Call `GET /tick` on this cluster every `tick_ms`; requests get the last status in
    /// `x-tick-callout`.
    #[serde(default)]
    pub tick_callout: Option<String>,
    #[serde(default)]
    pub tick_ms: Option<u32>,
    /// Say in `new` that this plugin never calls out (and call out anyway, to be refused).
    #[serde(default)]
    pub never_call_out: bool,
}

pub struct Caller {
    config: Config,
}

/// Where the last tick's callout status is kept.
const TICK_STATUS: &str = "caller.tick.callout";

/// `GET path` on `cluster`: its status, or the error.
fn call(cluster: &str, path: &str) -> String {
    match http::call(cluster, &HttpRequest::get(path)) {
        Ok(response) => response.status.to_string(),
        Err(e) => format!("error: {e}"),
    }
}

impl Plugin for Caller {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.never_call_out {
            http::never_call_out();
        }
        if let Some(ms) = config.tick_ms {
            switchyard_sdk::timer::tick_every(Duration::from_millis(u64::from(ms)));
        }
        Ok(Self { config })
    }

    fn on_tick(&self) -> Action {
        if let Some(cluster) = &self.config.tick_callout {
            shared::kv_set(TICK_STATUS, call(cluster, "/tick").as_bytes(), None);
        }
        Action::Continue
    }

    fn on_request(&self, req: &mut Request) -> Action {
        if let Some(status) = shared::kv_get(TICK_STATUS) {
            let status = String::from_utf8_lossy(&status.value).into_owned();
            let _ = req.add_response_header("x-tick-callout", &status);
        }
        if let Some(cluster) = &self.config.callout {
            let _ = req.set_header("x-callout-status", &call(cluster, "/callout"));
        }
        Action::Continue
    }
}

switchyard_sdk::export_plugin!(Caller);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::TestHost;

    #[test]
    fn calls_out_from_requests_and_ticks() {
        let caller = switchyard_sdk::load::<Caller>(
            r#"{ "callout": "auth", "tick_callout": "keys", "tick_ms": 50 }"#,
        )
        .unwrap();
        let answer = |cluster: &str, request: &HttpRequest| {
            let status = if cluster == "keys" && request.path == "/tick" {
                204
            } else {
                200
            };
            Ok(http::HttpResponse {
                status,
                headers: Vec::new(),
                body: Vec::new(),
            })
        };
        let mut host = TestHost::get("/").on_http_call(answer);
        assert_eq!(host.on_tick(&caller), Action::Continue);
        assert_eq!(host.on_request(&caller), Action::Continue);
        assert_eq!(host.request_header("x-callout-status"), Some("200"));
        assert_eq!(
            host.response_headers_added,
            [("x-tick-callout".to_owned(), "204".to_owned())]
        );
    }
}
