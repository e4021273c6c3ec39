//! A plugin on the bare `filter` world (no SDK, no `tick` or `chunks` exports), as plugins built
//! before those existed are: it adds `x-legacy: filter-world` to every request.
#![cfg_attr(target_arch = "wasm32", allow(unsafe_code))]

#[cfg(target_arch = "wasm32")]
mod plugin {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "filter",
    });

    use switchyard::plugin::request;

    struct Legacy;

    impl Guest for Legacy {
        fn init(_config: String) -> Result<BodyInterest, String> {
            Ok(BodyInterest::empty())
        }
        fn on_request() -> Decision {
            let _ = request::set_header("x-legacy", "filter-world");
            Decision::Continue
        }
        fn on_request_body(_body: Vec<u8>) -> Decision {
            Decision::Unimplemented
        }
        fn on_upstream_response(_outcome: AttemptOutcome) -> Decision {
            Decision::Unimplemented
        }
        fn on_response() -> Decision {
            Decision::Unimplemented
        }
        fn on_response_body(_body: Vec<u8>) -> Decision {
            Decision::Unimplemented
        }
        fn on_log() -> Decision {
            Decision::Unimplemented
        }
    }

    export!(Legacy);
}
