//! Adds `x-proxy-wasm: <value>` to every request (the value from its plugin configuration, JSON
//! `{"value": "..."}`) and `x-filtered-by: add-header` to every response; counts requests in a
//! metric.
use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { value: String::new(), requests: 0 })
    });
}}

struct Root {
    value: String,
    requests: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(config) = self.get_plugin_configuration() else {
            return false;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&config) else {
            return false;
        };
        self.value = match &json["value"] {
            serde_json::Value::String(value) => value.clone(),
            serde_json::Value::Null => "set".to_owned(),
            other => {
                log::error!("`value` must be a string, not {other}");
                return false;
            }
        };
        self.requests = proxy_wasm::hostcalls::define_metric(MetricType::Counter, "add_header_requests")
            .unwrap_or(0);
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AddHeader { value: self.value.clone(), requests: self.requests }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AddHeader {
    value: String,
    requests: u32,
}

impl Context for AddHeader {}

impl HttpContext for AddHeader {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.add_http_request_header("x-proxy-wasm", &self.value);
        let path = self.get_http_request_header(":path").unwrap_or_default();
        self.add_http_request_header("x-seen-path", &path);
        let _ = proxy_wasm::hostcalls::increment_metric(self.requests, 1);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.add_http_response_header("x-filtered-by", "add-header");
        Action::Continue
    }
}
