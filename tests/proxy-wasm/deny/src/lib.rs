//! Denies requests carrying `x-deny` with a 403 of its own, naming the caller's address (a
//! property); lets the rest through.
use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Deny) });
}}

struct Deny;

impl Context for Deny {}

impl HttpContext for Deny {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.get_http_request_header("x-deny").is_none() {
            return Action::Continue;
        }
        let source = self
            .get_property(vec!["source", "address"])
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .unwrap_or_default();
        self.send_http_response(
            403,
            vec![("x-denied-by", "deny"), ("content-type", "text/plain")],
            Some(format!("denied for {source}\n").as_bytes()),
        );
        Action::Pause
    }
}
