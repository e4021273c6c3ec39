//! Waits for the whole request body, then upper-cases every "hello" in it; does the same to the
//! response body. Upper-cases the request's `x-checksum` trailer, and adds `x-filter-trailer: yes`
//! to the response's trailers.
use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Rewrite) });
}}

struct Rewrite;

impl Context for Rewrite {}

fn shout(body: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(body).replace("hello", "HELLO").into_bytes()
}

impl HttpContext for Rewrite {
    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_request_body(0, size) {
            self.set_http_request_body(0, size, &shout(&body));
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        if let Some(sum) = self.get_http_request_trailer("x-checksum") {
            self.set_http_request_trailer("x-checksum", Some(&sum.to_uppercase()));
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        self.add_http_response_trailer("x-filter-trailer", "yes");
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, size) {
            self.set_http_response_body(0, size, &shout(&body));
        }
        Action::Continue
    }
}
