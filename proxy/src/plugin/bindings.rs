//! The only `bindgen!`: the host side of the `switchyard:plugin/filter` world.
//!
//! Every hook export is async (wasmtime runs it on the tokio task, yielding at host awaits);
//! of the imports only `http.call` awaits. Imports are not wrapped in tracing spans: a span per
//! host call would cost more than most host calls.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "filter",
    imports: {
        "switchyard:plugin/http.call": async,
    },
    exports: { default: async },
});

pub use self::switchyard::plugin::types::{
    HttpCallError, HttpRequest, HttpResponse, KvEntry, LocalResponse, LogLevel, PeerIdentity,
    UpstreamError,
};
