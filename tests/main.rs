//! Integration tests: the real `switchyard` binary, real sockets on 127.0.0.1:0, real upstreams.
// Test code panics with a message on anything unexpected; that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod auth;
mod authoring;
mod balancing;
mod canary;
mod config_files;
mod control_plane;
mod dashboard;
mod deploy;
mod discovery;
mod errors;
mod fault_injection;
mod forwarding;
mod grpc;
mod hot_reload;
mod http_edges;
mod lifecycle;
mod mesh_capture;
mod mesh_view;
mod observability;
mod plugin_chain;
mod plugin_entry;
mod plugin_sandbox;
mod prometheus;
mod proxy_wasm;
mod ratelimit;
mod resilience;
mod retries;
mod routing;
mod streaming;
mod tcp;
mod tls;
mod websocket;
