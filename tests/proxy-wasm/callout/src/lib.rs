//! Asks the `authz` cluster (GET /check?user=<x-user>) before letting a request through: a 200
//! lets it on with `x-authz: <the answer's x-echo-name>`, anything else answers 403.
use std::time::Duration;

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Authz) });
}}

struct Authz;

impl HttpContext for Authz {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let user = self.get_http_request_header("x-user").unwrap_or_default();
        let path = format!("/check?user={user}&status={}", if user == "mallory" { 403 } else { 200 });
        match self.dispatch_http_call(
            "authz",
            vec![(":method", "GET"), (":path", &path), (":authority", "authz")],
            None,
            vec![],
            Duration::from_secs(2),
        ) {
            Ok(_) => Action::Pause,
            Err(_) => {
                self.send_http_response(500, vec![], Some(b"cannot call authz\n"));
                Action::Pause
            }
        }
    }
}

impl Context for Authz {
    fn on_http_call_response(&mut self, _: u32, _: usize, _: usize, _: usize) {
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        if status == "200" {
            let who = self.get_http_call_response_header("x-echo-name").unwrap_or_default();
            self.set_http_request_header("x-authz", Some(&who));
            self.resume_http_request();
        } else {
            self.send_http_response(403, vec![("x-authz-status", &status)], Some(b"not allowed\n"));
        }
    }
}
