//! Switchyard: a programmable HTTP proxy for service meshes and edge gateways.
//!
//! The request flow (see DESIGN.md) reads top to bottom across these modules: [`listener`] accepts
//! and speaks HTTP, [`proxy`] runs one request end to end, [`upstream`] owns clusters, endpoints and
//! connection pools, [`balance`] picks an endpoint, and [`admin`] serves the admin API.
//! [`reload`] swaps the whole running state atomically; [`watch`] and SIGHUP ([`server`]) ask
//! for it.
// `deny`, not `forbid`: loading a compiled plugin from the cache is the one reviewed `unsafe`
// (see plugin/engine.rs).
#![deny(unsafe_code)]

pub mod authoring;
pub mod balance;
pub mod body;
pub mod config;
pub mod discovery;
pub mod echo;
pub mod file_access;
pub mod forwarding;
pub mod grpc;
pub mod headers;
pub mod hex;
pub mod listener;
pub mod local_response;
pub mod mesh;
pub mod operations;
pub mod path;
pub mod plugin;
pub mod proxy;
pub mod sandbox;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod unix_time;
pub mod upstream;
