//! Requests put their path on the shared queue `events`; the root context that registered the
//! queue drains it when told (`on_queue_ready`) and keeps the last path and a count in shared
//! data, which requests show in `x-last-event` and `x-events`.
use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Collector) });
}}

struct Collector;

impl Context for Collector {}

impl RootContext for Collector {
    fn on_vm_start(&mut self, _: usize) -> bool {
        self.register_shared_queue("events");
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(event)) = self.dequeue_shared_queue(queue_id) {
            let (count, _) = self.get_shared_data("events");
            let count: u64 = count
                .and_then(|c| String::from_utf8(c).ok()?.parse().ok())
                .unwrap_or(0);
            let _ = self.set_shared_data("events", Some((count + 1).to_string().as_bytes()), None);
            let _ = self.set_shared_data("last-event", Some(&event), None);
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Publisher))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Publisher;

impl Context for Publisher {}

impl HttpContext for Publisher {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let shared = |key: &str| {
            self.get_shared_data(key)
                .0
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        };
        let (last, count) = (shared("last-event"), shared("events"));
        self.set_http_request_header("x-last-event", Some(&last));
        self.set_http_request_header("x-events", Some(&count));
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if let Some(queue) = self.resolve_shared_queue("", "events") {
            let _ = self.enqueue_shared_queue(queue, Some(path.as_bytes()));
        }
        Action::Continue
    }
}
