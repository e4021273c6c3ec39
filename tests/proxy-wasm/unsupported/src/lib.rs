//! A filter that imports a host function no proxy-wasm host has: loading it must fail, naming
//! the import.
use proxy_wasm::traits::*;
use proxy_wasm::types::*;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_secret_key(out: *mut u32) -> u32;
}

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Secret) });
}}

struct Secret;

impl Context for Secret {}

impl HttpContext for Secret {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let mut key = 0;
        unsafe { proxy_get_secret_key(&mut key) };
        Action::Continue
    }
}
