//! Write Switchyard plugins in plain Rust.
//!
//! A plugin is a type implementing [`Plugin`]: an associated `Config` deserialized from the
//! `[plugin.config]` table, and hooks in the order a request flows — [`Plugin::on_request`],
//! [`Plugin::on_request_body`], [`Plugin::on_upstream_response`], [`Plugin::on_response`],
//! [`Plugin::on_response_body`], [`Plugin::on_log`]. Every hook is optional; the ones you leave
//! out cost nothing at run time. [`export_plugin!`] turns the type into a component exporting the
//! `switchyard:plugin/filter` world.
//!
//! ```
//! use switchyard_sdk::{Action, Plugin, Request, Response};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { greeting: String }
//!
//! struct Greeter { greeting: String }
//!
//! impl Plugin for Greeter {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(Greeter { greeting: config.greeting })
//!     }
//!     fn on_response(&self, _req: &mut Request, resp: &mut Response) -> Action {
//!         let _ = resp.set_header("x-greeting", &self.greeting);
//!         Action::Continue
//!     }
//! }
//! switchyard_sdk::export_plugin!(Greeter);
//! ```
//!
//! Plugins are tested natively with [`testing::TestHost`], no proxy needed. They are built with
//! `cargo build --release --target wasm32-unknown-unknown`.

// The generated bindings (and only they) use `unsafe` for the canonical ABI.
#![warn(missing_docs)]
#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

// Lets the generated bindings name this crate by its public path from inside it too.
extern crate self as switchyard_sdk;

mod action;
mod batch;
pub mod config;
pub mod grpc;
mod head;
mod host;
#[cfg(feature = "matching")]
pub mod matching;
pub mod params;
pub mod testing;
pub mod text;

pub use action::{Action, BodyInterest, Chunk, LocalResponse, Outcome, UpstreamError, run_hook};
pub use head::{HostError, PeerIdentity, ROUTE_CONTEXT_KEY, Request, Response};
pub use host::{attempts, clock, http, log, metrics, random, shared, streaming, timer};

/// A plugin: its config type and the hooks it implements.
///
/// One value is made per instance with [`Plugin::new`] and reused for many requests; anything
/// that belongs to one request goes in the request's context ([`Request::context_set`]), never in
/// `self`, because consecutive hooks of one request may run on different instances.
pub trait Plugin: Sized + 'static {
    /// The `[plugin.config]` table, deserialized from JSON.
    type Config: serde::de::DeserializeOwned;

    /// Which body hooks to buffer bodies for; bodies are never buffered otherwise.
    const BODY_INTEREST: BodyInterest = BodyInterest::NONE;

    /// Builds the plugin from its config; an error refuses the plugin at load.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The request head arrived. Route it, check it, change it, or answer it.
    fn on_request(&self, req: &mut Request) -> Action {
        self.try_on_request(req).into()
    }

    /// [`Plugin::on_request`] where `?` works: implement one or the other. An `Err` is logged
    /// and handled by the plugin's failure policy (`on_error`), as [`Action::Fail`] is.
    fn try_on_request(&self, req: &mut Request) -> HookResult {
        let _ = req;
        Ok(action::not_implemented())
    }

    /// The whole request body (only with `BODY_INTEREST.request_body`).
    fn on_request_body(&self, req: &mut Request, body: &[u8]) -> Action {
        self.try_on_request_body(req, body).into()
    }

    /// [`Plugin::on_request_body`] where `?` works: implement one or the other.
    fn try_on_request_body(&self, req: &mut Request, body: &[u8]) -> HookResult {
        let _ = (req, body);
        Ok(action::not_implemented())
    }

    /// One attempt finished: a response head (read it with [`Request::attempt_response`]) or an
    /// error. Return [`Action::Retry`] to try again.
    fn on_upstream_response(&self, req: &mut Request, outcome: Outcome) -> Action {
        self.try_on_upstream_response(req, outcome).into()
    }

    /// [`Plugin::on_upstream_response`] where `?` works: implement one or the other.
    fn try_on_upstream_response(&self, req: &mut Request, outcome: Outcome) -> HookResult {
        let _ = (req, outcome);
        Ok(action::not_implemented())
    }

    /// The response head is about to go to the client; change it or replace it.
    fn on_response(&self, req: &mut Request, resp: &mut Response) -> Action {
        self.try_on_response(req, resp).into()
    }

    /// [`Plugin::on_response`] where `?` works: implement one or the other.
    fn try_on_response(&self, req: &mut Request, resp: &mut Response) -> HookResult {
        let _ = (req, resp);
        Ok(action::not_implemented())
    }

    /// The whole response body (only with `BODY_INTEREST.response_body`).
    fn on_response_body(&self, req: &mut Request, resp: &mut Response, body: &[u8]) -> Action {
        self.try_on_response_body(req, resp, body).into()
    }

    /// [`Plugin::on_response_body`] where `?` works: implement one or the other.
    fn try_on_response_body(
        &self,
        req: &mut Request,
        resp: &mut Response,
        body: &[u8],
    ) -> HookResult {
        let _ = (req, resp, body);
        Ok(action::not_implemented())
    }

    /// The response is complete. Count, log, export; nothing here delays the client.
    fn on_log(&self, req: &Request, resp: &Response) {
        let _ = (req, resp);
        action::not_implemented();
    }

    /// One piece of the request body on its way upstream, for plugins that asked with
    /// [`streaming::stream_request_body`] in [`Plugin::new`]; `end` on the last call, whose
    /// chunk may be empty. The request head and context are readable as they were when the body
    /// started; changes to them stay with these calls (the head has gone upstream).
    fn on_request_chunk(&self, req: &Request, chunk: &[u8], end: bool) -> Chunk {
        let _ = (req, chunk, end);
        Chunk::Pass
    }

    /// One piece of the response body on its way to the client, for plugins that asked with
    /// [`streaming::stream_response_body`] in [`Plugin::new`]; `end` on the last call, whose
    /// chunk may be empty (append there). The request and response head are readable.
    fn on_response_chunk(&self, req: &Request, resp: &Response, chunk: &[u8], end: bool) -> Chunk {
        let _ = (req, resp, chunk, end);
        Chunk::Pass
    }

    /// At the interval asked for with [`timer::tick_every`] in [`Plugin::new`]: scheduled work,
    /// such as refreshing keys before they expire. No request is in scope. An
    /// [`Action::Fail`] is logged and counted as a failure; other answers mean nothing here.
    fn on_tick(&self) -> Action {
        self.try_on_tick().into()
    }

    /// [`Plugin::on_tick`] where `?` works: implement one or the other.
    fn try_on_tick(&self) -> HookResult {
        Ok(action::not_implemented())
    }
}

