//! Misbehaves on demand: `x-panic` panics (a trap), `x-spin` loops forever (the CPU deadline),
//! `x-hog` asks for 200 MiB (the memory cap); otherwise adds `x-survived: <requests seen by this
//! instance>`.
use proxy_wasm::traits::*;
use proxy_wasm::types::*;
use std::sync::atomic::{AtomicU64, Ordering};

static SEEN: AtomicU64 = AtomicU64::new(0);

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Misbehave) });
}}

struct Misbehave;

impl Context for Misbehave {}

impl HttpContext for Misbehave {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.get_http_request_header("x-panic").is_some() {
            panic!("asked to panic");
        }
        if self.get_http_request_header("x-spin").is_some() {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if self.get_http_request_header("x-hog").is_some() {
            let hog = vec![1u8; 200 * 1024 * 1024];
            std::hint::black_box(&hog);
        }
        let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        self.set_http_request_header("x-survived", Some(&seen.to_string()));
        Action::Continue
    }
}
