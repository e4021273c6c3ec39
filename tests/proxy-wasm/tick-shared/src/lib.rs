//! Ticks every 50 ms, counting ticks in shared data (compare-and-set); requests get the count
//! so far in `x-ticks`.
use std::time::Duration;

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Ticker) });
}}

struct Ticker;

impl Context for Ticker {}

impl RootContext for Ticker {
    fn on_vm_start(&mut self, _: usize) -> bool {
        self.set_tick_period(Duration::from_millis(50));
        true
    }

    fn on_tick(&mut self) {
        loop {
            let (value, cas) = self.get_shared_data("ticks");
            let n: u64 = value
                .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            match self.set_shared_data("ticks", Some((n + 1).to_string().as_bytes()), cas) {
                Ok(()) => break,
                Err(Status::CasMismatch) => continue,
                Err(_) => break,
            }
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ShowTicks))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ShowTicks;

impl Context for ShowTicks {}

impl HttpContext for ShowTicks {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let (value, _) = self.get_shared_data("ticks");
        let ticks = value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or("0".into());
        self.set_http_request_header("x-ticks", Some(&ticks));
        Action::Continue
    }
}