/// What the `try_` hooks return: an [`Action`], or any error (`?` converts the SDK's
/// [`HostError`], `std` errors and strings), which the proxy logs and handles by the plugin's
/// failure policy.
pub type HookResult = Result<Action, Box<dyn std::error::Error>>;

/// Exports `$plugin` (a type implementing [`Plugin`]) as the component's `filter` world.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static PLUGIN: ::std::cell::OnceCell<$plugin> = const { ::std::cell::OnceCell::new() };
            }
            struct Glue;
            impl $crate::__private::Guest for Glue {
                fn init(config: ::std::string::String) -> ::std::result::Result<$crate::__private::BodyInterestFlags, ::std::string::String> {
                    PLUGIN.with(|cell| $crate::__private::init::<$plugin>(cell, &config))
                }
                fn on_request() -> $crate::__private::Decision {
                    PLUGIN.with(|cell| $crate::__private::on_request(cell))
                }
                fn on_request_body(body: ::std::vec::Vec<u8>) -> $crate::__private::Decision {
                    PLUGIN.with(|cell| $crate::__private::on_request_body(cell, &body))
                }
                fn on_upstream_response(outcome: $crate::__private::AttemptOutcome) -> $crate::__private::Decision {
                    PLUGIN.with(|cell| $crate::__private::on_upstream_response(cell, outcome))
                }
                fn on_response() -> $crate::__private::Decision {
                    PLUGIN.with(|cell| $crate::__private::on_response(cell))
                }
                fn on_response_body(body: ::std::vec::Vec<u8>) -> $crate::__private::Decision {
                    PLUGIN.with(|cell| $crate::__private::on_response_body(cell, &body))
                }
                fn on_log() -> $crate::__private::Decision {
                    PLUGIN.with(|cell| $crate::__private::on_log(cell))
                }
            }
            impl $crate::__private::ChunksGuest for Glue {
                fn on_response_chunk(chunk: ::std::vec::Vec<u8>, end: bool) -> ::std::option::Option<::std::vec::Vec<u8>> {
                    PLUGIN.with(|cell| $crate::__private::on_response_chunk(cell, &chunk, end))
                }
                fn on_request_chunk(chunk: ::std::vec::Vec<u8>, end: bool) -> ::std::option::Option<::std::vec::Vec<u8>> {
                    PLUGIN.with(|cell| $crate::__private::on_request_chunk(cell, &chunk, end))
                }
            }
            impl $crate::__private::TickGuest for Glue {
                fn on_tick() -> $crate::__private::Decision {
                    PLUGIN.with(|cell| $crate::__private::on_tick(cell))
                }
            }
            $crate::__private::export!(Glue with_types_in $crate::__private::bindings);
        };
    };
}

/// Parses a plugin's config the way the proxy does, naming the field on error. Tests use it to
/// check that bad config is refused with a useful message.
pub fn parse_config<P: Plugin>(json: &str) -> Result<P::Config, String> {
    parse_config_as::<P::Config>(json)
}

/// Parses any config type the way [`parse_config`] does, naming the field on error.
pub fn parse_config_as<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // The position is in the JSON the proxy made of `[plugin.config]`, which its author
        // never saw; the proxy places the path at its line in the TOML file instead.
        let inner = e.inner().to_string();
        let reason = match inner.rsplit_once(" at line ") {
            Some((reason, _)) if e.inner().line() > 0 => reason.to_owned(),
            _ => inner,
        };
        if path == "." {
            format!("invalid config: {reason}")
        } else {
            format!("invalid config at `{path}`: {reason}")
        }
    })
}

/// Builds a plugin from its config JSON, as the proxy does at load. Natively, outside a
/// [`testing::TestHost`], `new` gets a host of its own, so a plugin that logs or counts in `new`
/// loads in tests as it does in the proxy (use [`testing::TestHost::load`] to see what it did).
pub fn load<P: Plugin>(json: &str) -> Result<P, String> {
    #[cfg(not(target_arch = "wasm32"))]
    if !testing::has_current() {
        return testing::TestHost::default().load::<P>(json);
    }
    P::new(parse_config::<P>(json)?)
}

#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private;
